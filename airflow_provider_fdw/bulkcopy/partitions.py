"""Mapped partitions: one large copy split into Airflow tasks that run on different workers.

The steps of :class:`~airflow_provider_fdw.bulkcopy.engine.BulkCopy`, each in its own task:

1. :func:`prepare` (one task): check the arguments and both tables, create ONE staging table named
   after the DAG run (not the try: every try and every mapped task of the run finds it), split the
   source into key ranges over ``split_column``. Nothing of the target changes.
2. :func:`hold_snapshot` (one task, direct path only): export a snapshot on the remote, publish its
   id, and keep its transaction open until the apply task has finished (or a time-out): an exported
   snapshot can be imported only while its exporting transaction is open.
3. :func:`load_range` (one mapped task per range, on any worker): delete the range's rows from the
   staging table (what an earlier try of this range committed), then load the range, in the
   exported snapshot on the direct path. Retrying one range redoes only that range.
4. :func:`apply` (one task): the engine's apply, in one short transaction (swap by rename, in place,
   append or upsert), exactly as an unpartitioned copy applies its staging table.

State passes between the tasks as plain data (:class:`PartitionedState`, JSON for XCom); SQL is
rebuilt from it in each task, never carried as text.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from airflow_provider_fdw import locks
from airflow_provider_fdw import sql as q
from airflow_provider_fdw.bulkcopy.apply import marker
from airflow_provider_fdw.bulkcopy.engine import BulkCopy
from airflow_provider_fdw.bulkcopy.inspect import (
    Ceiling,
    choose_path,
    inspect_tables,
    needs_ceiling,
    read_ceiling,
    read_conditions,
    reads_a_file,
)
from airflow_provider_fdw.bulkcopy.load import load_ranges, range_bounds
from airflow_provider_fdw.bulkcopy.snapshot import ImportedSnapshot, SnapshotHolder, source_lock
from airflow_provider_fdw.bulkcopy.state import CopyRun
from airflow_provider_fdw.bulkcopy.watermark import TableFiles
from airflow_provider_fdw.cancel import terminate_leftovers
from airflow_provider_fdw.catalog import Index, foreign_reads
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.file_tables import check_one_reader
from airflow_provider_fdw.locks import acquire_run_lock, release_run_lock
from airflow_provider_fdw.names import QualifiedName, parse_qualified_name
from airflow_provider_fdw.refresh import bounded_name
from airflow_provider_fdw.session import LocalSession

DEFAULT_SNAPSHOT_TIMEOUT = 3600.0  # seconds the holder keeps the snapshot for the ranges and retries
DEFAULT_SNAPSHOT_WAIT = 600.0  # seconds a range waits for the holder to publish the snapshot
POLL_SECONDS = 2.0
# Seconds a session may wait for the holder's lock on the source before the holder gives way (it is
# seen waiting on two polls in a row): about what readers queue behind the copy's own swap.
GIVE_WAY_SECONDS = POLL_SECONDS


@dataclass(frozen=True)
class PartitionedState:
    """What :func:`prepare` decided, for the other tasks of the run (JSON-safe: XCom)."""

    staging: str
    path: str  # "fdw" or "direct"
    in_place: bool
    deferred_indexes: list[dict[str, Any]]  # catalog.Index fields: rebuilt on staging before the swap
    definition: str | None  # the target's, which the staging table was made like (checked at the swap)
    ranges: list[list[Any]]  # [low, high) of split_column per range; None: open end
    split_column: str | None
    # fdw path, append/upsert: [the source's max(watermark) as text] read by prepare (inspect.Ceiling)
    watermark_ceiling: list[str | None] | None = None
    # append/upsert into an existing target: its files when prepare read the start (CopyRun.start_files,
    # TableFiles.to_json): every task reads the same start only from the same table
    start_files: list[Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> PartitionedState:
        if not isinstance(data, dict) or set(data) != {f.name for f in fields(cls)}:
            raise FdwError(
                "The prepare task's state is missing or not a partitioned copy's: run the whole task "
                "group again (clear it from its prepare task).",
                step="read partition state",
            )
        return cls(**data)

    def range_condition(self, index: int) -> Any:
        """The predicate of range ``index`` (NULL split values belong to the first range)."""
        if not 0 <= index < len(self.ranges):
            raise FdwConfigError(f"partition {index} does not exist: this run has {len(self.ranges)} ranges.")
        low, high = self.ranges[index]
        if self.split_column is None:
            return q.sql.SQL("true")
        return q.range_predicate(self.split_column, low, high, include_nulls=index == 0)

    def ceiling(self) -> Ceiling | None:
        return None if self.watermark_ceiling is None else Ceiling(*self.watermark_ceiling)

    def check_start(self, run: CopyRun, target: QualifiedName) -> None:
        """Refuse a task whose target is no longer the table prepare read the start from (a TRUNCATE
        between the tasks); the apply then checks prepare's files again under its write's lock."""
        if self.start_files is None:
            return
        start = TableFiles.from_json(self.start_files)
        if run.start_files is None or start.rewritten_in(run.start_files):
            raise FdwError(
                f"{target} (or one of its partitions or children) was emptied or rewritten (TRUNCATE, "
                "VACUUM FULL, CLUSTER, or the table made again) after the prepare task read where this "
                "copy starts. Nothing was changed: run the whole task group again (clear it from its "
                "prepare task).",
                step="check target storage",
            )
        run.start_files = start

    def indexes(self) -> list[Index]:
        return [Index(**{**i, "columns": tuple(i["columns"])}) for i in self.deferred_indexes]


def staging_name(target: QualifiedName, run_key: str) -> QualifiedName:
    """The run's staging table: ``<target>_fdw_part_<hash of the DAG run>`` (same for every try)."""
    digest = hashlib.sha256(run_key.encode()).hexdigest()[:10]
    return QualifiedName(target.schema, bounded_name(target.name, "fdw", "part", digest))


