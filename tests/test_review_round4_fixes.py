"""Fourth review round: copies that reported success with a target unlike the source, each fixed.

- The FDW path read through a private foreign table whose columns lost their declared collations: a
  ``where`` the local server evaluates compared in the database default.
- A mirror left the state table's records as they were: an append of the mirror's own source appended
  the mirror's new rows again. A mirror of a target other feeds write is refused (the second review).
- A TRUNCATE of the target while a run loaded (or between a partitioned copy's loads and its apply):
  the record was written for the emptied table, and the rows before the run's start were never copied.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from conftest import SOURCE_DB, TARGET_DB, RemoteTable, fdw_sandbox, ident, local, wait_until

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "rv4_src"


@pytest.fixture(scope="module")
def rv4(airflow_connections):
    return fdw_sandbox(airflow_connections, "rv4", SERVER)


def new_target() -> str:
    return f"public.rv4_{uuid.uuid4().hex[:8]}"


def copy(src: RemoteTable, target: str, **kwargs):
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(src.foreign, target, **kwargs))


# -- the private bulk-read foreign table keeps the columns' declared collations ----------------------


def test_a_mysql_where_compares_in_the_collation_the_foreign_table_declares(pair, mariadb, monkeypatch):
    """docs/wrappers.md: a copy reading mysql_fdw tables has the LOCAL server apply its where, "the where
    means what it means in PostgreSQL, its collation included". The load reads through a session-private
    copy of the foreign table: it declared the columns' types only, and a column declared COLLATE a
    case-insensitive collation was compared in the database's default ("C"): 1 row of 3, and
    verify="count" agreed (it counts the same private table)."""
    from test_wrapper_copy import copy as my_copy
    from test_wrapper_copy import import_mysql_table

    _table, foreign = import_mysql_table(
        mariadb,
        monkeypatch,
        "st",
        "id int PRIMARY KEY, status varchar(10)",
        "VALUES (1, 'open'), (2, 'OPEN'), (3, 'Open'), (4, 'closed')",
    )
    local(
        pair,
        "DO $$ BEGIN CREATE COLLATION public.rv4_ci (provider = icu, locale = 'und-u-ks-level2', "
        "deterministic = false); EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    )
    local(
        pair, "ALTER FOREIGN TABLE {f} ALTER COLUMN status TYPE varchar(10) COLLATE public.rv4_ci", f=foreign
    )
    expected = local(pair, "SELECT id FROM {f} WHERE status = 'open' ORDER BY id", f=foreign)
    assert expected == [(1,), (2,), (3,)]  # what the foreign table means
    target = f"public.rv4_{uuid.uuid4().hex[:8]}"
    local(
        pair, "CREATE TABLE {t} (id integer PRIMARY KEY, status varchar(10) COLLATE public.rv4_ci)", t=target
    )
    result = my_copy("mysql_copy", foreign, target, mode="replace", where="status = 'open'", verify="count")
    assert local(pair, "SELECT id FROM {t} ORDER BY id", t=target) == expected, result


def test_a_where_evaluated_locally_compares_in_the_collation_the_foreign_table_declares(rv4):
    """The postgres_fdw twin: a where postgres_fdw cannot ship (an OR with now(), which is not
    immutable) is evaluated by the local server on the private bulk-read copy of the foreign table, in
    the column's declared collation "und-x-icu" (what IMPORT FOREIGN SCHEMA declares for such a remote
    column), where 'B' >= 'b'; it was the database default "C"."""
    src = RemoteTable(
        rv4,
        "rv4",
        SERVER,
        'id bigint, name text COLLATE "und-x-icu", due timestamptz',
        'id bigint PRIMARY KEY, name text COLLATE "und-x-icu", due timestamptz',
    )
    src.remote("INSERT INTO {t} VALUES (1, 'a', NULL), (2, 'B', NULL), (3, 'c', NULL)")
    where = "name >= 'b' OR due > now()"
    expected = local(rv4, "SELECT id FROM {f} WHERE " + where + " ORDER BY id", f=src.foreign)
    assert expected == [(2,), (3,)]
    t = new_target()
    result = copy(src, t, mode="replace", key_columns=["id"], where=where, verify="count")
    assert local(rv4, "SELECT id FROM {t} ORDER BY id", t=t) == expected, result


@pytest.mark.parametrize("mode", ["replace", "upsert"])
def test_a_column_collation_outside_the_search_path_is_copied_and_compared(rv4, mode):
    """A column declared COLLATE a collation of a schema not on the search_path: the staging table, the
    target a copy creates and the private read table name it qualified (it was named bare: "collation
    "ci" for encoding "UTF8" does not exist", every copy of such a table failed)."""
    local(rv4, "CREATE SCHEMA IF NOT EXISTS rv4_coll")
    local(
        rv4,
        "DO $$ BEGIN CREATE COLLATION rv4_coll.ci (provider = icu, locale = 'und-u-ks-level2', "
        "deterministic = false); EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    )
    src = RemoteTable(
        rv4,
        "rv4",
        SERVER,
        "id bigint, name text COLLATE rv4_coll.ci, due timestamptz",
        "id bigint PRIMARY KEY, name text, due timestamptz",
    )
    src.remote("INSERT INTO {t} VALUES (1, 'open', NULL), (2, 'OPEN', NULL), (3, 'closed', NULL)")
    where = "name = 'Open' OR due > now()"  # evaluated locally (now()), case-insensitively
    t = new_target()
    kwargs = {"key_columns": ["id"], "where": where}
    if mode == "upsert":
        kwargs["watermark_column"] = "id"
    copy(src, t, mode=mode, **kwargs)
    assert local(rv4, "SELECT id FROM {t} ORDER BY id", t=t) == [(1,), (2,)]
    collation = local(
        rv4,
        "SELECT c.collnamespace::regnamespace::text || '.' || c.collname FROM pg_attribute a "
        "JOIN pg_collation c ON c.oid = a.attcollation "
        "WHERE a.attrelid = {r}::regclass AND a.attname = 'name'",
        r=sql.Literal(t),
    )
    assert collation == [("rv4_coll.ci",)]


# -- a mirror, and a TRUNCATE while a run loads: the records of the target ----------------------------

FEED_SERVER = "rv5_src"
APPEND = {"mode": "append", "watermark_column": "updated_at"}
UPSERT = {"mode": "upsert", "key_columns": ["id"], "watermark_column": "updated_at"}


@pytest.fixture(scope="module")
def rv5(airflow_connections):
    return fdw_sandbox(airflow_connections, "rv5", FEED_SERVER)


class Source(RemoteTable):
    """``rv5.<name>`` (id, name, updated_at: row g at 2024-01-01 + g minutes, ids first..last)."""

    def __init__(self, pair, first: int, last: int) -> None:
        super().__init__(
            pair,
            "rv5",
            FEED_SERVER,
            "id bigint, name text, updated_at timestamptz",
            remote_columns="id bigint PRIMARY KEY, name text NOT NULL, updated_at timestamptz NOT NULL",
        )
        self.add(first, last)

    def add(self, first: int, last: int) -> None:
        self.remote(
            "INSERT INTO {t} SELECT g, 'name ' || g, '2024-01-01'::timestamptz + g * interval '1 minute' "
            "FROM generate_series(%s::int, %s::int) g",
            (first, last),
        )

    def rows(self):
        return self.remote("SELECT id, name, updated_at FROM {t} ORDER BY id")


def ids(pair, target: str) -> list[int]:
    return [r[0] for r in local(pair, "SELECT id FROM {t} ORDER BY id", t=target)]


@pytest.mark.parametrize("transport", ["fdw", "copy"])
def test_a_mirror_of_a_target_other_feeds_write_is_refused_with_nothing_changed(rv5, transport):
    """A mirror makes the target hold its source's rows only. Another feed's rows it would delete, and
    that feed's next runs would not copy them again (it left its record as it was); if that feed read
    the same rows under another name, restarting it would copy again every row the mirror inserted.
    Only the user knows which: refused before any change, with the statement that lets it go on."""
    a, b, t = Source(rv5, 1, 100), Source(rv5, 1001, 1050), new_target()
    copy(a, t, mode="replace", key_columns=["id"])
    copy(b, t, **UPSERT)
    with pytest.raises(FdwConfigError, match="also fed by incremental copies of other sources") as refused:
        copy(a, t, mode="mirror", transport=transport)
    assert ids(rv5, t) == list(range(1, 101)) + list(range(1001, 1051))
    forget_them = str(refused.value).rsplit("\n", 1)[1]
    rv5.target.execute(forget_them, dbname=TARGET_DB)
    assert copy(a, t, mode="mirror", transport=transport)["deleted"] == 50
    assert ids(rv5, t) == list(range(1, 101))


def alias_of(pair, src: Source) -> str:
    """A second foreign table over the same remote table (a re-import, a replica's server)."""
    schema = f"rv5alias_{uuid.uuid4().hex[:6]}"
    local(pair, "CREATE SCHEMA {s}", s=schema)
    local(
        pair,
        "CREATE FOREIGN TABLE {a} (id bigint, name text, updated_at timestamptz) SERVER {srv} "
        "OPTIONS (schema_name 'rv5', table_name {n})",
        a=f"{schema}.{src.name}",
        srv=ident(FEED_SERVER),
        n=sql.Literal(src.name),
    )
    return f"{schema}.{src.name}"


def test_a_mirror_beside_an_append_of_the_same_rows_under_another_name(rv5):
    """An hourly append reads the rows under another name than the nightly mirror: the mirror is refused
    (restarting the append would append every row again); mirrored from the name the append reads, the
    append goes on from the mirrored rows without appending any twice."""
    a, t = Source(rv5, 1, 100), new_target()
    hourly = alias_of(rv5, a)

    def append():
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            return hook.bulk_copy(plan_copy(hourly, t, **APPEND))

    append()
    a.add(101, 120)
    a.remote("DELETE FROM {t} WHERE id = 7")
    with pytest.raises(FdwConfigError, match="also fed by incremental copies"):
        copy(a, t, mode="mirror", key_columns=["id"])
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.bulk_copy(plan_copy(hourly, t, mode="mirror", key_columns=["id"]))
    a.add(121, 125)
    assert append()["rows"] == 5
    assert ids(rv5, t) == [i for i in range(1, 126) if i != 7]


def test_an_append_after_a_mirror_of_its_own_source_appends_no_row_twice(rv5):
    """An append feed and a periodic mirror (which carries the deletes) of the same source: the mirror
    forgets the append's record, whose next run reads max() of the rows the mirror left."""
    a, t = Source(rv5, 1, 100), new_target()
    copy(a, t, **APPEND)
    a.add(101, 120)
    a.remote("DELETE FROM {t} WHERE id = 7")
    copy(a, t, mode="mirror", key_columns=["id"])
    assert copy(a, t, **APPEND)["rows"] == 0
    a.add(121, 125)
    assert copy(a, t, **APPEND)["rows"] == 5
    assert local(rv5, "SELECT id, name, updated_at FROM {t} ORDER BY id", t=t) == a.rows()


class SourceLock:
    """ACCESS EXCLUSIVE on a remote table in an open transaction: a copy's read of it waits."""

    def __init__(self, pair, src: Source) -> None:
        self.conn = pair.source.connect(SOURCE_DB, autocommit=False)
        self.conn.cursor().execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(ident("rv5", src.name))
        )
        self.pair = pair

    def waiters(self) -> int:
        return self.pair.source.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = %s",
            (SOURCE_DB,),
            dbname=SOURCE_DB,
        )[0][0]

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


