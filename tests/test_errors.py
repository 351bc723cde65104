"""Errors that tell the truth: the server's own message, the step and the server, never a follow-up
error of the clean-up (issue 11, item 3)."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import SOURCE_DB, TARGET_DB, ident

from airflow_provider_fdw.bulkcopy import plan_copy, server_message
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.timeouts import run_bounded

GENEROUS = 40.0  # the slow half of the source takes 50 s


@pytest.fixture(scope="module")
def half_broken_source(pg_pair):
    """``testviews.half_broken``: rows with id <= 500 arrive slowly (0.1 s each), rows above 500 fail at once.

    Only the ``email`` column is slow or failing (a STABLE function, so a query that does not read
    it never runs it): min(id)/max(id) (the parallel split) stay fast.
    """
    src = pg_pair.source
    for statement in (
        "CREATE SCHEMA IF NOT EXISTS testviews",  # not app: other tests import all of app
        "GRANT USAGE ON SCHEMA testviews TO fdw_reader",
        "CREATE OR REPLACE FUNCTION testviews.slow_or_fail(bigint, text) RETURNS text LANGUAGE plpgsql "
        "STABLE AS $$ BEGIN IF $1 > 500 THEN RAISE EXCEPTION 'row % is broken', $1 "
        "USING DETAIL = 'the remote view refuses it'; END IF; PERFORM pg_sleep(0.1); RETURN $2; END $$",
        "CREATE OR REPLACE VIEW testviews.half_broken AS "
        "SELECT id, testviews.slow_or_fail(id, email) AS email, created_at FROM app.users",
        "GRANT SELECT ON testviews.half_broken TO fdw_reader",
    ):
        src.execute(statement, dbname=SOURCE_DB)
    return src


def foreign_table(
    target,
    server_name: str,
    schema: str,
    remote: str,
    id_type: str = "bigint",
    remote_schema: str = "testviews",
) -> str:
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.ensure_extension()
        hook.create_server(server_name)
        hook.create_user_mapping(server_name)
    target.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident(schema)), dbname=TARGET_DB)
    target.execute(
        sql.SQL(
            "CREATE FOREIGN TABLE {} (id {}, email text, created_at timestamptz) SERVER {} "
            "OPTIONS (schema_name {}, table_name {})"
        ).format(
            ident(schema, remote),
            sql.SQL(id_type),
            ident(server_name),
            sql.Literal(remote_schema),
            sql.Literal(remote),
        ),
        dbname=TARGET_DB,
    )
    return f"{schema}.{remote}"


def copy_error(plan, direct: bool = False, relay: str = "auto") -> tuple[FdwError, float]:
    def run() -> BaseException | None:
        try:
            with FdwHook(fdw_conn_id="fdw_source") as hook:
                hook.bulk_copy(plan, direct=direct, relay=relay)
        except BaseException as exc:
            return exc
        return None

    started = time.monotonic()
    error = run_bounded(run, 90, "copy under test")
    elapsed = time.monotonic() - started
    print(f"\n[error after {elapsed:.1f}s] {error}")
    assert isinstance(error, FdwError), error
    return error, elapsed


@pytest.mark.parametrize(
    ("direct", "relay"), [(False, "auto"), (True, "psql"), (True, "python")], ids=["fdw", "psql", "python"]
)
def test_first_failure_of_a_parallel_copy_cancels_the_other_range_at_once(
    half_broken_source, target, server_name, local_schema, direct, relay
):
    source = foreign_table(target, server_name, local_schema, "half_broken")
    plan = plan_copy(source, f"{local_schema}.copy", parallelism=2, key_columns=["id"])
    error, elapsed = copy_error(plan, direct, relay)
    assert "is broken" in str(error) and "refuses it" in str(error)  # the server's message and detail
    assert "canceling statement" not in str(error)
    assert elapsed < GENEROUS
    if not direct:
        assert server_name in str(error)


def test_psql_relay_errors_keep_the_servers_message_not_the_context_line(
    pair, target, server_name, local_schema
):
    # The foreign table declares email as integer: the direct path reads it as text (the declared
    # type differs from the remote one) and the local COPY into staging refuses the first value.
    source = foreign_table(target, server_name, local_schema, "users", remote_schema="app")
    target.execute(
        sql.SQL("ALTER FOREIGN TABLE {} ALTER COLUMN email TYPE integer").format(ident(*source.split("."))),
        dbname=TARGET_DB,
    )
    error, _ = copy_error(plan_copy(source, f"{local_schema}.copy"), direct=True, relay="psql")
    assert "invalid input syntax for type integer" in str(error)
    assert "CONTEXT" not in str(error)
    assert "writing the staging table" in str(error)


def test_psql_relay_read_errors_name_the_remote_and_its_message(
    pair, half_broken_source, target, server_name, local_schema
):
    source = foreign_table(target, server_name, local_schema, "half_broken")
    plan = plan_copy(source, f"{local_schema}.copy", where="id > 500")  # the first row read fails
    error, _ = copy_error(plan, direct=True, relay="psql")
    assert "reading the remote" in str(error)
    assert "row 501 is broken (DETAIL: the remote view refuses it)" in str(error)
    assert f"{pair.source.fdw_host}:{pair.source.fdw_port}/{SOURCE_DB}" in str(error)


def test_server_message_takes_error_detail_and_hint_not_context():
    stderr = (
        'ERROR:  invalid input syntax for type integer: "x"\n'
        "DETAIL:  the row is broken\n"
        "HINT:  fix the row\n"
        'CONTEXT:  COPY staging, line 100627, column id: "x"\n'
    )
    assert server_message(stderr) == (
        'ERROR:  invalid input syntax for type integer: "x" (DETAIL: the row is broken) (HINT: fix the row)'
    )
    assert "signal 2" in server_message("", -2)


def test_killed_target_backend_reports_the_servers_error_not_the_unlock(
    half_broken_source, target, server_name, local_schema
):
    source = foreign_table(target, server_name, local_schema, "half_broken")
    plan = plan_copy(source, f"{local_schema}.copy", where="id <= 500")

    def terminate_copy_sessions() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = target.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'airflow_provider_fdw%%' AND state = 'active' "
                "AND query LIKE 'INSERT%%'",
                dbname=TARGET_DB,
            )
            if rows:
                target.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'airflow_provider_fdw%%'",
                    dbname=TARGET_DB,
                )
                return
            time.sleep(0.2)

    killer = threading.Thread(target=terminate_copy_sessions)
    killer.start()
    error, _ = copy_error(plan)
    killer.join()
    assert "terminating connection due to administrator command" in str(error)
    assert "connection is closed" not in str(error)
