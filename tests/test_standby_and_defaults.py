"""Copies under hostile per-role defaults of the local server.

An adversarial review (2026-12-07) of the source as a hot standby and of ``ALTER ROLE … SET`` /
``ALTER DATABASE … SET`` defaults on either server. Each test here failed on the code of that day:

- ``session_replication_role = replica`` as the task role's default (set by a superuser with
  ``ALTER ROLE … SET``, as ETL roles are given to skip triggers on bulk loads): the provider's
  sessions inherit it, so the target's foreign keys and row triggers do not fire, and an append,
  upsert, in-place replace or mirror reports success with a row whose parent does not exist;
- a ``search_path`` default with a schema before ``pg_catalog``: the provider's own statements call
  unqualified built-ins (``hashtext`` for the run lock, ``now()``, ``max()`` …), so a function
  planted in that schema runs as the copying role.
"""

from __future__ import annotations

import os
import uuid

import pytest
from conftest import TARGET_DB, RemoteTable, fdw_sandbox, local, map_role_to_reader
from conftest import copy_table as copy

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwError
from fdw_testing.sample_data import postgres_connection

SERVER = "defaults_src"
SCHEMA = "defaults"
TRANSPORTS = pytest.mark.parametrize("transport", ["fdw", "copy"])
ROLE_PASSWORD = "Etl-Defaults-Pw-1"


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, SCHEMA, SERVER)


@pytest.fixture
def etl(sandbox):
    """A local task role of its own (a superuser, so privileges are not what is tested) reading the
    source through its own user mapping; the test sets its defaults with ALTER ROLE."""
    role = f"etl_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE ROLE {r} LOGIN SUPERUSER PASSWORD {p}", r=role, p=sql.Literal(ROLE_PASSWORD))
    map_role_to_reader(sandbox, role, SERVER)
    conn_id = f"etl_defaults_{role}"
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = postgres_connection(
        sandbox.target, TARGET_DB, role, ROLE_PASSWORD
    )
    yield role, conn_id
    local(sandbox, "ALTER ROLE {r} RESET ALL", r=role)
    os.environ.pop(f"AIRFLOW_CONN_{conn_id.upper()}", None)


def source(sandbox, rows: int = 20) -> RemoteTable:
    src = RemoteTable(
        sandbox,
        SCHEMA,
        SERVER,
        "id bigint, v bigint, pid bigint",
        "id bigint PRIMARY KEY, v bigint NOT NULL, pid bigint",
    )
    src.remote("INSERT INTO {t} SELECT g, g, 1 + g %% 5 FROM generate_series(1, %s) g", (rows,))
    return src


def new_target() -> str:
    return f"public.d_{uuid.uuid4().hex[:8]}"


MODES = {
    "append": {"mode": "append", "watermark_column": "v"},
    "upsert": {"mode": "upsert", "watermark_column": "v"},
    "in_place": {"mode": "replace", "swap": "in_place"},
    "mirror": {"mode": "mirror"},
}


@TRANSPORTS
@pytest.mark.parametrize("mode", list(MODES))
def test_a_replica_session_replication_role_default_does_not_skip_the_targets_foreign_key(
    sandbox, etl, mode, transport
):
    """With ``session_replication_role = replica`` the foreign key's triggers do not fire: the copy
    must fail (or refuse) with the target unchanged, as it does under ``origin``, never commit an
    orphan. It committed one in every mode, on both transports."""
    role, conn = etl
    src, target = source(sandbox), new_target()
    parent = f"{target}_parent"
    local(sandbox, "CREATE TABLE {p} (id bigint PRIMARY KEY)", p=parent)
    local(sandbox, "INSERT INTO {p} SELECT generate_series(1, 5)", p=parent)
    local(
        sandbox,
        "CREATE TABLE {t} (id bigint PRIMARY KEY, v bigint NOT NULL, pid bigint REFERENCES {p} (id))",
        t=target,
        p=parent,
    )
    kwargs = {"key_columns": ["id"], "transport": transport, **MODES[mode]}
    copy(src, target, conn, **kwargs)  # the role's defaults as they come: the rows and their parents
    before = local(sandbox, "SELECT * FROM {t} ORDER BY id", t=target)
    src.remote("INSERT INTO {t} VALUES (21, 21, 99)")  # no parent 99 on the target

    local(sandbox, "ALTER ROLE {r} SET session_replication_role = replica", r=role)
    try:
        copy(src, target, conn, **kwargs)
    except FdwError:
        pass  # a failure (the foreign key, or a refusal naming the setting) is the right outcome
    finally:
        local(sandbox, "ALTER ROLE {r} RESET session_replication_role", r=role)

    orphans = local(
        sandbox,
        "SELECT t.id, t.pid FROM {t} t WHERE NOT EXISTS (SELECT 1 FROM {p} p WHERE p.id = t.pid)",
        t=target,
        p=parent,
    )
    assert orphans == [], f"{mode} committed rows violating the target's foreign key: {orphans}"
    assert local(sandbox, "SELECT * FROM {t} ORDER BY id", t=target) == before


def test_a_search_path_default_before_pg_catalog_runs_no_planted_function(sandbox, etl):
    """The provider's statements call built-ins unqualified (``hashtext`` for the run lock first):
    with the role's ``search_path = <schema>, pg_catalog, public`` a function planted in that schema
    (here one that records its call and returns the built-in's value) runs as the copying role."""
    role, conn = etl
    planted = f"planted_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE SCHEMA {s}", s=planted)
    local(sandbox, "CREATE TABLE {t} (who text, what text)", t=f"{planted}.calls")
    local(
        sandbox,
        "CREATE FUNCTION {f}(text) RETURNS integer LANGUAGE sql AS "
        "$$ INSERT INTO " + planted + ".calls VALUES (current_user, 'hashtext') "
        "RETURNING pg_catalog.hashtext($1) $$",
        f=f"{planted}.hashtext",
    )
    src, target = source(sandbox), new_target()
    local(sandbox, "ALTER ROLE {r} SET search_path = {s}, pg_catalog, public", r=role, s=planted)
    try:
        copy(src, target, conn, key_columns=["id"])
    finally:
        local(sandbox, "ALTER ROLE {r} RESET search_path", r=role)
    calls = local(sandbox, "SELECT who, what FROM {t}", t=f"{planted}.calls")
    assert calls == [], f"a function planted in the role's search_path ran as the copying role: {calls}"
