"""The deployment tier: the example DAGs on a real Airflow 3 deployment, no ``dag.test()``.

For each executor (LocalExecutor, then CeleryExecutor on Redis with two workers) one set of
components runs on its own copy of a migrated PostgreSQL metadata database: ``airflow api-server``,
``scheduler``, ``dag-processor``, ``triggerer`` (and two ``airflow celery worker``), each a separate
process group on 127.0.0.1 (airflow_provider_fdw/testing/deployment.py). Connections are created
through the REST API, DAGs unpaused and triggered through ``/api/v2``, states, logs, XComs and
rendered fields read back from it. Every process is stopped at the end, also when a test fails.
Observations (states, hostnames, trigger rows, durations) go to .artifacts/deployment/.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest
from conftest import READER_PASSWORD, REPO, SOURCE_DB, fdw_connection, postgres_connection

from airflow_provider_fdw._driver import sql
from airflow_provider_fdw.testing.deployment import Deployment, RedisServer
from airflow_provider_fdw.testing.pgcluster import Pair, create_local_cluster, create_standby

pytestmark = pytest.mark.timeout(900)

EXAMPLE_DAGS = ("fdw_bulk_copy", "fdw_matview_sync", "fdw_embedding_backfill")
SENSOR_DAGS = ("fdw_deploy_deferrable_sensor", "fdw_deploy_reschedule_sensor")
DAG_FILES = [
    *sorted((REPO / "example_dags").glob("fdw_*.py")),
    REPO / "tests/deployment_dags/fdw_deploy_sensors.py",
]
ARTIFACTS = REPO / ".artifacts" / "deployment"
TEMPLATE_DB = "airflow_template"
SENSOR_TASK = "replica_caught_up"
CATCH_UP_LINE = re.compile(r"reaches the primary's position ([0-9A-F]+/[0-9A-F]+)")


@pytest.fixture(scope="module")
def deploy_base():
    base = Path(tempfile.mkdtemp(prefix="fdw-deploy-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def metadata_cluster(deploy_base, airflow_connections):
    """A PostgreSQL cluster for Airflow's metadata, with one migrated template database that each
    executor's deployment copies (``CREATE DATABASE ... TEMPLATE``: one ``db migrate`` for both)."""
    cluster = create_local_cluster("airflow-meta", deploy_base, settings={"max_connections": "300"})
    cluster.start()
    try:
        cluster.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
        Deployment(deploy_base / "migrate-home", "LocalExecutor", metadata_url(cluster, TEMPLATE_DB)).airflow(
            "db", "migrate"
        )
        yield cluster
    finally:
        cluster.stop("immediate")


@pytest.fixture(scope="module")
def replica(deploy_base, airflow_connections):
    """A streaming replica of the source: fdw_bulk_copy reads from it, the sensors wait for it."""
    pair = airflow_connections
    standby = create_standby(
        pair.source,
        deploy_base / "replica",
        application_name="deploy_replica",
        slot_name="deploy_replica_slot",
    )
    try:
        yield standby
    finally:
        standby.stop("immediate")
        pair.source.execute("SELECT pg_drop_replication_slot('deploy_replica_slot')")


def metadata_url(cluster, dbname: str) -> str:
    return (
        f"postgresql+psycopg2://{cluster.superuser}:{cluster.password}@{cluster.host}:{cluster.port}/{dbname}"
    )


@pytest.fixture(scope="module", params=["LocalExecutor", "CeleryExecutor"])
def deployment(request, deploy_base, metadata_cluster, replica, airflow_connections):
    """One running deployment per executor, with its own metadata and analytics databases."""
    executor = request.param
    pair = airflow_connections
    short = executor.removesuffix("Executor").lower()
    meta_db, analytics_db = f"airflow_{short}", f"analytics_{short}"
    metadata_cluster.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(meta_db), sql.Identifier(TEMPLATE_DB))
    )
    pair.target.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(analytics_db)))
    started = time.monotonic()
    redis = RedisServer(deploy_base / f"redis-{short}").start() if executor == "CeleryExecutor" else None
    dep = Deployment(
        deploy_base / f"home-{short}",
        executor,
        metadata_url(metadata_cluster, meta_db),
        DAG_FILES,
        broker_url=redis.url if redis else None,
    )
    try:
        dep.start()
        connections = {
            "postgres_default": postgres_connection(pair.target, analytics_db),
            "fdw_source": fdw_connection(pair),
            "fdw_replica": fdw_connection(Pair(replica, pair.target)),
            "replica_db": postgres_connection(replica, SOURCE_DB),
            "primary_db": postgres_connection(pair.source, SOURCE_DB),
        }
        for conn_id, conn in connections.items():
            dep.add_connection(conn_id, json.loads(conn))
        dep.wait_for_dags([*EXAMPLE_DAGS, *SENSOR_DAGS])
        dep.analytics_db = analytics_db
        dep.observed = {"executor": executor, "startup_seconds": round(time.monotonic() - started, 1)}
        dep.trigger_rows = []
        yield dep
    finally:
        dep.stop()
        if redis:
            redis.stop()
        if getattr(dep, "observed", None):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            dep.observed["total_seconds"] = round(time.monotonic() - started, 1)
            (ARTIFACTS / f"{short}.json").write_text(json.dumps(dep.observed, indent=2, default=str))
            print(f"\n[deployment {executor}] {json.dumps(dep.observed, default=str)}")


