"""BulkCopy through a hook whose remote connection is not PostgreSQL (a mysql_fdw connection) of a
postgres_fdw foreign table: the direct COPY path cannot read through that connection."""

from __future__ import annotations

import json
import uuid

import pytest
from conftest import RemoteTable, fdw_sandbox, local

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.hooks.fdw import FdwHook
from fdw_testing.pgcluster import Pair


@pytest.fixture
def pg_source(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> str:
    """A postgres_fdw foreign table of 50 rows, and a mysql_fdw connection ``mysql_elsewhere``."""
    schema, server = f"wc_{uuid.uuid4().hex[:8]}", f"wc_src_{uuid.uuid4().hex[:8]}"
    fdw_sandbox(pair, schema, server)
    table = RemoteTable(pair, schema, server, "id bigint, note text", "id bigint PRIMARY KEY, note text")
    table.remote("INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, 50) g")
    # Parsed only: nothing connects to it (the FDW path reads through the local server's user mapping).
    conn = {"conn_type": "mysql_fdw", "host": "127.0.0.1", "port": 3306, "login": "u", "password": "p"}
    monkeypatch.setenv("AIRFLOW_CONN_MYSQL_ELSEWHERE", json.dumps(conn))
    return table.foreign


def test_transport_copy_through_a_mysql_connection_is_refused_before_any_change(
    pair: Pair, pg_source: str
) -> None:
    target = f"public.wc_{uuid.uuid4().hex[:8]}"
    with (
        FdwHook(fdw_conn_id="mysql_elsewhere") as hook,
        pytest.raises(
            FdwConfigError, match=r"needs a PostgreSQL remote; connection 'mysql_elsewhere' is a mysql_fdw"
        ),
    ):
        hook.bulk_copy(plan_copy(pg_source, target, transport="copy"))
    assert local(pair, "SELECT to_regclass(%s) IS NULL", (target,)) == [(True,)]


def test_transport_auto_through_a_mysql_connection_copies_through_the_fdw_path(
    pair: Pair, pg_source: str
) -> None:
    target = f"public.wc_{uuid.uuid4().hex[:8]}"
    with FdwHook(fdw_conn_id="mysql_elsewhere") as hook:
        summary = hook.bulk_copy(plan_copy(pg_source, target, transport="auto"))
    assert summary["path"] == "fdw"
    assert local(pair, "SELECT count(*), sum(id) FROM {t}", t=target) == [(50, 1275)]
