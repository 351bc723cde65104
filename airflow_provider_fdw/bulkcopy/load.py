"""Step 2 of a copy: load the rows into the staging table, one session per key range.

Through postgres_fdw (``INSERT … SELECT`` from a private bulk-read foreign table) or, on the direct
path, ``COPY`` from the remote relayed into ``COPY`` on the local side, every range in one snapshot.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.bulkcopy import ctid
from airflow_provider_fdw.bulkcopy.direct import pinned_locally
from airflow_provider_fdw.bulkcopy.plan import NO_SPLIT_COLUMN
from airflow_provider_fdw.bulkcopy.relay import PsqlRelay, SwallowedCopyErrors, copy_stream
from airflow_provider_fdw.bulkcopy.remote_session import RemoteSessionWatch
from airflow_provider_fdw.bulkcopy.snapshot import SnapshotHolder, source_lock
from airflow_provider_fdw.bulkcopy.state import CopyRun
from airflow_provider_fdw.catalog import foreign_readers, read_oid
from airflow_provider_fdw.compat import backend_pid
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.progress import Progress, estimate_source_rows
from airflow_provider_fdw.refresh import bounded_name
from airflow_provider_fdw.session import LocalSession, describe
from airflow_provider_fdw.timeouts import LOCK_NOT_AVAILABLE
from airflow_provider_fdw.wrappers import bulk_read_options

if TYPE_CHECKING:
    from airflow_provider_fdw.bulkcopy.engine import BulkCopy

LOAD_STATE_QUERY = q.sql.SQL("SELECT state FROM pg_stat_activity WHERE pid = %s")
INTEGER_TYPES = ("smallint", "integer", "bigint")
# A one-range direct load the remote estimates at no more rows is relayed in-process: two psql
# children and their connections cost more below it (1M-row pair, whole appends, median of 5:
# 10,000 rows 0.066 s in-process vs 0.100 s via psql, 40,000 rows 0.150 s vs 0.150 s, 80,000 rows
# 0.260 s vs 0.307 s; a 200,000-row full copy favours psql. docs/performance.md, "the fixed cost of a run").
SMALL_LOAD_ROWS = 50_000


def key_ranges(copy: BulkCopy, run: CopyRun, s: LocalSession) -> list[Any]:
    """Split conditions for the parallel sessions: key ranges over [min, max] of the split column."""
    p = copy.plan
    if p.parallelism == 1:
        return [None]
    if run.direct is not None and not integer_split(copy, run):
        return ctid.direct_ranges(copy, run)  # no integer column: ranges of blocks, one snapshot
    check_split_column(copy, run)
    bounds = range_bounds(copy, run, s, p.parallelism)
    if len(bounds) == 1:  # no rows: one range reads whatever is there
        return [None]
    assert p.split_column is not None
    return [
        q.range_predicate(p.split_column, low, high, include_nulls=(i == 0))
        for i, (low, high) in enumerate(bounds)
    ]


def range_bounds(
    copy: BulkCopy, run: CopyRun, s: LocalSession, parts: int
) -> list[tuple[int | None, int | None]]:
    """``parts`` ranges ``[low, high)`` over [min, max] of the split column, the first and last open
    (rows outside the range read, e.g. inserted meanwhile, are not lost); one open range when there
    are no rows. Plain numbers: the partitioned copy passes them between tasks."""
    p = copy.plan
    if parts == 1 or p.split_column is None:
        return [(None, None)]
    check_split_column(copy, run)
    finite = list(run.conditions)
    with s.transaction():
        low, high = _min_max(s, p.source, p.split_column, finite)
        # numeric NaN / ±Infinity cannot bound a range: split the finite values (open ends read the rest)
        while low is not None and not all(math.isfinite(v) for v in (low, high)):
            if not math.isfinite(high):
                finite.append(
                    q.sql.SQL("{} < {}").format(q.sql.Identifier(p.split_column), q.sql.Literal(high))
                )
            else:
                finite.append(
                    q.sql.SQL("{} > {}").format(q.sql.Identifier(p.split_column), q.sql.Literal(low))
                )
            low, high = _min_max(s, p.source, p.split_column, finite)
    if low is None:
        return [(None, None)]
    low, high = int(low), int(high)
    step = max(1, -(-(high - low + 1) // parts))
    bounds: list[int | None] = [low + i * step for i in range(parts)] + [None]
    bounds[0] = None
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def integer_split(copy: BulkCopy, run: CopyRun) -> bool:
    column = copy.plan.split_column
    if column is None:
        return False
    type_sql = run.source.columns[column].type_sql
    return type_sql in INTEGER_TYPES or type_sql.startswith("numeric")


def check_split_column(copy: BulkCopy, run: CopyRun) -> None:
    """Ranges of a column must be ranges of an integer column (ctid ranges need the direct path)."""
    p = copy.plan
    if p.split_column is None:
        raise FdwConfigError(NO_SPLIT_COLUMN)
    if not integer_split(copy, run):
        raise FdwConfigError(
            f"parallelism splits by ranges of an integer column; {p.split_column} is "
            f"{run.source.columns[p.split_column].type_sql}. Pass split_column= with an integer column "
            "(transport='copy' splits any table by ctid)."
        )


def _min_max(s: LocalSession, table: QualifiedName, column: str, conditions: list[Any]) -> tuple[Any, Any]:
    row = s.fetchone("read key range", q.min_max(table, column, conditions))
    return (None, None) if row is None else (row[0], row[1])


def load(copy: BulkCopy, run: CopyRun, ranges: list[Any], session: LocalSession | None = None) -> None:
    """Load every range into staging; the direct path reads them all in one exported snapshot.

    ``session``: the copy's own session (idle), which loads a single range itself (no second local
    session and, on the FDW path, no second postgres_fdw connection to the remote).
    """
    if run.direct is None:
        load_ranges(copy, run, ranges, session)
        return
    assert copy.remote_connect is not None and run.source.remote is not None
    run.relay_in_process = relays_in_process(copy, run, ranges)
    run.sole_reader = len(ranges) == 1 and not run.verifier.enabled
    # One loader, into the table that becomes the target: it truncates the (empty) staging table in
    # its own transaction, which lets COPY write the rows frozen and all-visible. The index build and
    # ANALYZE then set no hint bits, and the swapped-in table needs no freezing pass later.
    run.freeze = len(ranges) == 1 and copy.plan.mode == "replace" and not run.in_place
    run.snapshot = SnapshotHolder(
        copy.remote_connect,
        run.direct.client_encoding,
        copy.leftovers,
        copy.log,
        conn=run.take_remote(),
        lock=source_lock(copy, run),
    )
    try:
        if run.verifier.enabled:  # verify counts the source in the same snapshot
            remote_name = {c: run.source.columns[c].remote_name for c in run.columns}
            run.snapshot.start_count(
                run.verifier.remote_select(run.source.remote, remote_name, run.conditions)
            )
        load_ranges(copy, run, ranges, session)
        if run.verifier.enabled:
            run.verifier.add_counted(*run.snapshot.counted())
    finally:
        run.snapshot.close()  # after every range read: the snapshot is no longer needed


def relays_in_process(copy: BulkCopy, run: CopyRun, ranges: list[Any]) -> bool:
    """Whether this load skips the psql relay: one range the remote estimates at few rows."""
    if copy.psql_relay is None or not copy.small_loads_in_process or len(ranges) != 1:
        return False
    if run.estimated_rows is None or run.estimated_rows > SMALL_LOAD_ROWS:
        return False
    copy.log.info(
        "Direct COPY of ~%d rows (the remote's estimate): relayed in this process, not through psql "
        "(two psql processes and their connections cost more than they save below %d rows).",
        run.estimated_rows,
        SMALL_LOAD_ROWS,
    )
    return True


def _psql_relay(copy: BulkCopy, run: CopyRun) -> PsqlRelay | None:
    return None if run.relay_in_process else copy.psql_relay


def load_ranges(copy: BulkCopy, run: CopyRun, ranges: list[Any], session: LocalSession | None = None) -> None:
    """Load ``ranges`` (conditions, None: everything) into ``run.staging``, one session each, in
    ``run.snapshot`` when set (the direct path); a single range in ``session`` when given."""
    shared = session if len(ranges) == 1 else None
    p, result = copy.plan, run.result
    monitors: list[LocalSession] = []  # the probe's session, opened at its first use (10 s in)

    def monitor_value(step: str, query: Any) -> int:
        if not monitors:
            monitors.append(copy.new_session())
        with monitors[0].transaction():
            oid = read_oid(monitors[0], run.staging_table, "staging")
            return int(monitors[0].fetchvalue(step, query, (oid,)))

    def probe() -> int:  # INSERT … SELECT counts its rows only at the end: watch staging grow
        return monitor_value("measure staging", q.RELATION_SIZE_QUERY)

    def counter() -> int:  # psql reports its rows only at the end: read the server's COPY progress
        return monitor_value("read copy progress", q.COPY_PROGRESS_QUERY)

    # Percent and ETA against the remote's reltuples, for copies of the whole table only.
    estimate = (
        None
        if run.conditions
        else lambda: estimate_source_rows(
            copy.new_session,
            p.source,
            run.source.server_name,
            run.source.remote,
            copy.remote_connect,
            run.source.relation.wrapper,
        )
    )
    progress = Progress(
        copy.log,
        str(p.source),
        str(p.target),
        probe=probe if result.path == "fdw" else None,
        counter=counter if result.path == "direct" and _psql_relay(copy, run) else None,
        estimate=estimate,
    )
    with progress, ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="fdw-copy") as pool:
        futures = [
            pool.submit(
                _load_range, copy, run, run.conditions + ([r] if r is not None else []), progress, shared
            )
            for r in ranges
        ]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # execution_timeout / kill while waiting: stop the loaders now
            copy.scope.cancel()
            raise
        # The first failure (in time) is the error; the other ranges are cancelled at once.
        first = next((f.exception() for f in futures if f in done and f.exception()), None)
        if first is not None:
            copy.scope.cancel_until_done(futures)
        errors = [f.exception() for f in futures]
    for monitor in monitors:  # the reporting thread has ended (Progress.__exit__)
        monitor.close()
    failures = [e for e in errors if e is not None]
    if failures:
        first = first or failures[0]
        server = f" from server {run.source.server_name!r}" if run.source.server_name else ""
        why = describe(first)
        lock = getattr(run.snapshot, "lock", None)
        if lock is not None and (
            getattr(first, "sqlstate", None) == LOCK_NOT_AVAILABLE or "lock timeout" in why
        ):
            why = lock.refused(why)  # a reader queued behind an exclusive lock request on the source
        raise FdwError(
            f"Copy {p.source} -> {p.target}{server} failed while loading rows: {why}",
            step="load",
            sqlstate=getattr(first, "sqlstate", None),
        ) from None
    result.rows = sum(f.result() for f in futures)
    progress.finish(result.rows)


def _load_range(
    copy: BulkCopy, run: CopyRun, conditions: list[Any], progress: Progress, shared: LocalSession | None
) -> int:
    s = shared or copy.new_session()
    stop, fired = threading.Event(), threading.Event()
    swallowed = SwallowedCopyErrors()
    try:
        if run.result.path == "direct":
            if _psql_relay(copy, run) is None:  # the in-process relay learns of a local error only at the end
                threading.Thread(target=_watch_load, args=(copy, s, stop, fired), daemon=True).start()
            with swallowed:
                return _copy_direct(copy, run, s, conditions, progress)
        rows = _copy_through_fdw(copy, run, s, conditions)
        progress.add(rows)
        return rows
    except Exception:
        local = swallowed.first()
        if fired.is_set() and local is not None:  # the local refusal is the cause, not the cancel
            raise FdwError(
                f"writing the staging table failed: {describe(local)}", step="copy into staging"
            ) from None
        raise
    finally:
        stop.set()
        if shared is None:  # the copy's own session lives on (apply, clean-up)
            s.close()


def _watch_load(copy: BulkCopy, s: LocalSession, stop: threading.Event, fired: threading.Event) -> None:
    """When the local COPY fails (its session turns "idle in transaction (aborted)") while the
    remote still streams, cancel the copy's statements so the remote read stops at once."""
    try:
        pid = backend_pid(s.conn)
        if stop.wait(0.5):  # a short load ends before the first look: no session opened for it
            return
        monitor = copy.new_session()
    except Exception:  # no watcher: the error still arrives, only later
        return
    try:
        while True:
            with monitor.transaction():
                row = monitor.fetchone("watch load", LOAD_STATE_QUERY, (pid,))
            if row and row[0] == "idle in transaction (aborted)" and not stop.is_set():
                fired.set()
                copy.scope.cancel()
                return
            if stop.wait(0.5):
                return
    except Exception:  # best effort, like the rest of the clean-up
        return
    finally:
        monitor.close()


