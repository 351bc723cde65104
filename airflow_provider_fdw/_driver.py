"""The database driver PostgresHook hands out, and its ``sql`` composition module.

providers-postgres 7.x returns psycopg 3 connections when SQLAlchemy 2 and psycopg are installed and
psycopg2 connections otherwise. Statements must be composed with the module of the driver that will
render them, so everything in this package imports ``sql`` from here.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.postgres.hooks import postgres as _postgres_hook

USE_PSYCOPG3: bool = bool(getattr(_postgres_hook, "USE_PSYCOPG3", False))

if USE_PSYCOPG3:
    import psycopg as _driver
    from psycopg import sql
else:
    import psycopg2 as _driver  # type: ignore[no-redef]
    from psycopg2 import sql  # type: ignore[no-redef]

DriverError: type[Exception] = _driver.Error

__all__ = ["USE_PSYCOPG3", "DriverError", "error_fields", "sql"]


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


def make_conninfo(**params: Any) -> str:
    """A libpq connection string with values quoted the way libpq expects."""
    clean = {k: str(v) for k, v in params.items() if v is not None and v != ""}
    if USE_PSYCOPG3:
        from psycopg.conninfo import make_conninfo as _make

        return _make(**clean)
    from psycopg2.extensions import make_dsn

    return make_dsn(**clean)
