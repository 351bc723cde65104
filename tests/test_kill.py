"""execution_timeout, on_kill and kill -9: a stopped copy stops its work at once on both servers,
leaves no child process behind, and a retry terminates what a killed try left running instead of
waiting for it (issue 11, item 2).

The source is a view on the remote that sleeps per row (``testviews.slow_users``), slowed only while
``testviews.slow_delay`` says so; bounded waits poll for "nothing left running" with generous limits.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SOURCE_DB, TARGET_DB, ident, kill_9_when, users_foreign_table, wait_until

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.operators.copy import BulkCopyOperator
from fdw_testing.dagrun import run_dag

START = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
ROW_DELAY = 0.1  # 1000 rows: 100 s to read the whole slow source
GENEROUS = 45.0  # far below the slow source's 100 s, far above any clean-up


@pytest.fixture(scope="module")
def slow_source(pg_pair):
    """``testviews.slow_users``: ``app.users`` read at ``testviews.slow_delay`` seconds per row."""
    src = pg_pair.source
    for statement in (
        "CREATE SCHEMA IF NOT EXISTS testviews",  # not app: other tests import all of app
        "GRANT USAGE ON SCHEMA testviews TO fdw_reader",
        "CREATE TABLE IF NOT EXISTS testviews.slow_delay (seconds float8 NOT NULL)",
        "TRUNCATE testviews.slow_delay",
        "INSERT INTO testviews.slow_delay VALUES (0)",
        "CREATE OR REPLACE FUNCTION testviews.slow(bigint) RETURNS bigint LANGUAGE sql VOLATILE AS "
        "'SELECT $1 FROM pg_sleep((SELECT seconds FROM testviews.slow_delay))'",
        "CREATE OR REPLACE VIEW testviews.slow_users AS "
        "SELECT testviews.slow(id) AS id, email, created_at FROM app.users",
        "GRANT SELECT ON testviews.slow_users, testviews.slow_delay TO fdw_reader",
    ):
        src.execute(statement, dbname=SOURCE_DB)
    return src


def set_delay(source, seconds: float) -> None:
    source.execute("UPDATE testviews.slow_delay SET seconds = %s", (seconds,), dbname=SOURCE_DB)


@pytest.fixture
def slow_table(pair, slow_source, target, server_name, local_schema):
    """A foreign table over the slow view, on a server created by the provider; delay on."""
    users_foreign_table(target, "fdw_source", server_name, local_schema, "testviews", "slow_users")
    set_delay(slow_source, ROW_DELAY)
    yield f"{local_schema}.slow_users"
    set_delay(slow_source, 0)


def busy_sessions(source, target) -> dict[str, int]:
    """Statements still running for a copy: the provider's sessions on the target, reads of the view
    (postgres_fdw's remote sessions FETCH from a cursor: recognised by their application_name)."""
    on_target = target.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'airflow_provider_fdw%%' "
        "AND state <> 'idle' AND pid <> pg_backend_pid()",
        dbname=TARGET_DB,
    )[0][0]
    on_source = source.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
        "AND (query LIKE '%%slow_%%' OR application_name = 'postgres_fdw')",
        dbname=SOURCE_DB,
    )[0][0]
    return {"target": on_target, "source": on_source}


def task_duration(dag_id: str, run_id: str) -> float:
    """Seconds the task instance ran (start to end, as Airflow recorded them)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id, task_id="copy").one()
        return (ti.end_date - ti.start_date).total_seconds()


def psql_children(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "psql" in cmdline and marker in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("direct", [False, True], ids=["fdw", "direct"])
def test_execution_timeout_stops_the_copy_on_both_servers(
    airflow_db, source, target, slow_table, local_schema, direct
):
    from airflow.sdk import DAG

    with DAG(f"kill_timeout_{local_schema}", schedule=None, start_date=START) as dag:
        BulkCopyOperator(
            task_id="copy",
            source_table=slow_table,
            target_table=f"{local_schema}.copy",
            fdw_conn_id="fdw_source" if direct else None,
            execution_timeout=datetime.timedelta(seconds=3),
        )
    result = run_dag(dag)
    assert result.task_states == {"copy": "failed"}
    elapsed = task_duration(dag.dag_id, result.run_id)
    settled = wait_until(lambda: busy_sessions(source, target) == {"target": 0, "source": 0}, GENEROUS)
    print(f"\n[execution_timeout=3s] task failed after {elapsed:.1f}s; work stopped {settled:.1f}s later")
    assert elapsed < GENEROUS
    assert psql_children(local_schema) == []
    assert not target.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'copy'",
        (local_schema,),
        dbname=TARGET_DB,
    )


WORKER = """
import sys
from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.hooks.fdw import FdwHook
source, target, path = sys.argv[1], sys.argv[2], sys.argv[3]
with FdwHook(fdw_conn_id="fdw_source") as hook:
    hook.task_identity = ("kill_dag", "copy", "run_1", "-1")
    relay = "python" if path == "direct-python" else "psql"
    hook.bulk_copy(plan_copy(source, target), direct=path != "fdw", relay=relay)
