"""Mapped partitions on a real deployment: CeleryExecutor on Redis with TWO workers (no dag.test()).

``fdw_partitioned_copy`` (the example DAG) and ``fdw_deploy_partitions_retry`` (the same copy, whose
range 1 fails once after committing its rows) run through the scheduler; the test asserts the
ranges ran on both workers, the target equals the source, and the failed range's retry removed
exactly its own rows and loaded them again while no other range ran twice.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import REPO, SOURCE_DB, fdw_connection, postgres_connection

from airflow_provider_fdw.compat import sql
from fdw_testing.deployment import Deployment, RedisServer, _q
from fdw_testing.pgcluster import create_local_cluster

pytestmark = pytest.mark.timeout(900)

EXAMPLE, RETRY = "fdw_partitioned_copy", "fdw_deploy_partitions_retry"
DAG_FILES = [
    REPO / "example_dags/fdw_partitioned_copy.py",
    REPO / "tests/deployment_dags/fdw_deploy_partitions.py",
]
WORKERS = {"celery-worker-1", "celery-worker-2"}
ARTIFACTS = REPO / ".artifacts" / "deployment" / "partitions"
LOAD = "copy_orders.load"


@pytest.fixture(scope="module")
def celery(airflow_connections):
    """A Celery deployment with two workers on its own metadata cluster and analytics database."""
    pair = airflow_connections
    base = Path(tempfile.mkdtemp(prefix="fdw-partitions-"))
    meta = create_local_cluster("airflow-meta", base, settings={"max_connections": "200"})
    meta.start()
    analytics = "analytics_partitions"
    pair.target.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(analytics)))
    redis = dep = None
    try:
        meta.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("airflow")))
        url = f"postgresql+psycopg2://{meta.superuser}:{meta.password}@{meta.host}:{meta.port}/airflow"
        redis = RedisServer(base / "redis").start()
        dep = Deployment(base / "home", "CeleryExecutor", url, DAG_FILES, broker_url=redis.url)
        dep.airflow("db", "migrate")
        dep.start(celery_workers=2)
        dep.add_connection("postgres_default", json.loads(postgres_connection(pair.target, analytics)))
        dep.add_connection("fdw_source", json.loads(fdw_connection(pair)))
        dep.wait_for_dags([EXAMPLE, RETRY])
        dep.analytics_db = analytics
        yield dep
    finally:
        if dep is not None:
            dep.stop()
            shutil.rmtree(ARTIFACTS, ignore_errors=True)
            shutil.copytree(dep.home, ARTIFACTS, ignore=shutil.ignore_patterns("dags", "*.json*"))
        if redis is not None:
            redis.stop()
        meta.stop("immediate")
        pair.target.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(analytics)))
        shutil.rmtree(base, ignore_errors=True)


def run(dep: Deployment, dag_id: str) -> tuple[str, list[dict]]:
    dep.unpause(dag_id)
    run_id = dep.trigger(dag_id)
    state = dep.wait_for_run(dag_id, run_id, timeout=600)
    tis = dep.task_instances(dag_id, run_id)
    summary = {f"{t['task_id']}[{t['map_index']}]": (t["state"], t["try_number"], t["hostname"]) for t in tis}
    assert state == "success", (
        json.dumps(summary, indent=1) + "\n" + logs_of_failures(dep, dag_id, run_id, tis)
    )
    return run_id, tis


def logs_of_failures(dep: Deployment, dag_id: str, run_id: str, tis: list[dict]) -> str:
    folder = dep.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    bad = [t["task_id"] for t in tis if t["state"] != "success"]
    return "\n".join(
        p.read_text(errors="replace")[-3000:] for t in bad for p in folder.glob(f"task_id={t}/**/*.log")
    )


def same_rows(pair, dep: Deployment, table: str) -> None:
    query = "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM {} t"
    local = pair.target.execute(query.format(table), dbname=dep.analytics_db)
    assert local == pair.source.execute(query.format("app.orders"), dbname=SOURCE_DB)
    assert local[0][0] == 5000


def tried_on(dep: Deployment, dag_id: str, run_id: str, map_index: int) -> set[str]:
    """The workers that ran any try of one mapped load."""
    path = f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{LOAD}/{map_index}/tries"
    return {t["hostname"] for t in dep.get(path)["task_instances"] if t["hostname"]}


def loads(tis: list[dict]) -> dict[int, dict]:
    return {t["map_index"]: t for t in tis if t["task_id"] == LOAD}


def test_the_example_dag_copies_in_mapped_ranges_on_two_celery_workers(celery, pair):
    run_id, tis = run(celery, EXAMPLE)
    ranges = loads(tis)
    assert sorted(ranges) == [0, 1, 2, 3]
    same_rows(pair, celery, "public.partitioned_orders")
    assert celery.xcom(EXAMPLE, run_id, "copy_orders.apply")["rows"] == 5000
    assert {t["hostname"] for t in tis} <= WORKERS
    snapshot = celery.xcom(EXAMPLE, run_id, "copy_orders.snapshot")
    assert snapshot["snapshot"]  # the direct path held one exported snapshot for every range


def test_ranges_spread_over_both_workers_and_a_retried_range_redoes_only_its_range(celery, pair):
    run_id, tis = run(celery, RETRY)
    ranges = loads(tis)
    hosts = {i: tried_on(celery, RETRY, run_id, i) for i in ranges}  # every try: a retry may move
    assert set().union(*hosts.values()) == WORKERS, hosts
    assert {i: t["try_number"] for i, t in ranges.items()} == {0: 1, 1: 2, 2: 1, 3: 1}
    same_rows(pair, celery, "public.partitioned_orders_retry")

    folder = celery.home / "logs" / f"dag_id={RETRY}" / f"run_id={run_id}" / f"task_id={LOAD}"
    first = (folder / "map_index=1" / "attempt=1.log").read_text(errors="replace")
    second = (folder / "map_index=1" / "attempt=2.log").read_text(errors="replace")
    committed = int(re.search(r"injected failure after range 1 committed (\d+) rows", first).group(1))
    removed = int(re.search(r"Removed (\d+) rows of range 1 an earlier try loaded", second).group(1))
    assert removed == committed > 0
    for other in (0, 2, 3):  # one try each, nothing removed: untouched by the retry
        log = (folder / f"map_index={other}" / "attempt=1.log").read_text(errors="replace")
        assert "Removed" not in log and not (folder / f"map_index={other}" / "attempt=2.log").exists()
    result = celery.xcom(RETRY, run_id, "copy_orders.apply")
    assert result["rows"] == 5000 and result["parallelism"] == 4
