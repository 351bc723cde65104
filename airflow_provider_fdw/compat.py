"""The one module that knows psycopg 2 from psycopg 3.

providers-postgres 7.x hands out psycopg 3 connections when SQLAlchemy 2 and psycopg are installed and
psycopg2 connections otherwise (6.x: always psycopg2). Statements must be composed with the ``sql``
module of the driver that renders them, so the package imports ``sql`` from here; every other
difference (errors, server facts, COPY, parse-only checks) is a function below taking a
:class:`CompatConnection`, the small interface both drivers' connections share.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from airflow.providers.postgres.hooks import postgres as _postgres_hook

USE_PSYCOPG3: bool = bool(getattr(_postgres_hook, "USE_PSYCOPG3", False))

if USE_PSYCOPG3:
    import psycopg as _driver
    from psycopg import sql
else:
    import psycopg2 as _driver  # type: ignore[no-redef]
    from psycopg2 import sql  # type: ignore[no-redef]

DriverError: type[Exception] = _driver.Error

__all__ = [
    "USE_PSYCOPG3",
    "CompatConnection",
    "DriverError",
    "Fragment",
    "backend_pid",
    "copy_between",
    "copy_from_bytes",
    "error_fields",
    "make_conninfo",
    "parameter_status",
    "prepare_only",
    "server_unavailable",
    "server_version",
    "set_transaction_client_encoding",
    "sql",
    "with_params",
]


class CompatConnection(Protocol):
    """What this package calls on a connection of either driver; everything else goes through here."""

    def cursor(self, *args: Any, **kwargs: Any) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> Any: ...


class Fragment(sql.SQL):
    """SQL text spelled from names rather than written as a template: a type as ``format_type()``
    writes it (``"my%type"``, ``numeric(12,2)``). :func:`with_params` doubles its ``%`` as it does an
    identifier's; in a plain ``sql.SQL`` they are placeholders."""


def with_params(statement: Any, params: Any, context: Any) -> Any:
    """``statement`` as it must be handed to ``cursor.execute`` with ``params`` (either driver).

    Run with parameters (any, even empty; None: not), a statement is parsed by the driver, and every
    ``%`` in it is a placeholder or ``%%``, also inside a quoted identifier or literal: sql.Identifier
    and sql.Literal quote a name or value but leave its ``%`` alone, so a column ``wm%b`` failed the
    statement ("only '%s', '%b', '%t' are allowed") and one named ``a%s`` took a parameter's place.
    PostgreSQL allows such names. So a composed statement is rendered here (``context``: connection
    or cursor) with the ``%`` of its Identifier, Literal and :class:`Fragment` parts doubled, the driver
    turning them back into one; its ``sql.SQL`` template parts (where ``%s``, ``%(name)s`` and ``%%``
    are written as such) and Placeholders are left as they are. Without parameters, or for a
    statement already a string, nothing changes."""
    if params is None or not isinstance(statement, sql.Composable):
        return statement
    return _bindable(statement, context)


def _bindable(part: Any, context: Any) -> str:
    if isinstance(part, sql.Composed):
        return "".join(_bindable(p, context) for p in part)
    text = str(part.as_string(context))
    return text.replace("%", "%%") if isinstance(part, (sql.Identifier, sql.Literal, Fragment)) else text


def error_fields(exc: BaseException) -> dict[str, Any]:
    """Return the server's diagnostic fields of a driver error (sqlstate, message, detail, hint)."""
    diag = getattr(exc, "diag", None)
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    # Without diagnostics (client-side errors) only the first line: later lines may quote the statement.
    fallback = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return {
        "sqlstate": sqlstate,
        "message": primary or fallback,
        "detail": getattr(diag, "message_detail", None) if diag is not None else None,
        "hint": getattr(diag, "message_hint", None) if diag is not None else None,
    }


