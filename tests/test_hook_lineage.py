"""Hook-level lineage: a direct copy reports the REMOTE table read and the local table written to
Airflow's hook lineage collector (what OpenLineage reads when the hook is called from DAG code)."""

from __future__ import annotations

import uuid

import pytest
from conftest import SOURCE_DB, TARGET_DB, RemoteTable, fdw_sandbox

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "hooklin_src"


@pytest.fixture
def collector(monkeypatch):
    """The real collector, created as it is when a lineage reader (the OpenLineage plugin) is enabled."""
    from airflow.sdk import lineage, plugins_manager

    monkeypatch.setattr(
        plugins_manager, "get_hook_lineage_readers_plugins", lambda: [lineage.HookLineageReader]
    )
    lineage.get_hook_lineage_collector.cache_clear()
    yield lineage.get_hook_lineage_collector()
    lineage.get_hook_lineage_collector.cache_clear()


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "hooklin", SERVER)


def copy(source: RemoteTable, target: str, transport: str) -> dict:
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(source.foreign, target, key_columns=["id"], transport=transport))


def uris(infos) -> list[str]:
    return [info.asset.uri for info in infos]


def test_direct_copy_reports_the_remote_input_and_local_output_to_the_hook_lineage_collector(
    sandbox, collector
):
    src = RemoteTable(sandbox, "hooklin", SERVER, "id bigint, name text")
    src.remote("INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, 100) g")
    target = f"public.hooklin_{uuid.uuid4().hex[:8]}"

    summary = copy(src, target, "copy")

    assert summary["path"] == "direct" and summary["rows"] == 100
    found = collector.collected_assets
    remote = f"postgres://{sandbox.source.fdw_host}:{sandbox.source.fdw_port}"
    local = f"postgres://{sandbox.target.host}:{sandbox.target.port}"
    assert uris(found.inputs) == [f"{remote}/{SOURCE_DB}/hooklin/{src.name}"]
    assert uris(found.outputs) == [f"{local}/{TARGET_DB}/public/{target.split('.')[1]}"]
    assert all(isinstance(info.context, FdwHook) for info in [*found.inputs, *found.outputs])


def test_copy_through_postgres_fdw_reports_no_hook_lineage_the_operator_reports_it(sandbox, collector):
    src = RemoteTable(sandbox, "hooklin", SERVER, "id bigint, name text")
    src.remote("INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, 10) g")

    summary = copy(src, f"public.hooklin_{uuid.uuid4().hex[:8]}", "fdw")

    assert summary["path"] == "fdw"
    assert not collector.has_collected
