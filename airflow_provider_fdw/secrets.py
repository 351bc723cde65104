"""Statements that set a secret (a user mapping's password) without the secret in any statement text.

PostgreSQL logs the text of a failing statement (``log_min_error_statement = error`` by default),
and utility statements such as ``CREATE USER MAPPING`` cannot take bind parameters. So the password
never travels in SQL text at all:

1. The statement is composed with a one-off placeholder literal instead of the password.
2. The password is sent as ``COPY … FROM STDIN`` data into a temporary table dropped at the end of
   the transaction (COPY data is never logged), as the hex digits of its UTF-8 bytes: ASCII, so no
   client encoding of the session (``LATIN1``) can alter it on the way.
3. A temporary PL/pgSQL function decodes it, replaces the placeholder with its ``quote_literal``
   and runs the statement; an error is re-raised with its message, detail and hint only (the
   statement, which now holds the password, is not in the error's context).

Every name is qualified (``pg_temp.``, ``pg_catalog.``) and the function runs with its own
``search_path``: a table or function of the same name that another role put earlier in the task
role's ``search_path`` never sees the password.

The provider's own log lines then show the step, never the statement; the server log shows the
call of the function, never the password.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.session import LocalSession

_HOLDER = q.sql.Identifier("pg_temp", "fdw_secret_holder")
_RUNNER = q.sql.Identifier("pg_temp", "fdw_run_with_secret")

CREATE_HOLDER = q.sql.SQL(
    "CREATE TEMPORARY TABLE IF NOT EXISTS {} (secret text NOT NULL) ON COMMIT DROP"
).format(_HOLDER)

CREATE_RUNNER = q.sql.SQL(
    "CREATE OR REPLACE FUNCTION {}(statement text, placeholder text) RETURNS void "
    "LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fdw$ "
    "DECLARE state text; detail text; hint text; message text; plain text; "
    "BEGIN "
    "  BEGIN "  # the conversion's own error would quote the password's bytes
    "    SELECT pg_catalog.convert_from(pg_catalog.decode(h.secret, 'hex'), 'UTF8') INTO STRICT plain "
    "    FROM {} AS h; "
    "  EXCEPTION WHEN OTHERS THEN "
    "    RAISE EXCEPTION USING ERRCODE = 'character_not_in_repertoire', "
    "      MESSAGE = 'the password has characters the encoding of this database cannot hold'; "
    "  END; "
    "  EXECUTE pg_catalog.replace(statement, pg_catalog.quote_literal(placeholder), "
    "    pg_catalog.quote_literal(plain)); "
    "EXCEPTION WHEN OTHERS THEN "
    "  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, "
    "    detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT; "
    "  RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail, HINT = hint; "
    "END $fdw$"
).format(_RUNNER, _HOLDER)

RUN = q.sql.SQL("SELECT {}(%s, %s)").format(_RUNNER)
EMPTY_HOLDER = q.sql.SQL("TRUNCATE {}").format(_HOLDER)
FILL_HOLDER = q.sql.SQL("COPY {} (secret) FROM STDIN").format(_HOLDER)


def execute_with_secret(
    s: LocalSession, step: str, statement_for: Callable[[str], Any], secret: str, log: Any
) -> None:
    """Run ``statement_for(value)`` with ``value`` = ``secret``, inside the current transaction,
    without ``secret`` in any statement text (see the module docstring)."""
    placeholder = f"fdw-secret-placeholder-{uuid.uuid4().hex}"
    log.info("%s (statement not logged: it sets a password)", step)
    s.execute(step, CREATE_HOLDER, quiet=True)
    s.execute(step, EMPTY_HOLDER, quiet=True)
    s.copy_in(step, FILL_HOLDER, secret.encode().hex().encode() + b"\n")
    s.execute(step, CREATE_RUNNER, quiet=True)
    s.execute(step, RUN, (s.render(statement_for(placeholder)), placeholder), quiet=True)
    s.execute(step, EMPTY_HOLDER, quiet=True)
