"""Mapped partitions: one large copy split into Airflow tasks that run on different workers.

The steps of :class:`~airflow_provider_fdw.hooks.bulkcopy.BulkCopy`, each in its own task:

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
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.cancel import acquire_run_lock, release_run_lock, terminate_leftovers
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks import locks
from airflow_provider_fdw.hooks.apply import marker
from airflow_provider_fdw.hooks.bulkcopy import INTEGER_TYPES, BulkCopy, SourceInfo
from airflow_provider_fdw.hooks.direct import plan_direct
from airflow_provider_fdw.hooks.matview import bounded_name
from airflow_provider_fdw.hooks.session import LocalSession
from airflow_provider_fdw.hooks.snapshot import SnapshotHolder
from airflow_provider_fdw.names import QualifiedName, parse_qualified_name
from airflow_provider_fdw.predicate import parse_where

DEFAULT_SNAPSHOT_TIMEOUT = 3600.0  # seconds the holder keeps the snapshot for the ranges and retries
DEFAULT_SNAPSHOT_WAIT = 600.0  # seconds a range waits for the holder to publish the snapshot
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class PartitionedState:
    """What :func:`prepare` decided, for the other tasks of the run (JSON-safe: XCom)."""

    staging: str
    path: str  # "fdw" or "direct"
    in_place: bool
    deferred_indexes: list[list[Any]]
    ranges: list[list[Any]]  # [low, high] of split_column per range; None: open end
    split_column: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartitionedState:
        if not isinstance(data, dict) or set(data) != {f for f in cls.__dataclass_fields__}:
            raise FdwError(
                "The prepare task's result is missing or not a partitioned copy's state: run the whole "
                "task group again (clear it from its prepare task).",
                step="read partition state",
            )
        return cls(**data)

    def range_condition(self, index: int) -> Any:
        """The predicate of range ``index`` (NULL split values belong to the first range)."""
        if not 0 <= index < len(self.ranges):
            raise FdwConfigError(f"partition {index} does not exist: this run has {len(self.ranges)} ranges.")
        if self.split_column is None:
            return None
        low, high = self.ranges[index]
        return q.range_predicate(self.split_column, low, high, include_nulls=index == 0)


def staging_name(target: QualifiedName, run_key: str) -> QualifiedName:
    """The run's staging table: ``<target>_fdw_part_<hash of the DAG run>`` (same for every try)."""
    digest = hashlib.sha256(run_key.encode()).hexdigest()[:10]
    return QualifiedName(target.schema, bounded_name(target.name, "fdw", "part", digest))


# -- 1. prepare ----------------------------------------------------------------------------------------


def prepare(copy: BulkCopy, session: LocalSession, run_key: str, partitions: int) -> PartitionedState:
    """Check everything, create the run's staging table (dropping a marked leftover of an earlier run
    on this target) and split the source into ``partitions`` ranges."""
    p = copy.plan
    if p.verify != "off":
        raise FdwConfigError("verify is not available for a partitioned copy (each range reads on its own).")
    if partitions > 1 and p.split_column is None:
        raise FdwConfigError("A partitioned copy splits by key ranges: pass key_columns or split_column.")
    lock_key = locks.lock_key("copy", str(p.target))
    if copy.leftovers:
        terminate_leftovers(session, copy.leftovers, copy.log)
    acquire_run_lock(session, lock_key, copy.target_lock_wait, copy.log)
    try:
        source, target_columns, columns, conditions = inspect(copy, session)
        created = copy._prepare_staging(session, source, target_columns, columns)
        staging = staging_name(p.target, run_key)
        with session.transaction():  # the engine names it per try; this run's tasks find it by the run
            session.execute("name staging table", q.rename_table(created, staging.name), quiet=True)
        try:
            ranges = range_bounds(session, copy, source, conditions, partitions)
        except BaseException:
            copy._drop_staging(session, staging)
            raise
    finally:
        release_run_lock(session, lock_key, copy.log)
    indexes = [list(row) for row in copy._deferred_indexes]
    state = PartitionedState(str(staging), copy.result.path, copy._in_place, indexes, ranges, p.split_column)
    copy.log.info(
        "Partitioned copy %s -> %s: staging table %s, %d ranges of %s, %s path",
        p.source,
        p.target,
        staging,
        len(ranges),
        p.split_column,
        state.path,
    )
    return state


def inspect(copy: BulkCopy, session: LocalSession) -> tuple[SourceInfo, Any, list[str], list[Any]]:
    """The engine's step 1 (each task repeats it: cheap catalog reads, and the same answers)."""
    p = copy.plan
    source, target_columns, columns = copy._inspect(session)
    if p.where:
        parse_where(session.conn, p.source, p.where)
    copy.direct = plan_direct(
        session, p, source, columns, copy.remote_connect, copy.remote_identity, copy.log
    )
    copy.result.path = "direct" if copy.direct else "fdw"
    conditions = copy._conditions(session, columns, source)
    return source, target_columns, columns, conditions


