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
   statement, which now holds the password, is not in the error's context). When
   ``pg_stat_statements.track = all`` would record that nested statement (text included, readable
   by every member of ``pg_read_all_stats``), its ``track_utility`` is turned off for the statement,
   or, for a role that may not set it, the password is not set (the error says what to grant). And
   ``log_error_verbosity`` is ``terse`` while it runs, where the role may set it (superusers; else
   ``GRANT SET ON PARAMETER log_error_verbosity``): what the server logs meanwhile (an event
   trigger's ``RAISE LOG``) has no ``CONTEXT`` line quoting the statement. A cancel
   (``statement_timeout``, ``on_kill``) and a failed ``ASSERT`` (an event trigger's password policy)
   are caught and re-raised the same way: ``WHEN OTHERS`` alone does not catch them.

Anything the server reports while the statement with the password runs carries it in a
``CONTEXT: SQL statement "…"`` line, caught or not: a lock wait logged by ``log_lock_waits``, a
``FATAL`` (``pg_terminate_backend``, a client gone). So the statement first runs with the
placeholder, in a savepoint rolled back at once (a rehearsal): its waits for other transactions
(a DBA's uncommitted ``ALTER USER MAPPING``, a concurrent ``CREATE``) and its errors (no such
role, permission denied, an option missing) happen there, where the context shows the placeholder.
Its locks go with its savepoint, though: a change of the same mapping begun in between would make
the statement with the password wait. So that statement runs with a ``lock_timeout`` shorter than
``deadlock_timeout`` (half of it, at most 50 ms: it gives up before ``log_lock_waits`` reports
anything), and when it gives up the runner waits with the placeholder statement instead (in a
subtransaction it undoes) and tries again.

Every name is qualified (``pg_temp.``, ``pg_catalog.``) and the function runs with its own
``search_path``: a table or function of the same name that another role put earlier in the task
role's ``search_path`` never sees the password.

The provider's own log lines then show the step, never the statement; the server log shows the
call of the function, never the password.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.session import LocalSession

_HOLDER = q.sql.Identifier("pg_temp", "fdw_secret_holder")
_RUNNER = q.sql.Identifier("pg_temp", "fdw_run_with_secret")

CREATE_HOLDER = q.sql.SQL(
    "CREATE TEMPORARY TABLE IF NOT EXISTS {} (secret text NOT NULL) ON COMMIT DROP"
).format(_HOLDER)

CREATE_RUNNER = q.sql.SQL(
    "CREATE OR REPLACE FUNCTION {}(statement text, placeholder text) RETURNS void "
    "LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fdw$ "
    "DECLARE state text; detail text; hint text; message text; plain text; muted boolean := false; "
    "  verbosity text := pg_catalog.current_setting('log_error_verbosity'); terse boolean := false; "
    "  quick integer; waits integer := 0; patience text := pg_catalog.current_setting('lock_timeout'); "
    "BEGIN "
    "  BEGIN "  # the conversion's own error would quote the password's bytes
    "    SELECT pg_catalog.convert_from(pg_catalog.decode(h.secret, 'hex'), 'UTF8') INTO STRICT plain "
    "    FROM {} AS h; "
    "  EXCEPTION WHEN OTHERS THEN "
    "    RAISE EXCEPTION USING ERRCODE = 'character_not_in_repertoire', "
    "      MESSAGE = 'the password has characters the encoding of this database cannot hold'; "
    "  END; "
    # pg_stat_statements.track = all records nested statements, their text included, for every
    # member of pg_read_all_stats (pg_monitor) to read: not this one, or not at all.
    "  IF pg_catalog.current_setting('pg_stat_statements.track', true) = 'all' "
    "     AND pg_catalog.current_setting('pg_stat_statements.track_utility', true) = 'on' THEN "
    "    BEGIN "
    "      PERFORM pg_catalog.set_config('pg_stat_statements.track_utility', 'off', true); "
    "      muted := true; "
    "    EXCEPTION WHEN insufficient_privilege THEN "
    "      RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', "
    "        MESSAGE = 'pg_stat_statements.track = all would record the statement that sets the "
    "password, with the password, and this role may not turn pg_stat_statements.track_utility off "
    "for it', "
    "        HINT = 'As a superuser: GRANT SET ON PARAMETER pg_stat_statements.track_utility TO ' "
    "          || pg_catalog.quote_ident(current_user::text) || ' (or set pg_stat_statements.track "
    "to top for this role).'; "
    "    END; "
    "  END IF; "
    # Whatever the server logs while the statement runs (an event trigger's RAISE LOG, a lock wait,
    # a FATAL) quotes it in a CONTEXT line: none in the log, where this role may say so.
    "  IF verbosity <> 'terse' THEN "
    "    BEGIN "
    "      PERFORM pg_catalog.set_config('log_error_verbosity', 'terse', true); "
    "      terse := true; "
    "    EXCEPTION WHEN insufficient_privilege THEN NULL; "
    "    END; "
    "  END IF; "
    # The rehearsal's locks went with its savepoint: a change of the same mapping begun since then
    # would make the statement with the password wait, and log_lock_waits quote it. It gives up
    # before deadlock_timeout (when that wait is logged) and the wait happens with the placeholder.
    "  quick := GREATEST(1, LEAST(50, pg_catalog.floor(pg_catalog.date_part('epoch', "
    "    pg_catalog.current_setting('deadlock_timeout')::pg_catalog.interval) * 500)))::integer; "
    "  LOOP "
    "    BEGIN "
    "      PERFORM pg_catalog.set_config('lock_timeout', quick::text || 'ms', true); "
    "      EXECUTE pg_catalog.replace(statement, pg_catalog.quote_literal(placeholder), "
    "        pg_catalog.quote_literal(plain)); "
    "      PERFORM pg_catalog.set_config('lock_timeout', patience, true); "
    "      EXIT; "
    "    EXCEPTION WHEN lock_not_available THEN "
    "      waits := waits + 1; "
    "      IF waits > 10 THEN "
    "        RAISE EXCEPTION USING ERRCODE = 'lock_not_available', MESSAGE = 'the user mapping kept being "
    "changed by other transactions: gave up after 10 waits'; "
    "      END IF; "
    "    END; "
    "    BEGIN "  # wait there with the placeholder (the session's own lock_timeout), then undo it
    "      EXECUTE statement; "
    "      RAISE EXCEPTION USING ERRCODE = 'FDW00'; "
    "    EXCEPTION WHEN SQLSTATE 'FDW00' THEN NULL; "
    "    END; "
    "  END LOOP; "
    "  IF terse THEN "
    "    PERFORM pg_catalog.set_config('log_error_verbosity', verbosity, true); "
    "  END IF; "
    "  IF muted THEN "
    "    PERFORM pg_catalog.set_config('pg_stat_statements.track_utility', 'on', true); "
    "  END IF; "
    # OTHERS alone lets a cancel and a failed ASSERT (a DBA's event trigger) through, with the context
    "EXCEPTION WHEN OTHERS OR query_canceled OR assert_failure THEN "
    "  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, "
    "    detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT; "
    "  RAISE EXCEPTION USING ERRCODE = state, MESSAGE = message, DETAIL = detail, HINT = hint; "
    "END $fdw$"
).format(_RUNNER, _HOLDER)

RUN = q.sql.SQL("SELECT {}(%s, %s)").format(_RUNNER)
REHEARSE = q.sql.SQL("SAVEPOINT fdw_rehearsal")
REHEARSED = q.sql.SQL("ROLLBACK TO SAVEPOINT fdw_rehearsal")
END_REHEARSAL = q.sql.SQL("RELEASE SAVEPOINT fdw_rehearsal")
EMPTY_HOLDER = q.sql.SQL("TRUNCATE {}").format(_HOLDER)
FILL_HOLDER = q.sql.SQL("COPY {} (secret) FROM STDIN").format(_HOLDER)


def execute_with_secret(
    s: LocalSession, step: str, statement_for: Callable[[str], Any], secret: str, log: Any
) -> None:
    """Run ``statement_for(value)`` with ``value`` = ``secret``, inside the current transaction,
    without ``secret`` in any statement text (see the module docstring)."""
    placeholder = f"fdw-secret-placeholder-{uuid.uuid4().hex}"
    log.info("%s (statement not logged: it sets a password)", step)
    rehearse(s, step, statement_for(placeholder))
    s.execute(step, CREATE_HOLDER, quiet=True)
    s.execute(step, EMPTY_HOLDER, quiet=True)
    s.copy_in(step, FILL_HOLDER, secret.encode().hex().encode() + b"\n")
    s.execute(step, CREATE_RUNNER, quiet=True)
    s.execute(step, RUN, (s.render(statement_for(placeholder)), placeholder), quiet=True)
    s.execute(step, EMPTY_HOLDER, quiet=True)


def rehearse(s: LocalSession, step: str, statement: Any) -> None:
    """Run ``statement`` (holding the placeholder, not the password) and undo it: its waits and its
    errors happen here, where whatever the server reports quotes no password."""
    s.execute(step, REHEARSE, quiet=True)
    try:
        s.execute(step, statement, quiet=True)
    except FdwError:
        with suppress(FdwError):  # a lost session (FATAL): its own error is the one to report
            undo_rehearsal(s, step)
        raise
    undo_rehearsal(s, step)


def undo_rehearsal(s: LocalSession, step: str) -> None:
    s.execute(step, REHEARSED, quiet=True)
    s.execute(step, END_REHEARSAL, quiet=True)
