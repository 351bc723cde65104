"""ReplicationLagTrigger: waits for replication to be fresh enough, in the triggerer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.replication import LagSpec, ServerUnavailable, measure_lag
from airflow_provider_fdw.timeouts import (
    BoundedConnector,
    FdwTimeoutError,
    abort_all,
    run_bounded_async,
)


class ReplicationLagTrigger(BaseTrigger):
    """Poll replication lag every ``poll_interval`` seconds until ``spec`` is satisfied.

    Measurements use blocking drivers, so each runs in a daemon thread and is awaited for at most
    ``spec.measurement_timeout`` seconds: the triggerer's event loop is never blocked and a hung
    server never holds the trigger; a server that cannot be reached (restarting) is "not fresh",
    polled again. At ``deadline`` (epoch seconds: the sensor's ``timeout``) the
    trigger ends with a ``timeout`` event even if every measurement hung. Serialized as the spec's
    ``to_dict()`` (connection ids and thresholds, never credentials) plus ``poll_interval`` and
    ``deadline``. Events: ``{"status": "success" | "broken" | "invalid" | "error" | "timeout",
    "reading": {...}, "message": ...}`` (``invalid``: a configuration or privilege problem waiting
    cannot fix).

    :param spec: the measurement (a :class:`~airflow_provider_fdw.replication.LagSpec` or its dict).
    :param poll_interval: seconds between measurements.
    :param deadline: epoch seconds after which a ``timeout`` event ends the wait (None: never).
    """

    def __init__(
        self,
        spec: LagSpec | Mapping[str, Any] | None = None,
        poll_interval: float = 30.0,
        deadline: float | None = None,
        **flat_spec: Any,
    ) -> None:
        super().__init__()
        # flat_spec: trigger rows written by 0.1.0 held the spec's fields at the top level.
        self.spec = spec if isinstance(spec, LagSpec) else LagSpec.from_dict({**(spec or {}), **flat_spec})
        self.poll_interval = poll_interval
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"spec": self.spec.to_dict(), "poll_interval": self.poll_interval, "deadline": self.deadline},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        spec = self.spec
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
            bound = max(1.0, min(spec.measurement_timeout, left))
            replica = BoundedConnector(spec.postgres_conn_id, bound, spec.connect_timeout)
            primary = (
                BoundedConnector(spec.primary_conn_id, bound, spec.connect_timeout)
                if spec.primary_conn_id
                else None
            )
            try:
                reading = await run_bounded_async(
                    partial(measure_lag, spec, replica, primary),
                    bound,
                    "measuring replication lag",
                    on_timeout=partial(abort_all, replica, primary),
                )
            except (FdwTimeoutError, ServerUnavailable) as exc:
                # A hung or restarting server is "not fresh": poll again until the deadline.
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
            if reading.broken and spec.fail_on_broken:
                yield TriggerEvent(
                    {"status": "broken", "message": reading.describe(), "reading": reading.to_dict()}
                )
                return
            if spec.satisfied(reading):
                yield TriggerEvent(
                    {"status": "success", "message": reading.describe(), "reading": reading.to_dict()}
                )
                return
            await asyncio.sleep(min(self.poll_interval, max(0.0, self._left())))

    def _left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.time()
