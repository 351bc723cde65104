"""ReplicationLagSensor: wait until a replica or subscriber is fresh enough to copy from or report on."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.replication import (
    LagSpec,
    ServerUnavailable,
    current_lsn,
    measure_lag,
    valid_lsn,
)
from airflow_provider_fdw.timeouts import (
    DEFAULT_MEASUREMENT_TIMEOUT,
    BoundedConnector,
    FdwTimeoutError,
    abort_all,
    positive_seconds,
    run_bounded,
)
from airflow_provider_fdw.triggers.replication import ReplicationLagTrigger


class ReplicationLagSensor(BaseSensorOperator):
    """Wait until replication lag is within bounds; fail loudly (optionally at once) when it is broken.

    What is measured (``measure``), and where ``postgres_conn_id`` points:

    - ``"standby"``: a physical standby. Bytes are the primary's current WAL position (with
      ``primary_conn_id``) or the WAL received but not yet replayed (without) minus the replay
      position; seconds the age of the last replayed transaction, and 0 when nothing is outstanding.
      Seconds need ``primary_conn_id`` (without it they are unknown and ``max_lag_seconds`` is
      refused: a standby that stopped receiving would look up to date).
    - ``"subscription"``: a logical subscriber (``subscription_name``). Health is read there
      (enabled, apply worker running, every table past its initial sync); lag from its slot on the
      publisher (``primary_conn_id``, required).
    - ``"slot"``: a replication slot on the primary (``slot_name``).
    - ``"walsender"``: a connected standby or subscriber by ``application_name``, on the primary.

    With ``catch_up=True`` the sensor records the primary's WAL position when it starts and succeeds
    once the replica has replayed up to it: the most robust freshness test, immune to idle-primary
    artefacts. The position is kept in Airflow's task state store (keyed by dag, run, task and map
    index), so reschedule tries and retries wait for the same target; deferred, it travels in the
    trigger's kwargs (a triggerer restart keeps it). Or give it: ``target_lsn`` (templated, e.g. from
    an upstream task that read ``pg_current_wal_lsn()``). Otherwise every bound given must hold
    (``max_lag_bytes`` and/or ``max_lag_seconds``).

    Broken replication (receiver not streaming, subscription disabled, apply worker stopped, slot
    inactive or lost) never counts as fresh: the sensor keeps waiting and logs why, or with
    ``fail_on_broken=True`` fails at once (skipped with ``soft_fail``). A server that cannot be
    reached (down, starting up, shutting down) is "not fresh" too, waited for until ``timeout``; one
    that turns the login away (wrong password, unknown role or database) fails the task. ``mode="poke"``,
    ``"reschedule"`` and ``deferrable=True`` (default: ``[operators] default_deferrable``) all work.
    Each poke logs the measurement; the last one is the XCom value.

    :param postgres_conn_id: the server measured (standby, subscriber, or primary for slot/walsender).
    :param measure: ``standby``, ``subscription``, ``slot`` or ``walsender``.
    :param primary_conn_id: the primary / publisher, for byte lag of standbys and subscriptions.
    :param subscription_name: for ``measure="subscription"``.
    :param slot_name: for ``measure="slot"``.
    :param application_name: for ``measure="walsender"``.
    :param max_lag_bytes: largest acceptable lag in bytes of WAL.
    :param max_lag_seconds: largest acceptable lag in seconds.
    :param catch_up: wait until the replica reaches the primary's position at sensor start.
    :param target_lsn: with ``catch_up=True``, the position to reach instead of the one read at start.
    :param fail_on_broken: fail at once when replication is broken, instead of waiting.
    :param deferrable: wait in the triggerer (ReplicationLagTrigger) instead of a worker slot.
    :param measurement_timeout: seconds one measurement may take (default 30; also the
        ``statement_timeout`` of its sessions). A measurement that takes longer counts as "not fresh";
        the sensor's ``timeout`` holds even when every measurement hangs.
    :param connect_timeout: seconds a login may take (default 10).
    """

    template_fields: Sequence[str] = (
        "postgres_conn_id",
        "primary_conn_id",
        "subscription_name",
        "slot_name",
        "application_name",
        "target_lsn",
    )
    ui_color = "#e0d6f0"

    def __init__(
        self,
        *,
        postgres_conn_id: str,
        measure: str = "standby",
        primary_conn_id: str | None = None,
        subscription_name: str | None = None,
        slot_name: str | None = None,
        application_name: str | None = None,
        max_lag_bytes: int | None = None,
        max_lag_seconds: float | None = None,
        catch_up: bool = False,
        target_lsn: str | None = None,
        fail_on_broken: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        measurement_timeout: float = DEFAULT_MEASUREMENT_TIMEOUT,
        connect_timeout: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.measurement_timeout = positive_seconds(measurement_timeout, "measurement_timeout")
        self.connect_timeout = connect_timeout
        self._started: float | None = None
        self._connectors: list[BoundedConnector] = []
        self.postgres_conn_id = postgres_conn_id
        self.measure = measure
        self.primary_conn_id = primary_conn_id
        self.subscription_name = subscription_name
        self.slot_name = slot_name
        self.application_name = application_name
        self.max_lag_bytes = max_lag_bytes
        self.max_lag_seconds = max_lag_seconds
        self.catch_up = catch_up
        self.fail_on_broken = fail_on_broken
        self.deferrable = deferrable
        self.target_lsn = target_lsn
        self.last_reading: dict[str, Any] | None = None
        self.spec()  # validates the arguments at parse time

    def spec(self) -> LagSpec:
        """The measurement, from the (rendered) arguments: what poke checks and the trigger polls."""
        return LagSpec(
            postgres_conn_id=self.postgres_conn_id,
            measure=self.measure,
            primary_conn_id=self.primary_conn_id,
            subscription_name=self.subscription_name,
            slot_name=self.slot_name,
            application_name=self.application_name,
            max_lag_bytes=self.max_lag_bytes,
            max_lag_seconds=self.max_lag_seconds,
            catch_up=self.catch_up,
            target_lsn=self.target_lsn,
            fail_on_broken=self.fail_on_broken,
            measurement_timeout=self.measurement_timeout,
            connect_timeout=self.connect_timeout,
        )

    def execute(self, context: Any) -> Any:
        self._started = time.monotonic()
        if self.catch_up:
            self.target_lsn = self._start_lsn(context)
            self.log.info("Waiting until the replica reaches the primary's position %s", self.target_lsn)
        if not self.deferrable:
            value = super().execute(context)
            self._forget_target(context)
            return value
        result = self.poke(context)  # no need to defer when it is fresh already
        if result.is_done:
            self._forget_target(context)
            return result.xcom_value
        self.defer(
            trigger=ReplicationLagTrigger(
                self.spec(), poll_interval=self.poke_interval, deadline=time.time() + self._remaining()
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def poke(self, context: Any) -> PokeReturnValue:
        spec = self.spec()
        bound = max(1.0, min(spec.measurement_timeout, self._remaining()))
        replica = self._connect(spec.postgres_conn_id, bound)
        primary = self._connect(spec.primary_conn_id, bound) if spec.primary_conn_id else None
        try:
            reading = run_bounded(
                lambda: measure_lag(spec, replica, primary),
                bound,
                "measuring replication lag",
                on_timeout=lambda: abort_all(replica, primary),
            )
        except (FdwTimeoutError, ServerUnavailable) as exc:
            # A hung or restarting server is "not fresh"; the sensor's timeout still holds.
            self.log.warning("%s Counting it as not fresh.", exc)
            return PokeReturnValue(is_done=False, xcom_value=self.last_reading)
        except FdwConfigError as exc:  # a wrong server or a missing grant: retrying will not help
            raise AirflowFailException(str(exc)) from None
        self.last_reading = reading.to_dict()
        ok = spec.satisfied(reading)
        self.log.info(
            "%s; wanted %s: %s", reading.describe(), spec.wanted(), "fresh enough" if ok else "waiting"
        )
        if reading.broken and spec.fail_on_broken:
            raise AirflowFailException(reading.describe())
        if reading.broken:
            self.log.warning("Replication is broken (%s); waiting, never reporting it fresh", reading.broken)
        return PokeReturnValue(is_done=ok, xcom_value=self.last_reading)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if event["status"] == "success":
            self.log.info("Replication fresh enough: %s", event["message"])
            self._forget_target(context)
            return event["reading"]
        if event["status"] in ("broken", "invalid"):
            raise AirflowFailException(event["message"])
        if event["status"] == "timeout":
            raise AirflowSensorTimeout(event["message"])
        raise AirflowException(f"Measuring replication lag failed: {event['message']}")

    def _start_lsn(self, context: Any) -> str:
        """The position to reach: ``target_lsn`` if given, else the primary's WAL position when the
        sensor first ran, kept in the task state store across reschedule tries and retries
        (Airflow clears a task's XComs at the start of each)."""
        if self.target_lsn:
            if not valid_lsn(self.target_lsn):
                raise AirflowFailException(
                    f"target_lsn must be a WAL position like 0/16B3748, got {self.target_lsn!r}."
                )
            return self.target_lsn
        store = _state_store(context)
        if store is None and self.reschedule:
            self.log.warning(
                "This Airflow has no task state store (3.3+): each reschedule try reads a new target. "
                "Use deferrable=True, mode='poke' or target_lsn to keep one."
            )
        stored = store.get(TARGET_KEY) if store is not None else None
        if stored:
            self.log.info("Catch-up target recorded by an earlier try of this task: %s", stored)
            return str(stored)
        primary_id = self.primary_conn_id or self.postgres_conn_id  # slot/walsender: measured on the primary
        conn = self._connect(primary_id, self.measurement_timeout)()
        try:
            lsn = current_lsn(conn)
        finally:
            conn.close()
        if store is not None:
            store.set(TARGET_KEY, lsn)
        return lsn

    def _forget_target(self, context: Any) -> None:
        """Done: a later clear of this task is a new start and records a new target."""
        store = _state_store(context) if self.catch_up else None
        if store is not None:
            store.delete(TARGET_KEY)

    def _connect(self, conn_id: str, bound: float) -> BoundedConnector:
        connector = BoundedConnector(conn_id, bound, self.connect_timeout)
        self._connectors = [*self._connectors[-3:], connector]  # the current poke's, for on_kill
        return connector

    def on_kill(self) -> None:
        """Cancel and close the measurement's sessions (worker shutdown, ``execution_timeout``)."""
        for connector in self._connectors:
            connector.abort()

    def _remaining(self) -> float:
        """Seconds left of the sensor's ``timeout`` (the whole timeout before the first poke)."""
        if self._started is None:
            return float(self.timeout)
        return max(0.0, float(self.timeout) - (time.monotonic() - self._started))


TARGET_KEY = "catch_up_target_lsn"


def _state_store(context: Any) -> Any:
    """Airflow's task state store (3.3+; scoped to dag, run, task and map index), or None."""
    return context.get("task_state_store") if hasattr(context, "get") else None
