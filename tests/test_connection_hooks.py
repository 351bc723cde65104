"""Two hooks, each talking to the connection it is named after: the ``postgres_fdw`` connection type's
hook (what ``Connection.get_hook()`` and the form's Test button use) reaches the REMOTE database of that
connection; ``FdwHook`` (FDW objects) reaches the LOCAL ``postgres`` connection."""

from __future__ import annotations

import json

import pytest
from conftest import READER, READER_PASSWORD, SOURCE_DB, TARGET_DB

from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.hooks.postgres_fdw import PostgresFdwHook

CONN_ID = "fdw_as_airflow_sees_it"


@pytest.fixture
def remote_conn(pair, monkeypatch):
    """A postgres_fdw connection whose host is the source as this process reaches it (both backends)."""
    fields = {
        "conn_type": "postgres_fdw",
        "host": pair.source.host,
        "port": pair.source.port,
        "schema": SOURCE_DB,
        "login": READER,
        "password": READER_PASSWORD,
        "extra": {"fetch_size": 10000, "use_remote_estimate": True, "server_options": {"connect_timeout": 5}},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(fields))
    return fields


def test_get_hook_on_a_postgres_fdw_connection_talks_to_that_connections_database(remote_conn):
    from airflow.sdk import Connection

    conn = Connection(conn_id=CONN_ID, **{**remote_conn, "extra": json.dumps(remote_conn["extra"])})
    hook = conn.get_hook()
    assert getattr(hook, hook.conn_name_attr) == hook.get_conn_id() == CONN_ID
    # Inherited DbApiHook methods: FDW fields (fetch_size …) are server options, not libpq arguments.
    assert hook.get_first("SELECT current_database(), current_user") == (SOURCE_DB, READER)
    assert hook.get_records("SELECT count(*) FROM app.users") == [(1000,)]
    ok, message = hook.test_connection()
    assert ok and f"as {READER}" in message


def test_fdw_hook_names_the_local_connection_it_talks_to(target):
    assert FdwHook.conn_name_attr == "postgres_conn_id" and FdwHook.default_conn_name == "postgres_default"
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        assert getattr(hook, hook.conn_name_attr) == hook.get_conn_id() == "postgres_default"
        assert hook.get_first("SELECT current_database()") == (TARGET_DB,)
        assert hook.fdw_conn_id == "fdw_source"
    with FdwHook(fdw_conn_id="fdw_source", postgres_conn_id="source_db") as hook:
        assert hook.get_conn_id() == "source_db"
        assert hook.get_first("SELECT current_database()") == (SOURCE_DB,)


def test_the_connection_type_hook_refuses_bad_fields_before_connecting(pair, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_FDW_BAD_SSLMODE",
        json.dumps({"conn_type": "postgres_fdw", "host": "127.0.0.1", "port": 1, "extra": {"sslmode": "x"}}),
    )
    hook = PostgresFdwHook(fdw_conn_id="fdw_bad_sslmode")
    with pytest.raises(FdwConfigError, match="sslmode must be one of"):
        hook.get_conn()
    ok, message = hook.test_connection()
    assert not ok and "sslmode must be one of" in message
