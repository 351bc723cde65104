"""Mirror mode against the real pair: the target equals the source after every run, moving what differs."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import threading
import time
import uuid

import pytest
from conftest import (
    READER,
    REPO,
    SOURCE_DB,
    TARGET_DB,
    RemoteTable,
    fdw_sandbox,
    ident,
    kill_9_when,
    local,
    map_role_to_reader,
    wait_until,
)

from airflow_provider_fdw.bulkcopy import mirror as m
from airflow_provider_fdw.bulkcopy import mirror_compare, mirror_direct, mirror_state, plan_copy, watermark
from airflow_provider_fdw.bulkcopy.mirror import Mirror, plan_mirror
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.sql import mirror as mq

SERVER = "mirror_src"
COLUMNS = "id bigint, name text, score numeric, seen timestamptz, tags text, flag boolean"
REMOTE_COLUMNS = "id bigint PRIMARY KEY, name text, score numeric, seen timestamptz, tags text, flag boolean"
SELECT = "SELECT id, name, score::text, seen, tags, flag FROM {t} ORDER BY id"


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "mirror", SERVER)


class Source(RemoteTable):
    def __init__(self, pair, rows: int = 500) -> None:
        super().__init__(pair, "mirror", SERVER, COLUMNS, remote_columns=REMOTE_COLUMNS)
        self.remote(
            "INSERT INTO {t} SELECT g, CASE WHEN g %% 10 = 0 THEN NULL ELSE 'name ' || (g %% 37) END, "
            "(g %% 13) * 1.5, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute', "
            "'dup', g %% 2 = 0 FROM generate_series(1, %s) g",
            (rows,),
        )

    def rows(self):
        return self.remote(SELECT)


def new_target(pair, source: Source, key: bool = True) -> str:
    """A target holding the source's current rows (as a first replace would leave it)."""
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(pair, "CREATE TABLE {t} (" + (REMOTE_COLUMNS if key else COLUMNS) + ")", t=target)
    local(pair, "INSERT INTO {t} SELECT * FROM {s}", t=target, s=source.foreign)
    return target


def target_rows(pair, target: str):
    return local(pair, SELECT, t=target)


def mirror(
    source: Source,
    target: str,
    session_setup: list[str] = (),
    side_by_side: bool = True,
    transport: str = "fdw",
    log: logging.Logger | None = None,
    **kwargs,
) -> dict:
    plan = plan_mirror(source.foreign, target, transport=transport, **kwargs)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        if log is not None:  # a stdlib logger: caplog sees it
            hook._log = log
        s = hook.session
        with s.transaction():
            for statement in session_setup:
                s.execute("setting", sql.SQL(statement))
        new_session = hook._new_session if side_by_side else None
        summary = Mirror(plan, hook.log, new_session=new_session, **direct_reads(hook)).run(s).summary()
    assert summary["path"] == ("fdw" if transport == "fdw" else "direct")
    return summary


def direct_reads(hook: FdwHook) -> dict:
    """What the engine gives a mirror to read the source directly (wiring.copy_engine)."""
    identity = {k: v for k, v in hook.remote.libpq_params().items() if k != "password"}
    return {"remote_connect": hook.direct_connection, "remote_identity": identity}


# Both ways of reading the source: through postgres_fdw, and over the direct connection.
TRANSPORTS = pytest.mark.parametrize("transport", ["fdw", "copy"])


def random_changes(source: Source, rng: random.Random, count: int) -> None:
    """Updates (values, NULLs, duplicates), deletes, inserts and key changes, mixed."""
    ids = [r[0] for r in source.remote("SELECT id FROM {t}")]
    top = max(ids)
    for _ in range(count):
        what = rng.choice(["update", "null", "dup", "delete", "insert", "rekey"])
        i = rng.choice(ids)
        if what == "update":
            source.remote(
                "UPDATE {t} SET score = score + 0.25, seen = seen + interval '1 second' WHERE id = %s", (i,)
            )
        elif what == "null":
            source.remote("UPDATE {t} SET name = NULL, flag = NULL WHERE id = %s", (i,))
        elif what == "dup":
            source.remote("UPDATE {t} SET name = 'same', tags = 'same' WHERE id = %s", (i,))
        elif what == "delete":
            source.remote("DELETE FROM {t} WHERE id = %s", (i,))
            ids.remove(i)
        elif what == "insert":
            top += 1
            source.remote("INSERT INTO {t} VALUES (%s, 'new', 1.00, now(), NULL, true)", (top,))
            ids.append(top)
        else:
            top += 1
            source.remote("UPDATE {t} SET id = %s WHERE id = %s", (top, i))
            ids.remove(i)
            ids.append(top)


# -- equality ---------------------------------------------------------------------------------------


@TRANSPORTS
@pytest.mark.parametrize(("seed", "side_by_side"), [(1, True), (2, False), (3, True)])
def test_mirror_makes_target_equal_to_source_after_random_mixed_changes(
    sandbox, seed, side_by_side, transport
):
    src = Source(sandbox)
    target = new_target(sandbox, src)
    random_changes(src, random.Random(seed), 40)
    settle_counters(src, 500 + 40)  # each change writes one row
    result = mirror(src, target, side_by_side=side_by_side, transport=transport)
    assert target_rows(sandbox, target) == src.rows()
    assert result["rows"] == len(src.rows())
    assert result["inserted"] + result["updated"] + result["deleted"] > 0
    assert result["rows_fetched"] < result["rows"]  # only the differing rows crossed the network
    again = mirror(src, target, transport=transport)
    assert (again["inserted"], again["updated"], again["deleted"], again["rows_fetched"]) == (0, 0, 0, 0)
    # nothing changed: one whole-table checksum per side (directly: because the source's change
    # counters are those the first run recorded), no second level
    assert (again["levels"], again["buckets_compared"]) == (1, 1)
    assert again["rows"] == len(src.rows())
    if transport == "copy":  # only the rows that differ are fetched
        assert result["rows_fetched"] == result["inserted"] + result["updated"]


def settle_counters(src: Source, written: int) -> None:
    """Wait until the remote's statistics count ``written`` rows written to ``src`` (a backend
    reports its counts as it ends, after its client saw the statement end)."""
    deadline = time.monotonic() + 30
    query = (
        "SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_all_tables "
        "WHERE schemaname = %s AND relname = %s"
    )
    while (counted := src.remote(query, (src.schema, src.name))[0][0]) != written:
        assert time.monotonic() < deadline, (
            f"the source's counters show {counted} rows written, not {written}"
        )
        time.sleep(0.05)


