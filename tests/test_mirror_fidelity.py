"""Mirror mode keeps every value as the source stores it, or refuses before anything changes: values
equal under their type's "=" but stored otherwise (bpchar's trailing blanks), target types whose
modifier stores values otherwise, keys read from indexes with INCLUDE columns, a caller's open
transaction. Each case once ended in a silent difference or a run failing for a wrong reason (an
adversarial review of mirror mode, 2026-12-07)."""

from __future__ import annotations

import re
import uuid

import pytest
from conftest import SOURCE_DB, RemoteTable, copy_table, fdw_sandbox, local
from test_mirror import SERVER, TRANSPORTS, direct_reads
from test_mirror_guarantees import Named, mirror, seeded_target

from airflow_provider_fdw.bulkcopy.mirror import Mirror, plan_mirror
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.sql import mirror as mq


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "mirror", SERVER)


# Each value by its output form, which keeps bpchar's trailing blanks ("=" and a cast to text do not).
IDENTICAL = "SELECT id, ROW(v)::text FROM {t} ORDER BY id"


def table_of(sandbox, column_type: str, value: str, target_type: str | None = None, rows: int = 300):
    """A source (id, v) of ``rows`` rows whose v is ``value``; a target (v ``target_type``) equal to it."""
    src = RemoteTable(
        sandbox, "mirror", SERVER, f"id bigint, v {column_type}", f"id bigint PRIMARY KEY, v {column_type}"
    )
    src.remote(f"INSERT INTO {{t}} SELECT g, {value} FROM generate_series(1, {rows}) g")
    create = f"CREATE TABLE {{t}} (id bigint PRIMARY KEY, v {target_type or column_type})"
    return src, seeded_target(sandbox, src, create)


# -- bpchar: trailing blanks are part of the stored value ---------------------------------------------


@TRANSPORTS
@pytest.mark.parametrize(
    ("column_type", "value", "change"),
    [
        pytest.param("bpchar", "'a'", "'a   '", id="bpchar-trailing-blanks-added"),
        pytest.param("bpchar", "'a   '", "'a'", id="bpchar-trailing-blanks-removed"),
        pytest.param("char(4)", "'a'", "'a b'", id="char4-inner-blank"),
        # held before the fix: guards of the other values equal under "=" but stored otherwise
        pytest.param("text", "'a'", "'a '", id="text-trailing-blank"),
        pytest.param("numeric", "1.0", "1.00", id="numeric-scale"),
        pytest.param("float8", "0.0", "'-0'::float8", id="float8-minus-zero"),
        pytest.param("interval", "interval '1 day'", "interval '24 hours'", id="interval-day-hours"),
        pytest.param("timetz", "'12:00+01'::timetz", "'11:00+00'::timetz", id="timetz-offset"),
    ],
)
def test_a_change_equal_under_the_types_equality_is_mirrored(sandbox, transport, column_type, value, change):
    src, target = table_of(sandbox, column_type, value)
    src.remote(f"UPDATE {{t}} SET v = {change} WHERE id = 150")
    result = mirror(Named(src.foreign), target, transport=transport)
    assert local(sandbox, IDENTICAL, t=target) == src.remote(IDENTICAL)
    assert (result["updated"], result["inserted"], result["deleted"]) == (1, 0, 0)
    assert mirror(Named(src.foreign), target, transport=transport)["updated"] == 0


@TRANSPORTS
def test_a_bpchar_key_rewritten_with_trailing_blanks_is_the_same_row_rewritten(sandbox, transport):
    """'k150' -> 'k150   ' is one key under bpchar's "=" (the apply matches it, and the bucket
    follows "="), with another stored value: the row is updated, not deleted and inserted."""
    src = RemoteTable(sandbox, "mirror", SERVER, "id bpchar, v int", "id bpchar PRIMARY KEY, v int")
    src.remote("INSERT INTO {t} SELECT 'k' || g, g FROM generate_series(1, 300) g")
    target = seeded_target(sandbox, src, "CREATE TABLE {t} (id bpchar PRIMARY KEY, v int)")
    src.remote("UPDATE {t} SET id = 'k150   ' WHERE id = 'k150'")
    src.remote("UPDATE {t} SET id = 'k7' WHERE id = 'k7'")  # rewritten, the same value
    result = mirror(Named(src.foreign), target, transport=transport)
    rows = "SELECT octet_length(id), ROW(id)::text, v FROM {t} ORDER BY v"
    assert local(sandbox, rows, t=target) == src.remote(rows)
    assert (result["updated"], result["inserted"], result["deleted"]) == (1, 0, 0)


