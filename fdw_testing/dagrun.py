"""Run a DAG object end to end in-process (``dag.test()``), as ``airflow dags test`` does for a file.

Airflow 3 only runs DAGs whose serialized form is in the metadata database; ``airflow dags test``
parses the DAG file and stores it first. ``run_dag`` does the same for a DAG built in Python (a
test's own DAG), then returns the run's state and XCom return values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class DagRunResult:
    state: str
    run_id: str
    xcom: dict[str, Any]  # task_id -> return value
    task_states: dict[str, str]


def run_dag(dag: Any, bundle_name: str = "dags-folder", **test_kwargs: Any) -> DagRunResult:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.models.xcom import XComModel
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        update_dag_parsing_results_in_db(
            bundle_name, None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )
    dagrun = dag.test(**test_kwargs)
    with create_session() as session:
        rows = session.query(XComModel).filter(
            XComModel.dag_id == dag.dag_id, XComModel.run_id == dagrun.run_id, XComModel.key == "return_value"
        )
        xcom = {row.task_id: XComModel.deserialize_value(row) for row in rows}
        states = {ti.task_id: str(ti.state) for ti in dagrun.get_task_instances(session=session)}
    return DagRunResult(str(dagrun.state), dagrun.run_id, xcom, states)