def test_direct_mirror_compares_the_whole_tables_once_while_the_sources_counters_do_not_move(sandbox):
    src = Source(sandbox, rows=2000)
    settle_counters(src, 2000)
    target = new_target(sandbox, src)
    first = mirror(src, target, transport="copy")
    assert first["buckets_compared"] > 1  # nothing recorded yet: the buckets at once
    again = mirror(src, target, transport="copy")
    assert (again["levels"], again["buckets_compared"], again["rows"]) == (1, 1, 2000)
    assert again["checksum"] == first["checksum"]
    src.remote("UPDATE {t} SET tags = 'changed' WHERE id = 7")
    settle_counters(src, 2001)
    changed = mirror(src, target, transport="copy")  # the counters moved: the buckets at once
    assert (changed["updated"], changed["levels"]) == (1, 2) and changed["buckets_compared"] > 1
    assert target_rows(sandbox, target) == src.rows()
    assert mirror(src, target, transport="copy")["buckets_compared"] == 1
    src.remote("TRUNCATE {t}")  # counts no rows written, but gives the table new storage
    emptied = mirror(src, target, transport="copy")
    assert (emptied["deleted"], emptied["levels"]) == (2000, 2)  # the buckets at once
    assert target_rows(sandbox, target) == []


def test_direct_mirror_goes_on_to_the_buckets_when_counters_missed_a_change(sandbox, monkeypatch):
    """Counters not flushed yet, or a change written on the target: the whole-table sums differ."""
    src = Source(sandbox, rows=500)
    target = new_target(sandbox, src)
    monkeypatch.setattr(m, "source_fingerprint", lambda remote, table, log: "unmoved")
    monkeypatch.setattr(m, "recorded_fingerprint", lambda s, target, oid, log: "unmoved")
    random_changes(src, random.Random(11), 20)
    local(sandbox, "UPDATE {t} SET name = 'written here' WHERE id = 3", t=target)
    result = mirror(src, target, transport="copy")
    assert result["levels"] == 3  # the whole table, the buckets, the rows of the differing buckets
    assert result["inserted"] + result["updated"] + result["deleted"] > 0
    assert target_rows(sandbox, target) == src.rows()
    again = mirror(src, target, transport="copy")
    assert (again["levels"], again["buckets_compared"], again["rows_fetched"]) == (1, 1, 0)


def test_a_mirrors_record_and_an_upserts_watermark_of_one_target_are_kept_apart(sandbox):
    src = Source(sandbox, rows=100)
    target = new_target(sandbox, src)
    settle_counters(src, 100)
    mirror(src, target, transport="copy")
    plan = plan_copy(src.foreign, target, mode="upsert", key_columns=["id"], watermark_column="seen")
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.bulk_copy(plan)
        s = hook.session
        name = m.parse_qualified_name(target, "target")
        with s.transaction():
            oid = m.read_table(s, name, "target").oid
            assert mirror_state.recorded_fingerprint(s, name, oid, hook.log) is not None
            server = m.read_table(s, plan.source, "source").server_name
            feed = watermark.Feed.of(plan.source, server)
            assert watermark.read_bound(s, name, oid, "seen", "timestamptz", feed) is not None
    assert local(
        sandbox, "SELECT relpersistence FROM pg_class WHERE oid = 'public.fdw_mirror_state'::regclass"
    ) == [("u",)]  # a hint: no WAL, never published
    assert mirror(src, target, transport="copy")["buckets_compared"] == 1


def in_new_schema(pair, source: Source) -> tuple[str, str]:
    """A new schema holding a target with the source's rows: (schema, target)."""
    schema = f"mirror_{uuid.uuid4().hex[:8]}"
    local(pair, "CREATE SCHEMA {s}", s=schema)
    target = f"{schema}.t"
    local(pair, "CREATE TABLE {t} (" + REMOTE_COLUMNS + ")", t=target)
    local(pair, "INSERT INTO {t} SELECT * FROM {s}", t=target, s=source.foreign)
    return schema, target


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO)
    return logging.getLogger("test_mirror")


def test_a_mirror_whose_record_cannot_be_written_still_mirrors(sandbox, caplog, log):
    """A table of the record's name that takes no rows: the record is lost, the run is not (an object
    with rules or triggers, or another role's, is not used at all, as for fdw_copy_state)."""
    src = Source(sandbox, rows=100)
    schema, target = in_new_schema(sandbox, src)
    local(
        sandbox,
        "CREATE TABLE {v} (target_table text PRIMARY KEY, target_oid oid NOT NULL, target_filenode oid, "
        "source_counters text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now(), CHECK (false))",
        v=f"{schema}.fdw_mirror_state",
    )
    settle_counters(src, 100)
    src.remote("UPDATE {t} SET tags = 'changed' WHERE id = 2")
    result = mirror(src, target, transport="copy", log=log)
    assert result["updated"] == 1 and target_rows(sandbox, target) == src.rows()
    assert "record of the source's change counters is not used" in caplog.text
    assert mirror(src, target, transport="copy")["buckets_compared"] > 1  # no record: the buckets


def test_a_role_without_create_on_the_schema_mirrors_without_a_record(sandbox, caplog, log):
    src = Source(sandbox, rows=100)
    schema, target = in_new_schema(sandbox, src)
    role = f"mirror_role_{uuid.uuid4().hex[:6]}"
    local(sandbox, "CREATE ROLE {r}", r=role)
    local(sandbox, "GRANT USAGE ON SCHEMA {s} TO {r}", s=schema, r=role)  # no CREATE
    local(sandbox, "ALTER TABLE {t} OWNER TO {r}", t=target, r=role)
    local(sandbox, "GRANT USAGE ON SCHEMA {s} TO {r}", s=src.foreign.split(".")[0], r=role)
    local(sandbox, "GRANT SELECT ON {f} TO {r}", f=src.foreign, r=role)  # the fetched rows' types
    # the remote role it reads as (the direct path reads as the foreign table would)
    map_role_to_reader(sandbox, role, SERVER)
    settle_counters(src, 100)
    src.remote("DELETE FROM {t} WHERE id = 5")
    result = mirror(
        src, target, session_setup=[f'SET ROLE "{role}"'], side_by_side=False, transport="copy", log=log
    )
    assert result["deleted"] == 1 and target_rows(sandbox, target) == src.rows()
    assert f"no CREATE on schema {schema}" in caplog.text
    assert local(sandbox, "SELECT to_regclass(%s)", (f"{schema}.fdw_mirror_state",)) == [(None,)]


