"""Advisory locks that serialise the provider's work when tasks run at the same time.

- :func:`lock_object`: PostgreSQL's ``IF NOT EXISTS`` is not safe between concurrent transactions
  (two sessions that both see no ``postgres_fdw`` extension both insert it, and one fails on
  ``pg_extension_name_index``), so every check-then-create step first takes a transaction-level
  lock keyed by the object (``airflow_provider_fdw:<kind>:<name>``, per database). It ends with the
  transaction, so a killed task never leaves it behind.
- :func:`acquire_run_lock` / :func:`release_run_lock`: the session-level lock two copies of one target
  take turns on, and a release that never hides the error that ended the copy.

Both waits are bounded by one loop (:func:`wait_for_lock`): after ``wait`` seconds the step fails with
a message naming what holds the lock, instead of hanging a worker slot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.timeouts import FdwTimeoutError

# Seconds a step waits for another task working on the same object before it fails.
DEFAULT_LOCK_WAIT = 300.0
_POLL = 0.1

LOCK_HOLDERS = q.sql.SQL(
    "SELECT a.pid, a.application_name, a.state, now() - a.xact_start "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "  AND l.objid::bigint = (hashtext(%s)::bigint & 4294967295) AND a.pid <> pg_backend_pid()"
)


def describe_holders(rows: Sequence[Sequence[Any]]) -> str:
    """Sessions of a ``(pid, application_name, state, …)`` lock holder query, for logs and errors."""
    return ", ".join(f"pid {pid} ({app or 'no application_name'}, {state})" for pid, app, state, *_ in rows)


def lock_key(kind: str, name: str) -> str:
    return f"airflow_provider_fdw:{kind}:{name}"


def wait_for_lock(
    attempt: Callable[[], bool],
    wait: float,
    holder: Callable[[], str],
    waiting: Callable[[str], None],
    timed_out: Callable[[str], Exception],
    pause: float,
) -> bool:
    """Call ``attempt`` until it takes the lock or ``wait`` seconds pass (then raise ``timed_out``).

    ``holder`` describes what holds the lock, for the one ``waiting`` log line and the error.
    Returns whether it had to wait.
    """
    deadline = time.monotonic() + wait
    waited = False
    while not attempt():
        who = holder()
        if time.monotonic() >= deadline:
            raise timed_out(who)
        if not waited:
            waiting(who)
            waited = True
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
    return waited


def lock_object(s: LocalSession, kind: str, name: str, wait: float | None = None) -> None:
    """Take the transaction-level advisory lock of one object, waiting at most ``wait`` seconds
    (default :data:`DEFAULT_LOCK_WAIT`)."""
    wait = DEFAULT_LOCK_WAIT if wait is None else wait
    key = lock_key(kind, name)
    statement = q.sql.SQL("SELECT pg_try_advisory_xact_lock(hashtext({}))").format(q.sql.Literal(key))

    def timed_out(_: str) -> Exception:
        return FdwError(
            f"Another task has been working on {kind} {name!r} for more than {wait:g} s (it holds "
            f"the advisory lock {key!r}; see pg_locks where locktype = 'advisory'). This step "
            "waits for it to finish; retry once it has, or find why it is slow.",
            step=f"lock {kind}",
        )

    waited = wait_for_lock(
        lambda: bool(s.fetchvalue(f"lock {kind} {name!r}", statement)),
        wait,
        lambda: "",
        lambda _: s.log.info("Another task is working on %s %r: waiting up to %g s for it", kind, name, wait),
        timed_out,
        _POLL,
    )
    if waited:
        s.log.info("Got the lock on %s %r: the other task finished", kind, name)


# Take the run lock, unless this server process holds it already (NULL): session advisory locks are
# re-entrant, so a server a pooler shares would hand another client's lock to this one.
TRY_RUN_LOCK = q.sql.SQL(
    "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted "
    "  AND objsubid = 1 AND pid = pg_catalog.pg_backend_pid() "
    "  AND objid::bigint = (pg_catalog.hashtext(%(key)s)::bigint & 4294967295)) THEN NULL "
    "ELSE pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext(%(key)s)) END"
)


def refuse_inside_transaction(session: LocalSession, target: Any) -> None:
    """A copy or mirror runs in transactions of its own: its run lock is taken and released in
    transactions of their own (the release rolls back first), each lock attempt is one. Inside a
    caller's ``session.transaction()`` the caller's open work would be undone, and the run's with it."""
    if session.in_transaction_block:
        raise FdwConfigError(
            f"A copy or mirror of {target} runs in transactions of its own (it takes turns with other "
            "runs, and retries a busy lock from the start): run it outside a transaction block "
            "(session.transaction()). Nothing was run; the caller's transaction is left as it was."
        )