def wait_for_runs(dep: Deployment, runs: list[tuple[str, str]], timeout: float = 600) -> dict:
    return {(dag_id, run_id): dep.wait_for_run(dag_id, run_id, timeout) for dag_id, run_id in runs}


def failed_tasks(dep: Deployment, dag_id: str, run_id: str) -> dict:
    return {
        ti["task_id"]: (
            ti["state"],
            dep.task_log(dag_id, run_id, ti["task_id"], max(ti["try_number"], 1))[-2500:],
        )
        for ti in dep.task_instances(dag_id, run_id)
        if ti["state"] != "success"
    }


def test_every_example_dag_succeeds_twice_then_two_overlapping_runs_both_succeed(deployment, pair):
    dep = deployment
    started = time.monotonic()
    for dag_id in EXAMPLE_DAGS:
        dep.unpause(dag_id)  # catchup=False: the scheduler creates the latest scheduled run at once
    scheduled = []
    for dag_id in EXAMPLE_DAGS:
        dep._wait_until(lambda dag_id=dag_id: bool(dep.dag_runs(dag_id)), 120, f"a scheduled run of {dag_id}")
        scheduled.append((dag_id, dep.dag_runs(dag_id)[0]["dag_run_id"]))
    states = wait_for_runs(dep, scheduled)
    second = [(dag_id, dep.trigger(dag_id)) for dag_id in EXAMPLE_DAGS]
    states |= wait_for_runs(dep, second)
    overlapping = [(dag_id, dep.trigger(dag_id)) for dag_id in EXAMPLE_DAGS for _ in range(2)]
    states |= wait_for_runs(dep, overlapping)
    dep.observed["example_runs"] = {f"{d}/{r}": s for (d, r), s in states.items()}
    dep.observed["example_runs_seconds"] = round(time.monotonic() - started, 1)
    dep.example_runs = list(states)
    failures = {f"{d}/{r}": failed_tasks(dep, d, r) for (d, r), s in states.items() if s != "success"}
    assert not failures, json.dumps(failures, indent=1)[-12000:]
    assert all(ti["state"] == "success" for d, r in states for ti in dep.task_instances(d, r))

    # The data is right after overlapping runs: complete, no duplicates, equal to the source.
    target, source, db = pair.target, pair.source, dep.analytics_db
    same = "SELECT count(*), count(DISTINCT id), md5(string_agg(t::text, '|' ORDER BY id)) FROM {} t"
    assert target.execute(same.format("public.bulk_access_users"), dbname=db) == source.execute(
        same.format("app.users"), dbname=SOURCE_DB
    )
    assert target.execute(same.format("public.bulk_access_orders"), dbname=db) == source.execute(
        same.format("app.orders"), dbname=SOURCE_DB
    )
    totals = "SELECT count(*), sum(total) FROM reporting.order_totals"
    assert target.execute(totals, dbname=db) == [
        (1000, source.execute("SELECT sum(amount) FROM app.orders", dbname=SOURCE_DB)[0][0])
    ]
    assert target.execute(
        "SELECT count(*), count(DISTINCT id), count(embedding) FROM public.products", dbname=db
    ) == [(240, 240, 240)]
    assert source.execute(
        "SELECT count(*), count(DISTINCT id), min(array_length(embedding, 1)) "
        "FROM catalog.product_embeddings",
        dbname=SOURCE_DB,
    ) == [(240, 240, 384)]
    for dag_id, run_id in dep.example_runs:
        if dag_id == "fdw_bulk_copy":
            assert dep.xcom(dag_id, run_id, "copy_users")["rows"] == 1000


def test_tasks_run_on_the_executors_workers(deployment):
    """LocalExecutor: every task on this host. CeleryExecutor: tasks land on both workers."""
    dep = deployment
    hostnames: dict[str, int] = {}
    for dag_id, run_id in dep.example_runs:
        for ti in dep.task_instances(dag_id, run_id):
            hostnames[ti["hostname"]] = hostnames.get(ti["hostname"], 0) + 1
    dep.observed["task_hostnames"] = hostnames
    if dep.executor == "CeleryExecutor":
        assert set(hostnames) == {"celery-worker-1", "celery-worker-2"}, hostnames
        online = dep.celery_workers_online()
        assert [name.split("@")[0] for name in online] == ["celery-worker-1", "celery-worker-2"], online
    else:
        assert set(hostnames) == {socket.getfqdn()}, hostnames