@TRANSPORTS
def test_a_role_that_may_not_read_the_source_is_refused_with_a_grant_that_runs(sandbox, transport):
    """The direct path reads the remote table itself, never the foreign table: the run checks the
    grants on it, for the current role (after SET ROLE), and names a GRANT that runs as written, for
    a role and a table named by keywords."""
    src = Source(sandbox, rows=50)
    schema, target = in_new_schema(sandbox, src)
    hidden = f"src_{uuid.uuid4().hex[:6]}"
    local(sandbox, "CREATE SCHEMA {s}", s=hidden)
    local(
        sandbox,
        "CREATE FOREIGN TABLE {f} (" + COLUMNS + ") SERVER {v} "
        "OPTIONS (schema_name 'mirror', table_name {n})",
        f=ident(hidden, "select"),
        v=SERVER,
        n=sql.Literal(src.name),
    )
    src.foreign = f'{hidden}."select"'
    role = "table"  # a keyword: the GRANT must quote it (dropped below: roles are cluster-wide)
    local(sandbox, "CREATE ROLE {r}", r=ident(role))
    try:
        local(sandbox, "GRANT USAGE, CREATE ON SCHEMA {s} TO {r}", s=schema, r=ident(role))
        local(sandbox, "ALTER TABLE {t} OWNER TO {r}", t=target, r=ident(role))
        map_role_to_reader(sandbox, ident(role), SERVER)
        before = target_rows(sandbox, target)
        src.remote("DELETE FROM {t} WHERE id = 5")
        setup = ['SET ROLE "table"']
        for expected in (
            f'GRANT USAGE ON SCHEMA {hidden} TO "table"',
            f'GRANT SELECT (id, name, score, seen, tags, flag) ON {hidden}."select" TO "table"',
        ):
            with pytest.raises(FdwError) as refused:
                mirror(src, target, session_setup=setup, side_by_side=False, transport=transport)
            message = str(refused.value)
            assert message.endswith(f"Grant it in the local database: {expected}."), message
            assert target_rows(sandbox, target) == before
            local(sandbox, expected)  # valid SQL, as written
        result = mirror(src, target, session_setup=setup, side_by_side=False, transport=transport)
        assert result["deleted"] == 1
    finally:
        local(sandbox, "DROP OWNED BY {r}", r=ident(role))
        local(sandbox, "DROP ROLE {r}", r=ident(role))


def test_mirror_reads_many_scattered_ranges_in_one_filtered_pass(sandbox, monkeypatch):
    monkeypatch.setattr(
        mirror_compare, "MAX_RANGES", 1
    )  # every level past the first uses the hashed-lookup form
    src = Source(sandbox)
    target = new_target(sandbox, src)
    random_changes(src, random.Random(7), 40)
    result = mirror(src, target)
    assert result["levels"] == 3  # the whole table, the first buckets, one bisection
    assert target_rows(sandbox, target) == src.rows()


def test_target_side_checksums_aggregate_by_hash_without_sorting_every_row(sandbox):
    # The target's per-bucket GROUP BY is estimated at one group per key, so the planner sorted every
    # row (an external sort: temp files) to build a few thousand buckets.
    src = Source(sandbox, rows=300_000)
    target = new_target(sandbox, src)
    src.remote("UPDATE {t} SET tags = 'changed' WHERE id = 150000")
    temp_files = "SELECT temp_files FROM pg_stat_database WHERE datname = current_database()"
    before = local(sandbox, temp_files)[0][0]
    result = mirror(src, target)
    assert result["updated"] == 1 and result["levels"] > 1
    assert target_rows(sandbox, target) == src.rows()
    assert local(sandbox, temp_files)[0][0] == before


@TRANSPORTS
def test_mirror_counts_exactly_the_changed_rows(sandbox, transport):
    src = Source(sandbox)
    target = new_target(sandbox, src)
    src.remote("UPDATE {t} SET tags = 'changed' WHERE id IN (3, 300)")
    src.remote("DELETE FROM {t} WHERE id = 7")
    src.remote("INSERT INTO {t} (id, name) VALUES (10001, NULL), (10002, 'x')")
    result = mirror(src, target, transport=transport)
    assert (result["inserted"], result["updated"], result["deleted"]) == (2, 2, 1)
    assert result["unchanged"] == result["rows"] - 4
    assert target_rows(sandbox, target) == src.rows()


@TRANSPORTS
def test_mirror_sees_a_numeric_display_scale_change(sandbox, transport):
    src = Source(sandbox, rows=20)
    target = new_target(sandbox, src)
    src.remote("UPDATE {t} SET score = 1.50 WHERE id = 1")  # 1.5 = 1.50, but prints differently
    local(sandbox, "UPDATE {t} SET score = 1.5 WHERE id = 1", t=target)
    result = mirror(src, target, transport=transport)
    assert result["updated"] == 1
    assert target_rows(sandbox, target) == src.rows()


@TRANSPORTS
def test_mirror_sees_a_numeric_sign_change_and_changes_between_nan_and_the_infinities(sandbox, transport):
    """``hash_numeric`` leaves out the sign (5 and -5 hash alike) and hashes NaN, Infinity and
    -Infinity to the seed alone: each of these changes once ended in "nothing changed"."""
    src = Source(sandbox, rows=20)
    src.remote("UPDATE {t} SET score = 'NaN' WHERE id = 2")
    src.remote("UPDATE {t} SET score = 'Infinity' WHERE id = 3")
    src.remote("UPDATE {t} SET score = '-Infinity' WHERE id = 4")
    target = new_target(sandbox, src)
    src.remote("UPDATE {t} SET score = -score WHERE id = 1")  # 1.5 -> -1.5
    src.remote("UPDATE {t} SET score = 'Infinity' WHERE id = 2")
    src.remote("UPDATE {t} SET score = '-Infinity' WHERE id = 3")
    src.remote("UPDATE {t} SET score = 'NaN' WHERE id = 4")
    result = mirror(src, target, transport=transport)
    assert result["updated"] == 4
    assert target_rows(sandbox, target) == src.rows()