def server_unavailable(exc: BaseException) -> bool:
    """Did a login fail because the server is down, starting or shutting down (worth waiting for),
    rather than because it turned this login away (wrong password, unknown role or database)?

    Decided by libpq's ``PQping`` with the failed attempt's own settings, minus the password (an
    authentication request is enough to show the server is up, and the secret is not sent again):
    no response, or "cannot connect now" (57P03), means unavailable. psycopg2 keeps nothing of a
    failed attempt's settings: there the answer is always False and the error is raised as before.
    """
    if not USE_PSYCOPG3 or not isinstance(exc, _driver.OperationalError):
        return False
    from psycopg import pq

    attempt = getattr(exc, "pgconn", None)  # set only on errors of a connection attempt
    if attempt is None or attempt.backend_pid:
        return False
    settings = {
        option.keyword.decode(): option.val.decode()
        for option in attempt.info
        if option.val is not None and option.keyword != b"password"
    }
    answer = pq.PGconn.ping(make_conninfo(**settings).encode())
    return answer in (pq.Ping.NO_RESPONSE, pq.Ping.REJECT)


def make_conninfo(**params: Any) -> str:
    """A libpq connection string with values quoted the way libpq expects."""
    clean = {k: str(v) for k, v in params.items() if v is not None and v != ""}
    if USE_PSYCOPG3:
        from psycopg.conninfo import make_conninfo as _make

        return _make(**clean)
    from psycopg2.extensions import make_dsn

    return make_dsn(**clean)


def server_version(conn: CompatConnection) -> int:
    """The server's version number (``150004`` for 15.4), known from the login (no query)."""
    info = getattr(conn, "info", None)  # psycopg 3; psycopg2 has conn.server_version
    return int(getattr(info, "server_version", None) or getattr(conn, "server_version", 0) or 0)


def backend_pid(conn: CompatConnection) -> int:
    """The process id of the connection's server backend (no query)."""
    if USE_PSYCOPG3:
        return int(conn.info.backend_pid)  # type: ignore[attr-defined]
    return int(conn.get_backend_pid())  # type: ignore[attr-defined]


def parameter_status(conn: CompatConnection, name: str) -> str | None:
    """A setting the server reports to the client on its own (no query, no transaction)."""
    if USE_PSYCOPG3:
        return conn.info.parameter_status(name)  # type: ignore[attr-defined,no-any-return]
    return conn.get_parameter_status(name)  # type: ignore[attr-defined,no-any-return]


def set_transaction_client_encoding(conn: CompatConnection, encoding: str) -> None:
    """``client_encoding`` = ``encoding`` for the transaction about to start, the driver encoding the
    statements and decoding the rows in it as well.

    psycopg 3 follows the server's reports of the setting: ``SET LOCAL`` (``set_config(…, true)``),
    which the transaction's end undoes, psycopg with it (rows read after it are decoded in the
    session's own encoding again). psycopg2 learns the encoding only when it sets it itself
    (``set_client_encoding``: for the session, and after rolling back an open transaction), so it
    must run before the transaction's first statement; the session then stays in ``encoding``,
    which psycopg2 speaks from then on.
    """
    if USE_PSYCOPG3:
        statement = sql.SQL("SELECT pg_catalog.set_config('client_encoding', {}, true)")
        with conn.cursor() as cur:
            cur.execute(statement.format(sql.Literal(encoding)))
        return
    from psycopg2.extensions import TRANSACTION_STATUS_IDLE

    if conn.get_transaction_status() != TRANSACTION_STATUS_IDLE:  # type: ignore[attr-defined]
        raise RuntimeError("psycopg2: client_encoding must be set before the transaction's first statement")
    conn.set_client_encoding(encoding)  # type: ignore[attr-defined]