@pytest.mark.parametrize("kwargs", [APPEND, UPSERT], ids=["append", "upsert"])
@pytest.mark.parametrize("shared", [False, True], ids=["one feed", "shared"])
def test_a_truncate_of_the_target_while_a_run_loads_is_not_recorded_over(rv5, kwargs, shared):
    """The target is emptied (the documented way to copy every row again) after a run read where it
    starts and while it reads the source: the run fails with nothing changed (recorded, the rows below
    its start would never come back), and the next runs copy every row again, of every feed."""
    a, t = Source(rv5, 1, 100), new_target()
    b = Source(rv5, 1001, 1050) if shared else None
    feeds = [a, b] if b is not None else [a]
    for feed in feeds:
        copy(feed, t, **(UPSERT if shared else kwargs))
    a.add(101, 120)
    lock = SourceLock(rv5, a)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = copy(a, t, **(UPSERT if shared else kwargs))
        except FdwError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    try:
        thread.start()
        wait_until(lambda: lock.waiters() >= 1, 30)  # the run read its start and waits on the source
        local(rv5, "TRUNCATE {t}", t=t)
    finally:
        lock.release()
    thread.join(60)
    assert "emptied or rewritten" in str(outcome.get("error")), outcome
    for feed in feeds:  # the next runs
        copy(feed, t, **(UPSERT if shared else kwargs))
    assert ids(rv5, t) == list(range(1, 121)) + (list(range(1001, 1051)) if shared else [])