@TRANSPORTS
def test_mirror_propagates_deletes_of_every_row_and_fills_an_empty_target(sandbox, transport):
    src = Source(sandbox, rows=50)
    target = new_target(sandbox, src)
    local(sandbox, "DELETE FROM {t}", t=target)
    assert mirror(src, target, transport=transport)["inserted"] == 50
    assert target_rows(sandbox, target) == src.rows()
    src.remote("DELETE FROM {t}")
    assert mirror(src, target, transport=transport)["deleted"] == 50
    assert target_rows(sandbox, target) == []


@TRANSPORTS
def test_mirror_checksums_do_not_depend_on_session_settings(sandbox, transport):
    """Non-default DateStyle/TimeZone/extra_float_digits locally and on the remote role: no false diffs."""
    src = Source(sandbox, rows=200)
    target = new_target(sandbox, src)
    role = sql.SQL("ALTER ROLE {} IN DATABASE {} ").format(ident(READER), ident(SOURCE_DB))
    settings = [
        "SET TimeZone = 'America/St_Johns'",
        "SET DateStyle = 'SQL, DMY'",
        "SET extra_float_digits = -3",
        "SET IntervalStyle = 'sql_standard'",
    ]
    for setting in ("timezone = 'Asia/Kathmandu'", "DateStyle = 'German, YMD'", "extra_float_digits = 0"):
        sandbox.source.execute(role + sql.SQL("SET " + setting), dbname=SOURCE_DB)
    try:
        result = mirror(src, target, transport=transport, session_setup=settings)
        assert (result["inserted"], result["updated"], result["deleted"], result["rows_fetched"]) == (0,) * 4
        # and the rows it does move arrive with their exact values (a day-month swap, a shifted zone)
        src.remote("UPDATE {t} SET seen = '2024-03-04 05:06:07.123456+00' WHERE id % 7 = 0")
        src.remote("INSERT INTO {t} VALUES (100001, 'n', 0.1, '1999-12-31 23:59:59.999999+00', NULL, NULL)")
        random_changes(src, random.Random(5), 20)
        mirror(src, target, transport=transport, session_setup=settings)
    finally:
        for setting in ("timezone", "DateStyle", "extra_float_digits"):
            sandbox.source.execute(role + sql.SQL("RESET " + setting), dbname=SOURCE_DB)
    assert target_rows(sandbox, target) == src.rows()


@pytest.mark.parametrize("bucketing", ["range", "hash"])
@pytest.mark.parametrize("timestamp", ["exact", "bytes:8:timestamptz_send"])
def test_mirror_checksum_aggregate_runs_on_the_remote(sandbox, bucketing, timestamp):
    src = Source(sandbox, rows=10)
    kinds = {"id": "int", "name": "text", "score": "numeric", "seen": timestamp, "flag": "bool"}
    buckets = (
        m.RangeBuckets("id", 1, 1000, 1000) if bucketing == "range" else m.HashBuckets(["id"], kinds, 1000)
    )
    within, params = buckets.within([1, 2, 5], buckets.first)
    statement = mq.bucket_checksums(
        m.parse_qualified_name(src.foreign, "source"),
        False,
        buckets.bucket(buckets.first),
        mq.row_hash_expr(list(kinds), kinds),
        within,
    )
    plan = [r[0] for r in sandbox.target.execute(m.q.explain_verbose(statement), params, dbname=TARGET_DB)]
    assert plan[0].startswith("Foreign Scan")
    assert any("Relations: Aggregate on" in line for line in plan)
    remote_sql = next(line for line in plan if "Remote SQL" in line)
    assert "GROUP BY" in remote_sql and "hashtextextended" in remote_sql and "WHERE" in remote_sql
    assert "hash_array_extended" in remote_sql  # the type's own hash or the bytes of its send form


FINITE = (
    "SELECT id, seen::text, CASE WHEN isfinite(seen) THEN extract(epoch FROM seen) END FROM {t} ORDER BY id"
)


@TRANSPORTS
def test_mirror_sees_microsecond_and_infinite_timestamp_changes(sandbox, transport):
    src = Source(sandbox, rows=20)
    target = new_target(sandbox, src)
    src.remote("UPDATE {t} SET seen = seen + interval '1 microsecond' WHERE id = 1")
    src.remote("UPDATE {t} SET seen = 'infinity' WHERE id = 2")
    src.remote("UPDATE {t} SET seen = '-infinity' WHERE id = 3")
    assert mirror(src, target, transport=transport)["updated"] == 3
    assert local(sandbox, FINITE, t=target) == src.remote(FINITE)
    src.remote("UPDATE {t} SET seen = '-infinity' WHERE id = 2")
    src.remote("UPDATE {t} SET seen = 'infinity' WHERE id = 3")
    assert mirror(src, target, transport=transport)["updated"] == 2
    assert local(sandbox, FINITE, t=target) == src.remote(FINITE)


@TRANSPORTS
def test_mirror_handles_negative_and_extreme_integer_keys(sandbox, transport):
    src = Source(sandbox, rows=0)
    extremes = [-(2**63), -(2**63) + 1, -5, 0, 3, 2**40, 2**63 - 2, 2**63 - 1]
    for i in extremes:
        src.remote("INSERT INTO {t} (id, name) VALUES (%s, 'x')", (i,))
    target = new_target(sandbox, src)
    src.remote("UPDATE {t} SET name = 'changed' WHERE id IN (%s, %s, 0)", (extremes[0], extremes[-1]))
    src.remote("DELETE FROM {t} WHERE id = %s", (2**40,))
    src.remote("INSERT INTO {t} (id, name) VALUES (-7, 'new')")
    result = mirror(src, target, transport=transport)
    assert (result["inserted"], result["updated"], result["deleted"]) == (1, 3, 1)
    assert target_rows(sandbox, target) == src.rows()


# -- snapshot, failures, safety ------------------------------------------------------------------------