def prepare_only(conn: CompatConnection, statement: str) -> str | None:
    """Have the server check ``statement``; return its error message, or None when it is accepted.

    psycopg 3 parses and binds only (PQprepare of the unnamed statement: one statement, nothing
    runs). psycopg2 has no extended protocol, so the statement RUNS: callers make it harmless (``LIMIT
    0``) and refuse ``;`` beforehand. The connection must be outside a transaction block and is left so.
    """
    if USE_PSYCOPG3:
        from psycopg import pq

        pgconn = conn.pgconn  # type: ignore[attr-defined]
        result = pgconn.prepare(b"", statement.encode(conn.info.encoding))  # type: ignore[attr-defined]
        accepted = result.status == pq.ExecStatus.COMMAND_OK
        message = None if accepted else result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY)
        if pgconn.transaction_status != pq.TransactionStatus.IDLE:
            conn.rollback()
        if accepted:
            return None
        return message.decode(errors="replace") if message else "the server refused it"
    try:
        conn.cursor().execute(statement)
    except DriverError as exc:
        return str(error_fields(exc)["message"])
    finally:
        conn.rollback()
    return None


def copy_from_bytes(conn: CompatConnection, statement: Any, data: bytes) -> None:
    """``COPY … FROM STDIN`` (composed ``statement``) fed with ``data``."""
    if USE_PSYCOPG3:
        with conn.cursor().copy(statement) as copy:
            copy.write(data)
        return
    conn.cursor().copy_expert(_render(conn, statement), io.BytesIO(data))


def copy_between(
    remote: CompatConnection,
    local: CompatConnection,
    out_stmt: Any,
    in_stmt: Any,
    on_rows: Callable[[int], Any],
) -> int:
    """Relay ``COPY … TO STDOUT`` on ``remote`` into ``COPY … FROM STDIN`` on ``local`` chunk by chunk.

    Memory stays flat whatever the table size; ``on_rows(n)`` is called every 10,000 rows. Returns
    the rows the local COPY reported.
    """
    if USE_PSYCOPG3:
        seen = 0
        local_cur = local.cursor()
        with remote.cursor().copy(out_stmt) as out, local_cur.copy(in_stmt) as inp:
            put = local.pgconn.put_copy_data  # type: ignore[attr-defined]
            started = False
            for chunk in out:  # psycopg yields one row per chunk
                # The first row through Copy.write, which then knows the stream carries its own
                # binary header; the others straight into libpq's buffer, which sends every 8 kB as
                # Copy.write's does, without its waiting machinery per call (a third of a 10,000-row
                # relay). 0: the buffer is full, and Copy.write waits until it can send.
                if not started or not put(chunk):
                    inp.write(chunk)
                    started = True
                seen += 1
                if seen == 10_000:
                    on_rows(seen)
                    seen = 0
        return int(local_cur.rowcount)
    # psycopg2: copy_expert blocks on one file each, so a thread writes the remote's rows into a pipe.
    read_fd, write_fd = os.pipe()
    sink = _CountingWriter(os.fdopen(write_fd, "wb", buffering=1 << 20), on_rows)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            remote.cursor().copy_expert(_render(remote, out_stmt), sink)
        except BaseException as exc:
            errors.append(exc)
        finally:
            sink.close()

    thread = threading.Thread(target=produce, name="fdw-copy-producer")
    thread.start()
    local_cur = local.cursor()
    with os.fdopen(read_fd, "rb", buffering=1 << 20) as reader:
        try:
            local_cur.copy_expert(_render(local, in_stmt), reader, size=1 << 18)
        finally:
            thread.join()
    if errors:
        raise errors[0]
    return int(local_cur.rowcount)


def _render(conn: CompatConnection, statement: Any) -> str:
    return statement if isinstance(statement, str) else str(statement.as_string(conn))


class _CountingWriter:
    """File-like sink for psycopg2's copy_expert: counts rows (one write per row) and reports them."""

    def __init__(self, raw: Any, on_rows: Callable[[int], Any]) -> None:
        self.raw, self.on_rows, self.pending = raw, on_rows, 0

    def write(self, data: bytes) -> int:
        self.pending += 1
        if self.pending == 10_000:
            self.on_rows(self.pending)
            self.pending = 0
        return int(self.raw.write(data))

    def close(self) -> None:
        self.raw.close()
