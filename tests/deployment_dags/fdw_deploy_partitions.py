"""A partitioned copy whose range 1 fails once AFTER committing its rows (test_partitioned_deployment).

Every range holds its worker slot a few seconds after loading, so the four ranges cannot all fit on
one Celery worker (two slots each, one taken by the snapshot holder): they spread over both. The
retry of range 1 must delete what its first try committed and load it again, and no other range
may run twice.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from airflow.sdk import DAG

from airflow_provider_fdw.operators.partitioned import LoadPartitionOperator, partitioned_copy
from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
from airflow_provider_fdw.operators.server import CreateForeignServerOperator

FAILING_RANGE = 1


class LoadThenFailOnce(LoadPartitionOperator):
    def execute(self, context: Any) -> dict[str, Any]:
        result = super().execute(context)
        time.sleep(5)  # keeps the slot: the other ranges go to the other worker
        ti = context["ti"]
        if ti.map_index == FAILING_RANGE and ti.try_number == 1:
            raise RuntimeError(
                f"injected failure after range {FAILING_RANGE} committed {result['rows']} rows"
            )
        return result


with DAG(
    dag_id="fdw_deploy_partitions_retry",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["fdw", "deployment-test"],
):
    server = CreateForeignServerOperator(
        task_id="foreign_server", server_name="orders_retry_db", fdw_conn_id="fdw_source"
    )
    proxy = ImportForeignSchemaOperator(
        task_id="import_orders",
        server_name="orders_retry_db",
        remote_schema="app",
        local_schema="partitioned_retry",
        limit_to=["orders"],
    )
    copy = partitioned_copy(
        "copy_orders",
        source_table="partitioned_retry.orders",
        target_table="public.partitioned_orders_retry",
        partitions=4,
        key_columns=["id"],
        transport="copy",
        fdw_conn_id="fdw_source",
        load_operator=LoadThenFailOnce,
        load_kwargs={"retry_delay": datetime.timedelta(seconds=2)},
    )
    server >> proxy >> copy
