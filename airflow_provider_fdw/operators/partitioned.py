"""A large copy as mapped tasks on different workers: :func:`partitioned_copy` builds the task group.

::

    prepare ──> load[0..n-1] (mapped, any worker) ──> apply
        └─────> snapshot (direct path: holds the one snapshot every range reads)

See :mod:`airflow_provider_fdw.bulkcopy.partitions` for what each step guarantees, and docs/bulk-copy.md
("Mapped partitions across workers").
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

from airflow.sdk import TaskGroup, timezone
from airflow.sdk.exceptions import AirflowRescheduleException

from airflow_provider_fdw.bulkcopy import partitions as parts
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.operators.copy import BulkCopyOperator
from airflow_provider_fdw.timeouts import positive_seconds

TERMINAL_STATES = ("success", "failed", "upstream_failed", "skipped", "removed")
WAIT_IN_SLOT_SECONDS = 20.0  # a range waits this long for the snapshot in its slot, then reschedules
# Airflow 3.3 fails a reschedule due sooner than ~5 s after the previous exit (docs/deployment.md)
RESCHEDULE_SECONDS = 15
PRIORITY_HOLDER = 1000


class _PartitionedCopyStep(BulkCopyOperator):
    """A step of a partitioned copy: the copy's arguments (as ``BulkCopyOperator``) and where the
    prepare task's state is."""

    def __init__(self, *, prepare_task_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prepare_task_id = prepare_task_id

    def state(self, context: Any) -> parts.PartitionedState:
        data = context["ti"].xcom_pull(task_ids=self.prepare_task_id, key="state", map_indexes=-1)
        return parts.PartitionedState.from_json(data)

    def engine(self, hook: Any, parallelism: int = 1) -> Any:
        """The engine for this step, on ``hook``'s connections (ranges: one session each)."""
        self.validate()
        plan = replace(self.plan(), parallelism=parallelism)
        return hook.bulk_copy_engine(
            plan, target_lock_wait=self.target_lock_wait, lock_retries=self.lock_retries
        )


class _InnerStep(_PartitionedCopyStep):
    """Prepare, snapshot and load: no asset (the target changes only at apply), no lineage."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("outlets", [])
        super().__init__(**kwargs)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        return None

    def get_openlineage_facets_on_start(self) -> Any:
        return None


class PreparePartitionsOperator(_InnerStep):
    """Create the run's staging table and split the source into ``parallelism`` key ranges.

    Returns the range numbers (the loads ``expand`` over them) and pushes XCom ``state``, what the
    other steps read.
    """

    def execute(self, context: Any) -> Any:  # the range numbers (list[int])
        with self.get_hook(self.fdw_conn_id) as hook:
            copy = self.engine(hook, self.parallelism)
            run_key = f"{context['dag_run'].dag_id}/{context['run_id']}"
            state = parts.prepare(copy, hook.session, run_key, self.parallelism)
        context["ti"].xcom_push(key="state", value=state.to_json())
        return list(range(len(state.ranges)))  # what the loads are mapped over


class HoldSnapshotOperator(_InnerStep):
    """Direct path: export the snapshot every range reads and hold it until the apply task ends.

    :param apply_task_id: the apply task; the snapshot is released once it finished.
    :param snapshot_timeout: seconds to hold the snapshot at most (default 3600): ranges retried
        after that cannot read it (the run then has to be cleared whole).
    """

    def __init__(
        self,
        *,
        apply_task_id: str,
        snapshot_timeout: float = parts.DEFAULT_SNAPSHOT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.apply_task_id = apply_task_id
        self.snapshot_timeout = positive_seconds(snapshot_timeout, "snapshot_timeout")

    def execute(self, context: Any) -> dict[str, Any]:
        ti, state = context["ti"], self.state(context)

        def publish(snapshot_id: str | None) -> None:
            ti.xcom_push(key="snapshot", value={"id": snapshot_id})

        def finished() -> bool:
            try:
                states = ti.get_task_states(
                    dag_id=ti.dag_id, task_ids=[self.apply_task_id], run_ids=[ti.run_id]
                )
            except Exception as exc:  # the staging table and the time-out still end the hold
                self.log.warning("Could not read the state of %s: %s", self.apply_task_id, exc)
                return False
            return any(s in TERMINAL_STATES for by_task in states.values() for s in _states_of(by_task))

        with self.get_hook(self.fdw_conn_id) as hook:
            copy = self.engine(hook)
            return parts.hold_snapshot(copy, hook.session, state, publish, finished, self.snapshot_timeout)


class LoadPartitionOperator(_InnerStep):
    """Load one range into the run's staging table (mapped: ``.expand(partition=...)``).

    A retry first deletes the range's rows an earlier try committed, then loads it again; the other
    ranges are untouched. On the direct path it reads in the snapshot the holder task published.

    :param partition: the range number (mapped over the prepare task's result).
    :param snapshot_task_id: the holder task (direct path), whose ``snapshot`` XCom it waits for.
    :param snapshot_wait: seconds to wait for that snapshot in all (default 600); after 20 s of
        waiting the range gives its worker slot back (reschedule) so the holder can get one.
    """

    def __init__(
        self,
        *,
        partition: int,
        snapshot_task_id: str | None = None,
        snapshot_wait: float = parts.DEFAULT_SNAPSHOT_WAIT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.partition = partition
        self.snapshot_task_id = snapshot_task_id
        self.snapshot_wait = positive_seconds(snapshot_wait, "snapshot_wait")

    def execute(self, context: Any) -> dict[str, Any]:
        ti, state = context["ti"], self.state(context)
        snapshot = self._snapshot(ti, context) if state.path == "direct" else None
        with self.get_hook(self.fdw_conn_id) as hook:
            copy = self.engine(hook)
            return parts.load_range(copy, hook.session, state, self.partition, lambda: snapshot)

    def _snapshot(self, ti: Any, context: Any) -> str:
        """The holder's snapshot id. Not published yet: wait briefly, then give the worker slot back
        (reschedule) so the holder can get one; fail after ``snapshot_wait`` seconds in all."""
        if self.snapshot_task_id is None:
            raise FdwConfigError("The direct path needs the snapshot holder task (snapshot_task_id).")
        first = ti.get_first_reschedule_date(context)
        started = first.timestamp() if first is not None else time.time()
        brief = time.monotonic() + WAIT_IN_SLOT_SECONDS
        while True:
            published = ti.xcom_pull(task_ids=self.snapshot_task_id, key="snapshot", map_indexes=-1)
            if published is not None:
                return published["id"]
            if time.time() - started > self.snapshot_wait:
                raise FdwError(
                    f"The snapshot holder {self.snapshot_task_id} published no snapshot within "
                    f"{self.snapshot_wait:.0f}s (snapshot_wait).",
                    step="wait for snapshot",
                )
            if time.monotonic() > brief:
                self.log.info("No snapshot from %s yet: rescheduling this range", self.snapshot_task_id)
                raise AirflowRescheduleException(timezone.utcnow() + timedelta(seconds=RESCHEDULE_SECONDS))
            time.sleep(parts.POLL_SECONDS)


class ApplyPartitionsOperator(_PartitionedCopyStep):
    """Apply the run's staging table to the target in one transaction (the engine's apply/swap).

    Produces the target's asset and reports the copy's lineage, like ``BulkCopyOperator``.

    :param prepare_task_id: the prepare task of the same partitioned copy.
    """

    def execute(self, context: Any) -> dict[str, Any]:
        state = self.state(context)
        with self.get_hook(self.fdw_conn_id) as hook:
            copy = self.engine(hook)
            self._lineage_summary = parts.apply(copy, hook.session, state)
        return self._lineage_summary  # kept: lineage is reported from a fork that cannot read XCom


def partitioned_copy(
    group_id: str,
    *,
    source_table: str,
    target_table: str,
    partitions: int,
    load_retries: int = 2,
    snapshot_timeout: float = parts.DEFAULT_SNAPSHOT_TIMEOUT,
    snapshot_wait: float = parts.DEFAULT_SNAPSHOT_WAIT,
    load_kwargs: dict[str, Any] | None = None,
    load_operator: type[LoadPartitionOperator] = LoadPartitionOperator,
    **copy_kwargs: Any,
) -> TaskGroup:
    """A task group copying ``source_table`` into ``target_table`` in ``partitions`` mapped ranges.

    ``copy_kwargs`` are ``BulkCopyOperator``'s (``mode``, ``key_columns``, ``split_column``,
    ``transport``, ``fdw_conn_id``, ``postgres_conn_id``, ``where``, ``columns`` …; not ``verify``).
    Each range retries up to ``load_retries`` times, redoing only itself; prepare, the snapshot
    holder and apply do not retry (clear the group to start over). ``load_kwargs``: more arguments
    for the load tasks only (``pool``, ``queue``, ``retry_delay`` …).
    """
    if "parallelism" in copy_kwargs:
        raise FdwConfigError("partitioned_copy splits by partitions=, not parallelism=.")
    if isinstance(partitions, bool) or not isinstance(partitions, int) or not 1 <= partitions <= 64:
        raise FdwConfigError(f"partitions must be an integer from 1 to 64, got {partitions!r}.")
    common = {"source_table": source_table, "target_table": target_table, **copy_kwargs}
    with TaskGroup(group_id) as group:
        prepare = PreparePartitionsOperator(task_id="prepare", parallelism=partitions, retries=0, **common)
        apply = ApplyPartitionsOperator(task_id="apply", prepare_task_id=prepare.task_id, retries=0, **common)
        holder = None
        if copy_kwargs.get("transport", "fdw") != "fdw":
            holder = HoldSnapshotOperator(
                task_id="snapshot",
                prepare_task_id=prepare.task_id,
                apply_task_id=apply.task_id,
                snapshot_timeout=snapshot_timeout,
                retries=0,  # a new snapshot would differ from the one the loaded ranges read
                priority_weight=PRIORITY_HOLDER,  # queued before the ranges that wait for it
                weight_rule="absolute",
                **common,
            )
        loads = load_operator.partial(
            task_id="load",
            prepare_task_id=prepare.task_id,
            snapshot_task_id=holder.task_id if holder else None,
            snapshot_wait=snapshot_wait,
            retries=load_retries,
            **{**common, **(load_kwargs or {})},
        ).expand(partition=prepare.output)
        prepare >> loads >> apply
        if holder is not None:
            prepare >> holder
    return group


def _states_of(by_task: Any) -> list[str]:
    """Task states from ``get_task_states``' answer (``{task_id: state}`` per run)."""
    if isinstance(by_task, dict):
        return [s for v in by_task.values() for s in ([v] if isinstance(v, str) else _states_of(v))]
    return [by_task] if isinstance(by_task, str) else []