# -- 1. prepare ----------------------------------------------------------------------------------------


def prepare(copy: BulkCopy, session: LocalSession, run_key: str, partitions: int) -> PartitionedState:
    """Check everything, create the run's staging table (dropping a marked leftover of an earlier run
    on this target) and split the source into ``partitions`` ranges."""
    p = copy.plan
    if p.verify not in (None, "off"):
        raise FdwConfigError("verify is not available for a partitioned copy (each range reads on its own).")
    if partitions > 1 and p.split_column is None:
        raise FdwConfigError("A partitioned copy splits by key ranges: pass key_columns or split_column.")
    lock_key = locks.lock_key("copy", str(p.target))
    if copy.leftovers:
        terminate_leftovers(session, copy.leftovers, copy.log)
    acquire_run_lock(session, lock_key, copy.target_lock_wait, copy.log)
    try:
        run = inspect(copy, session)
        # every load reads in its own remote transaction, minutes apart: read the ceiling once, here
        ceiling = read_ceiling(copy, session, run) if needs_ceiling(p, run.result.path, partitions) else None
        if partitions > 1 and run.result.path == "fdw":
            copy.log.info(
                "Partitioned copy through postgres_fdw: each of the %d loads reads in its own remote "
                "transaction, when its task runs, so rows changed on the source meanwhile may be seen by "
                "one range and not another (transport='copy' reads every range in one snapshot).",
                partitions,
            )
        if partitions > 1 and reads_a_file(foreign_reads(session, run.source)):
            check_one_reader(p.source, partitions)
        copy._prepare_staging(session, run, staging_name(p.target, run_key))
        try:
            ranges = range_bounds(copy, run, session, partitions)
        except BaseException:
            copy._drop_staging(session, run)
            raise
    finally:
        release_run_lock(session, lock_key, copy.log)
    state = PartitionedState(
        str(run.staging_table),
        run.result.path,
        run.in_place,
        [asdict(i) for i in run.deferred_indexes],
        run.definition,
        [list(r) for r in ranges],
        p.split_column,
        None if ceiling is None else [ceiling.top],
        None if run.start_files is None else run.start_files.to_json(),
    )
    copy.log.info(
        "Partitioned copy %s -> %s: staging table %s, %d ranges of %s, %s path",
        p.source,
        p.target,
        state.staging,
        len(ranges),
        p.split_column,
        state.path,
    )
    return state