@TRANSPORTS
def test_mirror_reads_one_source_snapshot_while_the_source_changes(sandbox, monkeypatch, transport):
    src = Source(sandbox, rows=300)
    target = new_target(sandbox, src)
    src.remote("UPDATE {t} SET tags = 'before' WHERE id = 5")
    expected = src.rows()
    original = Mirror._apply

    def change_source_then_apply(self, *args, **kwargs):
        # committed on the source after the comparison, before the rows are fetched
        src.remote("UPDATE {t} SET tags = 'during' WHERE id IN (5, 6)")
        src.remote("DELETE FROM {t} WHERE id = 7")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Mirror, "_apply", change_source_then_apply)
    result = mirror(src, target, transport=transport)
    monkeypatch.undo()
    assert target_rows(sandbox, target) == expected  # exactly the snapshot the comparison saw
    assert result["updated"] == 1
    mirror(src, target, transport=transport)
    assert target_rows(sandbox, target) == src.rows()


@TRANSPORTS
def test_mirror_failing_mid_apply_leaves_target_unchanged_and_retry_converges(sandbox, transport):
    src = Source(sandbox, rows=200)
    target = new_target(sandbox, src)
    before = target_rows(sandbox, target)
    random_changes(src, random.Random(9), 30)
    src.remote("INSERT INTO {t} (id, name) VALUES (99999, 'boom')")
    local(
        sandbox,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN IF NEW.name = 'boom' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$",
        f=f"{target}_boom",
    )
    local(
        sandbox,
        "CREATE TRIGGER boom AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()",
        t=target,
        f=f"{target}_boom",
    )
    with pytest.raises(FdwError, match="refused"):
        mirror(src, target, transport=transport)
    assert target_rows(sandbox, target) == before
    local(sandbox, "DROP TRIGGER boom ON {t}", t=target)
    mirror(src, target, transport=transport)
    assert target_rows(sandbox, target) == src.rows()


def slow_row_triggers(pair, target: str, seconds: float) -> str:
    """Row triggers on ``target`` sleeping ``seconds`` per changed row (the delay table it returns)."""
    delay = f"{target}_delay"
    local(pair, "CREATE TABLE {d} (seconds float8 NOT NULL)", d=delay)
    local(pair, "INSERT INTO {d} VALUES (%s)", (seconds,), d=delay)
    local(
        pair,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep((SELECT seconds FROM {d})); RETURN NULL; END $$",
        f=f"{target}_slow",
        d=delay,
    )
    local(
        pair,
        "CREATE TRIGGER slow AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()",
        t=target,
        f=f"{target}_slow",
    )
    return delay


def applying(pair, target: str) -> list[int]:
    """The sessions inside the apply of a mirror of ``target`` (asleep in a row trigger)."""
    name = target.split(".")[1]
    return [
        pid
        for (pid,) in local(
            pair,
            "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE %s",
            (f"%{name}%",),
        )
    ]


MIRROR_WORKER = """
import sys
from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.hooks.fdw import FdwHook
source, target, transport = sys.argv[1:4]
with FdwHook(fdw_conn_id="fdw_source") as hook:
    hook.task_identity = ("kill_dag", "mirror", "run_1", "-1")
    hook.bulk_copy(plan_copy(source, target, mode="mirror", transport=transport))
"""


@TRANSPORTS
def test_a_mirror_killed_mid_apply_changes_nothing_and_its_retry_converges(sandbox, transport):
    """kill -9 of the worker while its apply runs on the target: the server notices the lost client
    within client_connection_check_interval and rolls the apply back (it would run for minutes);
    the retry of the same task instance then converges."""
    src = Source(sandbox, rows=200)
    target = new_target(sandbox, src)
    before = target_rows(sandbox, target)
    random_changes(src, random.Random(11), 30)
    delay = slow_row_triggers(sandbox, target, 5.0)  # about 150 s to apply
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen(
        [sys.executable, "-c", MIRROR_WORKER, src.foreign, target, transport],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    kill_9_when(worker, lambda: applying(sandbox, target))
    wait_until(lambda: not applying(sandbox, target), limit=30)
    assert target_rows(sandbox, target) == before
    local(sandbox, "UPDATE {d} SET seconds = 0", d=delay)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.task_identity = ("kill_dag", "mirror", "run_1", "-1")
        result = hook.bulk_copy(plan_copy(src.foreign, target, mode="mirror", transport=transport))
    assert target_rows(sandbox, target) == src.rows()
    assert result["inserted"] + result["updated"] + result["deleted"] > 0


def test_two_mirrors_of_one_target_at_once_take_turns_and_the_later_sees_the_later_change(sandbox):
    """Two runs overlapping (a retry racing a slow try, two DAG runs), one per transport: the second
    waits for the first's apply, then compares against what the first committed."""
    src = Source(sandbox, rows=200)
    target = new_target(sandbox, src)
    random_changes(src, random.Random(12), 20)
    slow_row_triggers(sandbox, target, 0.1)
    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def run(name: str, transport: str) -> None:
        try:
            results[name] = mirror(src, target, transport=transport)
        except BaseException as exc:  # shown by the assertion below
            errors.append(exc)

    first = threading.Thread(target=run, args=("first", "copy"))
    first.start()
    wait_until(lambda: applying(sandbox, target) or not first.is_alive())
    src.remote("UPDATE {t} SET tags = 'after the first compared' WHERE id = 3")
    second = threading.Thread(target=run, args=("second", "fdw"))
    second.start()
    first.join(120)
    second.join(120)
    assert not errors, errors
    assert target_rows(sandbox, target) == src.rows()
    assert results["first"]["inserted"] + results["first"]["updated"] + results["first"]["deleted"] > 0
    assert results["second"]["updated"] == 1  # the first's changes were already there


def test_mirror_waits_out_a_brief_lock_on_the_target(sandbox):
    """Another session (autovacuum, a report) holding the target a little longer than lock_timeout."""
    src = Source(sandbox, rows=50)
    target = new_target(sandbox, src)
    src.remote("UPDATE {t} SET tags = 'x' WHERE id = 1")
    holder = sandbox.target.connect(TARGET_DB, autocommit=False)
    try:
        holder.cursor().execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(ident(*target.split("."))))
        release = threading.Timer(2.5, holder.rollback)
        release.start()
        result = mirror(src, target, lock_timeout="1s")
        release.join()
    finally:
        holder.close()
    assert result["updated"] == 1
    assert target_rows(sandbox, target) == src.rows()


