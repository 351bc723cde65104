"""FDW for data synchronisation: proxy schema + materialized views, refreshed on a schedule.

Foreign tables in a proxy schema stand for the remote tables; materialized views hold the local
copy with their own indexes, and each run refreshes them (CONCURRENTLY once they have a unique
index, so reports keep reading them during the refresh). Views are created on the first run.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_fdw.operators.matview import RefreshMaterializedViewOperator
from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
from airflow_provider_fdw.operators.server import CreateForeignServerOperator

with DAG(
    dag_id="fdw_matview_sync",
    schedule="*/15 * * * *",
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["fdw", "example"],
    doc_md=__doc__,
):
    server = CreateForeignServerOperator(
        task_id="foreign_server", server_name="sync_src", fdw_conn_id="fdw_source"
    )
    proxy = ImportForeignSchemaOperator(
        task_id="import_proxy_schema",
        server_name="sync_src",
        remote_schema="app",
        local_schema="proxy",
        analyze=True,
    )
    users = RefreshMaterializedViewOperator(
        task_id="users_view",
        views="reporting.users",
        query="SELECT id, email, created_at FROM proxy.users",
        unique_key="id",
        indexes=["created_at"],
    )
    totals = RefreshMaterializedViewOperator(
        task_id="order_totals_view",
        views="reporting.order_totals",
        query="SELECT u.id AS user_id, count(o.id) AS orders, coalesce(sum(o.amount), 0) AS total "
        "FROM reporting.users u LEFT JOIN proxy.orders o ON o.user_id = u.id GROUP BY u.id",
        unique_key="user_id",
    )
    # Later runs refresh both in one task, in dependency order read from the catalog.
    refresh_all = RefreshMaterializedViewOperator(
        task_id="refresh_all", views=["reporting.order_totals", "reporting.users"], lock_timeout="30s"
    )
    server >> proxy >> users >> totals >> refresh_all