def inspect(copy: BulkCopy, session: LocalSession, ceiling: Ceiling | None = None) -> CopyRun:
    """The engine's step 1 (each task repeats it: cheap catalog reads, and the same answers);
    ``ceiling``: the one prepare read, for the loads."""
    run = inspect_tables(copy, session)
    if run.verifier.enabled:  # chosen for the source (verify.choose_verifier): ranges cannot count
        raise FdwConfigError(
            f"A partitioned copy cannot verify (each range reads on its own), and {copy.plan.source}'s "
            "wrapper can end a read early, as if the table ended, at a binary value it copies: copy it "
            "unpartitioned (counted by default), or pass verify='off' to copy it unverified."
        )
    choose_path(copy, session, run)
    run.conditions = read_conditions(copy, session, run, ceiling)
    return run


# -- 2. the snapshot holder (direct path) --------------------------------------------------------------


def hold_snapshot(
    copy: BulkCopy,
    session: LocalSession,
    state: PartitionedState,
    publish: Callable[[str | None], None],
    finished: Callable[[], bool],
    timeout: float = DEFAULT_SNAPSHOT_TIMEOUT,
) -> dict[str, Any]:
    """Export the snapshot every range reads, ``publish`` its id, and keep it until ``finished()``
    (the apply task ended), the staging table is gone, or ``timeout`` seconds passed."""
    if state.path != "direct":
        publish(None)  # the fdw path: each range reads in its own remote transaction
        return {"snapshot": None, "held_seconds": 0.0}
    run = inspect(copy, session)
    assert copy.remote_connect is not None and run.direct is not None
    holder = SnapshotHolder(
        copy.remote_connect, run.direct.client_encoding, copy.leftovers, copy.log, lock=source_lock(copy, run)
    )
    started = time.monotonic()
    try:
        publish(holder.id)
        copy.log.info("Exported snapshot %s for the ranges of %s; holding it", holder.id, state.staging)
        staging = parse_qualified_name(state.staging, "staging")
        waiting_since: float | None = None
        while time.monotonic() - started < timeout:
            with session.transaction():
                gone = session.fetchone("watch staging", q.RELATION_QUERY, staging) is None
            if gone or finished():
                break
            # Held between loads minutes apart, the lock would keep an ALTER/TRUNCATE of the source
            # waiting, and every reader of the source queued behind it: give way to it.
            blocked = holder.blocked()
            if not blocked:
                waiting_since = None
            elif waiting_since is None:
                waiting_since = time.monotonic()
            elif time.monotonic() - waiting_since >= GIVE_WAY_SECONDS:
                raise FdwError(
                    f"Released snapshot {holder.id} of {copy.plan.source}: {blocked} waited for its lock on "
                    "the source (ALTER TABLE, TRUNCATE, VACUUM FULL …), and every other reader of the "
                    "source would have queued behind it until this copy ends. Ranges not loaded yet cannot "
                    "import the snapshot now: clear the whole task group to copy again once it is done.",
                    step="hold snapshot",
                )
            time.sleep(POLL_SECONDS)
        else:
            copy.log.warning(
                "Released snapshot %s after %.0fs (snapshot_timeout): a range (re)tried from now on "
                "cannot import it; clear the whole task group to copy again.",
                holder.id,
                timeout,
            )
    finally:
        holder.close()
    return {"snapshot": holder.id, "held_seconds": round(time.monotonic() - started, 1)}


