"""ReplicationLagTrigger: waits for replication to be fresh enough, in the triggerer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.replication import LagConfig, measure_lag, satisfied
from airflow_provider_fdw.timeouts import (
    DEFAULT_MEASUREMENT_TIMEOUT,
    BoundedConnector,
    FdwTimeoutError,
    run_bounded_async,
)


class ReplicationLagTrigger(BaseTrigger):
    """Poll replication lag every ``poll_interval`` seconds until it is within bounds.

    Measurements use blocking drivers, so each runs in a daemon thread and is awaited for at most
    ``measurement_timeout`` seconds: the triggerer's event loop is never blocked and a hung server
    never holds the trigger. At ``deadline`` (epoch seconds: the sensor's ``timeout``) the trigger
    ends with a ``timeout`` event even if every measurement hung. Only connection ids and thresholds
    are serialized, never credentials. Events: ``{"status": "success" | "broken" | "invalid" |
    "error" | "timeout", "reading": {...}, "message": ...}`` (``invalid``: a configuration or privilege
    problem waiting cannot fix).
    """

    def __init__(
        self,
        postgres_conn_id: str,
        measure: str,
        primary_conn_id: str | None = None,
        subscription_name: str | None = None,
        slot_name: str | None = None,
        application_name: str | None = None,
        max_lag_bytes: int | None = None,
        max_lag_seconds: float | None = None,
        target_lsn: str | None = None,
        fail_on_broken: bool = False,
        poll_interval: float = 30.0,
        measurement_timeout: float = DEFAULT_MEASUREMENT_TIMEOUT,
        deadline: float | None = None,
        connect_timeout: int | None = None,
    ) -> None:
        super().__init__()
        self.postgres_conn_id = postgres_conn_id
        self.measure = measure
        self.primary_conn_id = primary_conn_id
        self.subscription_name = subscription_name
        self.slot_name = slot_name
        self.application_name = application_name
        self.max_lag_bytes = max_lag_bytes
        self.max_lag_seconds = max_lag_seconds
        self.target_lsn = target_lsn
        self.fail_on_broken = fail_on_broken
        self.poll_interval = poll_interval
        self.measurement_timeout = measurement_timeout
        self.deadline = deadline
        self.connect_timeout = connect_timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "postgres_conn_id": self.postgres_conn_id,
                "measure": self.measure,
                "primary_conn_id": self.primary_conn_id,
                "subscription_name": self.subscription_name,
                "slot_name": self.slot_name,
                "application_name": self.application_name,
                "max_lag_bytes": self.max_lag_bytes,
                "max_lag_seconds": self.max_lag_seconds,
                "target_lsn": self.target_lsn,
                "fail_on_broken": self.fail_on_broken,
                "poll_interval": self.poll_interval,
                "measurement_timeout": self.measurement_timeout,
                "deadline": self.deadline,
                "connect_timeout": self.connect_timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        config = LagConfig(
            self.measure,
            self.subscription_name,
            self.slot_name,
            self.application_name,
            self.primary_conn_id is not None,
        )
        while True:
            left = self._left()
            if left <= 0:
                yield TriggerEvent(
                    {
                        "status": "timeout",
                        "message": "Sensor timed out waiting for replication lag.",
                        "reading": None,
                    }
                )
                return
            bound = max(1.0, min(self.measurement_timeout, left))
            replica = BoundedConnector(self.postgres_conn_id, bound, self.connect_timeout)
            primary = (
                BoundedConnector(self.primary_conn_id, bound, self.connect_timeout)
                if self.primary_conn_id
                else None
            )
            try:
                reading = await run_bounded_async(
                    partial(measure_lag, config, replica, primary, self.target_lsn),
                    bound,
                    "measuring replication lag",
                    on_timeout=partial(_abort, replica, primary),
                )
            except FdwTimeoutError as exc:  # a hung server is "not fresh": poll again until the deadline
                self.log.warning("%s Counting it as not fresh.", exc)
                await asyncio.sleep(min(self.poll_interval, max(0.0, self._left())))
                continue
            except FdwConfigError as exc:  # a wrong server or a missing grant: the sensor fails at once
                yield TriggerEvent({"status": "invalid", "message": str(exc), "reading": None})
                return
            except Exception as exc:
                yield TriggerEvent({"status": "error", "message": str(exc), "reading": None})
                return
            self.log.info("Replication: %s", reading.describe())
            if reading.broken and self.fail_on_broken:
                yield TriggerEvent(
                    {"status": "broken", "message": reading.describe(), "reading": reading.to_dict()}
                )
                return
            if satisfied(reading, self.max_lag_bytes, self.max_lag_seconds, self.target_lsn is not None):
                yield TriggerEvent(
                    {"status": "success", "message": reading.describe(), "reading": reading.to_dict()}
                )
                return
            await asyncio.sleep(min(self.poll_interval, max(0.0, self._left())))

    def _left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.time()


def _abort(*connectors: BoundedConnector | None) -> None:
    for connector in connectors:
        if connector is not None:
            connector.abort()
