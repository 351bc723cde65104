"""Bounds on every network wait the provider makes, with their documented defaults.

A remote that accepts TCP and never answers (a "tarpit": a dead backend behind a live load balancer,
a firewall that black-holes packets after the handshake) must fail a task within a known time, never
hang it. Each connection the provider opens gets, unless the connection already sets them:

- ``connect_timeout`` (libpq, seconds): bounds the whole login (TCP, TLS, authentication).
- ``keepalives`` / ``keepalives_idle`` / ``keepalives_interval`` / ``keepalives_count``: a peer that
  vanished (host down, network cut) is noticed in about ``idle + interval * count`` seconds.
- ``tcp_user_timeout`` (milliseconds): data sent and never acknowledged fails the connection.

The same options become postgres_fdw server options (they are libpq options), so the LOCAL server's
own connections to the remote are bounded too. Waits on a server that is alive but slow (a query, a
lock) are bounded separately where the provider waits: ``statement_timeout`` of the reachability
check, the copy's ``target_lock_wait``, the sensor's ``measurement_timeout``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any, TypeVar

from airflow_provider_fdw.exceptions import FdwConfigError, FdwError

# Seconds a login may take (libpq connect_timeout). The connection form's Test button uses the same.
DEFAULT_CONNECT_TIMEOUT = 10
# TCP keepalives: a vanished peer is detected after idle + interval * count = 60 s.
DEFAULT_KEEPALIVES: dict[str, str] = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
# Milliseconds transmitted data may stay unacknowledged before the connection is dropped.
DEFAULT_TCP_USER_TIMEOUT_MS = 60_000
# Seconds the reachability check (CreateForeignServerOperator(check=True)) may take in all.
DEFAULT_CHECK_TIMEOUT = 60
# Seconds a copy waits for another run of the same target to finish before failing.
DEFAULT_TARGET_LOCK_WAIT = 300
# Seconds one replication-lag measurement may take (sensor poke and trigger).
DEFAULT_MEASUREMENT_TIMEOUT = 30

T = TypeVar("T")


class FdwTimeoutError(FdwError):
    """A bounded network step did not finish in time."""


def network_defaults(connect_timeout: int | None = None) -> dict[str, str]:
    """The libpq options every provider connection gets unless its connection sets them."""
    return {
        "connect_timeout": str(connect_timeout or DEFAULT_CONNECT_TIMEOUT),
        **DEFAULT_KEEPALIVES,
        "tcp_user_timeout": str(DEFAULT_TCP_USER_TIMEOUT_MS),
    }


def with_network_defaults(params: Mapping[str, Any], connect_timeout: int | None = None) -> dict[str, Any]:
    """``params`` with :func:`network_defaults` filled in where the connection leaves them unset."""
    result = dict(params)
    for name, value in network_defaults(connect_timeout).items():
        if result.get(name) in (None, ""):
            result[name] = value
    return result


def run_bounded(
    fn: Callable[[], T], seconds: float, what: str, on_timeout: Callable[[], Any] | None = None
) -> T:
    """Run ``fn`` in a daemon thread and wait at most ``seconds`` for it.

    On time-out ``on_timeout`` is called (close the connection so the thread ends soon) and
    :class:`FdwTimeoutError` is raised; the daemon thread can never keep the process alive.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"fdw-bounded-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if on_timeout is not None:
            with suppress(Exception):  # best effort: the time-out is the error to report
                on_timeout()
        raise FdwTimeoutError(f"{what} did not finish within {seconds:g}s.", step=what)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def lock_attempts(value: Any) -> int:
    """``lock_retries``: how many times a lock is tried, each bounded by ``lock_timeout``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FdwConfigError(f"lock_retries must be a positive integer, got {value!r}.")
    return value


def positive_seconds(value: Any, what: str) -> float:
    """Validate a time-out argument: a positive number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise FdwConfigError(f"{what} must be a positive number of seconds, got {value!r}.")
    return float(value)


