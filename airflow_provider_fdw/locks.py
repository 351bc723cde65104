"""Advisory locks that serialise the provider's DDL and writes when tasks run at the same time.

PostgreSQL's ``IF NOT EXISTS`` is not safe between concurrent transactions: two sessions that both
see no ``postgres_fdw`` extension both insert it, and one fails on ``pg_extension_name_index``. So
every check-then-create step first takes a transaction-level advisory lock keyed by the object
(``airflow_provider_fdw:<kind>:<name>``, per database), then checks. The lock ends with the
transaction, so a killed task never leaves it behind. The wait is bounded: after ``wait`` seconds
the step fails with a message naming the object, instead of hanging a worker slot.
"""

from __future__ import annotations

import time

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.session import LocalSession

# Seconds a step waits for another task working on the same object before it fails.
DEFAULT_LOCK_WAIT = 300.0
_POLL = 0.1


def lock_key(kind: str, name: str) -> str:
    return f"airflow_provider_fdw:{kind}:{name}"


def lock_object(s: LocalSession, kind: str, name: str, wait: float | None = None) -> None:
    """Take the transaction-level advisory lock of one object, waiting at most ``wait`` seconds
    (default :data:`DEFAULT_LOCK_WAIT`)."""
    wait = DEFAULT_LOCK_WAIT if wait is None else wait
    key = lock_key(kind, name)
    statement = q.sql.SQL("SELECT pg_try_advisory_xact_lock(hashtext({}))").format(q.sql.Literal(key))
    deadline = time.monotonic() + wait
    waited = False
    while True:
        row = s.fetchone(f"lock {kind} {name!r}", statement)
        if row and row[0]:
            if waited:
                s.log.info("Got the lock on %s %r: the other task finished", kind, name)
            return
        if time.monotonic() >= deadline:
            raise FdwError(
                f"Another task has been working on {kind} {name!r} for more than {wait:g} s (it holds "
                f"the advisory lock {key!r}; see pg_locks where locktype = 'advisory'). This step "
                "waits for it to finish; retry once it has, or find why it is slow.",
                step=f"lock {kind}",
            )
        if not waited:
            s.log.info("Another task is working on %s %r: waiting up to %g s for it", kind, name, wait)
            waited = True
        time.sleep(_POLL)


def create_schema(s: LocalSession, schema: str, wait: float | None = None) -> None:
    """``CREATE SCHEMA IF NOT EXISTS`` under the schema's lock (safe when tasks run at once)."""
    lock_object(s, "schema", schema, wait)
    s.execute(f"create schema {schema!r}", q.create_schema(schema))
