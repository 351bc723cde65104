"""OpenLineage events of a real DAG run (``airflow dags test``, file transport): remote inputs by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from conftest import SOURCE_DB, ident, postgres_connection

from airflow_provider_fdw.compat import sql

DAG_FILE = textwrap.dedent(
    """
    import datetime

    from airflow.sdk import DAG

    from airflow_provider_fdw.backfill import SqlFunctionEmbedder
    from airflow_provider_fdw.operators.copy import BulkCopyOperator
    from airflow_provider_fdw.operators.embedding import CopyToForeignTableOperator, EmbeddingBackfillOperator
    from airflow_provider_fdw.operators.matview import RefreshMaterializedViewOperator
    from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
    from airflow_provider_fdw.operators.server import CreateForeignServerOperator

    with DAG("fdw_lineage", schedule=None, start_date=datetime.datetime(2024, 1, 1)):
        server = CreateForeignServerOperator(
            task_id="server", server_name="lin_src", fdw_conn_id="fdw_source"
        )
        app = ImportForeignSchemaOperator(
            task_id="import_app", server_name="lin_src", remote_schema="app", local_schema="lin_app"
        )
        catalog = ImportForeignSchemaOperator(
            task_id="import_catalog", server_name="lin_src", remote_schema="catalog", local_schema="lin_cat"
        )
        copy_users = BulkCopyOperator(
            task_id="copy_users", source_table="lin_app.users", target_table="public.users"
        )
        copy_products = BulkCopyOperator(
            task_id="copy_products", source_table="lin_cat.products", target_table="public.products"
        )
        totals = RefreshMaterializedViewOperator(
            task_id="totals",
            views="public.order_totals",
            query="SELECT user_id, sum(amount) AS total FROM lin_app.orders GROUP BY user_id",
        )
        embed = EmbeddingBackfillOperator(
            task_id="embed",
            table="public.products",
            text_column="description",
            embedder=SqlFunctionEmbedder("public.fake_embed", "m", 3),
        )
        write_back = CopyToForeignTableOperator(
            task_id="write_back",
            local_table="public.products",
            foreign_table="lin_cat.product_embeddings",
            key_column="id",
            columns=["embedding"],
        )
        server >> [app, catalog]
        app >> [copy_users, totals]
        catalog >> copy_products >> embed >> write_back
    """
)


@pytest.fixture(scope="module")
def lineage_db(airflow_db):
    """A target database of its own, with a stand-in SQL embedder."""
    target = airflow_db.target
    name = f"lineage_{uuid.uuid4().hex[:8]}"
    target.execute(sql.SQL("CREATE DATABASE {}").format(ident(name)))
    target.execute(
        "CREATE FUNCTION public.fake_embed(model text, body text) RETURNS real[] LANGUAGE sql "
        "IMMUTABLE AS $$ SELECT ARRAY[length(body), 1, 2]::real[] $$",
        dbname=name,
    )
    yield name
    target.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident(name)))


@pytest.fixture(scope="module")
def lineage_events(airflow_db, lineage_db, tmp_path_factory) -> list[dict]:
    """The OpenLineage events of one run of the lineage DAG (shared by the tests below)."""
    return run_with_file_transport(
        tmp_path_factory.mktemp("lineage"),
        {"AIRFLOW_CONN_POSTGRES_DEFAULT": postgres_connection(airflow_db.target, lineage_db)},
    )


def run_with_file_transport(tmp_path: Path, env_overrides: dict[str, str]) -> list[dict]:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "fdw_lineage.py").write_text(DAG_FILE)
    events = tmp_path / "openlineage.jsonl"
    env = dict(os.environ, **env_overrides)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
        {"type": "file", "log_file_path": str(events), "append": True}
    )
    env["AIRFLOW__OPENLINEAGE__NAMESPACE"] = "fdw_tests"
    airflow = Path(sys.executable).with_name("airflow")
    proc = subprocess.run(
        [str(airflow), "dags", "test", "fdw_lineage", "2024-01-02"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    (tmp_path / "dags-test.log").write_text(proc.stdout + proc.stderr)  # kept for a failing run
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert events.exists(), (proc.stdout + proc.stderr)[-3000:]
    return [json.loads(line) for line in events.read_text().splitlines() if line.strip()]


def completed(events: list[dict], task_id: str, event_type: str = "COMPLETE") -> dict:
    (event,) = [
        e for e in events if e.get("eventType") == event_type and e["job"]["name"] == f"fdw_lineage.{task_id}"
    ]
    return event


def started(events: list[dict], task_id: str) -> dict:
    return completed(events, task_id, "START")


def names(datasets: list[dict]) -> list[tuple[str, str]]:
    return sorted((d["namespace"], d["name"]) for d in datasets)


def test_a_dag_run_emits_the_remote_tables_as_inputs_and_the_local_tables_as_outputs(
    airflow_db, lineage_db, lineage_events
):
    pair, events = airflow_db, lineage_events
    remote = f"postgres://{pair.source.fdw_host}:{pair.source.fdw_port}"
    local = f"postgres://{pair.target.host}:{pair.target.port}"

    copy = completed(events, "copy_users")
    assert names(copy["inputs"]) == [(remote, f"{SOURCE_DB}.app.users")]  # not lin_app.users
    assert names(copy["outputs"]) == [(local, f"{lineage_db}.public.users")]
    (out,) = copy["outputs"]
    assert out["outputFacets"]["outputStatistics"]["rowCount"] == 1000
    assert out["outputFacets"]["outputStatistics"]["size"] > 0
    assert [f["name"] for f in out["facets"]["schema"]["fields"]] == ["id", "email", "created_at"]
    assert [f["name"] for f in copy["inputs"][0]["facets"]["schema"]["fields"]] == [
        "id",
        "email",
        "created_at",
    ]
    (email,) = out["facets"]["columnLineage"]["fields"]["email"]["inputFields"]
    assert (email["namespace"], email["name"], email["field"]) == (remote, f"{SOURCE_DB}.app.users", "email")

    imported = completed(events, "import_app")
    app_tables = [
        t
        for (t,) in pair.source.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'app'::regnamespace "
            "AND relkind IN ('r', 'p', 'v') ORDER BY 1",
            dbname=SOURCE_DB,
        )
    ]
    assert {"users", "orders"} <= set(app_tables)
    assert names(imported["inputs"]) == [(remote, f"{SOURCE_DB}.app.{t}") for t in app_tables]
    assert names(imported["outputs"]) == [(local, f"{lineage_db}.lin_app.{t}") for t in app_tables]

    totals = completed(events, "totals")
    assert names(totals["inputs"]) == [(remote, f"{SOURCE_DB}.app.orders")]
    assert names(totals["outputs"]) == [(local, f"{lineage_db}.public.order_totals")]
    assert totals["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 1000

    embed = completed(events, "embed")
    assert names(embed["outputs"]) == [(local, f"{lineage_db}.public.products")]
    assert embed["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 240

    write_back = completed(events, "write_back")
    assert names(write_back["inputs"]) == [(local, f"{lineage_db}.public.products")]
    assert names(write_back["outputs"]) == [(remote, f"{SOURCE_DB}.catalog.product_embeddings")]
    assert write_back["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 240
    assert sorted(write_back["outputs"][0]["facets"]["columnLineage"]["fields"]) == ["embedding", "id"]

    rows = pair.source.execute(
        "SELECT count(*) FROM catalog.product_embeddings WHERE embedding[2] = 1", dbname=SOURCE_DB
    )
    assert rows == [(240,)]


def test_start_events_name_the_remote_inputs_and_local_outputs_without_statistics(
    airflow_db, lineage_db, lineage_events
):
    pair, events = airflow_db, lineage_events
    remote = f"postgres://{pair.source.fdw_host}:{pair.source.fdw_port}"
    local = f"postgres://{pair.target.host}:{pair.target.port}"

    copy = started(events, "copy_users")
    assert names(copy["inputs"]) == [(remote, f"{SOURCE_DB}.app.users")]
    # The target does not exist yet on this first run: named all the same, with nothing written.
    assert names(copy["outputs"]) == [(local, f"{lineage_db}.public.users")]
    assert [f["name"] for f in copy["inputs"][0]["facets"]["schema"]["fields"]] == [
        "id",
        "email",
        "created_at",
    ]

    products = started(events, "copy_products")
    assert names(products["inputs"]) == [(remote, f"{SOURCE_DB}.catalog.products")]
    assert names(products["outputs"]) == [(local, f"{lineage_db}.public.products")]

    totals = started(events, "totals")
    assert names(totals["outputs"]) == [(local, f"{lineage_db}.public.order_totals")]

    embed = started(events, "embed")  # products was copied before it starts: its columns are known
    assert names(embed["inputs"]) == [(local, f"{lineage_db}.public.products")]
    assert names(embed["outputs"]) == [(local, f"{lineage_db}.public.products")]
    assert "description" in [f["name"] for f in embed["outputs"][0]["facets"]["schema"]["fields"]]

    write_back = started(events, "write_back")
    assert names(write_back["inputs"]) == [(local, f"{lineage_db}.public.products")]
    assert names(write_back["outputs"]) == [(remote, f"{SOURCE_DB}.catalog.product_embeddings")]

    for task_id in ("copy_users", "copy_products", "totals", "embed", "write_back", "import_app"):
        event = started(events, task_id)
        assert all("outputStatistics" not in o.get("outputFacets", {}) for o in event["outputs"]), task_id
