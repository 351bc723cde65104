"""Bulk copies from a foreign table into a local table: replace, append and upsert.

How a copy runs (every mode):

1. Validate the arguments, read the source and target definitions (nothing changed yet; :mod:`.inspect`).
2. Load the rows into a staging table, in ``parallelism`` sessions each reading one key range.
   Rows flow server to server (``INSERT … SELECT`` from a session-private foreign table tuned for
   bulk reads), or, with ``fdw_conn_id``, as a binary ``COPY`` stream relayed in chunks by the worker.
   Nothing is buffered in the worker.
3. Apply the staging table in ONE short transaction (see :mod:`.apply`): ``replace`` swaps it in
   by rename (indexes built after the load, grants/owner/comment copied) or, when something holds
   on to the target, applies the difference in place; ``append`` inserts it; ``upsert`` merges it
   with ``ON CONFLICT … DO UPDATE``. With ``verify`` the rows are checked first (:mod:`.verify`).

Any failure before step 3 commits leaves the target exactly as it was; the staging table (named for
the run, marked with a comment naming the target) is dropped, and a retry drops the marked leftovers
of a killed run first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from airflow_provider_fdw import locks
from airflow_provider_fdw import sql as q
from airflow_provider_fdw.bulkcopy.apply import (
    apply_replace,
    drop_leftovers,
    goes_in_place,
    in_place_reasons,
    mark,
    new_work_table,
    read_definition,
)
from airflow_provider_fdw.bulkcopy.direct import EarlyConnect
from airflow_provider_fdw.bulkcopy.inspect import (
    choose_path,
    inspect_tables,
    needs_ceiling,
    read_ceiling,
    read_conditions,
)
from airflow_provider_fdw.bulkcopy.load import key_ranges, load
from airflow_provider_fdw.bulkcopy.merge import build_indexes, check_finite_watermark, column_defs, merge
from airflow_provider_fdw.bulkcopy.mirror import Mirror, MirrorResult, mirror_plan
from airflow_provider_fdw.bulkcopy.plan import CopyPlan, CopyResult
from airflow_provider_fdw.bulkcopy.relay import PsqlRelay
from airflow_provider_fdw.bulkcopy.state import CopyRun
from airflow_provider_fdw.bulkcopy.steps import StepTimes
from airflow_provider_fdw.cancel import CancelScope, terminate_leftovers
from airflow_provider_fdw.catalog import (
    read_indexes,
    read_oid,
    read_persistence,
)
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.locks import acquire_run_lock, release_run_lock
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.timeouts import (
    DEFAULT_LOCK_RETRIES,
    DEFAULT_TARGET_LOCK_WAIT,
    with_lock_retries,
)


class BulkCopy:
    """One bulk copy: ``run()`` does it; sessions come from ``new_session`` (one per parallel worker).

    The engine holds only its configuration; what a run learns lives in a :class:`.CopyRun`.

    :param remote_connect: when given, a function returning a new connection to the REMOTE database
        (keyword ``client_encoding``), pinned like postgres_fdw's sessions, for the direct COPY path
        (``plan.transport`` "copy"/"auto"); else rows move server to server through postgres_fdw.
    :param psql_relay: on the direct path, relay the rows through two ``psql`` processes.
    :param remote_identity: the libpq parameters ``remote_connect`` uses (no password): compared with
        the foreign server's options so a connection to another database is never read.
    :param scope: the connections and children to cancel when one loader fails (all of them stop).
    :param target_lock_wait: seconds to wait for another copy of the same target.
    :param leftovers: ``application_name`` prefix of an earlier try's sessions, terminated at start.
    :param lock_retries: attempts to apply (each bounded by the plan's ``lock_timeout``).
    :param small_loads_in_process: with ``psql_relay``, relay a one-range load the remote estimates at
        no more than :data:`.load.SMALL_LOAD_ROWS` rows in this process (two psql children and their
        connections cost more than such a load).
    """

    def __init__(
        self,
        plan: CopyPlan,
        new_session: Callable[[], LocalSession],
        log: Any,
        remote_connect: Callable[..., Any] | None = None,
        psql_relay: PsqlRelay | None = None,
        remote_identity: dict[str, Any] | None = None,
        *,
        scope: CancelScope | None = None,
        target_lock_wait: float = DEFAULT_TARGET_LOCK_WAIT,
        leftovers: str | None = None,
        lock_retries: int = DEFAULT_LOCK_RETRIES,
        small_loads_in_process: bool = False,
    ) -> None:
        self.plan = plan
        self.new_session = new_session
        self.log = log
        self.remote_connect = remote_connect
        self.psql_relay = psql_relay
        self.remote_identity = remote_identity
        self.scope = scope or CancelScope()
        self.target_lock_wait = target_lock_wait
        self.leftovers = leftovers
        self.lock_retries = lock_retries
        self.lock_timeout = locks.LockTimeout(plan.lock_timeout, plan.lock_timeout_explicit)
        self.small_loads_in_process = small_loads_in_process

    # -- the whole copy ----------------------------------------------------------------------

    def run(self, session: LocalSession, connect_seconds: float = 0.0) -> CopyResult | MirrorResult:
        """``connect_seconds``: what opening ``session`` took (the caller's), counted as step "connect".
        ``session`` must be outside a transaction block (the copy runs in transactions of its own)."""
        locks.refuse_inside_transaction(session, self.plan.target)
        started = time.monotonic()
        steps = StepTimes()
        steps.add("connect", connect_seconds)
        lock_key = locks.lock_key("copy", str(self.plan.target))
        try:
            if self.leftovers:  # a killed try's sessions would hold the lock and the staging table
                with steps.step("connect"):
                    terminate_leftovers(session, self.leftovers, self.log)
            if self.plan.mode == "mirror":  # its own engine: checksums and bisection, no staging load
                return self._mirror(session)
            # Two runs on one target (a retry racing a slow attempt) take turns, for a bounded time.
            with steps.step("lock"):
                acquire_run_lock(session, lock_key, self.target_lock_wait, self.log)
            try:
                return self._run(session, started, steps)
            except BaseException:
                self.scope.cancel()  # a time-out or kill in this thread: stop the statements still running
                raise
            finally:
                release_run_lock(session, lock_key, self.log)
        finally:  # also when the copy fails: where the time went is part of the diagnosis
            steps.log(self.log, time.monotonic() - started + connect_seconds)

    def _mirror(self, session: LocalSession) -> MirrorResult:
        mirror = Mirror(
            mirror_plan(self.plan),
            self.log,
            self.target_lock_wait,
            self.new_session,
            self.lock_retries,
            self.remote_connect,
            self.remote_identity,
        )
        try:
            return mirror.run(session)
        except BaseException:
            self.scope.cancel()
            raise

    def _run(self, session: LocalSession, started: float, steps: StepTimes) -> CopyResult:
        p = self.plan
        # the remote connection opens meanwhile; closed on leaving the block unless the path took it
        with (
            EarlyConnect.start(self.remote_connect, p, session) or nullcontext() as early,
            steps.step("catalog"),
        ):
            run = inspect_tables(self, session)
            try:
                choose_path(self, session, run, keep_remote=True, connect=early)
            except BaseException:
                run.close_remote()
                raise
        try:
            return self._run_path(session, run, started, steps)
        finally:
            run.close_remote()  # the planning connection, unless the snapshot holder took it

    def _run_path(self, session: LocalSession, run: CopyRun, started: float, steps: StepTimes) -> CopyResult:
        p = self.plan
        run.steps = steps
        with steps.step("catalog" if p.mode == "replace" or not p.watermark_column else "watermark"):
            # before the first range reads: ranges through postgres_fdw read at different times
            ceiling = (
                read_ceiling(self, session, run) if needs_ceiling(p, run.result.path, p.parallelism) else None
            )
            run.conditions = read_conditions(self, session, run, ceiling)
        # The direct path reads the remote table itself: checksummed by the direct connection, not planned.
        is_foreign = run.source.is_foreign and run.direct is None
        with steps.step("verify" if run.verifier.enabled else "catalog"):
            run.verifier.prepare(session, run.source.oid, p.source, is_foreign, run.columns, run.conditions)
        with steps.step("staging"):
            self._prepare_staging(session, run)
        try:
            with steps.step("load"):
                load(self, run, key_ranges(self, run, session), session)
            self._apply(session, run)
        except BaseException:
            self._drop_staging(session, run)
            raise
        r = run.result
        r.seconds = time.monotonic() - started
        r.steps = steps.summary()
        self.log.info(
            "Copied %d rows (%.1f MB) from %s to %s in %.2fs (%s, %s path, parallelism %d, swap %s, "
            "inserted %s, updated %s, deleted %s, unchanged %s)",
            r.rows,
            r.bytes / 1e6,
            p.source,
            p.target,
            r.seconds,
            p.mode,
            r.path,
            p.parallelism,
            r.swap,
            r.inserted,
            r.updated,
            r.deleted,
            r.unchanged,
        )
        r.verification = run.verifier.result()
        return r

    # -- step 2: staging (the inspect step, 1, is :mod:`.inspect`; the load itself :mod:`.load`) ------

    def _prepare_staging(self, s: LocalSession, run: CopyRun, name: QualifiedName | None = None) -> None:
        """Create the staging table, named for this run and marked as the provider's.

        ``replace`` by rename: like the target, indexes dropped until after the load. ``replace`` in
        place, append, upsert: an UNLOGGED table with the target's column types (applied, then dropped).
        """
        p, target = self.plan, run.target
        with s.transaction():
            drop_leftovers(s, p.target, self.log)  # only tables marked for this target: never a user's
            # ``name``: the partitioned copy's, fixed by the DAG run (its leftover was dropped just above)
            staging = run.staging = name or new_work_table(s, p.target, "staging")
            if p.mode == "replace" and target is not None:
                run.in_place = goes_in_place(p.swap, in_place_reasons(s, target.oid), p.target)
            if run.in_place:
                assert target is not None
                defs = [
                    (c, target.columns[c].type_sql, target.columns[c].collation, False) for c in run.columns
                ]
                s.execute(f"create staging table {staging}", q.create_table(staging, defs, unlogged=True))
            elif p.mode == "replace" and target is not None:
                # LIKE does not copy persistence: an UNLOGGED target must stay unlogged after the swap
                unlogged = read_persistence(s, target.oid) == "u"
                # read before LIKE: a change committed in between then fails the swap, never is lost
                run.definition = read_definition(s, target.oid)
                s.execute(
                    f"create staging table {staging}",
                    q.create_table_like(staging, p.target, unlogged=unlogged),
                )
                run.deferred_indexes = read_indexes(s, read_oid(s, staging, "staging"), "staging indexes")
                for index in run.deferred_indexes:
                    if index.constraint:
                        s.execute(
                            "defer constraint", q.drop_constraint(staging, index.constraint), quiet=True
                        )
                    else:
                        s.execute("defer index", q.drop_index(staging.schema, index.name), quiet=True)
            else:
                defs = column_defs(run.source, run.columns)
                run.staging_not_null = frozenset(name for name, _, _, not_null in defs if not_null)
                # append/upsert stage a delta that is applied and dropped: no WAL needed for it.
                s.execute(
                    f"create staging table {staging}",
                    q.create_table(staging, defs, unlogged=p.mode != "replace"),
                )
            mark(s, staging, p.target)

    def _drop_staging(self, s: LocalSession, run: CopyRun) -> None:
        s.rollback()
        try:
            with s.transaction():
                s.execute("drop staging table", q.drop_table(run.staging_table), quiet=True)
        except FdwError as exc:  # the original error matters more; a retry drops the leftover
            self.log.warning("Could not drop %s: %s", run.staging, exc)

    # -- step 3: apply ---------------------------------------------------------------------------

    def _apply(self, s: LocalSession, run: CopyRun) -> None:
        p, staging, result, steps = self.plan, run.staging_table, run.result, run.steps
        with steps.step("catalog"), s.transaction():
            oid = read_oid(s, staging, "staging")
            result.bytes = int(s.fetchvalue("measure staging", q.RELATION_SIZE_QUERY, (oid,)))
        with steps.step("verify" if run.verifier.enabled else "catalog"):
            run.verifier.check_loaded(s, staging, str(p.target))
        if p.mode != "replace" and p.watermark_column:
            # before the merge: the target must never get a bound at infinity
            with steps.step("watermark"), s.transaction():
                check_finite_watermark(s, staging, p.watermark_column, f"The new rows for {p.target}")
        if p.mode == "replace":
            if not run.in_place:
                build_indexes(self, run, s)  # times "index" and "analyze" itself
            with steps.step("apply"):
                result.swap, counts = with_lock_retries(
                    lambda: apply_replace(
                        s,
                        staging,
                        p.target,
                        swap=p.swap,
                        staging_indexed=not run.in_place,
                        key_columns=p.key_columns,
                        columns=run.columns,
                        staged_rows=result.rows,
                        lock_timeout=self.lock_timeout,
                        log=self.log,
                        verify_target=run.verifier.check_target,
                        definition=run.definition,
                        feed=run.feed,
                    ),
                    self.lock_retries,
                    f"swap into {p.target}",
                    self.log,
                    lambda: locks.autovacuum_holding(s, p.target),
                )
            result.inserted, result.updated = counts.inserted, counts.updated
            result.deleted, result.unchanged = counts.deleted, counts.unchanged
        else:
            with steps.step("apply"):
                with_lock_retries(
                    lambda: merge(self, run, s),
                    self.lock_retries,
                    f"{p.mode} into {p.target}",
                    self.log,
                    lambda: locks.autovacuum_holding(s, p.target),
                )
