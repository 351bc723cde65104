"""The example DAGs: parse with no connections, and run end to end (twice) against the pair."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, SOURCE_DB, TARGET_DB, fdw_connection, postgres_connection

from fdw_testing.pgcluster import Pair, standby_of

EXAMPLES = REPO / "example_dags"


def test_every_example_dag_parses_without_connections_or_a_database(tmp_path):
    """A DagBag in a clean process with no connections and an unreachable metadata DB: zero errors."""
    code = (
        "import json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(EXAMPLES)!r})\n"
        "errors = {k: str(v) for k, v in bag.import_errors.items()}\n"
        "print(json.dumps({'dags': sorted(bag.dag_ids), 'errors': errors}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["AIRFLOW_HOME"] = str(tmp_path)
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = "postgresql://nobody:x@127.0.0.1:1/none"  # must not be used
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert set(result["dags"]) == {
        "fdw_bulk_copy",
        "fdw_matview_sync",
        "fdw_embedding_backfill",
        "fdw_partitioned_copy",
        "fdw_mysql_copy",
    }


@pytest.fixture(scope="module")
def replica(airflow_connections):
    """A streaming replica of the source for fdw_bulk_copy to read from, and the connections it uses."""
    pair = airflow_connections
    with (
        standby_of(pair.source, application_name="example_replica") as standby,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("AIRFLOW_CONN_FDW_REPLICA", fdw_connection(Pair(standby, pair.target)))
        mp.setenv("AIRFLOW_CONN_REPLICA_DB", postgres_connection(standby, SOURCE_DB))
        mp.setenv("AIRFLOW_CONN_PRIMARY_DB", postgres_connection(pair.source, SOURCE_DB))
        yield pair, standby


def load_example(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLES / f"{dag_id}.py"))
    assert not bag.import_errors
    return bag.dags[dag_id]


def count(cluster, table: str) -> int:
    return cluster.execute(f"SELECT count(*) FROM {table}", dbname=TARGET_DB)[0][0]


def test_fdw_bulk_copy_runs_twice_from_a_replica(airflow_db, replica):
    from fdw_testing.dagrun import run_dag

    pair, _ = replica
    dag = load_example("fdw_bulk_copy")
    for attempt in (1, 2):
        result = run_dag(dag)
        assert result.state == "success", (attempt, result.task_states)
        assert result.xcom["copy_users"]["rows"] == 1000 and result.xcom["copy_orders"]["rows"] == 5000
        assert result.xcom["replica_caught_up"]["lag_bytes"] == 0
    assert result.xcom["copy_users"]["swap"] == "renamed"
    target, source = pair.target, pair.source
    same = "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {} t"
    assert target.execute(same.format("public.bulk_access_users"), dbname=TARGET_DB) == source.execute(
        same.format("app.users"), dbname=SOURCE_DB
    )
    assert count(target, "public.bulk_access_orders") == 5000
    # The foreign server points at the replica, not the primary: the copy really read the replica.
    options = target.execute(
        "SELECT srvoptions FROM pg_foreign_server WHERE srvname = 'production_db'", dbname=TARGET_DB
    )[0][0]
    assert f"port={replica[1].port}" in options


def test_fdw_matview_sync_creates_then_refreshes_concurrently(airflow_db, replica):
    from fdw_testing.dagrun import run_dag

    pair, _ = replica
    dag = load_example("fdw_matview_sync")
    first = run_dag(dag)
    assert first.state == "success", first.task_states
    assert (
        first.xcom["users_view"][0]["created"] is True and first.xcom["users_view"][0]["rows_after"] == 1000
    )
    second = run_dag(dag)
    assert second.state == "success", second.task_states
    refreshed = {r["view"]: r for r in second.xcom["refresh_all"]}
    assert list(refreshed) == ["reporting.users", "reporting.order_totals"]  # dependency order
    assert all(r["concurrently"] for r in refreshed.values())
    assert count(pair.target, "reporting.order_totals") == 1000
    totals = pair.target.execute("SELECT sum(total) FROM reporting.order_totals", dbname=TARGET_DB)[0][0]
    assert totals == pair.source.execute("SELECT sum(amount) FROM app.orders", dbname=SOURCE_DB)[0][0]


def test_fdw_embedding_backfill_embeds_and_writes_vectors_back_twice(airflow_db, replica):
    from fdw_testing.dagrun import run_dag

    pair, _ = replica
    dag = load_example("fdw_embedding_backfill")
    first = run_dag(dag)
    assert first.state == "success", first.task_states
    assert first.xcom["copy_products"]["rows"] == 240
    assert first.xcom["embed_descriptions"]["rows_embedded"] == 240
    assert first.xcom["write_back_vectors"]["rows"] == 240
    second = run_dag(dag)  # idempotent: nothing new to copy or embed, the write-back converges
    assert second.state == "success", second.task_states
    assert second.xcom["embed_descriptions"]["rows_embedded"] == 0
    assert second.xcom["write_back_vectors"]["rows"] == 240
    src = pair.source
    assert src.execute(
        "SELECT count(*), min(array_length(embedding, 1)) FROM catalog.product_embeddings", dbname=SOURCE_DB
    ) == [(240, 384)]
    # Items 1 and 7 share a description; a jacket is nearer a sweater than a sweater is to a pan.
    near = (
        "SELECT sum(x::float8 * y::float8) FROM catalog.product_embeddings a, catalog.product_embeddings b, "
        "unnest(a.embedding, b.embedding) u(x, y) WHERE a.id = %s AND b.id = %s"
    )
    same = src.execute(near, (1, 7), dbname=SOURCE_DB)[0][0]
    sweater_vs_pan = src.execute(near, (6, 2), dbname=SOURCE_DB)[0][0]
    jacket_vs_sweater = src.execute(near, (1, 6), dbname=SOURCE_DB)[0][0]
    assert same > 0.9 and jacket_vs_sweater > sweater_vs_pan