@TRANSPORTS
def test_mirror_refuses_to_orphan_rows_of_a_referencing_table(sandbox, transport):
    src = Source(sandbox, rows=50)
    target = new_target(sandbox, src)
    child = f"{target}_child"
    local(
        sandbox,
        "CREATE TABLE {c} (id serial, parent bigint REFERENCES {t} ON DELETE CASCADE)",
        c=child,
        t=target,
    )
    local(sandbox, "INSERT INTO {c} (parent) VALUES (7), (8)", c=child)
    src.remote("DELETE FROM {t} WHERE id = 7")
    src.remote("UPDATE {t} SET tags = 'x' WHERE id = 9")
    before = target_rows(sandbox, target)
    with pytest.raises(FdwError, match="foreign key"):
        mirror(src, target, transport=transport)
    assert target_rows(sandbox, target) == before
    assert local(sandbox, "SELECT parent FROM {c} ORDER BY 1", c=child) == [(7,), (8,)]
    local(sandbox, "DELETE FROM {c} WHERE parent = 7", c=child)
    mirror(src, target, transport=transport)
    assert target_rows(sandbox, target) == src.rows()
    assert local(sandbox, "SELECT parent FROM {c}", c=child) == [(8,)]


def test_mirror_applies_a_consistent_change_of_a_self_referencing_target(sandbox):
    tree = RemoteTable(
        sandbox,
        "mirror",
        SERVER,
        "id bigint, parent bigint, v text",
        remote_columns="id bigint PRIMARY KEY, parent bigint, v text",
    )
    tree.remote("INSERT INTO {t} SELECT g, NULLIF(g - 1, 0), 'v' FROM generate_series(1, %s) g", (300,))
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(
        sandbox,
        "CREATE TABLE {t} (id bigint PRIMARY KEY, parent bigint REFERENCES {t} ON DELETE CASCADE, v text)",
        t=target,
    )
    local(sandbox, "INSERT INTO {t} SELECT * FROM {s}", t=target, s=tree.foreign)
    tree.remote("UPDATE {t} SET parent = 49 WHERE id = 51")  # re-point the child, then delete its parent
    tree.remote("DELETE FROM {t} WHERE id = 50")
    plan = plan_mirror(tree.foreign, target)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        Mirror(plan, hook.log).run(hook.session)
    select = "SELECT id, parent, v FROM {t} ORDER BY id"
    assert local(sandbox, select, t=target) == tree.remote(select)
    tree.remote("DELETE FROM {t} WHERE id = 200")  # the source orphans row 201: the cascade would delete it
    with pytest.raises(FdwError, match="foreign key"), FdwHook(fdw_conn_id="fdw_source") as hook:
        Mirror(plan, hook.log).run(hook.session)
    assert len(local(sandbox, select, t=target)) == 299


@TRANSPORTS
def test_mirror_fires_row_triggers_only_for_changed_rows_and_catches_up_sequences(sandbox, transport):
    src = Source(sandbox, rows=100)
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(
        sandbox,
        "CREATE TABLE {t} (id bigserial PRIMARY KEY, name text, score numeric, seen timestamptz, tags text, "
        "flag boolean)",
        t=target,
    )
    local(sandbox, "INSERT INTO {t} SELECT * FROM {s}", t=target, s=src.foreign)
    audit = f"{target}_audit"
    local(sandbox, "CREATE TABLE {a} (op text, id bigint)", a=audit)
    local(
        sandbox,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO {a} VALUES (TG_OP, coalesce(NEW.id, OLD.id)); RETURN NULL; END $$",
        f=f"{target}_audit_fn",
        a=audit,
    )
    local(
        sandbox,
        "CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()",
        t=target,
        f=f"{target}_audit_fn",
    )
    src.remote("UPDATE {t} SET tags = 'x' WHERE id = 4")
    src.remote("DELETE FROM {t} WHERE id = 5")
    src.remote("INSERT INTO {t} (id) VALUES (5000)")
    mirror(src, target, transport=transport)
    assert sorted(local(sandbox, "SELECT op, id FROM {a}", a=audit)) == [
        ("DELETE", 5),
        ("INSERT", 5000),
        ("UPDATE", 4),
    ]
    (next_id,) = local(sandbox, "SELECT nextval(pg_get_serial_sequence(%s, 'id'))", (target,))[0]
    assert next_id > 5000


@pytest.mark.parametrize(("transport", "track_counts"), [("fdw", "on"), ("copy", "on"), ("copy", "off")])
def test_mirror_fails_when_a_trigger_writes_rows_it_did_not_choose(sandbox, transport, track_counts):
    """The row total is checked after the apply: through the transaction's own counts of what it
    wrote (direct), or a count of the target (through postgres_fdw, or with track_counts off)."""
    src = Source(sandbox, rows=100)
    target = new_target(sandbox, src)
    before = target_rows(sandbox, target)
    function = f"{target}_echo"
    local(
        sandbox,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO {t} (id, name) VALUES (OLD.id + 1000000, 'echo'); RETURN NULL; END $$",
        f=function,
        t=target,
    )
    local(
        sandbox,
        "CREATE TRIGGER echo AFTER DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()",
        t=target,
        f=function,
    )
    src.remote("DELETE FROM {t} WHERE id = 42")
    setup = [f"SET track_counts = {track_counts}"]
    with pytest.raises(
        FdwError, match=r"Mirror check failed: after the apply \S+ has 100 rows, the source snapshot 99"
    ):
        mirror(src, target, session_setup=setup, transport=transport)
    assert target_rows(sandbox, target) == before


