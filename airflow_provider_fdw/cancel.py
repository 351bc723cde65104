"""Stopping what a task started: its database sessions and child processes.

- :class:`CancelScope` records every connection and child process a hook opens, so ``on_kill``
  (worker shutdown, ``execution_timeout``) and a failed parallel copy can cancel them at once.
- :func:`die_with_parent` makes child processes (``psql``) die when the worker dies, even by
  ``kill -9``.
- :func:`application_name` marks the provider's sessions with the task instance they belong to, so
  a retry recognises and terminates the sessions a killed try left behind instead of waiting.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterable
from concurrent.futures import Future, wait
from contextlib import suppress
from typing import Any

from airflow_provider_fdw import sql as q

APP_PREFIX = "airflow_provider_fdw"
NAMEDATALEN = 64
_PR_SET_PDEATHSIG = 1


CHILD_GRACE_SECONDS = 3.0


def _kill_if_running(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        with suppress(OSError):
            proc.kill()


class CancelScope:
    """The connections and child processes of one task; :meth:`cancel` stops them all (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._processes: list[subprocess.Popen[Any]] = []
        self.cancelled = False

    def add_connection(self, conn: Any) -> Any:
        with self._lock:
            self._connections = [c for c in self._connections if not _closed(c)]
            self._connections.append(conn)
        return conn

    def add_process(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        with self._lock:
            self._processes = [p for p in self._processes if p.poll() is None]
            self._processes.append(proc)
        return proc

    def cancel(self) -> None:
        """Cancel every running statement (``PQcancel``) and stop every child; idle sessions ignore it.

        Children get SIGINT first (``psql`` then cancels its own statement on the server at once)
        and SIGKILL after :data:`CHILD_GRACE_SECONDS`.
        """
        with self._lock:
            self.cancelled = True
            processes, connections = list(self._processes), list(self._connections)
        for proc in processes:
            if proc.poll() is None:
                with suppress(OSError):
                    proc.send_signal(signal.SIGINT)
                timer = threading.Timer(CHILD_GRACE_SECONDS, _kill_if_running, (proc,))
                timer.daemon = True
                timer.start()
        for conn in connections:
            if not _closed(conn):
                with suppress(Exception):  # a broken connection has nothing left to cancel
                    conn.cancel()

    def cancel_until_done(self, futures: Iterable[Future[Any]], every: float = 0.5) -> None:
        """:meth:`cancel` now and every ``every`` s until ``futures`` have ended.

        A cancel only stops a statement already running: a range whose session was still connecting
        or preparing when another range failed would otherwise run to its end unchecked.
        """
        pending = set(futures)
        while pending:
            self.cancel()
            pending = wait(pending, timeout=every).not_done


def _closed(conn: Any) -> bool:
    return bool(getattr(conn, "closed", False))


def die_with_parent() -> None:
    """``preexec_fn`` of child processes: the kernel kills the child when the worker dies (Linux)."""
    parent = os.getppid()
    with suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def task_identity(context: Any) -> tuple[str, ...] | None:
    """(dag_id, task_id, run_id, map_index) of the running task instance, or None outside a task."""
    ti = context.get("ti") if hasattr(context, "get") else None
    if ti is None:
        return None
    return (
        str(getattr(ti, "dag_id", "")),
        str(getattr(ti, "task_id", "")),
        str(getattr(ti, "run_id", "")),
        str(getattr(ti, "map_index", -1)),
    )


def application_name(identity: tuple[str, ...] | None, target: str | None = None) -> str:
    """``airflow_provider_fdw:<key>:<dag>.<task>:<target>`` (at most 63 bytes).

    ``key`` is a hash of the task instance (dag, task, run, map index) and ``target``: identical for
    every try of that task instance, so a retry finds what an earlier try left running.
    """
    if identity is None:
        return APP_PREFIX
    dag_id, task_id, *_ = identity
    return _truncate(f"{application_prefix(identity, target)}{dag_id}.{task_id}:{target or ''}")


def application_prefix(identity: tuple[str, ...], target: str | None = None) -> str:
    """The part of :func:`application_name` that identifies the task instance and target exactly."""
    key = hashlib.sha256("\x1f".join([*identity, target or ""]).encode()).hexdigest()[:12]
    return f"{APP_PREFIX}:{key}:"


def _truncate(text: str) -> str:
    data = text.encode()[: NAMEDATALEN - 1]
    return data.decode(errors="ignore")


LEFTOVER_SESSIONS = q.sql.SQL(
    "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE starts_with(application_name, %s) AND pid <> pg_backend_pid()"
)


def terminate_leftovers(session: Any, prefix: str, log: Any) -> list[int]:
    """Terminate sessions of an earlier try of this task instance (same application_name prefix)."""
    with session.transaction():
        rows = session.fetchall("terminate sessions of an earlier try", LEFTOVER_SESSIONS, (prefix,))
    pids = [pid for pid, _ in rows]
    if pids:
        log.warning("Terminated %d session(s) an earlier try left running: pids %s", len(pids), pids)
    return pids
