"""Locks the provider takes on a table an autovacuum worker is vacuuming, against the real pair.

PostgreSQL cancels an autovacuum that blocks a lock request, but only once the waiter has waited
``deadlock_timeout``: each lock attempt must wait longer than that, or the copy waits the whole
autovacuum out (and fails after ``lock_retries`` attempts).
"""

from __future__ import annotations

import time
import uuid

import pytest
from conftest import TARGET_DB, RemoteTable, fdw_sandbox, local

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.bulkcopy.mirror import Mirror, plan_mirror
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "av_src"
ROWS = 100
# Rows of the target before the copy: its autovacuum ANALYZE sleeps 50 ms for each (~8 minutes).
TARGET_ROWS = 10_000
COLUMNS = "id bigint, name text, score int"
REMOTE_COLUMNS = "id bigint PRIMARY KEY, name text NOT NULL, score int"
AUTOVACUUM_ON = (
    "SELECT a.pid, a.query, a.wait_event FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'relation' AND l.granted AND l.relation = to_regclass(%s) "
    "AND a.backend_type = 'autovacuum worker'"
)


@pytest.fixture(scope="module")
def avsandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "avlocks", SERVER)


@pytest.fixture
def prompt_autovacuum(avsandbox):
    """The target cluster's autovacuum launcher looks for work every second (restored afterwards)."""
    avsandbox.target.execute(sql.SQL("ALTER SYSTEM SET autovacuum_naptime = 1"))
    avsandbox.target.execute(sql.SQL("SELECT pg_reload_conf()"))
    yield avsandbox
    avsandbox.target.execute(sql.SQL("ALTER SYSTEM RESET autovacuum_naptime"))
    avsandbox.target.execute(sql.SQL("SELECT pg_reload_conf()"))


class Source(RemoteTable):
    def __init__(self, pair) -> None:
        super().__init__(pair, "avlocks", SERVER, COLUMNS, remote_columns=REMOTE_COLUMNS)
        self.remote("INSERT INTO {t} SELECT g, 'name ' || g, g %% 7 FROM generate_series(1, %s) g", (ROWS,))

    def rows(self):
        return self.remote("SELECT id, name, score FROM {t} ORDER BY id")


def target_rows(pair, target: str):
    return local(pair, "SELECT id, name, score FROM {t} ORDER BY id", t=target)


def target_under_autovacuum(pair, timeout: float = 90.0) -> str:
    """A new target table an autovacuum worker holds for minutes: its ANALYZE evaluates an index
    expression that sleeps in autovacuum workers only (a rename swap still applies: no storage options)."""
    target = f"public.av_{uuid.uuid4().hex[:8]}"
    slow = f"{target}_slow"
    local(
        pair,
        "CREATE FUNCTION {f}(v bigint) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN "
        "IF (SELECT backend_type FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid()) "
        "= 'autovacuum worker' THEN PERFORM pg_catalog.pg_sleep(0.05); END IF; RETURN v; END $$",
        f=slow,
    )
    local(pair, "CREATE TABLE {t} (" + REMOTE_COLUMNS + ")", t=target)
    local(pair, "CREATE INDEX ON {t} ({f}(id))", t=target, f=slow)
    local(
        pair,
        "INSERT INTO {t} SELECT g, 'old ' || g, 0 FROM generate_series(1, %s) g",
        (TARGET_ROWS,),
        t=target,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = pair.target.execute(sql.SQL(AUTOVACUUM_ON), (target,), dbname=TARGET_DB)
        if workers and workers[0][2] == "PgSleep":
            query = workers[0][1]
            # an anti-wraparound autovacuum is never cancelled: the test needs an ordinary one
            assert query.startswith("autovacuum:") and "wraparound" not in query, query
            return target
        time.sleep(0.2)
    pytest.fail(f"no autovacuum worker was analyzing {target} within {timeout:g}s")


def drop(pair, target: str) -> None:
    local(pair, "DROP TABLE IF EXISTS {t}", t=target)
    local(pair, "DROP FUNCTION IF EXISTS {f}(bigint)", f=f"{target}_slow")


@pytest.mark.parametrize("swap", ["rename", "in_place"])
def test_replace_swap_cancels_an_autovacuum_of_the_target_instead_of_waiting_it_out(prompt_autovacuum, swap):
    pair = prompt_autovacuum
    src = Source(pair)
    target = target_under_autovacuum(pair)
    try:
        plan = plan_copy(src.foreign, target, swap=swap)
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            result = hook.bulk_copy(plan, lock_retries=3)
        assert result["rows"] == ROWS
        assert target_rows(pair, target) == src.rows()
    finally:
        drop(pair, target)


def test_mirror_lock_cancels_an_autovacuum_of_the_target_instead_of_waiting_it_out(prompt_autovacuum):
    pair = prompt_autovacuum
    src = Source(pair)
    target = target_under_autovacuum(pair)
    try:
        plan = plan_mirror(src.foreign, target)
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            result = Mirror(plan, hook.log, lock_retries=3).run(hook.session).summary()
        assert result["deleted"] == TARGET_ROWS - ROWS
        assert target_rows(pair, target) == src.rows()
    finally:
        drop(pair, target)