def test_a_truncate_between_a_partitioned_appends_loads_and_its_apply(rv5):
    """A partitioned append's loads read from the record (rows after 100); a TRUNCATE before the apply
    task: the apply refuses (nothing changed), the next run copies every row."""
    from airflow_provider_fdw.bulkcopy import partitions as parts

    def step(run, *args):
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            plan = plan_copy(a.foreign, t, key_columns=["id"], transport="fdw", parallelism=2, **APPEND)
            return run(hook.bulk_copy_engine(plan), hook.session, *args)

    a, t = Source(rv5, 1, 100), new_target()
    copy(a, t, **APPEND)
    a.add(101, 120)
    state = step(parts.prepare, "dag/run_1", 2)
    step(parts.load_range, state, 0, lambda: None)
    local(rv5, "TRUNCATE {t}", t=t)
    with pytest.raises(FdwError, match="emptied or rewritten"):
        step(parts.load_range, state, 1, lambda: None)
    with pytest.raises(FdwError, match="emptied or rewritten"):
        step(parts.apply, state)
    assert ids(rv5, t) == []
    copy(a, t, **APPEND)
    assert ids(rv5, t) == list(range(1, 121))


# -- the fixes' own review: what the storage check and the mirror must not refuse ---------------------

EARLIER_STATE = (
    "CREATE TABLE {s}.fdw_copy_state (target_table text PRIMARY KEY, watermark_column text NOT NULL, "
    "target_oid oid NOT NULL, target_filenode oid, watermark text, "
    "recorded_at timestamptz NOT NULL DEFAULT now())"
)


