"""The deployment tier: the example DAGs on a real Airflow 3 deployment, no ``dag.test()``.

For each executor (LocalExecutor, then CeleryExecutor on Redis with two workers) one set of
components runs on its own copy of a migrated PostgreSQL metadata database: ``airflow api-server``,
``scheduler``, ``dag-processor``, ``triggerer`` (and two ``airflow celery worker``), each a separate
process group on 127.0.0.1 (fdw_testing/deployment.py). Connections are created
through the REST API, DAGs unpaused and triggered through ``/api/v2``, states, logs, XComs and
rendered fields read back from it. Every process is stopped at the end, also when a test fails.
Observations (states, hostnames, trigger rows, durations) go to .artifacts/deployment/.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import READER_PASSWORD, REPO, SOURCE_DB, fdw_connection, postgres_connection

from airflow_provider_fdw.compat import sql
from fdw_testing.deployment import Deployment, DeploymentError, RedisServer, _q
from fdw_testing.pgcluster import (
    DEFAULT_PASSWORD,
    Pair,
    create_local_cluster,
    standby_of,
)
from fdw_testing.sample_data import MYSQL_ORDERS, mysql_connection

pytestmark = pytest.mark.timeout(900)

EXAMPLE_DAGS = ("fdw_bulk_copy", "fdw_matview_sync", "fdw_embedding_backfill", "fdw_mysql_copy")
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
    with standby_of(pair.source, application_name="deploy_replica") as standby:
        yield standby


def metadata_url(cluster, dbname: str) -> str:
    return (
        f"postgresql+psycopg2://{cluster.superuser}:{cluster.password}@{cluster.host}:{cluster.port}/{dbname}"
    )


@pytest.fixture(scope="module", params=["LocalExecutor", "CeleryExecutor"])
def deployment(request, deploy_base, metadata_cluster, replica, airflow_connections, mariadb):
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
            "mysql_shop": json.dumps(mysql_connection(mariadb)),
        }
        mariadb.execute(MYSQL_ORDERS, database=mariadb.database)
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
        keep = ARTIFACTS / short
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(dep.home, keep, ignore=shutil.ignore_patterns("dags", "*.json*"), dirs_exist_ok=True)
        if getattr(dep, "observed", None):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            dep.observed["total_seconds"] = round(time.monotonic() - started, 1)
            (ARTIFACTS / f"{short}.json").write_text(json.dumps(dep.observed, indent=2, default=str))
            print(f"\n[deployment {executor}] {json.dumps(dep.observed, default=str)}")


def wait_for_runs(dep: Deployment, runs: list[tuple[str, str]], timeout: float = 600) -> dict:
    return {(dag_id, run_id): dep.wait_for_run(dag_id, run_id, timeout) for dag_id, run_id in runs}


def failed_tasks(dep: Deployment, dag_id: str, run_id: str) -> dict:
    """State and log tail of each task of a run that did not succeed (for assertion messages)."""
    failed = {}
    for ti in dep.task_instances(dag_id, run_id):
        if ti["state"] == "success":
            continue
        log = ""
        if ti["try_number"] >= 1:
            try:
                log = dep.task_log(dag_id, run_id, ti["task_id"], ti["try_number"])[-2500:]
            except DeploymentError as exc:
                log = str(exc)
        failed[ti["task_id"]] = (ti["state"], log)
    return failed


def test_every_example_dag_succeeds_in_overlapping_runs_and_again_after(deployment, pair):
    """Unpausing creates the scheduled run; a manual run triggered at once overlaps it (the issue's
    "scheduled and manual run at once"); both must succeed, then a third, sequential run too."""
    dep = deployment
    started = time.monotonic()
    for dag_id in EXAMPLE_DAGS:
        dep.unpause(dag_id)  # catchup=False: the scheduler creates the latest scheduled run at once
    overlapping = []
    for dag_id in EXAMPLE_DAGS:
        dep.wait_until(lambda dag_id=dag_id: bool(dep.dag_runs(dag_id)), 120, f"a scheduled run of {dag_id}")
        overlapping += [(dag_id, dep.dag_runs(dag_id)[0]["dag_run_id"]), (dag_id, dep.trigger(dag_id))]
    states = wait_for_runs(dep, overlapping)
    again = [(dag_id, dep.trigger(dag_id)) for dag_id in EXAMPLE_DAGS]
    states |= wait_for_runs(dep, again)
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
    assert target.execute("SELECT count(*), sum(amount) FROM public.mysql_orders", dbname=db) == [
        (500, Decimal("156562.50"))
    ]
    for dag_id, run_id in dep.example_runs:
        if dag_id == "fdw_bulk_copy":
            assert dep.xcom(dag_id, run_id, "copy_users")["rows"] == 1000


def test_tasks_run_on_the_executors_workers(deployment):
    """LocalExecutor: every task on this host. CeleryExecutor: tasks land on both workers."""
    dep = deployment
    hostnames: dict[str, int] = {}
    for dag_id, run_id in dep.example_runs:
        for ti in dep.task_instances(dag_id, run_id):
            if ti["hostname"]:  # a task that never ran (upstream failed) has none
                hostnames[ti["hostname"]] = hostnames.get(ti["hostname"], 0) + 1
    dep.observed["task_hostnames"] = hostnames
    if dep.executor == "CeleryExecutor":
        assert set(hostnames) == {"celery-worker-1", "celery-worker-2"}, hostnames
        online = dep.celery_workers_online()
        assert [name.split("@")[0] for name in online] == ["celery-worker-1", "celery-worker-2"], online
    else:
        assert set(hostnames) == {socket.getfqdn()}, hostnames


def pause_replay_and_write(replica, source) -> None:
    """Hold the replica behind the primary: pause WAL replay, then write on the primary."""
    replica.execute("SELECT pg_wal_replay_pause()")
    deadline = time.monotonic() + 60
    while replica.execute("SELECT pg_get_wal_replay_pause_state()")[0][0] != "paused":
        assert time.monotonic() < deadline, "replay did not pause"
        time.sleep(0.2)
    write_on_primary(source)


def write_on_primary(source) -> None:
    source.execute("INSERT INTO app.events (kind) VALUES ('deployment test')", dbname=SOURCE_DB)


def resume_replay(replica) -> None:
    replica.execute("SELECT pg_wal_replay_resume()")


def meta_db(dep: Deployment) -> str:
    return dep.metadata_url.rsplit("/", 1)[1]


def decrypt_trigger_kwargs(dep: Deployment, encrypted: str) -> str:
    """A trigger row's kwargs as the triggerer reads them (Airflow decrypts with the deployment's key)."""
    code = (
        "import json, sys\n"
        "from airflow.models.trigger import Trigger\n"
        "print(json.dumps(Trigger._decrypt_kwargs(sys.stdin.read()), default=str))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=encrypted,
        env=dep.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_deferrable_sensor_waits_in_the_triggerer_with_a_trigger_row(
    deployment, replica, pair, metadata_cluster
):
    dep, dag_id = deployment, "fdw_deploy_deferrable_sensor"
    dep.unpause(dag_id)
    pause_replay_and_write(replica, pair.source)
    try:
        run_id = dep.trigger(dag_id)
        states: list[str] = []

        def deferred() -> bool:
            state = dep.task_instance(dag_id, run_id, SENSOR_TASK)["state"]
            if not states or states[-1] != state:
                states.append(state)
            return state == "deferred"

        dep.wait_until(deferred, 180, "the sensor to defer")
        ti = dep.task_instance(dag_id, run_id, SENSOR_TASK)
        rows = metadata_cluster.execute(
            "SELECT t.id, t.classpath, t.kwargs, t.triggerer_id FROM trigger t "
            "JOIN task_instance ti ON ti.trigger_id = t.id "
            "WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.task_id = %s",
            (dag_id, run_id, SENSOR_TASK),
            dbname=meta_db(dep),
        )
        assert len(rows) == 1, rows
        trigger_id, classpath, encrypted, triggerer_id = rows[0]
        kwargs = decrypt_trigger_kwargs(dep, encrypted)
        dep.trigger_rows.append(kwargs)
        assert classpath == "airflow_provider_fdw.triggers.replication.ReplicationLagTrigger"
        assert ti["trigger"]["id"] == trigger_id and ti["trigger"]["classpath"] == classpath
        assert '"replica_db"' in kwargs and '"primary_db"' in kwargs and '"target_lsn"' in kwargs

        def measured() -> bool:
            return (
                dep.task_instance(dag_id, run_id, SENSOR_TASK)["state"] == "deferred"
                and len(re.findall(r"Replication: ", dep.task_log(dag_id, run_id, SENSOR_TASK))) >= 2
            )

        # The triggerer picks it up and its measurements reach the task's log while it waits.
        dep.wait_until(measured, 120, "two trigger measurements in the task log")
        assert triggerer_id is not None or dep.task_instance(dag_id, run_id, SENSOR_TASK)["trigger"]
        trigger_log = dep.task_log(dag_id, run_id, SENSOR_TASK)
    finally:
        resume_replay(replica)
    assert dep.wait_for_run(dag_id, run_id, 180) == "success"
    reading = dep.xcom(dag_id, run_id, SENSOR_TASK)
    assert reading["lag_bytes"] == 0, reading
    dep.observed["deferrable_sensor"] = {
        "states_seen": states,
        "trigger_row": {"id": trigger_id, "classpath": classpath, "triggerer_id": triggerer_id},
        "trigger_kwargs": json.loads(kwargs),
        "measurement_lines": [line for line in trigger_log.splitlines() if "Replication: " in line][:3],
        "final_reading": reading,
    }


def test_reschedule_sensor_releases_its_slot_and_keeps_its_catch_up_target(deployment, replica, pair):
    """mode="reschedule", poke_interval=15: the slot is free between pokes (up_for_reschedule), the
    target stays the primary's position at the first poke although the primary keeps writing, and
    no poke is failed by Airflow's stale-exit race (issue 12 item 7: one try, no state mismatch)."""
    dep, dag_id = deployment, "fdw_deploy_reschedule_sensor"
    dep.unpause(dag_id)
    pause_replay_and_write(replica, pair.source)
    try:
        run_id = dep.trigger(dag_id)
        released: list[dict] = []

        def rescheduled_twice() -> bool:
            write_on_primary(pair.source)  # a target read again at a later poke would differ
            before = dep.task_instance(dag_id, run_id, SENSOR_TASK)["state"]
            pool = dep.get("/api/v2/pools/default_pool")
            after = dep.task_instance(dag_id, run_id, SENSOR_TASK)["state"]
            if before == after == "up_for_reschedule":
                released.append({k: pool[k] for k in ("running_slots", "queued_slots", "occupied_slots")})
            return len(released) >= 1 and len(catch_up_targets(dep, dag_id, run_id)) >= 2

        dep.wait_until(rescheduled_twice, 240, "two pokes, one seen up_for_reschedule")
    finally:
        resume_replay(replica)
    state = dep.wait_for_run(dag_id, run_id, 180)
    targets = catch_up_targets(dep, dag_id, run_id)
    ti = dep.task_instance(dag_id, run_id, SENSOR_TASK)
    dep.observed["reschedule_sensor"] = {
        "state": state,
        "try_number": ti["try_number"],
        "slots_while_up_for_reschedule": released[:3],
        "catch_up_targets": targets,
        "state_mismatches": mismatches(dep, run_id),
    }
    assert state == "success", failed_tasks(dep, dag_id, run_id)
    # Seen waiting with no task in a pool slot: reschedule mode gave the slot back between pokes.
    assert any(p["running_slots"] == 0 and p["queued_slots"] == 0 for p in released), released
    assert ti["try_number"] == 1 and not mismatches(dep, run_id), mismatches(dep, run_id)
    assert len(set(targets)) == 1, f"the catch-up target moved between pokes: {targets}"


