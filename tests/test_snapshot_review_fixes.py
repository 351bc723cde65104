"""Regressions of an adversarial review of incremental and parallel copies: one point in time for
every range of a direct copy (the snapshot holder locks what it reads), a watermark never recorded
past a change a copy through postgres_fdw missed, and a text watermark compared in one collation."""

from __future__ import annotations

import threading
import uuid

import pytest
from conftest import RemoteTable, fdw_sandbox, local

from airflow_provider_fdw.bulkcopy import partitions as parts
from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "snap_fix_src"


@pytest.fixture(scope="module")
def rev(airflow_connections):
    return fdw_sandbox(airflow_connections, "snapfix", SERVER)


def table(pair, columns: str, remote_columns: str | None = None) -> RemoteTable:
    return RemoteTable(pair, "snapfix", SERVER, columns, remote_columns=remote_columns)


def copy(src: RemoteTable, target: str, **kwargs):
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(src.foreign, target, **kwargs))


def new_target() -> str:
    return f"public.r_{uuid.uuid4().hex[:8]}"


def count(pair, target: str) -> int:
    return local(pair, "SELECT count(*) FROM {t}", t=target)[0][0]


def rewrite_source(src: RemoteTable, statement: str, lock_timeout: str, suffix: str = "") -> str | None:
    """Run ``statement`` ({t}: the table ``<source><suffix>``) on the source as its owner, waiting at
    most ``lock_timeout`` for its lock (VACUUM cannot run in a transaction: a session setting); the
    error, or None."""
    from conftest import SOURCE_DB, ident

    from airflow_provider_fdw.compat import sql

    conn = src.pair.source.connect(SOURCE_DB)
    try:
        cur = conn.cursor()
        cur.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(lock_timeout)))
        cur.execute(sql.SQL(statement).format(t=ident(src.schema, src.name + suffix)))
        return None
    except Exception as exc:
        return str(exc)
    finally:
        conn.close()


# -- 1. one point in time: the holder locks what the ranges read ----------------------------------------

PART_ROWS = 3000


def part_step(src, target, run, *args, parallelism=3):
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        plan = plan_copy(src.foreign, target, key_columns=["id"], transport="copy", parallelism=parallelism)
        return run(hook.bulk_copy_engine(plan), hook.session, *args)


def on_source(src: RemoteTable, statement: str, params=None, **suffixes: str) -> None:
    """Run ``statement`` on the source: ``{t}`` is the table, ``{x}`` for ``x="_y"`` the table ``<t>_y``."""
    from conftest import SOURCE_DB, ident

    from airflow_provider_fdw.compat import sql

    names = {k: ident(src.schema, src.name + v) for k, v in suffixes.items()}
    src.pair.source.execute(
        sql.SQL(statement).format(t=ident(src.schema, src.name), **names), params, dbname=SOURCE_DB
    )


