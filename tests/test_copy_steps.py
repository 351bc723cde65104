"""Every copy times its steps (issue 13 item 2): one log line per step and ``steps`` in the summary,
so the fixed costs (connections, catalog reads, staging, swap) can be read off any task log.
Against the real pair; durations are only checked to be well-formed, never bounded."""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

import pytest
from conftest import READER, SOURCE_DB, TARGET_DB, RemoteTable, fdw_sandbox, ident

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.bulkcopy.steps import STEPS
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "steps_src"
LOGGER = "test_copy_steps"


@pytest.fixture(scope="module")
def steps_source(airflow_connections):
    fdw_sandbox(airflow_connections, "steps", SERVER)
    source = RemoteTable(
        airflow_connections,
        "steps",
        SERVER,
        "id bigint, note text, updated_at timestamptz",
        remote_columns="id bigint PRIMARY KEY, note text, updated_at timestamptz",
    )
    source.remote(
        "INSERT INTO {t} SELECT g, 'n' || g, '2024-01-01'::timestamptz + g * interval '1 minute' "
        "FROM generate_series(1, 500) g"
    )
    return source


def copy(source, caplog, target, **kwargs):
    caplog.clear()
    plan = plan_copy(source.foreign, target, key_columns=["id"], **kwargs)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook._log = logging.getLogger(LOGGER)  # a stdlib logger: caplog sees it
        return hook.bulk_copy(plan)


def logged_steps(caplog) -> list[str]:
    return [
        r.getMessage().split()[2]
        for r in caplog.records
        if r.name == LOGGER and r.getMessage().startswith("Copy step ")
    ]


def check_steps(result, caplog, expected):
    steps = result["steps"]
    assert list(steps) == [s for s in STEPS if s in steps]  # in the order they run
    assert set(expected) <= set(steps)
    assert all(isinstance(v, float) and v >= 0 for v in steps.values())
    assert sum(steps.values()) <= result["seconds"] + steps["connect"] + 1.0  # parts of the whole
    # one line per step, then the rest ("other"), each once
    assert logged_steps(caplog) == [*steps, "other"]


@pytest.mark.parametrize("transport", ["fdw", "copy"])
def test_replace_logs_and_returns_the_time_of_each_step(steps_source, caplog, transport):
    caplog.set_level(logging.INFO, logger=LOGGER)
    target = f"public.steps_{uuid.uuid4().hex[:8]}"
    result = copy(steps_source, caplog, target, transport=transport)
    assert result["rows"] == 500 and result["path"] == ("direct" if transport == "copy" else "fdw")
    check_steps(
        result, caplog, ["connect", "lock", "catalog", "staging", "load", "index", "analyze", "apply"]
    )
    # a second replace swaps into the existing table: the same steps again
    result = copy(steps_source, caplog, target, transport=transport, verify="count")
    check_steps(
        result,
        caplog,
        ["connect", "lock", "catalog", "staging", "load", "verify", "index", "analyze", "apply"],
    )


def test_upsert_logs_the_watermark_step(steps_source, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    target = f"public.steps_{uuid.uuid4().hex[:8]}"
    args = {"mode": "upsert", "watermark_column": "updated_at"}
    copy(steps_source, caplog, target, **args)
    result = copy(steps_source, caplog, target, **args)
    check_steps(result, caplog, ["connect", "lock", "catalog", "watermark", "staging", "load", "apply"])
    assert "index" not in result["steps"] and "analyze" not in result["steps"]


def test_fdw_copy_costs_no_remote_estimate_round_trips_on_a_server_that_asks_for_them(
    airflow_connections, caplog
):
    """A full scan needs no cost estimate: the copy's private foreign table turns
    use_remote_estimate off, so the remote sees no EXPLAIN of the copied table (issue 13 item 3)."""
    pair = airflow_connections
    fdw_sandbox(pair, "estim", "estim_src")
    pair.target.execute("ALTER SERVER estim_src OPTIONS (ADD use_remote_estimate 'true')", dbname=TARGET_DB)
    source = RemoteTable(pair, "estim", "estim_src", "id bigint, note text")
    source.remote("INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, 100) g")
    log = Path(pair.source.logfile)
    setting = sql.SQL("ALTER ROLE {} IN DATABASE {} SET log_statement = {}")
    pair.source.execute(setting.format(ident(READER), ident(SOURCE_DB), sql.Literal("all")))
    try:
        offset = log.stat().st_size
        result = copy(source, caplog, f"public.estim_{uuid.uuid4().hex[:8]}")
        remote_log = log.read_bytes()[offset:].decode(errors="replace")
    finally:
        reset = sql.SQL("ALTER ROLE {} IN DATABASE {} RESET log_statement")
        pair.source.execute(reset.format(ident(READER), ident(SOURCE_DB)))
    assert result["rows"] == 100 and result["path"] == "fdw"
    scanned = f"FROM estim.{source.name}"
    # one entry per logged statement (a statement's text can span lines; entries start with the time)
    statements = [e for e in re.split(r"\n(?=\d{4}-\d\d-\d\d )", remote_log) if scanned in e]
    assert any("DECLARE" in e for e in statements), remote_log[-3000:]  # the read was logged
    assert [e for e in statements if "EXPLAIN" in e] == []
