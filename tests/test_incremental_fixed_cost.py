"""The fixed cost of an incremental run is cut without losing a guarantee.

The direct path plans, counts NULL watermarks, probes the source's indexes and holds the snapshot on
ONE remote connection; a small one-range load (by the remote's estimate) is relayed in-process
instead of through two psql children, unless ``relay="psql"`` was asked for. The NULL watermarks,
the index advice and the rows copied stay exactly what they were.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from conftest import RemoteTable, fdw_sandbox, local

from airflow_provider_fdw.bulkcopy import engine as engine_module
from airflow_provider_fdw.bulkcopy import load as load_module
from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "fixed_src"
ROWS = 300
UPSERT = {"mode": "upsert", "key_columns": ["id"], "watermark_column": "updated_at", "transport": "copy"}
IN_PROCESS = "relayed in this process, not through psql"


@pytest.fixture(scope="module")
def fixed(airflow_connections):
    return fdw_sandbox(airflow_connections, "fixed", SERVER)


class Source(RemoteTable):
    """``fixed.<name>`` (id, name, updated_at; NULL watermarks allowed) and its foreign table."""

    def __init__(self, pair, index: bool = True) -> None:
        super().__init__(
            pair,
            "fixed",
            SERVER,
            "id bigint, name text, updated_at timestamptz",
            remote_columns="id bigint PRIMARY KEY, name text NOT NULL, updated_at timestamptz",
        )
        self.remote(
            "INSERT INTO {t} SELECT g, 'name ' || g, '2024-01-01'::timestamptz + g * interval '1 minute' "
            "FROM generate_series(1, %s) g",
            (ROWS,),
        )
        if index:
            self.remote("CREATE INDEX ON {t} (updated_at)")
        self.remote("ANALYZE {t}")

    def rows(self):
        return self.remote("SELECT id, name, updated_at FROM {t} ORDER BY id")


class CountingHook(FdwHook):
    """Counts the direct path's remote connections and every connection the hook opens."""

    opened = 0  # direct path: remote connections
    connections = 0  # local sessions and remote connections

    def direct_connection(self, client_encoding=None):
        CountingHook.opened += 1
        return super().direct_connection(client_encoding)

    def _create_connection(self, conn_args):
        CountingHook.connections += 1
        return super()._create_connection(conn_args)


def copy(source: Source, target: str, log: logging.Logger, relay: str = "auto", **kwargs):
    plan = plan_copy(source.foreign, target, **kwargs)
    with CountingHook(fdw_conn_id="fdw_source") as hook:
        hook._log = log  # a stdlib logger: caplog sees it
        return hook.bulk_copy(plan, relay=relay)


def new_target() -> str:
    return f"public.f_{uuid.uuid4().hex[:8]}"


def target_rows(pair, target: str):
    return local(pair, "SELECT id, name, updated_at FROM {t} ORDER BY id", t=target)


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO)
    return logging.getLogger("test_incremental_fixed_cost")


def test_a_direct_incremental_run_plans_counts_and_holds_the_snapshot_on_one_remote_connection(fixed, log):
    src, t = Source(fixed), new_target()
    copy(src, t, log, relay="python", **UPSERT)
    src.remote("UPDATE {t} SET name = 'changed', updated_at = '2025-01-01' WHERE id % 10 = 0")
    CountingHook.opened = CountingHook.connections = 0
    result = copy(src, t, log, relay="python", **UPSERT)
    assert result["path"] == "direct" and result["rows"] == ROWS // 10
    # planning, NULL count, index probe, snapshot and the in-process reader: one connection
    assert CountingHook.opened == 1
    # and the copy's own session loads the single range: one local session
    assert CountingHook.connections == 2
    assert target_rows(fixed, t) == src.rows()