def _copy_through_fdw(copy: BulkCopy, run: CopyRun, s: LocalSession, conditions: list[Any]) -> int:
    p, source, staging = copy.plan, run.source, run.staging_table
    with run.reading_source(s):  # its time zone, and a file's encoding (state.py)
        read_from = p.source
        if source.is_foreign:
            assert source.remote is not None and source.server_name is not None
            # A private foreign table with a bulk fetch_size: the user's table keeps its options.
            read_from = QualifiedName("pg_temp", bounded_name("fdw_bulk", p.source.name))
            defs = [(name, c.type_sql, c.collation, dict(c.options)) for name, c in source.columns.items()]
            options = bulk_read_options(
                source.relation.wrapper, source.relation.options, source.remote, p.fetch_size
            )
            s.execute(
                "create bulk-read foreign table",
                q.create_temp_foreign_table(read_from.name, source.server_name, defs, options),
                quiet=True,
            )
        # every server read: a view's foreign tables, a partitioned table's foreign partitions too
        watches = [
            watch
            for wrapper, server, reader in foreign_readers(s, source)
            if (watch := RemoteSessionWatch.start(s, wrapper, server, p.source, copy.log, reader)) is not None
        ]
        cur = s.execute(f"load {staging}", q.insert_select(staging, run.columns, read_from, conditions))
        rows = int(cur.rowcount)
        for watch in watches:
            watch.check(rows)
        run.verifier.add_source(s, read_from, conditions)  # same transaction: same remote snapshot
        if source.is_foreign:
            s.execute("drop bulk-read foreign table", q.drop_remote_probe(read_from.name), quiet=True)
    return rows