"""


# direct-python: the rows relayed in the worker itself (no psql children to die with it)
@pytest.mark.parametrize("path", ["fdw", "direct", "direct-python"])
def test_retry_after_kill_9_terminates_what_the_killed_try_left(
    source, target, slow_table, local_schema, path
):
    target_table = f"{local_schema}.copy"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, slow_table, target_table, path],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    kill_9_when(worker, lambda: busy_sessions(source, target)["source"] >= 1)  # the copy is reading
    # Children die with the worker.
    wait_until(lambda: psql_children(local_schema) == [], limit=10)

    # The retry (same task instance) does not wait for the killed try's sessions: it ends them.
    set_delay(source, 0)
    from airflow_provider_fdw.bulkcopy import plan_copy

    started = time.monotonic()
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.task_identity = ("kill_dag", "copy", "run_1", "-1")
        summary = hook.bulk_copy(
            plan_copy(slow_table, target_table),
            direct=path != "fdw",
            relay="python" if path == "direct-python" else "psql",
        )
    elapsed = time.monotonic() - started
    print(f"\n[kill -9, {path}] retry finished in {elapsed:.1f}s")
    assert summary["rows"] == 1000
    assert elapsed < GENEROUS
    assert busy_sessions(source, target) == {"target": 0, "source": 0}


@pytest.mark.parametrize("direct", [False, True], ids=["fdw", "direct"])
def test_on_kill_cancels_a_running_copy_on_both_servers(source, target, slow_table, local_schema, direct):
    """What a worker's SIGTERM does: on_kill from another thread while execute() runs."""
    import threading

    op = BulkCopyOperator(
        task_id="copy",
        source_table=slow_table,
        target_table=f"{local_schema}.copy",
        fdw_conn_id="fdw_source" if direct else None,
    )
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            op.execute({})
            outcome["error"] = None
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    wait_until(lambda: busy_sessions(source, target)["source"] >= 1, limit=60)
    started = time.monotonic()
    op.on_kill()
    worker.join(GENEROUS)
    assert not worker.is_alive()
    settled = wait_until(lambda: busy_sessions(source, target) == {"target": 0, "source": 0}, GENEROUS)
    print(
        f"\n[on_kill, {'direct' if direct else 'fdw'}] execute ended {time.monotonic() - started:.1f}s later"
    )
    assert "cancel" in str(outcome["error"]).lower()
    assert settled < GENEROUS


@pytest.mark.parametrize("relay", ["psql", "python"])
def test_local_failure_on_the_direct_path_stops_the_remote_read_at_once(
    source, target, slow_table, server_name, local_schema, relay
):
    # 5000 rows at 0.03 s: 150 s to read them all. The first rows reach the local server only once
    # the remote's and the relay's buffers fill (a few hundred rows), then the refusal must stop it all.
    source.execute(
        "CREATE OR REPLACE VIEW testviews.slow_many AS "
        "SELECT testviews.slow(u.id) AS id, u.email, u.created_at FROM app.users u, generate_series(1, 5)",
        dbname=SOURCE_DB,
    )
    source.execute("GRANT SELECT ON testviews.slow_many TO fdw_reader", dbname=SOURCE_DB)
    set_delay(source, 0.03)
    # email declared integer over the remote text: the direct path reads it as text, and the local
    # COPY into staging refuses the first row.
    target.execute(
        sql.SQL(
            "CREATE FOREIGN TABLE {} (id bigint, email integer, created_at timestamptz) SERVER {} "
            "OPTIONS (schema_name 'testviews', table_name 'slow_many')"
        ).format(ident(local_schema, "slow_int"), ident(server_name)),
        dbname=TARGET_DB,
    )
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.exceptions import FdwError

    started = time.monotonic()
    with FdwHook(fdw_conn_id="fdw_source") as hook, pytest.raises(FdwError, match="invalid input syntax"):
        hook.bulk_copy(
            plan_copy(f"{local_schema}.slow_int", f"{local_schema}.copy"), direct=True, relay=relay
        )
    failed = time.monotonic() - started
    settled = wait_until(lambda: busy_sessions(source, target) == {"target": 0, "source": 0}, GENEROUS)
    print(f"\n[local failure, {relay}] failed after {failed:.1f}s; remote read stopped {settled:.1f}s later")
    assert failed < GENEROUS  # reading the whole slow source takes 150 s