@pytest.mark.parametrize("mode", ["mirror", "replace"])
def test_a_mirror_or_replace_beside_an_earlier_versions_state_table(rv5, mode):
    """A state table of an earlier version (one record per target, no source columns): the mirror and
    the replace that forget the target's record give it a record per feed first, as incremental runs
    do (they failed: column "source_table" does not exist)."""
    schema = f"rv5old_{uuid.uuid4().hex[:6]}"
    local(rv5, "CREATE SCHEMA {s}", s=schema)
    a, t = Source(rv5, 1, 100), f"{schema}.t"
    copy(a, t, mode="replace", key_columns=["id"])
    local(rv5, EARLIER_STATE, s=ident(schema))
    local(
        rv5,
        "INSERT INTO {s}.fdw_copy_state (target_table, watermark_column, target_oid, watermark) "
        "VALUES ('t', 'updated_at', 0, '2024-01-01')",
        s=ident(schema),
    )
    a.remote("DELETE FROM {t} WHERE id = 7")
    copy(a, t, mode=mode, key_columns=["id"])
    assert ids(rv5, t) == [i for i in range(1, 101) if i != 7]
    assert local(rv5, "SELECT count(*) FROM {s}.fdw_copy_state", s=ident(schema)) == [(0,)]


def test_an_append_into_a_target_whose_trigger_makes_its_children(rv5):
    """A routing trigger that creates the child table a row goes to (inheritance partitioning made on
    demand): the child the run's own write creates is not a rewrite of the target."""
    a, t = Source(rv5, 1, 100), new_target()
    name = t.split(".")[1]
    local(rv5, "CREATE TABLE {t} (id bigint, name text, updated_at timestamptz)", t=t)
    local(
        rv5,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ DECLARE c text := "
        + f"'{name}_' || to_char(NEW.updated_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24'); BEGIN "
        + f"EXECUTE format('CREATE TABLE IF NOT EXISTS public.%I () INHERITS (public.{name})', c); "
        "EXECUTE format('INSERT INTO public.%I SELECT ($1).*', c) USING NEW; RETURN NULL; END $$",
        f=ident("public", f"{name}_route"),
    )
    local(
        rv5,
        "CREATE TRIGGER route BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()",
        t=t,
        f=ident("public", f"{name}_route"),
    )
    copy(a, t, **APPEND)
    a.add(101, 200)
    assert copy(a, t, **APPEND)["rows"] == 100
    assert ids(rv5, t) == list(range(1, 201))


def test_a_partition_added_while_a_run_loads_fails_nothing(rv5):
    """A maintenance job (pg_partman, cron) adds next month's partition while an append reads the
    source: no row went away, the run goes on."""
    a, t = Source(rv5, 1, 100), new_target()
    local(
        rv5,
        "CREATE TABLE {t} (id bigint, name text, updated_at timestamptz NOT NULL) "
        "PARTITION BY RANGE (updated_at)",
        t=t,
    )
    local(
        rv5,
        "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM ('2024-01-01') TO ('2024-02-01')",
        p=f"{t}_1",
        t=t,
    )
    copy(a, t, **APPEND)
    a.add(101, 120)
    lock = SourceLock(rv5, a)
    outcome: dict = {}

    def run() -> None:
        outcome["result"] = copy(a, t, **APPEND)

    thread = threading.Thread(target=run)
    try:
        thread.start()
        wait_until(lambda: lock.waiters() >= 1, 30)
        local(
            rv5,
            "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM ('2024-02-01') TO ('2024-03-01')",
            p=f"{t}_2",
            t=t,
        )
    finally:
        lock.release()
    thread.join(60)
    assert outcome["result"]["rows"] == 20
    assert ids(rv5, t) == list(range(1, 121))
