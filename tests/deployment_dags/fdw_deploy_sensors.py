"""ReplicationLagSensor in the two modes that leave the worker: deferrable and reschedule.

Used by tests/test_deployment.py on a real scheduler and triggerer: the test pauses replay on the
replica, writes on the primary, triggers a DAG, watches the sensor wait (``deferred`` with a trigger
row, or ``up_for_reschedule``), then resumes replay. Reschedule mode runs at ``poke_interval=15``,
the documented minimum: Airflow 3.3 reports a reschedule poke's exit about 5 s after the poke, and a
next poke due before that is failed by the scheduler (apache/airflow#71172, docs/deployment.md).
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_fdw.sensors.replication import ReplicationLagSensor

SENSOR = {
    "task_id": "replica_caught_up",
    "postgres_conn_id": "replica_db",
    "primary_conn_id": "primary_db",
    "measure": "standby",
    "catch_up": True,
    "timeout": 600,
}

with DAG(
    dag_id="fdw_deploy_deferrable_sensor",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["fdw", "deployment-test"],
):
    ReplicationLagSensor(deferrable=True, poke_interval=2, **SENSOR)

with DAG(
    dag_id="fdw_deploy_reschedule_sensor",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["fdw", "deployment-test"],
):
    ReplicationLagSensor(
        mode="reschedule",
        poke_interval=15,
        retries=2,
        retry_delay=datetime.timedelta(seconds=2),
        **SENSOR,
    )