def _copy_direct(
    copy: BulkCopy, run: CopyRun, s: LocalSession, conditions: list[Any], progress: Progress
) -> int:
    """COPY from the remote into COPY on the local side, relayed without buffering.

    Binary or text as :func:`~airflow_provider_fdw.bulkcopy.direct.plan_direct` chose; both sessions
    speak the local database's encoding, as postgres_fdw's do.
    """
    assert copy.remote_connect is not None and run.source.remote is not None and run.direct is not None
    binary, encoding = run.direct.binary, run.direct.client_encoding
    remote_columns = [run.source.columns[c].remote_name for c in run.columns]
    out_stmt = q.select_for_copy(run.source.remote, remote_columns, conditions, binary)
    in_stmt = q.copy_from_stdin(run.staging_table, run.columns, binary, freeze=run.freeze)
    truncate = [q.truncate(run.staging_table)] if run.freeze else []
    psql_relay = _psql_relay(copy, run)
    if psql_relay is not None:
        relay = replace(
            psql_relay,
            remote={**psql_relay.remote, "client_encoding": encoding},
            local={**psql_relay.local, "client_encoding": encoding},
        )
        first = []
        if run.snapshot is not None:  # psql runs no implicit BEGIN: open the transaction itself
            first = [s.render(q.BEGIN_SNAPSHOT_READ), *map(s.render, run.snapshot.reader_statements()[1:])]
        load = [q.BEGIN, *truncate, in_stmt, q.COMMIT] if truncate else [in_stmt]  # one transaction
        return relay.copy(s.render(out_stmt), [s.render(statement) for statement in load], first)
    # The only reader, with no count in the background: read on the holder's connection itself.
    holder = run.snapshot if isinstance(run.snapshot, SnapshotHolder) and run.sole_reader else None
    remote = holder.lend() if holder is not None else copy.remote_connect(client_encoding=encoding)
    try:
        if holder is None:  # before the COPY, in the implicit transaction
            statements = run.snapshot.reader_statements() if run.snapshot is not None else [pinned_locally()]
            with remote.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        with s.transaction():
            s.execute("set client_encoding", q.set_local("client_encoding", encoding), quiet=True)
            for statement in truncate:
                s.execute("truncate staging (to load it frozen)", statement, quiet=True)
            return copy_stream(remote, s.conn, out_stmt, in_stmt, progress)
    finally:
        if holder is None:  # a lent connection is the holder's to close
            remote.close()
