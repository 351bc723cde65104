"""Imports that would import nothing fail, naming what is missing and what the remote has."""

from __future__ import annotations

import datetime
import uuid

import pytest
from conftest import READER, SOURCE_DB

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
from airflow_provider_fdw.operators.server import CreateForeignServerOperator


@pytest.fixture
def hook(target, server_name):
    CreateForeignServerOperator(task_id="server", server_name=server_name, fdw_conn_id="fdw_source").execute(
        {}
    )
    with FdwHook(fdw_conn_id="fdw_source") as h:
        yield h


@pytest.fixture
def empty_remote_schema(source):
    name = f"empty_{uuid.uuid4().hex[:8]}"
    source.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)), dbname=SOURCE_DB)
    source.execute(
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(name), sql.Identifier(READER)),
        dbname=SOURCE_DB,
    )
    yield name
    source.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)), dbname=SOURCE_DB)


def local_relations(hook: FdwHook, schema: str) -> int:
    with hook.session.transaction() as s:
        return s.fetchone(
            "count",
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s",
            (schema,),
        )[0]


def test_an_empty_remote_schema_fails_the_import(hook, server_name, local_schema, empty_remote_schema):
    with pytest.raises(
        FdwError, match=f"Remote schema '{empty_remote_schema}' on server '{server_name}' has no tables"
    ):
        hook.import_foreign_schema(server_name, empty_remote_schema, local_schema)


def test_excluding_every_table_fails_and_names_what_the_remote_has(hook, server_name, local_schema):
    with pytest.raises(FdwError, match=r"nothing left to import.*has: events, orders, users"):
        hook.import_foreign_schema(server_name, "app", local_schema, exclude=["events", "orders", "users"])


@pytest.mark.parametrize(
    ("limit_to", "missing", "hint"),
    [
        (["users", "nope"], "'nope'", "has: events, orders, users"),
        (["Users", "orders"], "'Users'", "did you mean 'users'"),
        (["order"], "'order'", "did you mean 'orders'"),
    ],
)
def test_a_missing_limit_to_table_fails_and_changes_nothing(
    hook, target, server_name, local_schema, limit_to, missing, hint
):
    hook.import_foreign_schema(server_name, "app", local_schema, limit_to=["events"])
    with pytest.raises(FdwError) as err:
        hook.import_foreign_schema(server_name, "app", local_schema, limit_to=limit_to)
    message = str(err.value)
    assert f"not found in remote schema 'app' on server '{server_name}': {missing}" in message
    assert hint in message and "names are case-sensitive" in message
    assert [t["table"] for t in hook.list_foreign_tables(local_schema)] == ["events"]  # rolled back


def test_a_failed_import_emits_no_asset_events(airflow_db, hook, server_name, local_schema):
    from airflow.models.asset import AssetEvent
    from airflow.sdk import DAG
    from airflow.utils.session import create_session

    from fdw_testing.dagrun import run_dag

    def import_dag(suffix: str, limit_to: list[str]):
        with DAG(
            f"import_{suffix}_{local_schema}", schedule=None, start_date=datetime.datetime(2024, 1, 1)
        ) as d:
            ImportForeignSchemaOperator(
                task_id="import",
                server_name=server_name,
                remote_schema="app",
                local_schema=local_schema,
                limit_to=limit_to,
            )
        return d

    def events(dag_id: str) -> int:
        with create_session() as session:
            return session.query(AssetEvent).filter(AssetEvent.source_dag_id == dag_id).count()

    failing = import_dag("missing", ["users", "Orders"])
    result = run_dag(failing)
    assert result.task_states["import"] == "failed"
    assert events(failing.dag_id) == 0
    assert local_relations(hook, local_schema) == 0  # not even the schema's tables half-made
    working = import_dag("ok", ["users", "orders"])  # the same check sees events when there are some
    assert run_dag(working).state == "success"
    assert events(working.dag_id) == 2
