"""Hourly copy of a MySQL / MariaDB table into the local database, through mysql_fdw.

Converge the mysql_fdw server and user mapping from the ``mysql_shop`` connection (a password
rotated in Airflow is applied on the next run), import the shop database's ``orders`` table into a
proxy schema, then upsert the rows changed since the last run (``updated_at`` watermark) into
``public.mysql_orders``. Rows move server to server inside PostgreSQL (the FDW path): Airflow's
workers need no MySQL driver.

Connections: ``mysql_shop`` (mysql_fdw: host/port as the LOCAL PostgreSQL server reaches MySQL,
login/password, database ``shop``), ``postgres_default`` (the local database).
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_fdw.operators.copy import BulkCopyOperator
from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
from airflow_provider_fdw.operators.server import CreateForeignServerOperator

with DAG(
    dag_id="fdw_mysql_copy",
    schedule="@hourly",
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["fdw", "mysql", "example"],
    doc_md=__doc__,
):
    server = CreateForeignServerOperator(
        task_id="mysql_server", server_name="mysql_shop", fdw_conn_id="mysql_shop"
    )
    proxy = ImportForeignSchemaOperator(
        task_id="import_orders",
        server_name="mysql_shop",
        remote_schema="shop",
        local_schema="mysql_shop",
        limit_to=["orders"],
    )
    orders = BulkCopyOperator(
        task_id="copy_orders",
        source_table="mysql_shop.orders",
        target_table="public.mysql_orders",
        mode="upsert",
        key_columns=["id"],
        watermark_column="updated_at",
    )
    server >> proxy >> orders
