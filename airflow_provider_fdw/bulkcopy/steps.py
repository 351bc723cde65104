"""Wall time of each step of one bulk copy: one log line per step and the summary's ``steps``.

A copy's fixed costs (connections, catalog reads, staging, swap) matter as much as its load on
small tables; timing every step in every run shows where the time goes without a profiler.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# The steps of a copy, in the order they run (a step that does not happen is left out).
STEPS = (
    "connect",  # the copy's local session, ending a killed try's leftover sessions
    "lock",  # the target's run lock (waits while another copy of the same target runs)
    "catalog",  # source/target definitions, the path decision, where/ranges parsed
    "watermark",  # append/upsert: the target's bound and the source's NULL watermarks
    "staging",  # the staging table created and marked
    "load",  # rows into staging (every range)
    "verify",  # counts/checksums compared (verify != "off")
    "index",  # indexes and constraints built on the loaded staging table
    "analyze",  # statistics of the new table
    "apply",  # swap, in-place diff, append or upsert, in one transaction
)


class StepTimes:
    """Accumulates seconds per step; a step entered twice (e.g. catalog reads) adds up, and a step
    inside another counts only for itself (the outer one gets the rest). One thread: the copy's."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._inner: list[float] = []  # per open step: seconds spent in steps inside it

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.add(name, elapsed - self._inner.pop())
            if self._inner:
                self._inner[-1] += elapsed

    def add(self, name: str, seconds: float) -> None:
        if name not in STEPS:
            raise ValueError(f"unknown copy step {name!r}")
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def summary(self) -> dict[str, float]:
        """Seconds per step in the order the steps run (JSON-safe, for XCom and the bench)."""
        return {name: round(self.seconds[name], 4) for name in STEPS if name in self.seconds}

    def log(self, log: Any, total: float) -> None:
        """One line per step, then what no step accounts for (Python, threads, waits)."""
        for name, seconds in self.summary().items():
            log.info("Copy step %-9s %8.3fs", name, seconds)
        log.info("Copy step %-9s %8.3fs", "other", max(0.0, total - sum(self.seconds.values())))