def test_a_one_range_fdw_incremental_run_loads_in_the_copys_own_session(fixed, log):
    src, t = Source(fixed), new_target()
    fdw = {**UPSERT, "transport": "fdw"}
    copy(src, t, log, **fdw)
    src.remote("UPDATE {t} SET name = 'changed', updated_at = '2025-01-01' WHERE id % 10 = 0")
    src.remote("UPDATE {t} SET name = 'no time', updated_at = NULL WHERE id = 3")
    CountingHook.connections = 0
    result = copy(src, t, log, **fdw)
    assert result["path"] == "fdw" and result["rows"] == ROWS // 10 + 1
    assert result["null_watermark_rows"] == 1
    # one local session, so one postgres_fdw connection serves the NULL count and the load
    assert CountingHook.connections == 1
    assert target_rows(fixed, t) == src.rows()


def test_the_direct_path_still_counts_and_copies_null_watermarks_on_the_shared_connection(fixed, log):
    src, t = Source(fixed), new_target()
    copy(src, t, log, **UPSERT)
    src.remote("UPDATE {t} SET name = 'no time', updated_at = NULL WHERE id IN (5, 6, 7)")
    src.remote("UPDATE {t} SET name = 'later', updated_at = '2025-01-01' WHERE id = 9")
    result = copy(src, t, log, **UPSERT)
    assert result["path"] == "direct" and result["null_watermark_rows"] == 3
    assert target_rows(fixed, t) == src.rows()


def test_the_direct_path_still_logs_the_index_advice_on_the_shared_connection(fixed, log, caplog):
    src, t = Source(fixed, index=False), new_target()
    copy(src, t, log, **UPSERT)
    copy(src, t, log, **UPSERT)
    assert f'CREATE INDEX ON "fixed"."{src.name}" ("updated_at")' in caplog.text
    caplog.clear()
    src.remote("CREATE INDEX ON {t} (updated_at)")
    copy(src, t, log, **UPSERT)
    assert "no index on the source serves the watermark filter" not in caplog.text


def test_a_small_direct_incremental_load_is_relayed_in_process_when_the_relay_is_auto(fixed, log, caplog):
    src, t = Source(fixed), new_target()
    copy(src, t, log, **UPSERT)
    src.remote("UPDATE {t} SET name = 'changed', updated_at = '2025-01-01' WHERE id % 50 = 0")
    caplog.clear()
    result = copy(src, t, log, **UPSERT)
    assert IN_PROCESS in caplog.text and result["rows"] == ROWS // 50
    assert target_rows(fixed, t) == src.rows()


def test_an_explicit_psql_relay_is_kept_for_a_small_load(fixed, log, caplog):
    src, t = Source(fixed), new_target()
    copy(src, t, log, relay="psql", **UPSERT)
    src.remote("UPDATE {t} SET name = 'changed', updated_at = '2025-01-01' WHERE id % 50 = 0")
    caplog.clear()
    result = copy(src, t, log, relay="psql", **UPSERT)
    assert IN_PROCESS not in caplog.text and result["rows"] == ROWS // 50
    assert target_rows(fixed, t) == src.rows()


def test_a_load_estimated_above_the_threshold_goes_through_psql(fixed, log, caplog, monkeypatch):
    monkeypatch.setattr(load_module, "SMALL_LOAD_ROWS", 1)
    src, t = Source(fixed), new_target()
    copy(src, t, log, **UPSERT)
    src.remote("UPDATE {t} SET name = 'changed', updated_at = '2025-01-01' WHERE id % 50 = 0")
    caplog.clear()
    result = copy(src, t, log, **UPSERT)
    assert IN_PROCESS not in caplog.text and result["rows"] == ROWS // 50
    assert target_rows(fixed, t) == src.rows()


def test_a_full_copy_is_never_relayed_in_process_by_the_estimate(fixed, log, caplog):
    src, t = Source(fixed), new_target()
    result = copy(src, t, log, mode="replace", transport="copy")
    assert IN_PROCESS not in caplog.text and result["rows"] == ROWS
    assert local(fixed, "SELECT count(*) FROM {t}", t=t) == [(ROWS,)]


