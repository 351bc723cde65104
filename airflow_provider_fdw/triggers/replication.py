"""ReplicationLagTrigger: waits for replication to be fresh enough, in the triggerer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.replication import LagConfig, measure_lag, satisfied


class ReplicationLagTrigger(BaseTrigger):
    """Poll replication lag every ``poll_interval`` seconds until it is within bounds.

    Measurements use blocking drivers, so each runs in a worker thread (``asyncio.to_thread``): the
    triggerer's event loop is never blocked. Only connection ids and thresholds are serialized, never
    credentials. Events: ``{"status", "reading", "message"}`` with status ``success``, ``broken``,
    ``invalid`` (a configuration or privilege problem waiting cannot fix) or ``error``.
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
            try:
                reading = await asyncio.to_thread(self._measure, config)
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
            await asyncio.sleep(self.poll_interval)

    def _measure(self, config: LagConfig) -> Any:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        replica = PostgresHook(postgres_conn_id=self.postgres_conn_id).get_conn
        primary = (
            PostgresHook(postgres_conn_id=self.primary_conn_id).get_conn if self.primary_conn_id else None
        )
        return measure_lag(config, replica, primary, self.target_lsn)