@pytest.mark.parametrize("transport", ["copy", "auto"])
def test_direct_mirror_of_a_composite_and_a_uuid_key_after_random_changes(sandbox, transport):
    """A key that is not one integer column is bucketed by its hash, on both sides; the rows of the
    differing buckets are staged whole and the apply compares them."""
    src_t = RemoteTable(
        sandbox,
        "mirror",
        SERVER,
        "region text, k uuid, v text, n numeric",
        remote_columns="region text, k uuid, v text, n numeric, PRIMARY KEY (region, k)",
    )
    src_t.remote(
        "INSERT INTO {t} SELECT 'r' || (g %% 5), md5(g::text)::uuid, "
        "CASE WHEN g %% 9 = 0 THEN NULL ELSE 'v' || g END, g * 0.5 FROM generate_series(1, %s) g",
        (6000,),
    )
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(
        sandbox,
        "CREATE TABLE {t} (region text, k uuid, v text, n numeric, PRIMARY KEY (region, k))",
        t=target,
    )
    local(sandbox, "INSERT INTO {t} SELECT * FROM {s}", t=target, s=src_t.foreign)
    rng = random.Random(8)
    keys = [tuple(r) for r in src_t.remote("SELECT region, k FROM {t}")]
    for region, k in rng.sample(keys, 30):
        what = rng.choice(["update", "null", "scale", "delete", "rekey"])
        where = ("WHERE region = %s AND k = %s", (region, k))
        if what == "update":
            src_t.remote("UPDATE {t} SET v = 'changed' " + where[0], where[1])
        elif what == "null":
            src_t.remote("UPDATE {t} SET v = NULL, n = NULL " + where[0], where[1])
        elif what == "scale":  # equal as numbers, not as they print
            src_t.remote("UPDATE {t} SET n = n::numeric(20, 4) " + where[0], where[1])
        elif what == "delete":
            src_t.remote("DELETE FROM {t} " + where[0], where[1])
        else:
            src_t.remote("UPDATE {t} SET region = 'moved' " + where[0], where[1])
    src_t.remote(
        "INSERT INTO {t} VALUES ('new', gen_random_uuid(), 'x', 1), ('r1', gen_random_uuid(), NULL, NULL)"
    )
    select = "SELECT region, k, v, n::text FROM {t} ORDER BY 1, 2"
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        plan = plan_mirror(src_t.foreign, target, transport=transport)
        result = (
            Mirror(plan, hook.log, new_session=hook._new_session, **direct_reads(hook))
            .run(hook.session)
            .summary()
        )
        assert local(sandbox, select, t=target) == src_t.remote(select)
        assert result["path"] == "direct"
        assert result["inserted"] + result["updated"] + result["deleted"] >= 30
        assert result["rows_fetched"] < result["rows"] // 2  # the differing buckets' rows only
        again = Mirror(plan, hook.log, **direct_reads(hook)).run(hook.session).summary()
    assert (again["inserted"], again["updated"], again["deleted"], again["rows_fetched"]) == (0, 0, 0, 0)


@pytest.mark.parametrize("compared_max", [5, 1_000_000])
def test_direct_mirror_fetches_in_batches_by_key_or_whole_buckets_when_many_rows_differ(
    sandbox, monkeypatch, compared_max
):
    """Beyond ROWS_COMPARED_MAX rows in the differing buckets the rows are not held one by one: all
    source rows of those buckets are staged (by ranges) and the apply compares them."""
    monkeypatch.setattr(m, "ROWS_COMPARED_MAX", compared_max)
    monkeypatch.setattr(m, "KEYS_PER_FETCH", 2)
    monkeypatch.setattr(mirror_direct, "KEYS_PER_FETCH", 2)
    src = Source(sandbox, rows=400)
    target = new_target(sandbox, src)
    random_changes(src, random.Random(21), 30)
    result = mirror(src, target, transport="copy")
    assert target_rows(sandbox, target) == src.rows()
    written = result["inserted"] + result["updated"]
    if compared_max == 5:
        assert result["rows_fetched"] > written  # whole buckets
    else:
        assert result["rows_fetched"] == written  # only the differing rows, two keys per COPY
    assert mirror(src, target, transport="copy")["rows_fetched"] == 0


def test_direct_mirror_reads_renamed_remote_columns_next_to_a_column_named_like_its_alias(sandbox):
    src_t = RemoteTable(
        sandbox,
        "mirror",
        SERVER,
        "key bigint OPTIONS (column_name 'id'), label text OPTIONS (column_name 'name'), fdw_range int",
        remote_columns="id bigint PRIMARY KEY, name text, fdw_range int",
    )
    src_t.remote("INSERT INTO {t} SELECT g, 'n' || g, g %% 3 FROM generate_series(1, %s) g", (500,))
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {t} (key bigint PRIMARY KEY, label text, fdw_range int)", t=target)
    local(sandbox, "INSERT INTO {t} SELECT * FROM {s}", t=target, s=src_t.foreign)
    src_t.remote("UPDATE {t} SET name = 'changed' WHERE id IN (10, 400)")
    src_t.remote("UPDATE {t} SET fdw_range = 99 WHERE id = 11")
    src_t.remote("DELETE FROM {t} WHERE id = 12")
    src_t.remote("INSERT INTO {t} VALUES (9999, 'new', 1)")
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        plan = plan_mirror(src_t.foreign, target, transport="copy")
        result = Mirror(plan, hook.log, **direct_reads(hook)).run(hook.session).summary()
    assert (result["path"], result["inserted"], result["updated"], result["deleted"]) == ("direct", 1, 3, 1)
    select = "SELECT key, label, fdw_range FROM {t} ORDER BY 1"
    assert local(sandbox, select, t=target) == local(sandbox, select, t=src_t.foreign)


def test_direct_mirror_of_a_partitioned_target_with_an_int4_key(sandbox):
    src_t = RemoteTable(
        sandbox, "mirror", SERVER, "id int, v text", remote_columns="id int PRIMARY KEY, v text"
    )
    src_t.remote("INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(-50, %s) g", (300,))
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {t} (id int PRIMARY KEY, v text) PARTITION BY RANGE (id)", t=target)
    local(
        sandbox,
        "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (MINVALUE) TO (100)",
        p=f"{target}_a",
        t=target,
    )
    local(
        sandbox,
        "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (100) TO (MAXVALUE)",
        p=f"{target}_b",
        t=target,
    )
    local(sandbox, "INSERT INTO {t} SELECT * FROM {s}", t=target, s=src_t.foreign)
    src_t.remote("UPDATE {t} SET v = 'changed' WHERE id IN (-50, 5, 250)")
    src_t.remote("DELETE FROM {t} WHERE id IN (0, 299)")
    src_t.remote("INSERT INTO {t} VALUES (2147483647, 'top'), (-2147483648, 'bottom')")
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        plan = plan_mirror(src_t.foreign, target, transport="copy")
        result = (
            Mirror(plan, hook.log, new_session=hook._new_session, **direct_reads(hook))
            .run(hook.session)
            .summary()
        )
    assert (result["path"], result["inserted"], result["updated"], result["deleted"]) == ("direct", 2, 3, 2)
    select = "SELECT id, v FROM {t} ORDER BY 1"
    assert local(sandbox, select, t=target) == src_t.remote(select)