def test_the_bpchar_hash_runs_on_the_remote(sandbox):
    """The row hash of a bpchar column (its length besides its text) is shipped whole: postgres_fdw
    computes the per-bucket aggregate on the remote."""
    src, _ = table_of(sandbox, "bpchar", "'a'", rows=10)
    row_hash = mq.row_hash_expr(["id", "v"], {"id": "int", "v": "bpchar"})
    statement = mq.bucket_checksums(
        plan_mirror(src.foreign, "public.x").source, False, sql.SQL("id % 4"), row_hash
    )
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        s = hook.session
        with s.transaction():
            plan = [r[0] for r in s.fetchall("explain", sql.SQL("EXPLAIN VERBOSE {}").format(statement))]
    assert plan[0].lstrip().startswith("Foreign Scan"), plan
    assert any("Aggregate on" in line for line in plan), plan
    remote_sql = next(line for line in plan if "Remote SQL" in line)
    assert "octet_length(v)" in remote_sql and "sum(" in remote_sql, remote_sql


@pytest.mark.parametrize("transport", ["fdw", "auto"])
@pytest.mark.parametrize("remote_type", ["bpchar", "domain"])
def test_a_column_declared_text_over_a_remote_bpchar_is_refused_before_anything_changes(
    sandbox, transport, remote_type
):
    """The remote hashes a bpchar's text, which drops the trailing blanks a text target keeps: a
    change of them would go unseen (with transport="copy" the declared type must be the remote's)."""
    column = "bpchar"
    if remote_type == "domain":
        column = f"mirror.d_{uuid.uuid4().hex[:8]}"
        sandbox.source.execute(f"CREATE DOMAIN {column} AS bpchar", dbname=SOURCE_DB)
    src = RemoteTable(sandbox, "mirror", SERVER, "id bigint, v text", f"id bigint PRIMARY KEY, v {column}")
    src.remote("INSERT INTO {t} SELECT g, 'a' FROM generate_series(1, 300) g")
    target = seeded_target(sandbox, src, "CREATE TABLE {t} (id bigint PRIMARY KEY, v text)")
    src.remote("UPDATE {t} SET v = 'a  ' WHERE id = 150")
    src.remote("DELETE FROM {t} WHERE id = 7")
    before = local(sandbox, IDENTICAL, t=target)
    with pytest.raises(
        FdwConfigError, match=r"columns \['v'\] .* declares them text or varchar, but on the remote"
    ):
        mirror(Named(src.foreign), target, transport=transport)
    assert local(sandbox, IDENTICAL, t=target) == before


# -- target types whose modifier stores values otherwise ---------------------------------------------


@pytest.mark.parametrize(
    ("source_type", "target_type", "shown"),
    [
        pytest.param("text", "char(4)", "text there, character(4) here", id="text-to-char4"),
        pytest.param("varchar", "bpchar", "character varying there, bpchar here", id="varchar-to-bpchar"),
        pytest.param("text", "varchar(4)", "text there, character varying(4) here", id="text-to-varchar4"),
        pytest.param("char(4)", "char(6)", "character(4) there, character(6) here", id="char4-to-char6"),
        pytest.param("numeric", "numeric(10,2)", "numeric there, numeric(10,2) here", id="numeric-to-10-2"),
        pytest.param("numeric(10,3)", "numeric(12,2)", "numeric(10,3) there, numeric(12,2) here", id="scale"),
        pytest.param(
            "numeric(12,2)", "numeric(10,2)", "numeric(12,2) there, numeric(10,2) here", id="digits"
        ),
        pytest.param(
            "timestamp", "timestamp(0)", "timestamp without time zone there, timestamp(0) without", id="ts0"
        ),
        pytest.param("timetz(3)", "timetz(1)", "time(3) with time zone there, time(1) with", id="timetz"),
        pytest.param("interval", "interval day", "interval there, interval day here", id="interval-day"),
    ],
)
def test_a_target_type_that_stores_values_otherwise_is_refused_before_anything_changes(
    sandbox, source_type, target_type, shown
):
    src, target = table_of(sandbox, source_type, "NULL", target_type=target_type, rows=20)
    src.remote("DELETE FROM {t} WHERE id = 7")
    before = local(sandbox, IDENTICAL, t=target)
    with pytest.raises(FdwConfigError, match=re.escape(f"v ({shown}")):
        mirror(Named(src.foreign), target)
    assert local(sandbox, IDENTICAL, t=target) == before