def range_bounds(
    s: LocalSession, copy: BulkCopy, source: SourceInfo, conditions: list[Any], partitions: int
) -> list[list[Any]]:
    """``partitions`` ranges ``[low, high)`` over [min, max] of the split column (first and last
    open, so rows outside the range read are not lost)."""
    p = copy.plan
    if partitions == 1 or p.split_column is None:
        return [[None, None]]
    column = source.columns[p.split_column]
    if column.type_sql not in INTEGER_TYPES and not column.type_sql.startswith("numeric"):
        raise FdwConfigError(
            f"A partitioned copy splits by ranges of an integer column; {p.split_column} is "
            f"{column.type_sql}. Pass split_column= with an integer column."
        )
    finite = list(conditions)
    with s.transaction():
        low, high = s.fetchone("read key range", q.min_max(p.source, p.split_column, finite))
        # numeric NaN / ±Infinity cannot bound a range: split the finite values (open ends read the rest)
        while low is not None and not all(math.isfinite(v) for v in (low, high)):
            bound = high if not math.isfinite(high) else low
            op = "<" if bound == high else ">"
            finite.append(
                q.sql.SQL("{} " + op + " {}").format(q.sql.Identifier(p.split_column), q.sql.Literal(bound))
            )
            low, high = s.fetchone("read key range", q.min_max(p.source, p.split_column, finite))
    if low is None:  # no rows (yet): one open range reads whatever is there
        return [[None, None]]
    low, high = int(low), int(high)
    step = max(1, -(-(high - low + 1) // partitions))
    bounds: list[Any] = [low + i * step for i in range(partitions)] + [None]
    bounds[0] = None
    return [[bounds[i], bounds[i + 1]] for i in range(partitions)]


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
    inspect(copy, session)
    assert copy.direct is not None
    holder = SnapshotHolder(copy.remote_connect, copy.direct.client_encoding, copy.leftovers, copy.log)
    started = time.monotonic()
    try:
        publish(holder.id)
        copy.log.info("Exported snapshot %s for the ranges of %s; holding it", holder.id, state.staging)
        staging = parse_qualified_name(state.staging, "staging")
        while time.monotonic() - started < timeout:
            with session.transaction():
                gone = session.fetchone("watch staging", q.RELATION_QUERY, staging) is None
            if gone or finished():
                break
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


class ImportedSnapshot:
    """A snapshot exported by the holder task: what a range's reader runs before its COPY."""

    def __init__(self, snapshot_id: str) -> None:
        self.id = snapshot_id

    def reader_statements(self) -> list[Any]:
        return [q.SNAPSHOT_ISOLATION, q.import_snapshot(self.id)]


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
    source, _target_columns, columns, conditions = inspect(copy, session)
    if copy.result.path != state.path:
        raise FdwError(
            f"This range would read through the {copy.result.path} path, the prepare task chose "
            f"{state.path}: the connections changed; run the whole task group again.",
            step="load range",
        )
    condition = state.range_condition(index)
    with session.transaction():
        removed = session.execute(
            f"remove range {index} from {staging}", delete_where(staging, condition)
        ).rowcount
    if removed:
        copy.log.info("Removed %d rows of range %d an earlier try loaded into %s", removed, index, staging)
    if state.path == "direct":
        sid = snapshot_id()
        if not sid:
            raise FdwError("The snapshot holder published no snapshot.", step="wait for snapshot")
        copy.snapshot = ImportedSnapshot(sid)  # type: ignore[assignment]
    copy._load(source, staging, columns, conditions, [condition])
    low, high = state.ranges[index]
    copy.log.info(
        "Loaded range %d (%s from %s to %s) of %s: %d rows in %.2fs",
        index,
        state.split_column,
        low,
        high,
        p.source,
        copy.result.rows,
        time.monotonic() - started,
    )
    return {"partition": index, "low": low, "high": high, "rows": copy.result.rows, "removed": removed}


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


def delete_where(table: QualifiedName, condition: Any) -> Any:
    return q.sql.SQL("DELETE FROM {} WHERE {}").format(
        q.sql.Identifier(*table), condition if condition is not None else q.sql.SQL("true")
    )


# -- 4. apply ------------------------------------------------------------------------------------------


def apply(copy: BulkCopy, session: LocalSession, state: PartitionedState) -> dict[str, Any]:
    """Apply the staging table to the target in one transaction, with the engine's apply."""
    p = copy.plan
    started = time.monotonic()
    lock_key = locks.lock_key("copy", str(p.target))
    acquire_run_lock(session, lock_key, copy.target_lock_wait, copy.log)
    try:
        staging = existing_staging(session, state, p.target)
        source, target_columns, columns, _conditions = inspect(copy, session)
        copy._in_place, copy._deferred_indexes = state.in_place, [tuple(i) for i in state.deferred_indexes]
        with session.transaction():
            copy.result.rows = int(session.fetchone("count staged rows", q.count_rows(staging))[0])
        try:
            copy._apply(session, staging, source, columns, target_columns)
        except BaseException:
            copy._drop_staging(session, staging)
            raise
    finally:
        release_run_lock(session, lock_key, copy.log)
    copy.result.parallelism = len(state.ranges)
    copy.result.seconds = time.monotonic() - started
    copy.log.info(
        "Applied %d rows of %d ranges to %s (%s, swap %s)",
        copy.result.rows,
        len(state.ranges),
        p.target,
        p.mode,
        copy.result.swap,
    )
    return copy.result.summary()
