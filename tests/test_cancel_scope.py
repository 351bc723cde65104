"""CancelScope against the race a parallel copy runs into: the first range fails before another
range has started its statement, so a single cancel finds that range's session idle and is lost."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from airflow_provider_fdw.cancel import CancelScope


class SlowStartingStatement:
    """A connection whose statement starts ``delay`` s after the connection opens and then runs
    until cancelled (or ``limit`` s): a cancel before the statement started is ignored, as libpq's is."""

    def __init__(self, delay: float, limit: float) -> None:
        self.delay, self.limit = delay, limit
        self.running = threading.Event()
        self.cancelled = threading.Event()
        self.closed = False

    def cancel(self) -> None:
        if self.running.is_set():
            self.cancelled.set()

    def run(self) -> str:
        time.sleep(self.delay)
        self.running.set()
        return "cancelled" if self.cancelled.wait(self.limit) else "ran to the end"


def test_cancel_until_done_stops_a_statement_started_after_the_first_cancel():
    scope = CancelScope()
    slow = scope.add_connection(SlowStartingStatement(delay=0.3, limit=30))

    def fail_at_once() -> None:
        raise RuntimeError("range 2 is broken")

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(slow.run), pool.submit(fail_at_once)]
        futures[1].exception()  # the failure arrives while range 1 has not started its statement
        started = time.monotonic()
        scope.cancel_until_done(futures, every=0.05)
        assert futures[0].result() == "cancelled"
        assert time.monotonic() - started < 20  # not the statement's own 30 s
    assert scope.cancelled