@pytest.mark.parametrize(
    ("source_type", "target_type", "value"),
    [
        pytest.param("numeric(10,2)", "numeric", "1.5", id="numeric-10-2-to-numeric"),
        pytest.param("numeric(10,2)", "numeric(14,2)", "1.5", id="numeric-more-digits"),
        pytest.param("timestamp(0)", "timestamp", "'2024-01-01 00:00:01'", id="timestamp0-to-timestamp"),
        pytest.param(
            "timestamptz(2)", "timestamptz(4)", "'2024-01-01 00:00:00.25+00'", id="timestamptz-finer"
        ),
        pytest.param("varchar(4)", "text", "'x '", id="varchar4-to-text"),
        pytest.param("varchar(4)", "varchar(8)", "'x '", id="varchar4-to-varchar8"),
        pytest.param("char(4)", "bpchar", "'x'", id="char4-to-bpchar"),
        pytest.param("char(4)", "char(4)", "'x'", id="char4-to-char4"),
    ],
)
def test_a_target_type_that_keeps_every_source_value_is_mirrored(sandbox, source_type, target_type, value):
    src, target = table_of(sandbox, source_type, "NULL", target_type=target_type)
    src.remote(f"UPDATE {{t}} SET v = {value} WHERE id = 150")
    assert mirror(Named(src.foreign), target)["updated"] == 1
    assert local(sandbox, IDENTICAL, t=target) == src.remote(IDENTICAL)
    assert mirror(Named(src.foreign), target)["updated"] == 0


def test_a_target_domain_keeps_its_modifier(sandbox):
    """A domain over numeric(10,2) stores numeric(10,2)'s values: refused for a numeric source,
    mirrored for a numeric(10,2) one."""
    domain = f"public.d_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE DOMAIN {d} AS numeric(10,2)", d=domain)
    src, target = table_of(sandbox, "numeric", "NULL", target_type=domain, rows=20)
    with pytest.raises(FdwConfigError, match=r"v \(numeric there, "):
        mirror(Named(src.foreign), target)
    src, target = table_of(sandbox, "numeric(10,2)", "g * 1.5", target_type=domain, rows=20)
    src.remote("UPDATE {t} SET v = 2.25 WHERE id = 10")
    assert mirror(Named(src.foreign), target)["updated"] == 1
    assert local(sandbox, IDENTICAL, t=target) == src.remote(IDENTICAL)


# -- a key read from an index with INCLUDE columns --------------------------------------------------


def include_target(sandbox, src: RemoteTable, v: str = "text NOT NULL") -> str:
    """A target keyed by PRIMARY KEY (id) INCLUDE (v), with a column of its own, equal to the source."""
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(
        sandbox,
        f"CREATE TABLE {{t}} (id bigint, v {v}, note text DEFAULT 'default', PRIMARY KEY (id) INCLUDE (v))",
        t=target,
    )
    local(sandbox, "INSERT INTO {t} (id, v) SELECT id, v FROM {s}", t=target, s=src.foreign)
    local(sandbox, "UPDATE {t} SET note = 'kept' WHERE id = 150", t=target)
    return target


def include_source(sandbox) -> RemoteTable:
    src = RemoteTable(sandbox, "mirror", SERVER, "id bigint, v text", "id bigint PRIMARY KEY, v text")
    src.remote("INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 300) g")
    return src


@TRANSPORTS
def test_a_primary_key_with_include_columns_keys_on_its_key_columns_only(sandbox, transport):
    """PRIMARY KEY (id) INCLUDE (v) keys on id: a change of v is an update (the target's own column
    keeps its value, a row referencing it is no obstacle), not a delete and an insert."""
    src = include_source(sandbox)
    target = include_target(sandbox, src)
    child = f"public.c_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {c} (p bigint REFERENCES {t} (id))", c=child, t=target)
    local(sandbox, "INSERT INTO {c} VALUES (150)", c=child)
    src.remote("UPDATE {t} SET v = 'changed' WHERE id = 150")
    result = mirror(Named(src.foreign), target, transport=transport, columns=["id", "v"])
    assert local(sandbox, "SELECT v, note FROM {t} WHERE id = 150", t=target) == [("changed", "kept")]
    assert (result["updated"], result["inserted"], result["deleted"], result["key"]) == (1, 0, 0, ["id"])


def test_a_primary_key_with_a_nullable_include_column_is_a_key(sandbox):
    """Only the key columns must be NOT NULL: a nullable INCLUDE column does not disqualify the key."""
    src = include_source(sandbox)
    target = include_target(sandbox, src, v="text")
    src.remote("UPDATE {t} SET v = NULL WHERE id = 150")
    result = mirror(Named(src.foreign), target, columns=["id", "v"])
    assert result["key"] == ["id"]
    assert local(sandbox, "SELECT v, note FROM {t} WHERE id = 150", t=target) == [(None, "kept")]


