"""The main job: an embedded PostgreSQL pair (plus a streaming replica of the source), sample data,
and the example DAGs run end to end with ``airflow dags test``; prints what happened."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="fdw-demo-airflow-"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "example_dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# The test harness (fdw_testing) lives in the repository, outside the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_provider_fdw.compat import sql  # noqa: E402
from fdw_testing.pgcluster import Cluster, local_pair, standby_of  # noqa: E402
from fdw_testing.sample_data import (  # noqa: E402
    SOURCE_DB,
    TARGET_DB,
    fdw_connection,
    install_sample_data,
    postgres_connection,
    set_airflow_connections,
)

DAGS = ["fdw_bulk_copy", "fdw_matview_sync", "fdw_embedding_backfill"]


def main() -> int:
    started = time.monotonic()
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True)
    with local_pair() as pair:
        install_sample_data(pair)
        with standby_of(pair.source, application_name="demo_replica") as replica:
            set_airflow_connections(pair)
            # fdw_bulk_copy reads the replica (the lag sensor compares it with the primary); the other
            # DAGs use the primary (fdw_source), the embedding DAG writes vectors back to it.
            replica_view = type(pair)(replica, pair.target)
            os.environ["AIRFLOW_CONN_FDW_REPLICA"] = fdw_connection(replica_view)
            os.environ["AIRFLOW_CONN_REPLICA_DB"] = postgres_connection(replica, SOURCE_DB)
            os.environ["AIRFLOW_CONN_PRIMARY_DB"] = postgres_connection(pair.source, SOURCE_DB)
            print(
                f"[demo] primary :{pair.source.port}, replica :{replica.port}, analytics :{pair.target.port}"
            )
            for dag_id in DAGS:
                run = subprocess.run([airflow, "dags", "test", dag_id], capture_output=True, text=True)
                state = (
                    "success"
                    if run.returncode == 0 and "state=success" in run.stdout + run.stderr
                    else "FAILED"
                )
                print(f"[demo] airflow dags test {dag_id}: {state}")
                if state != "success":
                    print((run.stdout + run.stderr)[-4000:])
                    return 1
            report(pair.target)
    print(f"[demo] done in {time.monotonic() - started:.1f}s")
    return 0


def report(target: Cluster) -> None:
    tables = [
        ("public", "bulk_access_users"),
        ("public", "bulk_access_orders"),
        ("reporting", "users"),
        ("reporting", "order_totals"),
        ("public", "products"),
        ("catalog_proxy", "product_embeddings"),
    ]
    for schema, name in tables:
        statement = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
        print(f"[demo] {schema}.{name}: {target.execute(statement, dbname=TARGET_DB)[0][0]} rows")
    foreign = target.execute(
        "SELECT foreign_table_schema || '.' || foreign_table_name FROM "
        "information_schema.foreign_tables ORDER BY 1",
        dbname=TARGET_DB,
    )
    print(f"[demo] foreign tables: {', '.join(t for (t,) in foreign)}")


if __name__ == "__main__":
    sys.exit(main())