def partitioned_source(pair, kind: str) -> tuple[RemoteTable, str]:
    """A source of ``PART_ROWS`` rows read as a ``kind`` on the remote, and the table an ETL truncates
    (its suffix to the source's name)."""
    src = table(pair, "id bigint, name text", remote_columns="id bigint PRIMARY KEY, name text")
    if kind == "table":
        src.remote("INSERT INTO {t} SELECT g, 'row ' || g FROM generate_series(1, %s) g", (PART_ROWS,))
        return src, ""
    src.remote("DROP TABLE {t}")
    if kind == "view":  # the view's table is what is truncated
        on_source(src, "CREATE TABLE {b} (id bigint PRIMARY KEY, name text)", b="_base")
        on_source(src, "CREATE VIEW {t} AS SELECT id, name FROM {b}", b="_base")
        filled = "_base"
    else:  # a partitioned table: one of its partitions is truncated
        src.remote("CREATE TABLE {t} (id bigint PRIMARY KEY, name text) PARTITION BY RANGE (id)")
        on_source(src, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (MINVALUE) TO (1500)", p="_low")
        on_source(src, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (1500) TO (MAXVALUE)", p="_high")
        filled = ""
    src.remote("GRANT SELECT ON {t} TO fdw_reader")
    on_source(
        src, "INSERT INTO {f} SELECT g, 'row ' || g FROM generate_series(1, %s) g", (PART_ROWS,), f=filled
    )
    return src, "_base" if kind == "view" else "_high"


def start_holder(src, target, state, timeout=120):
    """The holder task in a thread: (its thread, the published ids, what ends it, its outcome)."""
    published: list = []
    done = threading.Event()
    outcome: list = []

    def hold():
        try:
            outcome.append(
                part_step(src, target, parts.hold_snapshot, state, published.append, done.is_set, timeout)
            )
        except Exception as exc:  # the test reads it
            outcome.append(exc)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    for _ in range(300):
        if published:
            break
        threading.Event().wait(0.1)
    assert published and published[0]
    return holder, published, done, outcome


@pytest.mark.parametrize("kind", ["table", "view", "partitioned table"])
def test_a_partitioned_direct_copy_is_point_in_time_when_the_source_is_truncated_between_loads(rev, kind):
    """The holder task exports a snapshot and mapped loads run minutes apart. TRUNCATE is not MVCC-safe:
    a load that opened the table after it committed would see it empty in the old snapshot (range 0
    of the snapshot, nothing of ranges 1-2, reported as a success). The holder's ACCESS SHARE lock
    (on the table, a view's table, a partitioned table's partitions) makes the TRUNCATE wait."""
    src, truncated = partitioned_source(rev, kind)
    target = f"public.part_{uuid.uuid4().hex[:8]}"
    state = part_step(src, target, parts.prepare, "dag/rev_1", 3)
    assert state.path == "direct"
    holder, published, done, _ = start_holder(src, target, state)
    failed = None
    try:
        part_step(src, target, parts.load_range, state, 0, lambda: published[0])
        blocked = rewrite_source(src, "TRUNCATE {t}", "1s", truncated)  # an ETL on the source reloads it
        assert blocked and "lock timeout" in blocked, blocked  # the holder's lock: it waits for the copy
        try:
            for i in (1, 2):
                part_step(src, target, parts.load_range, state, i, lambda: published[0])
            part_step(src, target, parts.apply, state)
        except Exception as exc:  # a clear failure is acceptable; a silent partial copy is not
            failed = exc
    finally:
        done.set()
        holder.join(timeout=60)
    assert failed is None, failed
    assert count(rev, target) == PART_ROWS


def test_the_partitioned_copy_holder_gives_way_to_a_session_waiting_for_its_lock(rev):
    """Held between loads minutes apart, the holder's lock would keep an ALTER or TRUNCATE of the
    source waiting up to snapshot_timeout, and every reader of the source queued behind it: the holder
    releases the snapshot (the task fails, saying so) and a range loaded afterwards fails, never reads
    the table as the TRUNCATE left it."""
    src, _ = partitioned_source(rev, "table")
    target = f"public.part_{uuid.uuid4().hex[:8]}"
    state = part_step(src, target, parts.prepare, "dag/rev_give_way", 3)
    holder, published, done, outcome = start_holder(src, target, state)
    try:
        part_step(src, target, parts.load_range, state, 0, lambda: published[0])
        assert rewrite_source(src, "TRUNCATE {t}", "60s") is None  # granted once the holder gave way
        holder.join(timeout=60)
        assert outcome and "waited for its lock on the source" in str(outcome[0]), outcome
        with pytest.raises(Exception, match="snapshot"):
            part_step(src, target, parts.load_range, state, 1, lambda: published[0])
    finally:
        done.set()
        holder.join(timeout=60)


@pytest.mark.parametrize("rewrite", ["VACUUM FULL {t}", "TRUNCATE {t}"])
def test_a_parallel_ctid_copy_is_point_in_time_when_the_source_is_rewritten_between_range_starts(
    rev, monkeypatch, rewrite
):
    """The ranges import the holder's snapshot; a range that opened the table after a VACUUM FULL
    (MVCC-safe, but it moves rows to other ctids) or a TRUNCATE (not MVCC-safe) would read another
    physical table than the ranges before it. The holder locks the table before the ranges start, so
    the rewrite waits for the copy (here it gives up after its lock_timeout)."""
    from airflow_provider_fdw.bulkcopy import load as load_module

    src = table(rev, "k text, pad text", remote_columns="k text, pad text")
    src.remote(
        "INSERT INTO {t} SELECT 'k' || lpad(g::text, 6, '0'), repeat('x', 200) "
        "FROM generate_series(1, 6000) g"
    )
    src.remote("DELETE FROM {t} WHERE k <= 'k002000'")  # dead rows at the start: VACUUM FULL compacts
    expected = src.remote("SELECT count(*) FROM {t}")[0][0]
    original = load_module._copy_direct
    gate, lock, entered, blocked = threading.Event(), threading.Lock(), [], []

    def sequenced(copy, run, s, conditions, progress):
        with lock:
            first = not entered
            entered.append(1)
        if not first:
            assert gate.wait(60)
            return original(copy, run, s, conditions, progress)
        try:
            return original(copy, run, s, conditions, progress)
        finally:
            try:
                blocked.append(rewrite_source(src, rewrite, "1s"))  # the holder's lock: it waits
            finally:
                gate.set()

    monkeypatch.setattr(load_module, "_copy_direct", sequenced)
    target = new_target()
    plan = plan_copy(src.foreign, target, transport="copy", parallelism=3, verify="off")
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        result = hook.bulk_copy(plan, relay="python")
    assert len(entered) == 3
    got = local(rev, "SELECT count(*), count(DISTINCT k) FROM {t}", t=target)[0]
    assert result["rows"] == got[0]
    assert got == (expected, expected), f"{got}: not one state of the source ({expected} rows)"
    assert blocked[0] and "lock timeout" in blocked[0], blocked


def test_a_range_queued_behind_an_exclusive_lock_request_fails_the_copy_instead_of_waiting(rev, monkeypatch):
    """A TRUNCATE of the source queued behind the holder's lock, and a range that starts after it
    queued behind the TRUNCATE: none would move until the TRUNCATE gave up. The range waits one
    lock_timeout, the copy fails saying why and releases the snapshot; then the TRUNCATE runs."""
    from airflow_provider_fdw.bulkcopy import load as load_module
    from airflow_provider_fdw.exceptions import FdwError

    src, _ = partitioned_source(rev, "table")
    original = load_module._copy_direct
    lock, entered, truncate = threading.Lock(), [], []

    def queued(copy, run, s, conditions, progress):
        with lock:
            first = not entered
            entered.append(1)
            if first:
                truncate.append(threading.Thread(target=lambda: rewrite_source(src, "TRUNCATE {t}", "60s")))
                truncate[0].start()
                for _ in range(100):  # until the TRUNCATE waits for the holder's lock
                    waiting = src.remote(
                        "SELECT count(*) FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
                        (f"snapfix.{src.name}",),
                    )[0][0]
                    if waiting:
                        break
                    threading.Event().wait(0.1)
        return original(copy, run, s, conditions, progress)

    monkeypatch.setattr(load_module, "_copy_direct", queued)
    plan = plan_copy(src.foreign, new_target(), key_columns=["id"], transport="copy", parallelism=2)
    with FdwHook(fdw_conn_id="fdw_source") as hook, pytest.raises(FdwError, match="gives way") as failure:
        hook.bulk_copy(plan, relay="python")
    assert "exclusive lock" in str(failure.value)
    truncate[0].join(timeout=60)
    assert src.remote("SELECT count(*) FROM {t}")[0][0] == 0  # the TRUNCATE ran once the copy gave way


def test_a_parallel_direct_copy_from_a_hot_standby_takes_its_lock_as_a_select_only_role(rev, monkeypatch):
    """ACCESS SHARE is the one table lock a standby grants, and SELECT the only privilege it needs."""
    from conftest import READER, READER_PASSWORD, SOURCE_DB, server_as, wait_until

    from airflow_provider_fdw.compat import sql
    from fdw_testing.pgcluster import standby_of

    src, _ = partitioned_source(rev, "table")
    with standby_of(rev.source, application_name="snapfix_standby") as standby:
        wait_until(
            lambda: (
                standby.execute(
                    "SELECT count(*) FROM pg_class WHERE relname = %s", (src.name,), dbname=SOURCE_DB
                )[0][0]
                == 1
            )
        )
        conn_id, server = server_as(rev, standby, READER, READER_PASSWORD, monkeypatch)
        foreign = f"proxy_snapfix.{src.name}_standby"
        local(
            rev,
            "CREATE FOREIGN TABLE {f} (id bigint, name text) SERVER {s} OPTIONS (schema_name 'snapfix', "
            "table_name {n})",
            f=foreign,
            s=server,
            n=sql.Literal(src.name),
        )
        target = new_target()
        with FdwHook(fdw_conn_id=conn_id) as hook:
            result = hook.bulk_copy(
                plan_copy(foreign, target, key_columns=["id"], transport="copy", parallelism=2)
            )
    assert (result["path"], result["rows"], count(rev, target)) == ("direct", PART_ROWS, PART_ROWS)


# -- 2. ranges read in separate remote transactions: the recorded watermark passes no missed change ------


def fdw_part_step(src, target, run, *args, **kwargs):
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        plan = plan_copy(
            src.foreign,
            target,
            mode="upsert",
            key_columns=["id"],
            watermark_column="updated_at",
            transport="fdw",
            parallelism=3,
            **kwargs,
        )
        return run(hook.bulk_copy_engine(plan), hook.session, *args)


def timestamped_source(pair) -> RemoteTable:
    src = table(
        pair,
        "id bigint, name text, updated_at timestamptz",
        remote_columns="id bigint PRIMARY KEY, name text, updated_at timestamptz",
    )
    src.remote(
        "INSERT INTO {t} SELECT g, 'row ' || g, '2024-01-01'::timestamptz + g * interval '1 minute' "
        "FROM generate_series(1, 300) g"
    )
    return src


def change_two_rows(src: RemoteTable) -> None:
    """A row of range 0 changed after range 0 read, one of range 2 a minute later, before it read."""
    src.remote("UPDATE {t} SET name = 'changed first', updated_at = '2025-01-01 00:00+00' WHERE id = 5")
    src.remote("UPDATE {t} SET name = 'changed next', updated_at = '2025-01-01 00:01+00' WHERE id = 250")


def test_a_partitioned_upsert_through_postgres_fdw_never_records_a_watermark_past_a_change_it_missed(rev):
    """Through postgres_fdw each mapped load reads in its own snapshot, minutes apart. The apply
    recorded the newest staged time (id 250's), so every later run started past id 5's change,
    which was never copied. The loads now stop at the source's max(updated_at) read by prepare: id
    250's change is left to the next run, which starts below id 5's."""
    src = timestamped_source(rev)
    target = f"public.partf_{uuid.uuid4().hex[:8]}"
    state = fdw_part_step(src, target, parts.prepare, "dag/rev_fdw", 3)
    assert state.path == "fdw"
    fdw_part_step(src, target, parts.load_range, state, 0, lambda: None)
    change_two_rows(src)
    for i in (1, 2):
        fdw_part_step(src, target, parts.load_range, state, i, lambda: None)
    fdw_part_step(src, target, parts.apply, state)
    copy(src, target, mode="upsert", key_columns=["id"], watermark_column="updated_at")  # the next run
    got = local(rev, "SELECT id, name FROM {t} WHERE id IN (5, 250) ORDER BY id", t=target)
    assert got == [(5, "changed first"), (250, "changed next")], f"{got}: a change was skipped for good"


def test_a_parallel_upsert_through_postgres_fdw_never_records_a_watermark_past_a_change_it_missed(
    rev, monkeypatch
):
    """The in-task parallel copy through postgres_fdw: its ranges read in separate remote transactions
    too (sequenced here: range 0 reads, two rows change, then the others read). Checked the same way
    as the partitioned copy: it recorded id 250's time, past id 5's change."""
    from airflow_provider_fdw.bulkcopy import load as load_module

    src = timestamped_source(rev)
    target = new_target()
    kwargs = {"mode": "upsert", "key_columns": ["id"], "watermark_column": "updated_at"}
    copy(src, target, **kwargs)  # the first run: every row, and a recorded watermark
    src.remote("UPDATE {t} SET updated_at = updated_at + interval '1 day'")  # all rows change again
    original = load_module._copy_through_fdw
    gate, lock, entered = threading.Event(), threading.Lock(), []

    def sequenced(copy_, run, s, conditions):
        with lock:
            entered.append(1)
        first = '"id" >=' not in s.render(conditions[-1])  # range 0: no lower bound
        if not first:
            assert gate.wait(60)
            return original(copy_, run, s, conditions)
        try:
            return original(copy_, run, s, conditions)
        finally:
            change_two_rows(src)
            gate.set()

    monkeypatch.setattr(load_module, "_copy_through_fdw", sequenced)
    copy(src, target, parallelism=3, transport="fdw", **kwargs)
    monkeypatch.undo()
    assert len(entered) == 3
    copy(src, target, **kwargs)  # the next run
    got = local(rev, "SELECT id, name FROM {t} WHERE id IN (5, 250) ORDER BY id", t=target)
    assert got == [(5, "changed first"), (250, "changed next")], f"{got}: a change was skipped for good"


def test_a_parallel_append_through_postgres_fdw_copies_rows_inserted_meanwhile_once(rev, monkeypatch):
    """Append with ranges read at different times: a row inserted into range 0 after it read, and one
    with a greater watermark into range 2 before it read. It recorded the latter, so the former was
    never copied; now both are left to the next run (above the ceiling), which copies each once."""
    from airflow_provider_fdw.bulkcopy import load as load_module

    src = table(rev, "id bigint, v bigint", remote_columns="id bigint PRIMARY KEY, v bigint")
    src.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 300) g")
    target = new_target()
    kwargs = {"mode": "append", "watermark_column": "v", "split_column": "id"}
    original = load_module._copy_through_fdw
    gate, lock, entered = threading.Event(), threading.Lock(), []

    def sequenced(copy_, run, s, conditions):
        with lock:
            entered.append(1)
        first = '"id" >=' not in s.render(conditions[-1])  # range 0: no lower bound
        if not first:
            assert gate.wait(60)
            return original(copy_, run, s, conditions)
        try:
            return original(copy_, run, s, conditions)
        finally:
            src.remote("INSERT INTO {t} VALUES (0, 1000)")  # in range 0, which has read
            src.remote("INSERT INTO {t} VALUES (5000, 1001)")  # in the last range, read later
            gate.set()

    monkeypatch.setattr(load_module, "_copy_through_fdw", sequenced)
    copy(src, target, parallelism=3, transport="fdw", **kwargs)
    monkeypatch.undo()
    copy(src, target, **kwargs)  # the next run
    got = local(rev, "SELECT count(*), count(DISTINCT id) FROM {t}", t=target)[0]
    assert got == (302, 302), f"{got}: rows skipped or copied twice"


# -- 3. a text watermark is compared in one collation --------------------------------------------------


def case_aware_collation(pair) -> str:
    found = local(
        pair,
        "SELECT collname FROM pg_collation "
        "WHERE collname IN ('en-x-icu', 'en_US', 'en_US.utf8', 'und-x-icu') ORDER BY collname LIMIT 1",
    )
    if not found:
        # PostgreSQL built without ICU and a libc without English locales (the Debian build CI
        # installs has ICU: this never skips there)
        pytest.skip("no case-aware collation on the target")
    return found[0][0].replace('"', '""')


@pytest.mark.parametrize("transport", ["fdw", "copy"])
def test_append_with_a_text_watermark_in_another_collation_on_the_remote_copies_nothing_twice(rev, transport):
    """The remote column sorts in "C", the declared (and target) column in another collation: max()
    on the target picked 'B', the remote's 'wm > B' matched 'a' again on every run (duplicated once
    per run). Refused now, before anything changes, saying which collations differ and what to do."""
    from airflow_provider_fdw.exceptions import FdwConfigError

    name = case_aware_collation(rev)
    src = table(rev, f'id bigint, wm text COLLATE "{name}"', remote_columns='id bigint, wm text COLLATE "C"')
    src.remote("INSERT INTO {t} VALUES (1, 'a'), (2, 'B')")
    t = new_target()
    local(rev, f'CREATE TABLE {{t}} (id bigint, wm text COLLATE "{name}")', t=t)
    with pytest.raises(FdwConfigError, match="compared in more than one collation") as refused:
        copy(src, t, mode="append", watermark_column="wm", transport=transport)
    assert "libc C" in str(refused.value) and "Nothing was changed" in str(refused.value)
    assert count(rev, t) == 0


def test_a_text_watermark_whose_target_sorts_in_another_collation_is_refused(rev):
    """The foreign table declares the remote's collation, the target another: the bound read from the
    target (max() there) is not the remote's."""
    from airflow_provider_fdw.exceptions import FdwConfigError

    name = case_aware_collation(rev)
    src = table(rev, 'id bigint, wm text COLLATE "C"')
    src.remote("INSERT INTO {t} VALUES (1, 'a'), (2, 'B')")
    t = new_target()
    local(rev, f'CREATE TABLE {{t}} (id bigint, wm text COLLATE "{name}")', t=t)
    with pytest.raises(FdwConfigError, match="the target"):
        copy(src, t, mode="append", watermark_column="wm")
    assert count(rev, t) == 0


@pytest.mark.parametrize("collate", ['COLLATE "C"', ""], ids=["C", "the databases' default"])
@pytest.mark.parametrize("transport", ["fdw", "copy"])
def test_a_text_watermark_in_one_collation_everywhere_copies_each_row_once(rev, collate, transport):
    src = table(rev, f"id bigint, wm text {collate}")
    src.remote("INSERT INTO {t} VALUES (1, 'a'), (2, 'B')")
    t = new_target()
    assert copy(src, t, mode="append", watermark_column="wm", transport=transport)["rows"] == 2
    src.remote("INSERT INTO {t} VALUES (3, 'c')")
    second = copy(src, t, mode="append", watermark_column="wm", transport=transport)
    assert (second["rows"], count(rev, t)) == (1, 3)


# -- adversarial review, round 2 ---------------------------------------------------------------------


def test_a_direct_copy_as_a_role_with_column_privileges_only_copies_the_granted_columns(
    airflow_connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role granted SELECT on some columns reads them (COPY (SELECT id, name …) TO STDOUT), but
    LOCK TABLE … IN ACCESS SHARE MODE checks the table-level privilege: the snapshot holder's lock
    now fails every direct copy such a role made before ('permission denied')."""
    from conftest import READER, READER_PASSWORD, SOURCE_DB, RemoteTable, fdw_sandbox, ident, server_as

    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.compat import sql
    from airflow_provider_fdw.hooks.fdw import FdwHook

    rev = fdw_sandbox(airflow_connections, "colpriv", "colpriv_src")
    src = RemoteTable(
        rev,
        "colpriv",
        "colpriv_src",
        "id bigint, name text",
        remote_columns="id bigint, name text, secret text",
    )
    src.remote("INSERT INTO {t} SELECT g, 'n' || g, 's' FROM generate_series(1, 100) g")
    rev.source.execute(
        sql.SQL("REVOKE SELECT ON {t} FROM {r}; GRANT SELECT (id, name) ON {t} TO {r}").format(
            t=ident("colpriv", src.name), r=ident(READER)
        ),
        dbname=SOURCE_DB,
    )
    conn_id, server = server_as(rev, rev.source, READER, READER_PASSWORD, monkeypatch)
    foreign = f"proxy_colpriv.{src.name}_cols"
    local(
        rev,
        "CREATE FOREIGN TABLE {f} (id bigint, name text) SERVER {s} OPTIONS (schema_name 'colpriv', "
        "table_name {n})",
        f=foreign,
        s=server,
        n=sql.Literal(src.name),
    )
    via_fdw = f"public.cp_{uuid.uuid4().hex[:8]}"
    direct = f"public.cp_{uuid.uuid4().hex[:8]}"
    with FdwHook(fdw_conn_id=conn_id) as hook:
        assert hook.bulk_copy(plan_copy(foreign, via_fdw, transport="fdw"))["rows"] == 100
        result = hook.bulk_copy(plan_copy(foreign, direct, transport="copy"))
    assert (result["path"], result["rows"]) == ("direct", 100)


def test_a_relation_the_role_may_not_lock_is_read_without_the_lock_by_the_holder_and_every_reader() -> None:
    """The reason is decided once (plan_direct) and both the holder's and the readers' statements
    follow it: a reader whose LOCK is refused would fail the copy."""
    from airflow_provider_fdw.bulkcopy.direct import lock_refusal
    from airflow_provider_fdw.bulkcopy.snapshot import SourceLock, reader_statements
    from airflow_provider_fdw.names import QualifiedName

    assert lock_refusal("r", True) == lock_refusal("p", True) == lock_refusal("v", True) == ""
    assert "privilege" in lock_refusal("r", False) and "not a table" in lock_refusal("m", True)
    table = QualifiedName("s", "t")
    unlocked = SourceLock(table, lock_refusal("r", False), "1s")
    assert not unlocked.lockable and "LOCK TABLE" not in repr(reader_statements("snap", unlocked))
    assert "LOCK TABLE" in repr(reader_statements("snap", SourceLock(table, "", "1s")))


@pytest.mark.parametrize(
    "locale",
    [
        "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'",  # sorts en-US, datcollate 'C': was let pass
        "LOCALE 'C.UTF-8'",  # code point order: the bytes' order in UTF-8, was refused as another one
    ],
)
def test_a_text_watermark_over_a_remote_database_whose_default_collation_is_icu_copies_each_row_once(
    airflow_connections, monkeypatch: pytest.MonkeyPatch, locale: str
) -> None:
    """check_watermark_collation resolves a column's "default" collation to 'libc ' || datcollate;
    a database created with LOCALE_PROVIDER icu sorts by its ICU locale (daticulocale), datcollate
    being only the libc locale it keeps. A remote database with ICU en-US and LC_COLLATE 'C' passes
    for 'libc C', the local one's order, but compares wm > 'a' in en-US: 'B' is appended again on
    every run (the case the check exists for)."""
    import json

    from conftest import READER, READER_PASSWORD, ident

    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.compat import sql
    from airflow_provider_fdw.hooks.fdw import FdwHook

    pair = airflow_connections
    db = f"icu_{uuid.uuid4().hex[:6]}"
    pair.source.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' " + locale).format(ident(db))
    )
    try:
        pair.source.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(ident(db), ident(READER)))
        pair.source.execute(
            sql.SQL(
                "CREATE TABLE public.w (id int, wm text); INSERT INTO public.w VALUES (1, 'a'), (2, 'B'); "
                "GRANT SELECT ON public.w TO {}"
            ).format(ident(READER)),
            dbname=db,
        )
        conn_id = f"icu_{uuid.uuid4().hex[:6]}"
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            json.dumps(
                {
                    "conn_type": "postgres_fdw",
                    "host": pair.source.fdw_host,
                    "port": pair.source.fdw_port,
                    "schema": db,
                    "login": READER,
                    "password": READER_PASSWORD,
                    "extra": {},
                }
            ),
        )
        server, schema = f"icu_{uuid.uuid4().hex[:6]}", f"proxy_{uuid.uuid4().hex[:6]}"
        with FdwHook(fdw_conn_id=conn_id) as hook:
            hook.ensure_extension()
            hook.create_server(server)
            hook.create_user_mapping(server)
        local(pair, "CREATE SCHEMA {s}", s=schema)
        local(
            pair,
            "CREATE FOREIGN TABLE {s}.w (id int, wm text) SERVER {v} "
            "OPTIONS (schema_name 'public', table_name 'w')",
            s=schema,
            v=server,
        )
        target = f"public.icu_{uuid.uuid4().hex[:8]}"

        def append() -> int:
            with FdwHook(fdw_conn_id=conn_id) as hook:
                plan = plan_copy(f"{schema}.w", target, mode="append", watermark_column="wm")
                return hook.bulk_copy(plan)["rows"]

        if "icu" in locale.lower():  # the remote sorts by ICU en-US, the target by libc C: refused
            with pytest.raises(FdwConfigError, match=r"(?i)icu"):
                append()
            assert local(pair, "SELECT to_regclass({t})", t=sql.Literal(target)) == [(None,)]
        else:  # C.UTF-8 and C sort alike: each row copied once
            assert ([append(), append()], local(pair, "SELECT count(*) FROM {t}", t=target)[0][0]) == (
                [2, 0],
                2,
            )
    finally:
        pair.source.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(db)))


@pytest.mark.parametrize(
    ("version", "has", "lacks"),
    [
        (140000, ["datcollate"], ["datlocprovider", "daticulocale", "datlocale", "colllocale"]),
        (150000, ["datlocprovider", "daticulocale"], ["datlocale", "colllocale"]),
        (170000, ["datlocprovider", "datlocale", "colllocale"], ["daticulocale"]),
    ],
)
def test_the_collation_probes_read_only_the_columns_the_remote_version_has(version, has, lacks) -> None:
    """Through postgres_fdw a column the remote lacks fails the whole read: each version gets its own
    (the provider came in 15, daticulocale is datlocale from 17)."""
    from airflow_provider_fdw import sql as q

    columns = " ".join(c for _, _, c in q.watermark_collation_probes(version))
    query = repr(q.column_collation_query(through_fdw=True, version=version))
    assert all(c in columns and c in query for c in has)
    assert not any(c in columns.replace("datcollate", "") or c in query for c in lacks)


def test_collations_that_sort_by_bytes_count_as_one() -> None:
    """C, POSIX and C.UTF-8 (code point order: the bytes' order in UTF-8, the only encoding C.UTF-8
    exists for), libc or builtin (PostgreSQL 17's ucs_basic and pg_c_utf8); no other."""
    from airflow_provider_fdw.bulkcopy.inspect import _byte_order

    same = ["libc C", "libc POSIX", "libc C.UTF-8", "libc C.utf8", "builtin C", "builtin C.UTF-8"]
    assert {_byte_order(c) for c in same} == {"bytes"}
    for other in ["libc en_US.UTF-8", "icu C (database default)", "icu und-x-icu", "libc C.latin1"]:
        assert _byte_order(other) == other