def acquire_run_lock(session: Any, key: str, wait: float, log: Any) -> None:
    """Take the session advisory lock ``key``; wait at most ``wait`` seconds, naming the holder.

    A session takes it once per run: held already by this server process, it is another client's
    that a pooler handed this server to (the lock would be taken twice, by two runs)."""

    def attempt() -> bool:
        with session.transaction():
            taken = session.fetchvalue("lock target", TRY_RUN_LOCK, {"key": key})
            if taken is None:
                raise FdwConfigError(
                    f"The lock of this copy's target ({key}) is already held by this session's server "
                    "process, which this session did not take: a connection pooler handed it a server "
                    "another client holds it on (a pool in transaction mode, or one that does not reset "
                    "a server a killed client left: PgBouncer server_reset_query). Connect to the local "
                    "database directly or through a pool in session mode that resets sessions. Nothing "
                    "was changed."
                )
            return bool(taken)

    def holder() -> str:
        with session.transaction():
            return describe_holders(session.fetchall("read lock holder", LOCK_HOLDERS, (key,)))

    wait_for_lock(
        attempt,
        wait,
        holder,
        lambda who: log.info("Waiting up to %gs for another copy of the same target: %s", wait, who),
        lambda who: FdwTimeoutError(
            f"Another copy of the same target has been running for longer than {wait:g}s "
            f"({who or 'holder gone'}); not waiting longer (raise target_lock_wait to wait more).",
            step="lock target",
        ),
        1.0,
    )


def release_run_lock(session: Any, key: str, log: Any) -> None:
    """Release the lock; on any failure close the session (which releases it) and never raise."""
    try:
        session.rollback()
        with session.transaction():
            released = session.fetchvalue(
                "unlock target",
                q.sql.SQL("SELECT pg_catalog.pg_advisory_unlock(pg_catalog.hashtext({}))").format(
                    q.sql.Literal(key)
                ),
            )
        if not released:
            log.warning("The target lock %s was not held by this session's server process.", key)
    except Exception as exc:  # the copy's own error (if any) is the one to report
        log.warning("Could not release the target lock (%s); closing the session releases it.", exc)
        session.close()


def create_schema(s: LocalSession, schema: str, wait: float | None = None) -> None:
    """``CREATE SCHEMA IF NOT EXISTS`` under the schema's lock (safe when tasks run at once)."""
    lock_object(s, "schema", schema, wait)
    s.execute(f"create schema {schema!r}", q.create_schema(schema))


# -- lock_timeout of the attempts to take a table's lock ------------------------------------------------

# What an attempt waits beyond deadlock_timeout, at least: time for the cancelled autovacuum to end.
AUTOVACUUM_CANCEL_MARGIN_MS = 500
# In milliseconds. current_setting() shows a time with its unit ('1500ms', '2min'), which interval input
# reads; pg_settings would build every setting's row (a few milliseconds on a fresh backend).
LOCK_SETTINGS_QUERY = q.sql.SQL(
    "SELECT (EXTRACT(EPOCH FROM pg_catalog.current_setting('lock_timeout')::pg_catalog.interval) * 1000)"
    "::bigint, (EXTRACT(EPOCH FROM pg_catalog.current_setting('deadlock_timeout')::pg_catalog.interval) "
    "* 1000)::bigint"
)