@pytest.mark.parametrize("transport", ["fdw", "copy"])
def test_an_in_place_replace_under_an_include_key_updates_in_place(sandbox, transport):
    """The replace's in-place apply reads the same key: a change of v updates the row, and a row
    referencing it does not fail the run (as a delete and an insert it would)."""
    src = include_source(sandbox)
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {t} (id bigint, v text NOT NULL, PRIMARY KEY (id) INCLUDE (v))", t=target)
    local(sandbox, "INSERT INTO {t} SELECT * FROM {s}", t=target, s=src.foreign)
    child = f"public.c_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {c} (p bigint REFERENCES {t} (id))", c=child, t=target)
    local(sandbox, "INSERT INTO {c} VALUES (150)", c=child)
    src.remote("UPDATE {t} SET v = 'changed' WHERE id = 150")
    result = copy_table(src, target, mode="replace", swap="in_place", transport=transport)
    assert local(sandbox, "SELECT v FROM {t} WHERE id = 150", t=target) == [("changed",)]
    assert (result["inserted"], result["updated"], result["deleted"]) == (0, 1, 0)


def test_an_upsert_on_the_key_of_an_include_index_is_accepted(sandbox):
    """ON CONFLICT (id) matches PRIMARY KEY (id) INCLUDE (v): the upsert's check reads key columns
    only (and refuses (id, v), which ON CONFLICT would not match)."""
    src = RemoteTable(
        sandbox, "mirror", SERVER, "id bigint, v text, n bigint", "id bigint PRIMARY KEY, v text, n bigint"
    )
    src.remote("INSERT INTO {t} SELECT g, 'v' || g, g FROM generate_series(1, 300) g")
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {t} (id bigint, v text, n bigint, PRIMARY KEY (id) INCLUDE (v))", t=target)
    upsert = {"mode": "upsert", "watermark_column": "n", "transport": "fdw"}
    copy_table(src, target, key_columns=["id"], **upsert)
    src.remote("UPDATE {t} SET v = 'changed', n = 1000 WHERE id = 150")
    copy_table(src, target, key_columns=["id"], **upsert)
    assert local(sandbox, "SELECT * FROM {t} ORDER BY id", t=target) == src.remote(
        "SELECT * FROM {t} ORDER BY id"
    )
    with pytest.raises(
        FdwConfigError, match=re.escape("upsert needs a unique index or primary key on ['id', 'v']")
    ):
        copy_table(src, target, key_columns=["id", "v"], **upsert)


# -- a caller's transaction ---------------------------------------------------------------------------


def test_a_mirror_inside_a_callers_transaction_is_refused_and_the_callers_work_kept(sandbox):
    """Mirror.run ends its own transactions (the run lock's, its attempts', a rollback before the
    unlock): inside a caller's transaction it undid the caller's delete. Refused before anything runs."""
    src, target = table_of(sandbox, "text", "'v' || g")
    src.remote("UPDATE {t} SET v = 'changed' WHERE id = 10")
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        s = hook.session
        run = Mirror(plan_mirror(src.foreign, target), hook.log, **direct_reads(hook))
        with s.transaction():
            s.execute(
                "delete", sql.SQL("DELETE FROM {} WHERE id = 300").format(sql.Identifier(*target.split(".")))
            )
            with pytest.raises(FdwConfigError, match=r"outside a transaction"):
                run.run(s)
            # the caller's transaction goes on: its delete is still there, and commits
            assert (
                s.fetchvalue(
                    "count", sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*target.split(".")))
                )
                == 299
            )
    assert local(sandbox, "SELECT count(*) FROM {t}", t=target) == [(299,)]
    assert local(sandbox, "SELECT v FROM {t} WHERE id = 10", t=target) == [("v10",)]  # nothing mirrored


@pytest.mark.parametrize("mode", ["replace", "append", "mirror"])
def test_a_copy_inside_a_callers_transaction_is_refused_and_the_callers_work_kept(sandbox, mode):
    """FdwHook.bulk_copy runs on the hook's session, which a caller may hold a transaction open on:
    the release of the run lock rolled back first, undoing the caller's work. Refused before anything."""
    from airflow_provider_fdw.bulkcopy import plan_copy

    src, target = table_of(sandbox, "text", "'v' || g")
    src.remote("UPDATE {t} SET v = 'changed' WHERE id = 10")
    name = sql.Identifier(*target.split("."))
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        s = hook.session
        with s.transaction():
            s.execute("delete", sql.SQL("DELETE FROM {} WHERE id = 300").format(name))
            with pytest.raises(FdwConfigError, match=r"outside a transaction"):
                hook.bulk_copy(plan_copy(src.foreign, target, mode=mode, key_columns=["id"]))
            assert s.fetchvalue("count", sql.SQL("SELECT count(*) FROM {}").format(name)) == 299
    assert local(sandbox, "SELECT count(*) FROM {t}", t=target) == [(299,)]
    assert local(sandbox, "SELECT v FROM {t} WHERE id = 10", t=target) == [("v10",)]  # nothing copied
