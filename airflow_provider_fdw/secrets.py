"""Statements that set a secret (a user mapping's password) without the secret in any statement text.

PostgreSQL logs the text of a failing statement (``log_min_error_statement = error`` by default),
and utility statements such as ``CREATE USER MAPPING`` cannot take bind parameters. So the password
never travels in SQL text at all:

1. The statement is composed with a one-off placeholder literal instead of the password.
2. The password is sent as ``COPY … FROM STDIN`` data into a temporary table dropped at the end of
   the transaction (COPY data is never logged).
3. A temporary PL/pgSQL function replaces the placeholder with ``quote_literal(password)`` and runs
   the statement; an error is re-raised with its message, detail and hint only (the statement,
   which now holds the password, is not in the error's context).

The provider's own log lines then show the step, never the statement; the server log shows the
call of the function, never the password.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.session import LocalSession

_HOLDER = "fdw_secret_holder"
_RUNNER = "fdw_run_with_secret"

CREATE_HOLDER = q.sql.SQL(
    "CREATE TEMPORARY TABLE IF NOT EXISTS {} (secret text NOT NULL) ON COMMIT DROP"
).format(q.sql.Identifier(_HOLDER))

CREATE_RUNNER = q.sql.SQL(
    "CREATE OR REPLACE FUNCTION pg_temp.{}(statement text, placeholder text) RETURNS void "
    "LANGUAGE plpgsql AS $fdw$ "
    "DECLARE state text; detail text; hint text; message text; "
    "BEGIN "
    "  EXECUTE replace(statement, quote_literal(placeholder), "
    "    (SELECT quote_literal(secret) FROM pg_temp.{})); "
    "EXCEPTION WHEN OTHERS THEN "
    "  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, "
    "    detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT; "
    "  RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail, HINT = hint; "
    "END $fdw$"
).format(q.sql.Identifier(_RUNNER), q.sql.Identifier(_HOLDER))

RUN = q.sql.SQL("SELECT pg_temp.{}(%s, %s)").format(q.sql.Identifier(_RUNNER))


def execute_with_secret(
    s: LocalSession, step: str, statement_for: Callable[[str], Any], secret: str, log: Any
) -> None:
    """Run ``statement_for(value)`` with ``value`` = ``secret``, inside the current transaction,
    without ``secret`` in any statement text (see the module docstring)."""
    placeholder = f"fdw-secret-placeholder-{uuid.uuid4().hex}"
    log.info("%s (statement not logged: it sets a password)", step)
    s.execute(step, CREATE_HOLDER, quiet=True)
    s.execute(step, q.sql.SQL("TRUNCATE {}").format(q.sql.Identifier(_HOLDER)), quiet=True)
    s.copy_in(
        step, q.sql.SQL("COPY {} (secret) FROM STDIN").format(q.sql.Identifier(_HOLDER)), copy_text(secret)
    )
    s.execute(step, CREATE_RUNNER, quiet=True)
    s.execute(step, RUN, (s.render(statement_for(placeholder)), placeholder), quiet=True)
    s.execute(step, q.sql.SQL("TRUNCATE {}").format(q.sql.Identifier(_HOLDER)), quiet=True)


def copy_text(value: str) -> bytes:
    """One row of one column in COPY text format (backslash escapes for the special characters)."""
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return (escaped + "\n").encode()
