"""A large copy split into mapped tasks that run on different workers (mapped partitions).

``partitioned_copy`` builds one task group: ``prepare`` creates ONE staging table named after the
DAG run and splits ``app.orders`` into 4 key ranges; ``load`` is mapped over them (any worker loads
any range into that staging table; a retry deletes its range's rows first and loads it again, the
other ranges stay); ``snapshot`` (the direct path, ``transport="copy"``) exports one snapshot on the
remote and holds it until ``apply`` has finished, so every range reads the same point in time;
``apply`` swaps the staging table in, in one short transaction, as ``BulkCopyOperator`` does.

Connections: ``fdw_source`` (postgres_fdw, the source database, also read directly by the ranges),
``postgres_default`` (the local analytics database).
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_fdw.operators.partitioned import partitioned_copy
from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
from airflow_provider_fdw.operators.server import CreateForeignServerOperator

with DAG(
    dag_id="fdw_partitioned_copy",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,  # one partitioned run per target at a time: a new run drops an older staging
    tags=["fdw", "example"],
    doc_md=__doc__,
):
    server = CreateForeignServerOperator(
        task_id="foreign_server", server_name="orders_db", fdw_conn_id="fdw_source"
    )
    proxy = ImportForeignSchemaOperator(
        task_id="import_orders",
        server_name="orders_db",
        remote_schema="app",
        local_schema="partitioned_source",
        limit_to=["orders"],
    )
    copy = partitioned_copy(
        "copy_orders",
        source_table="partitioned_source.orders",
        target_table="public.partitioned_orders",
        partitions=4,
        key_columns=["id"],
        transport="copy",
        fdw_conn_id="fdw_source",
    )
    server >> proxy >> copy