# Who holds a lock on a table (granted, other sessions): pid, application_name, state, transaction
# age, whether an autovacuum worker, its query.
TABLE_LOCK_HOLDERS = q.sql.SQL(
    "SELECT a.pid, a.application_name, a.state, now() - a.xact_start, "
    "  a.backend_type = 'autovacuum worker', a.query "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'relation' AND l.granted AND l.relation = to_regclass(%s) "
    "  AND a.pid <> pg_backend_pid()"
)


def lock_holders(s: LocalSession, table: Any) -> list[tuple[Any, ...]]:
    with s.transaction():
        return s.fetchall("read lock holders", TABLE_LOCK_HOLDERS, (str(table),))


def autovacuum_holding(s: LocalSession, table: Any) -> str:
    """The autovacuum worker holding a lock on ``table`` (pid and what it does), or ""."""
    rows = [r for r in lock_holders(s, table) if r[4]]
    return ", ".join(f"autovacuum worker pid {r[0]} ({r[5]})" for r in rows)


def table_lock_holders(s: LocalSession, table: Any) -> str:
    """The sessions holding a lock on ``table`` ("pid … on <table>"), or "" (own transaction)."""
    rows = lock_holders(s, table)
    return f"{describe_holders(rows)} on {table}" if rows else ""


class LockTimeout:
    """The ``lock_timeout`` of each attempt to take a table's lock (one instance per run).

    PostgreSQL cancels an autovacuum worker that blocks a lock request, but only when the waiter's
    ``deadlock_timeout`` expires while it still waits: an attempt that gives up at or before that
    moment waits the whole autovacuum out, attempt after attempt. So the default ``lock_timeout`` is
    raised to at least ``deadlock_timeout`` plus a margin (max(0.5 s, half of it)) in the session; an
    explicit one is kept as given, with one warning when it cannot outlast ``deadlock_timeout``. An
    anti-wraparound autovacuum is never cancelled by the server: that one is still waited out.
    """

    def __init__(self, setting: str | None, explicit: bool) -> None:
        self.setting = setting
        self.explicit = explicit
        self.effective: str | None = None  # decided by the first attempt, set as such by the others

    def set_local(self, s: LocalSession, log: Any) -> None:
        """``SET LOCAL lock_timeout`` for the current transaction (nothing when there is no setting)."""
        if not self.setting:
            return
        if self.effective is not None:  # the run's session keeps its deadlock_timeout: no second read
            s.execute("set lock_timeout", q.set_local("lock_timeout", self.effective), quiet=True)
            return
        s.execute("set lock_timeout", q.set_local("lock_timeout", self.setting), quiet=True)
        self.effective = self.setting
        requested_ms, deadlock_ms = s.fetchone("read lock settings", LOCK_SETTINGS_QUERY) or (0, 0)
        floor_ms = deadlock_ms + max(AUTOVACUUM_CANCEL_MARGIN_MS, deadlock_ms // 2)
        if requested_ms >= floor_ms:
            return
        if not self.explicit:
            self.effective = f"{floor_ms}ms"
            s.execute("raise lock_timeout", q.set_local("lock_timeout", self.effective), quiet=True)
            log.info(
                "Each lock attempt waits %d ms (lock_timeout %s raised above deadlock_timeout %d ms, "
                "so that the server cancels an autovacuum holding the table)",
                floor_ms,
                self.setting,
                deadlock_ms,
            )
        elif requested_ms <= deadlock_ms:
            log.warning(
                "lock_timeout %s is not longer than the server's deadlock_timeout (%d ms): an autovacuum "
                "holding the table is then waited out (each attempt gives up before the server would "
                "cancel it), not cancelled. Leave lock_timeout unset or make it at least %d ms.",
                self.setting,
                deadlock_ms,
                floor_ms,
            )