def mismatches(dep: Deployment, run_id: str) -> list[str]:
    """The scheduler's "finished with state success, but ... state attribute is queued" lines for a run."""
    lines = dep.component_logs()["scheduler"].splitlines()
    return [line[:300] for line in lines if "state attribute is" in line and run_id in line]


def catch_up_targets(dep: Deployment, dag_id: str, run_id: str) -> list[str]:
    """Every catch-up target the sensor logged, over all its pokes and tries."""
    return CATCH_UP_LINE.findall(dep.task_log_files(dag_id, run_id, SENSOR_TASK))


def test_no_password_in_task_logs_rendered_fields_xcom_trigger_kwargs_or_component_logs(deployment, mariadb):
    dep = deployment
    secrets = (READER_PASSWORD, DEFAULT_PASSWORD, mariadb.password)
    places: dict[str, str] = {}
    for dag_id in (*EXAMPLE_DAGS, *SENSOR_DAGS):
        for run in dep.dag_runs(dag_id):
            run_id = run["dag_run_id"]
            for ti in dep.task_instances(dag_id, run_id):
                where = f"{dag_id}/{run_id}/{ti['task_id']}"
                places[f"rendered fields {where}"] = json.dumps(ti.get("rendered_fields"))
                if ti["try_number"] >= 1:  # earlier tries are in the log files scanned below
                    log = dep.task_log(dag_id, run_id, ti["task_id"], ti["try_number"])
                    places[f"task log {where}#{ti['try_number']}"] = log
            xcoms = dep.get(
                f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/~/xcomEntries", limit=100
            )
            for entry in xcoms["xcom_entries"]:
                value = dep.xcom(dag_id, run_id, entry["task_id"], entry["key"])
                places[f"xcom {dag_id}/{run_id}/{entry['task_id']}/{entry['key']}"] = json.dumps(value)
    for path in (dep.home / "logs").rglob("*"):
        if path.is_file():
            places[f"log file {path}"] = path.read_text(errors="replace")
    for i, kwargs in enumerate(dep.trigger_rows):
        places[f"trigger kwargs {i}"] = kwargs
    for name, text in dep.component_logs().items():
        places[f"component log {name}"] = text
    assert dep.trigger_rows, "the deferrable sensor test recorded no trigger row"
    assert any(k.startswith("xcom ") for k in places) and any(k.startswith("task log ") for k in places)
    leaks = [where for where, text in places.items() for secret in secrets if secret in text]
    dep.observed["secret_scan_places"] = len(places)
    assert not leaks, leaks