def test_the_session_that_loads_a_one_range_copy_in_a_task_carries_the_tasks_mark(fixed, log):
    from airflow_provider_fdw.cancel import application_prefix

    src, t = Source(fixed), new_target()
    identity = ("fixed_dag", "copy", "run_1", "-1")
    seen: list[tuple] = []
    done = threading.Event()

    def watch():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not done.is_set():
            rows = local(
                fixed,
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'active' AND query LIKE %s",
                ("INSERT INTO %_fdw_staging_%",),
            )
            if rows:
                seen.extend(rows)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        plan = plan_copy(src.foreign, t, key_columns=["id"], where="pg_sleep(0.005) IS NOT NULL")
        with CountingHook(fdw_conn_id="fdw_source") as hook:
            hook._log = log
            hook.task_identity = identity
            hook.bulk_copy(plan)
    finally:
        done.set()
        watcher.join()
    # a retry of the task terminates sessions by this prefix (a live earlier try's load included)
    assert seen and seen[0][0].startswith(application_prefix(identity, t)), seen


class RecordingHook(CountingHook):
    """Keeps the direct path's remote connections, and marks when the first one started opening."""

    connecting = threading.Event()
    remotes: list = []

    def direct_connection(self, client_encoding=None):
        RecordingHook.connecting.set()
        conn = super().direct_connection(client_encoding)
        RecordingHook.remotes.append(conn)
        return conn


def test_the_remote_connection_opens_while_the_local_catalog_is_read(fixed, log, monkeypatch):
    src, t = Source(fixed), new_target()
    copy(src, t, log, **UPSERT)
    original = engine_module.inspect_tables
    opened_first = []

    def inspect_after_the_connect_started(copy, s):
        # the old order (catalog, then connect) would wait here for the full 10 s
        opened_first.append(RecordingHook.connecting.wait(10))
        return original(copy, s)

    monkeypatch.setattr(engine_module, "inspect_tables", inspect_after_the_connect_started)
    RecordingHook.connecting.clear()
    RecordingHook.remotes.clear()
    src.remote("UPDATE {t} SET name = 'changed', updated_at = '2025-01-01' WHERE id = 7")
    with RecordingHook(fdw_conn_id="fdw_source") as hook:
        hook._log = log
        result = hook.bulk_copy(plan_copy(src.foreign, t, **UPSERT))
    assert opened_first == [True]
    assert (result["path"], result["updated"], len(RecordingHook.remotes)) == ("direct", 1, 1)
    assert target_rows(fixed, t) == src.rows()


def test_a_run_that_reads_through_postgres_fdw_holds_no_remote_connection_opened_early(
    fixed, log, monkeypatch
):
    src, local_source = Source(fixed), new_target()
    copy(src, local_source, log, mode="replace", transport="copy")
    open_at_load: list[bool] = []
    original = engine_module.load

    def load_checking(copy, run, ranges, s):
        open_at_load.extend(not conn.closed for conn in RecordingHook.remotes)
        return original(copy, run, ranges, s)

    monkeypatch.setattr(engine_module, "load", load_checking)

    def run(plan):
        RecordingHook.remotes.clear()
        with RecordingHook(fdw_conn_id="fdw_source") as hook:
            hook._log = log
            assert hook.bulk_copy(plan)["path"] == "fdw"

    # a local source: the FDW path, chosen after the remote connection started opening
    run(plan_copy(local_source, new_target(), mode="replace", transport="auto"))
    assert open_at_load == [False] or open_at_load == []  # closed, or still connecting, by the load
    deadline = time.monotonic() + 10  # a connect still under way is closed as it ends
    while not (RecordingHook.remotes and RecordingHook.remotes[0].closed) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(RecordingHook.remotes) == 1 and RecordingHook.remotes[0].closed
    # transport='auto' with a where reads through postgres_fdw (the where is evaluated locally):
    # no remote connection at all
    target = new_target()
    run(plan_copy(src.foreign, target, mode="replace", transport="auto", where="id > 100"))
    assert RecordingHook.remotes == []
    assert local(fixed, "SELECT count(*) FROM {t}", t=target) == [(ROWS - 100,)]
