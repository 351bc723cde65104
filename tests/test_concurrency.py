"""Concurrent tasks on the same objects: every DDL step is safe, overlapping runs serialize or converge."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from conftest import postgres_connection

from airflow_provider_fdw._driver import sql
from airflow_provider_fdw.operators.server import CreateForeignServerOperator

CALLERS = 4


def run_together(
    calls: list[Callable[[], Any]], timeout: float = 120.0
) -> tuple[list[Any], list[BaseException]]:
    """Start every call at the same instant (a barrier) in its own thread; return results and errors."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # collected: the test reports every failure, not the first
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a concurrent call did not finish in time"
    return results, errors


@pytest.fixture
def fresh_database(target, monkeypatch):
    """A new, empty local database (no postgres_fdw yet) and a connection id for it."""
    created: list[str] = []

    def make() -> str:
        name = f"fresh_{uuid.uuid4().hex[:8]}"
        target.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", postgres_connection(target, name))
        return name

    yield make
    for name in created:
        target.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_concurrent_create_server_on_a_fresh_database_never_fails(fresh_database):
    """4 CreateForeignServerOperator tasks at once on a database without postgres_fdw, 15 rounds."""
    failures: list[str] = []
    for _ in range(15):
        conn_id = fresh_database()
        operators = [
            CreateForeignServerOperator(
                task_id=f"server_{i}",
                server_name="shared_src",
                fdw_conn_id="fdw_source",
                postgres_conn_id=conn_id,
                user_mappings=["CURRENT_USER", "PUBLIC"],
            )
            for i in range(CALLERS)
        ]
        results, errors = run_together([lambda op=op: op.execute({}) for op in operators])
        failures += [f"{type(e).__name__}: {e}" for e in errors]
        if not errors:
            created = sum(r["extension_created"] for r in results)
            if created != 1:
                failures.append(f"{created} callers report that they created the extension")
            assert all(r["remote_version"] for r in results)
    assert failures == [], f"{len(failures)} failures in {15 * CALLERS} calls: {failures[:3]}"