class BoundedConnector:
    """Opens bounded connections for an Airflow ``postgres`` connection id and remembers them.

    Each connection gets :func:`network_defaults` and a ``statement_timeout`` (milliseconds), so a
    server that accepts and never answers, or a query that never ends, cannot hold the caller; and
    :meth:`abort` cancels and closes every connection still open (from any thread).
    """

    def __init__(self, conn_id: str, statement_timeout: float, connect_timeout: int | None = None) -> None:
        self.conn_id = conn_id
        self.statement_timeout = statement_timeout
        self.connect_timeout = connect_timeout
        self.connections: list[Any] = []

    def __call__(self) -> Any:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        connector = self

        class _Hook(PostgresHook):
            def _create_connection(self, conn_args: dict[str, Any]) -> Any:
                args = with_network_defaults(conn_args, connector.connect_timeout)
                bound = f"-c statement_timeout={max(1, int(connector.statement_timeout * 1000))}"
                args["options"] = f"{args['options']} {bound}" if args.get("options") else bound
                conn = super()._create_connection(args)
                connector.connections.append(conn)
                return conn

        return _Hook(postgres_conn_id=self.conn_id).get_conn()

    def abort(self) -> None:
        for conn in self.connections:
            with suppress(Exception):  # best effort on a connection that may be mid-statement
                conn.cancel()
            with suppress(Exception):
                conn.close()


def abort_all(*connectors: BoundedConnector | None) -> None:
    """Abort every given connector (a measurement's replica and primary) that is not None."""
    for connector in connectors:
        if connector is not None:
            connector.abort()


async def run_bounded_async(
    fn: Callable[[], T], seconds: float, what: str, on_timeout: Callable[[], Any] | None = None
) -> T:
    """:func:`run_bounded` for the triggerer: await a blocking ``fn`` run in a daemon thread.

    Not ``asyncio.to_thread``: a hung call there would keep the loop's default executor (and so
    the triggerer's shutdown, or ``asyncio.run`` in ``dag.test()``) waiting for ever.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():  # timed out already
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def target() -> None:
        try:
            value, error = fn(), None
        except BaseException as exc:  # handed to the awaiting coroutine
            value, error = None, exc
        with suppress(RuntimeError):  # the loop may be gone after a time-out
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=target, name=f"fdw-bounded-{what}", daemon=True).start()
    try:
        return await asyncio.wait_for(future, seconds)
    except TimeoutError:
        if on_timeout is not None:
            with suppress(Exception):
                on_timeout()
        raise FdwTimeoutError(f"{what} did not finish within {seconds:g}s.", step=what) from None


# Applying a copy: each attempt to take the target's lock waits at most this long (lock_timeout), or
# deadlock_timeout + a margin when longer (the server then cancels a blocking autovacuum; locks.py) ...
DEFAULT_SWAP_LOCK_TIMEOUT = "1s"
# ... and is retried this many times, pausing in between, before the copy fails (pg_repack style):
# readers arriving meanwhile queue behind the swap for at most one lock_timeout, never for the
# whole duration of a long reader.
DEFAULT_LOCK_RETRIES = 30
LOCK_RETRY_PAUSE_SECONDS = (0.5, 2.0)
LOCK_NOT_AVAILABLE = "55P03"


def with_lock_retries(
    fn: Callable[[], T], attempts: int, what: str, log: Any, holder: Callable[[], str] | None = None
) -> T:
    """Run ``fn`` (one transaction bounded by ``lock_timeout``) until it gets its locks.

    Each failure with ``lock_not_available`` (the lock_timeout expired) is retried after a short,
    jittered pause, at most ``attempts`` times in all; any other error is raised at once.
    ``holder`` names what still holds the lock after a failed attempt ("" when nothing known), for
    the log and the final error.
    """
    import random
    import time

    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except FdwError as exc:
            if exc.sqlstate != LOCK_NOT_AVAILABLE:
                raise
            who = ""
            if holder is not None:
                with suppress(Exception):  # a diagnosis only: the lock timeout is what to report
                    who = holder()
            held_by = f"; held by {who}" if who else ""
            if attempt == attempts:
                raise FdwTimeoutError(
                    f"{what}: could not get the lock in {attempts} attempts (another session held "
                    f"it each time: {exc}{held_by}). Retry later, or raise lock_timeout / lock_retries.",
                    step=exc.step,
                    sqlstate=exc.sqlstate,
                ) from None
            pause = random.uniform(*LOCK_RETRY_PAUSE_SECONDS)
            log.info(
                "%s: lock busy (attempt %d of %d%s); retrying in %.1fs",
                what,
                attempt,
                attempts,
                held_by,
                pause,
            )
            time.sleep(pause)
    raise AssertionError("unreachable")