# -- 3. one range --------------------------------------------------------------------------------------


def load_range(
    copy: BulkCopy,
    session: LocalSession,
    state: PartitionedState,
    index: int,
    snapshot_id: Callable[[], str | None],
) -> dict[str, Any]:
    """Remove range ``index`` from the staging table (an earlier try's rows), then load it."""
    p = copy.plan
    started = time.monotonic()
    if copy.leftovers:  # a killed try's load may still hold its rows' locks: end it first
        terminate_leftovers(session, copy.leftovers, copy.log)
    staging = existing_staging(session, state, p.target)
    run = inspect(copy, session, state.ceiling())
    state.check_start(run, p.target)
    if run.result.path != state.path:
        raise FdwError(
            f"This range would read through the {run.result.path} path, the prepare task chose "
            f"{state.path}: the connections changed; run the whole task group again.",
            step="load range",
        )
    run.staging = staging
    condition = state.range_condition(index)
    with session.transaction():
        removed = session.execute(f"remove range {index} from {staging}", q.delete_where(staging, condition))
    if removed.rowcount:
        copy.log.info(
            "Removed %d rows of range %d an earlier try loaded into %s", removed.rowcount, index, staging
        )
    if state.path == "direct":
        sid = snapshot_id()
        if not sid:
            raise FdwError("The snapshot holder published no snapshot.", step="wait for snapshot")
        run.snapshot = ImportedSnapshot(sid, source_lock(copy, run))
    load_ranges(copy, run, [condition])
    low, high = state.ranges[index]
    copy.log.info(
        "Loaded range %d (%s from %s to %s) of %s: %d rows in %.2fs",
        index,
        state.split_column,
        low,
        high,
        p.source,
        run.result.rows,
        time.monotonic() - started,
    )
    return {
        "partition": index,
        "low": low,
        "high": high,
        "rows": run.result.rows,
        "removed": removed.rowcount,
    }


def existing_staging(session: LocalSession, state: PartitionedState, target: QualifiedName) -> QualifiedName:
    """The run's staging table, which must still be there and marked for ``target``."""
    staging = parse_qualified_name(state.staging, "staging")
    with session.transaction():
        row = session.fetchone("read staging", q.RELATION_QUERY, staging)
    if row is None or row[3] != marker(target):
        raise FdwError(
            f"The staging table {staging} of this run is gone (applied, or dropped by a later run on "
            f"{target}): run the whole task group again.",
            step="find staging table",
        )
    return staging


# -- 4. apply ------------------------------------------------------------------------------------------


def apply(copy: BulkCopy, session: LocalSession, state: PartitionedState) -> dict[str, Any]:
    """Apply the staging table to the target in one transaction, with the engine's apply."""
    p = copy.plan
    started = time.monotonic()
    lock_key = locks.lock_key("copy", str(p.target))
    acquire_run_lock(session, lock_key, copy.target_lock_wait, copy.log)
    try:
        staging = existing_staging(session, state, p.target)
        run = inspect(copy, session)
        state.check_start(run, p.target)
        run.staging, run.in_place, run.deferred_indexes = staging, state.in_place, state.indexes()
        run.definition = state.definition
        with session.transaction():
            run.result.rows = int(session.fetchvalue("count staged rows", q.count_rows(staging)))
        try:
            copy._apply(session, run)
        except BaseException:
            copy._drop_staging(session, run)
            raise
    finally:
        release_run_lock(session, lock_key, copy.log)
    result = run.result
    result.parallelism = len(state.ranges)
    result.seconds = time.monotonic() - started
    copy.log.info(
        "Applied %d rows of %d ranges to %s (%s, swap %s)",
        result.rows,
        len(state.ranges),
        p.target,
        p.mode,
        result.swap,
    )
    return result.summary()
