"""Nightly bulk copy for a batch job (the PostgresML "accelerate bulk access" flow).

A read replica of production is the source: wait until it has replayed everything the primary had
when the run started, converge the foreign server and user mapping from the ``fdw_replica``
connection, import the remote schema into a proxy schema, then copy the tables the batch job needs
into the analytics database (``postgres_default``).

Connections: ``fdw_replica`` (postgres_fdw, the replica), ``replica_db`` and ``primary_db``
(postgres, for the lag sensor), ``postgres_default`` (the local analytics database).
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_fdw.operators.copy import BulkCopyOperator
from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
from airflow_provider_fdw.operators.server import CreateForeignServerOperator
from airflow_provider_fdw.sensors.replication import ReplicationLagSensor

with DAG(
    dag_id="fdw_bulk_copy",
    schedule="@daily",
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["fdw", "example"],
    doc_md=__doc__,
):
    replica_fresh = ReplicationLagSensor(
        task_id="replica_caught_up",
        postgres_conn_id="replica_db",
        primary_conn_id="primary_db",
        measure="standby",
        catch_up=True,
        fail_on_broken=True,
        poke_interval=5,
        timeout=1800,
    )
    server = CreateForeignServerOperator(
        task_id="foreign_server", server_name="production_db", fdw_conn_id="fdw_replica"
    )
    proxy = ImportForeignSchemaOperator(
        task_id="import_production_tables",
        server_name="production_db",
        remote_schema="app",
        local_schema="production_tables",
        limit_to=["users", "orders"],
    )
    users = BulkCopyOperator(
        task_id="copy_users",
        source_table="production_tables.users",
        target_table="public.bulk_access_users",
        key_columns=["id"],
    )
    orders = BulkCopyOperator(
        task_id="copy_orders",
        source_table="production_tables.orders",
        target_table="public.bulk_access_orders",
        key_columns=["id"],
        parallelism=2,
    )
    replica_fresh >> server >> proxy >> [users, orders]