def test_direct_source_groups_buckets_by_hash_in_one_read_only_snapshot(sandbox):
    """The remote would sort every row for a per-bucket GROUP BY (one group per key expected)."""
    src = Source(sandbox, rows=10)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        s = hook.session
        with s.transaction():
            table = m.read_table(s, m.parse_qualified_name(src.foreign, "source"), "source")
        direct = mirror_direct.DirectSource(hook.direct_connection(), table, ["id", "name"], hook.log)
        try:
            statement = mq.bucket_checksums(
                direct.table,
                False,
                mq.range_bucket("id", 6),
                mq.row_hash_expr(["id", "name"], {"id": "int", "name": "text"}),
            )
            plan = [r[0] for r in direct.session.fetchall("explain", m.q.explain_verbose(statement))]
            settings = direct.session.fetchrow(
                "settings",
                sql.SQL("SELECT current_setting('transaction_isolation'), current_setting(%s)"),
                ("transaction_read_only",),
            )
        finally:
            direct.close()
    assert "HashAggregate" in plan[0] and not any("Sort" in line for line in plan)
    assert settings == ("repeatable read", "on")


def test_mirror_without_a_key_is_refused_before_anything_changes(sandbox):
    src = Source(sandbox, rows=10)
    target = new_target(sandbox, src, key=False)
    src.remote("DELETE FROM {t}")
    with pytest.raises(FdwConfigError, match="needs a key"):
        mirror(src, target)
    assert len(target_rows(sandbox, target)) == 10


def test_mirror_with_key_columns_on_a_table_without_primary_key(sandbox):
    src = Source(sandbox, rows=60)
    target = new_target(sandbox, src, key=False)
    random_changes(src, random.Random(4), 15)
    mirror(src, target, key_columns=["id"])
    assert target_rows(sandbox, target) == src.rows()


def test_mirror_of_a_missing_target_is_refused(sandbox):
    src = Source(sandbox, rows=1)
    with pytest.raises(FdwConfigError, match="does not exist"):
        mirror(src, f"public.m_{uuid.uuid4().hex[:8]}")


def test_plan_mirror_rejects_bad_input():
    with pytest.raises(FdwConfigError):
        plan_mirror("a.b", "a.b")
    with pytest.raises(FdwConfigError):
        plan_mirror("a.b", "a.c", key_columns=["id"], columns=["name"])
    with pytest.raises(FdwConfigError):
        plan_mirror("a.b", "a.c", key_columns=[""])


@TRANSPORTS
def test_composite_and_text_keys_bisect_to_the_changed_rows(sandbox, transport):
    src_t = RemoteTable(
        sandbox,
        "mirror",
        SERVER,
        "region text, n int, v text",
        remote_columns="region text, n int, v text, PRIMARY KEY (region, n)",
    )
    src_t.remote(
        "INSERT INTO {t} SELECT 'r' || (g %% 7), g, md5(g::text) FROM generate_series(1, %s) g", (3000,)
    )
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {t} (region text, n int, v text, PRIMARY KEY (region, n))", t=target)
    local(sandbox, "INSERT INTO {t} SELECT * FROM {s}", t=target, s=src_t.foreign)
    src_t.remote("UPDATE {t} SET v = 'changed' WHERE n IN (10, 2000)")
    src_t.remote("UPDATE {t} SET region = 'moved' WHERE n = 11")
    plan = plan_mirror(src_t.foreign, target, transport=transport)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        result = Mirror(plan, hook.log, **direct_reads(hook)).run(hook.session).summary()
    assert (result["inserted"], result["updated"], result["deleted"]) == (1, 2, 1)
    assert result["path"] == ("fdw" if transport == "fdw" else "direct")
    # through postgres_fdw the differing buckets are split again; directly the first level's
    # buckets of about 64 rows are fetched whole (at most 4 differ)
    assert result["levels"] > 2 if transport == "fdw" else result["levels"] == 2
    assert result["rows_fetched"] < (200 if transport == "fdw" else 4 * 2 * 64)
    select = "SELECT region, n, v FROM {t} ORDER BY 1, 2"
    assert local(sandbox, select, t=target) == src_t.remote(select)


# -- the operator: mode="mirror" ------------------------------------------------------------------------


@pytest.mark.parametrize(("transport", "path"), [("fdw", "fdw"), ("auto", "direct")])
def test_bulk_copy_operator_mode_mirror_in_a_dag_run(sandbox, airflow_db, transport, path):
    from airflow.sdk import DAG

    from airflow_provider_fdw.operators.copy import BulkCopyOperator
    from fdw_testing.dagrun import run_dag

    src = Source(sandbox, rows=300)
    target = new_target(sandbox, src)
    random_changes(src, random.Random(11), 20)
    with DAG(f"mirror_op_{uuid.uuid4().hex[:6]}", schedule=None) as dag:
        BulkCopyOperator(
            task_id="mirror",
            source_table=src.foreign,
            target_table=target,
            mode="mirror",
            fdw_conn_id="fdw_source",
            transport=transport,
        )
    result = run_dag(dag)
    assert result.state == "success", result.task_states
    summary = result.xcom["mirror"]
    assert summary["mode"] == "mirror" and summary["rows"] == len(src.rows())
    assert summary["path"] == path
    assert summary["inserted"] + summary["updated"] + summary["deleted"] > 0
    assert target_rows(sandbox, target) == src.rows()


def test_plan_copy_mode_mirror_refuses_arguments_it_does_not_use():
    from airflow_provider_fdw.bulkcopy import plan_copy

    assert plan_copy("a.b", "a.c", mode="mirror", key_columns=["id"]).mode == "mirror"
    for extra in (
        {"watermark_column": "updated_at"},
        {"where": "id > 1"},
        {"parallelism": 2, "key_columns": ["id"]},
        {"verify": "checksum"},
        {"swap": "in_place"},
    ):
        with pytest.raises(FdwConfigError, match="mode='mirror'"):
            plan_copy("a.b", "a.c", mode="mirror", **extra)
