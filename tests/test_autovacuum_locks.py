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
from airflow_provider_fdw.locks import LockTimeout
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.timeouts import FdwTimeoutError

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


def test_explicit_short_lock_timeout_waits_an_autovacuum_out_and_the_error_names_it(prompt_autovacuum):
    """Kept as given (shorter than deadlock_timeout): each attempt ends before the server would cancel
    the autovacuum, so the copy fails, the target unchanged, naming the worker that held it."""
    pair = prompt_autovacuum
    src = Source(pair)
    target = target_under_autovacuum(pair)
    try:
        before = target_rows(pair, target)
        plan = plan_copy(src.foreign, target, lock_timeout="500ms")
        with FdwHook(fdw_conn_id="fdw_source") as hook, pytest.raises(FdwTimeoutError) as failed:
            hook.bulk_copy(plan, lock_retries=2)
        assert "held by autovacuum worker pid" in str(failed.value)
        assert target_rows(pair, target) == before
    finally:
        drop(pair, target)


# -- the lock_timeout each attempt gets ------------------------------------------------------------------


class Log:
    """Collects what a run logs, by level."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {"info": [], "warning": []}

    def info(self, msg, *args):
        self.lines["info"].append(msg % args)

    def warning(self, msg, *args):
        self.lines["warning"].append(msg % args)


def lock_timeout_in_attempts(pair, setting: str, explicit: bool, deadlock_timeout: str, attempts: int = 2):
    """What ``SHOW lock_timeout`` says in each attempt's transaction, and what was logged."""
    log = Log()
    lock_timeout = LockTimeout(setting, explicit)
    conn = pair.target.connect(TARGET_DB, autocommit=False)
    seen = []
    try:
        s = LocalSession(conn, log)
        with s.transaction():  # a session setting (superuser only), as a DBA would set it
            s.execute(
                "set deadlock_timeout",
                sql.SQL("SET deadlock_timeout = {}").format(sql.Literal(deadlock_timeout)),
                quiet=True,
            )
        for _ in range(attempts):
            with s.transaction():
                lock_timeout.set_local(s, log)
                seen.append(s.fetchvalue("show", sql.SQL("SHOW lock_timeout")))
    finally:
        conn.close()
    return seen, log.lines


def test_default_lock_timeout_is_raised_above_the_sessions_deadlock_timeout(pair):
    seen, lines = lock_timeout_in_attempts(pair, "1s", explicit=False, deadlock_timeout="2s")
    assert seen == ["3s", "3s"]  # 2 s + max(0.5 s, 1 s)
    assert len(lines["info"]) == 1 and not lines["warning"]
    seen, lines = lock_timeout_in_attempts(pair, "1s", explicit=False, deadlock_timeout="200ms")
    assert seen == ["1s", "1s"]  # already longer than 200 ms + 0.5 s
    assert not lines["info"] and not lines["warning"]
    # settings shown in other units (read from current_setting(), which shows the unit)
    seen, lines = lock_timeout_in_attempts(pair, "1min", explicit=False, deadlock_timeout="1min")
    assert seen == ["90s", "90s"]  # 60 s + max(0.5 s, 30 s)
    seen, lines = lock_timeout_in_attempts(pair, "1h", explicit=False, deadlock_timeout="1min")
    assert seen == ["1h", "1h"] and not lines["info"]


def test_explicit_short_lock_timeout_is_kept_with_one_warning_per_run(pair):
    seen, lines = lock_timeout_in_attempts(pair, "500ms", explicit=True, deadlock_timeout="1s", attempts=3)
    assert seen == ["500ms"] * 3
    assert len(lines["warning"]) == 1 and "autovacuum" in lines["warning"][0]
    seen, lines = lock_timeout_in_attempts(pair, "5s", explicit=True, deadlock_timeout="1s")
    assert seen == ["5s", "5s"] and not lines["warning"]


def test_refresh_with_a_short_lock_timeout_warns_that_an_autovacuum_is_waited_out(pair, local_schema):
    from airflow_provider_fdw.refresh import plan_refresh, refresh_views

    view = f"{local_schema}.v"
    log = Log()
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        plan = plan_refresh([view], query="SELECT g AS id FROM generate_series(1, 3) g", lock_timeout="300ms")
        refresh_views(hook.session, plan, log)  # creates it
        refresh_views(hook.session, plan, log)
    local(pair, "DROP SCHEMA {s} CASCADE", s=local_schema)
    assert len(log.lines["warning"]) == 1
