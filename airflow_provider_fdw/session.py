"""One local database session: runs composed statements, logs them redacted, translates errors.

Every statement the hooks run goes through :meth:`LocalSession.execute`, so there is one place where
statements are logged (with secrets replaced by ``***``) and where driver errors become
:class:`FdwError` naming the object and the step, never quoting the statement (a syntax error's
``LINE 1: …`` context could otherwise echo a password).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from airflow_provider_fdw.compat import (
    DriverError,
    backend_pid,
    copy_from_bytes,
    error_fields,
    parameter_status,
    set_transaction_client_encoding,
    sql,
    with_params,
)
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.timeouts import DEFAULT_CONNECT_TIMEOUT

T = TypeVar("T")

# The server process each connection was prepared on (hooks/fdw.py prepare_session). A session's
# settings, its run lock and its temporary tables live in that process: a transaction that runs in
# another one means a pooler (PgBouncer pool_mode = transaction) shares this client's server.
BACKEND_PIDS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
CURRENT_BACKEND = sql.SQL("SELECT pg_catalog.pg_backend_pid()")


def remember_backend(conn: Any, pid: int) -> None:
    with suppress(TypeError):  # a connection type without weak references: not checked
        BACKEND_PIDS[conn] = pid


def pooled(conn: Any) -> tuple[int, int] | None:
    """(server process, process id the connection reports) when a pooler stands between them: it
    reports its own (the key of its cancel requests). None for a direct connection, whose server
    process is the one it reports for its whole life, or one never prepared."""
    try:
        server = BACKEND_PIDS.get(conn)
    except TypeError:  # a connection type without weak references: not checked
        return None
    if server is None:
        return None
    reported = backend_pid(conn)
    return None if reported == server else (server, reported)


def pooled_error(first: int, now: int) -> FdwConfigError:
    return FdwConfigError(
        f"This session's transactions run in different server processes (pid {first}, now {now}): a "
        "connection pooler in transaction or statement mode (PgBouncer pool_mode = transaction) is in "
        "front of the database. The provider keeps a session's settings, its run lock and its "
        "temporary tables from one transaction to the next, so it needs a server session of its own: "
        "connect directly or through a pool in session mode. This transaction was not run."
    )


class LocalSession:
    """A connection to the LOCAL database plus the secrets that must never be logged."""

    def __init__(self, conn: Any, log: logging.Logger | Any, secrets: Iterable[str] = ()) -> None:
        self.conn = conn
        self.log = log
        self.secrets = {s for s in secrets if s}
        self._depth = 0  # nesting of transaction() blocks: only the outermost commits
        # Seconds a remote may take to answer a login (the hook's connect_timeout): also how long the
        # worker waits for a remote to greet it before the local server dials it (remote_answers.py).
        self.connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    def redact(self, text: str) -> str:
        """Replace every spelling a secret can take in SQL (quotes doubled, backslashes doubled in an
        ``E'…'`` literal) by ``***``. Statements that set a secret are not logged at all (secrets.py)."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            doubled = secret.replace("'", "''")
            escaped = secret.replace("\\", "\\\\")
            for form in sorted({escaped.replace("'", "''"), escaped, doubled, secret}, key=len, reverse=True):
                text = text.replace(form, "***")
        return text

    def render(self, statement: Any) -> str:
        return statement if isinstance(statement, str) else statement.as_string(self.conn)

    def execute(self, step: str, statement: Any, params: Any = None, *, quiet: bool = False) -> Any:
        """Run one statement; return the cursor (rows can be fetched from it)."""
        try:
            cur = self.conn.cursor()
        except DriverError as exc:  # a closed connection fails here: same error type as a statement's
            raise self.error(step, exc) from None
        if not quiet:
            self.log.info("%s: %s", step, self.redact(self.render(statement)))
        try:  # names and literals holding % must not read as placeholders (compat.with_params)
            cur.execute(with_params(statement, params, self.conn), params)
        except DriverError as exc:
            raise self.error(step, exc) from None
        return cur

    def copy_in(self, step: str, statement: Any, data: bytes) -> None:
        """``COPY … FROM STDIN`` with ``data`` (both drivers)."""
        try:
            copy_from_bytes(self.conn, statement, data)
        except DriverError as exc:
            raise self.error(step, exc) from None

    def fetchall(self, step: str, statement: Any, params: Any = None) -> list[tuple[Any, ...]]:
        return list(self.execute(step, statement, params, quiet=True).fetchall())

    def fetchone(self, step: str, statement: Any, params: Any = None) -> tuple[Any, ...] | None:
        return self.execute(step, statement, params, quiet=True).fetchone()

    def fetchrow(self, step: str, statement: Any, params: Any = None) -> tuple[Any, ...]:
        """The one row a statement must return (an aggregate, a setting); a clear error when none."""
        row = self.fetchone(step, statement, params)
        if row is None:
            raise FdwError(f"{step}: the statement returned no row (changed meanwhile?).", step=step)
        return tuple(row)

    def fetchvalue(self, step: str, statement: Any, params: Any = None) -> Any:
        """The first column of the one row a statement must return."""
        return self.fetchrow(step, statement, params)[0]

    @contextmanager
    def transaction(self, client_encoding: str | None = None) -> Iterator[LocalSession]:
        """Commit when the block succeeds, roll back (leaving nothing half-done) when it raises.

        Blocks nest: an inner block joins the outer one, which alone commits (several steps, e.g.
        server, user mappings and the reachability check, then commit or roll back together).

        ``client_encoding``: the transaction runs in it (no statement when the session already
        does; compat.set_transaction_client_encoding): file_fdw decodes a file without an
        ``encoding`` option in the reading session's client_encoding. Given to an outermost block.
        """
        if client_encoding is not None:
            self._set_client_encoding(client_encoding)
        if self._depth == 0:
            self._check_backend()
        self._depth += 1
        try:
            yield self
        except BaseException:
            if self._depth == 1:
                self._rollback()
            raise
        finally:
            self._depth -= 1
        if self._depth > 0:
            return
        try:
            self.conn.commit()
        except DriverError as exc:
            self._rollback()
            raise self.error("commit", exc) from None

    def speaks(self, client_encoding: str | None) -> bool:
        """Whether the session's client_encoding is ``client_encoding`` already (None: any)."""
        return client_encoding is None or parameter_status(self.conn, "client_encoding") == client_encoding

    def _set_client_encoding(self, encoding: str) -> None:
        if self.speaks(encoding):
            return
        try:
            set_transaction_client_encoding(self.conn, encoding)
        except DriverError as exc:
            if self._depth == 0:
                self._rollback()
            raise self.error("set client_encoding", exc) from None

    def _check_backend(self) -> None:
        """Before a transaction through a pooler: it must run in the server process the session was
        prepared on (a direct connection always does: no round trip)."""
        pids = pooled(self.conn)
        if pids is None:
            return
        first = pids[0]
        now = self.fetchvalue("check the server process", CURRENT_BACKEND)
        if now != first:
            self._rollback()
            raise pooled_error(first, now)

    @property
    def in_transaction_block(self) -> bool:
        return self._depth > 0

    def rollback(self) -> None:
        self._rollback()

    @contextmanager
    def undone(self, step: str) -> Iterator[LocalSession]:
        """Statements whose effects never stay (probes: session-private foreign tables read once):
        inside a transaction block, in a savepoint rolled back to (the block's own work is kept);
        else rolled back with their transaction."""
        nested = self.in_transaction_block
        if nested:
            self.execute(step, sql.SQL("SAVEPOINT fdw_undone"), quiet=True)
        try:
            yield self
        finally:
            if nested:
                self.execute(step, sql.SQL("ROLLBACK TO SAVEPOINT fdw_undone"), quiet=True)
                self.execute(step, sql.SQL("RELEASE SAVEPOINT fdw_undone"), quiet=True)
            else:
                self._rollback()

    def in_savepoint(self, step: str, work: Callable[[], T]) -> T:
        """``work()`` inside the current transaction, in a savepoint: when it fails the transaction
        is rolled back to the savepoint (what came before is kept, and it goes on) and the error
        raised; else the savepoint is released."""
        self.execute(step, sql.SQL("SAVEPOINT fdw_attempt"), quiet=True)
        try:
            result = work()
        except FdwError:
            self.execute(step, sql.SQL("ROLLBACK TO SAVEPOINT fdw_attempt"), quiet=True)
            raise
        self.execute(step, sql.SQL("RELEASE SAVEPOINT fdw_attempt"), quiet=True)
        return result

    def error(self, step: str, exc: BaseException) -> FdwError:
        message = f"{step} failed: {describe(exc)}"
        return FdwError(self.redact(message), step=step, sqlstate=error_fields(exc)["sqlstate"])

    def close(self) -> None:
        with suppress(DriverError):  # closing a broken connection must not mask the original error
            self.conn.close()

    def _rollback(self) -> None:
        with suppress(DriverError):
            self.conn.rollback()


def describe(exc: BaseException) -> str:
    """The server's message of a driver error with its detail and hint (never the statement)."""
    if isinstance(exc, FdwError):
        return str(exc)
    fields = error_fields(exc)
    message = fields["message"]
    if fields["detail"]:
        message += f" (detail: {fields['detail']})"
    if fields["hint"]:
        message += f" (hint: {fields['hint']})"
    return message
