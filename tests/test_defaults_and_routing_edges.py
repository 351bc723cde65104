"""Edges a third review found in the fixes for role defaults and routed appends (2026-12-07): a
search_path naming pg_catalog in capitals (libpq options keep the spelling), a replica role default
under the hook's inherited methods (run, get_records), rows routed to inheritance children inside a
trigger's EXCEPTION block (a subtransaction's xmin). Each failed on the code it was written against."""

from __future__ import annotations

import contextlib
import json
import os
import uuid

import pytest
from conftest import TARGET_DB, RemoteTable, fdw_sandbox, local, map_role_to_reader, row_trigger, small_source
from conftest import copy_table as copy

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.hooks.fdw import FdwHook
from fdw_testing.sample_data import postgres_connection

SERVER = "review3_src"
SCHEMA = "review3"
ROLE_PASSWORD = "Etl-Review3-Pw-1"


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, SCHEMA, SERVER)


def role_connection(sandbox, extra: dict | None = None) -> tuple[str, str]:
    role = f"etl3_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE ROLE {r} LOGIN SUPERUSER PASSWORD {p}", r=role, p=sql.Literal(ROLE_PASSWORD))
    map_role_to_reader(sandbox, role, SERVER)
    conn_id = f"etl3_{role}"
    conn = json.loads(postgres_connection(sandbox.target, TARGET_DB, role, ROLE_PASSWORD))
    if extra:
        conn["extra"] = extra
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
    return role, conn_id


def remote_source(sandbox, rows: int = 20) -> RemoteTable:
    return small_source(sandbox, SCHEMA, SERVER, rows, v="g", v_type="numeric")


def new_target() -> str:
    return f"public.r3_{uuid.uuid4().hex[:8]}"


# -- 1. PG_CATALOG_IMPLICIT compares the raw text with 'pg_catalog' --------------------------------


@pytest.mark.parametrize("spelling", ["PG_CATALOG", "Pg_Catalog"])
def test_a_search_path_naming_pg_catalog_unnormalized_still_runs_no_planted_function(sandbox, spelling):
    """search_path entries are identifiers: unquoted ones fold to lower case (SplitIdentifierString).
    A search_path given as raw text (the connection's libpq ``options``, postgresql.conf, PGOPTIONS,
    ALTER ROLE … SET search_path FROM CURRENT) may say ``PG_CATALOG``: PG_CATALOG_IMPLICIT's
    btrim(e) <> 'pg_catalog' keeps that entry, so the planted schema listed before it stays ahead of
    pg_catalog, and its max(numeric) runs as the copying role (the watermark's unqualified max)."""
    planted = f"planted_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE SCHEMA {s}", s=planted)
    local(sandbox, "CREATE TABLE {t} (what text)", t=f"{planted}.calls")
    local(
        sandbox,
        "CREATE FUNCTION {f}(numeric, numeric) RETURNS numeric LANGUAGE sql STRICT AS "
        "$$ INSERT INTO " + planted + ".calls VALUES ('max') RETURNING pg_catalog.numeric_larger($1, $2) $$",
        f=f"{planted}.maxstep",
    )
    local(
        sandbox,
        "CREATE AGGREGATE {a}(numeric) (SFUNC = {f}, STYPE = numeric)",
        a=f"{planted}.max",
        f=f"{planted}.maxstep",
    )
    _, conn = role_connection(sandbox, {"options": f"-c search_path={planted},{spelling},public"})
    with FdwHook(postgres_conn_id=conn, fdw_conn_id="fdw_source") as hook:
        path = hook.get_first("SELECT pg_catalog.current_schemas(true)::text")[0]
    copy(remote_source(sandbox), new_target(), conn, mode="append", watermark_column="v")
    calls = local(sandbox, "SELECT count(*) FROM {t}", t=f"{planted}.calls")[0][0]
    assert (path.startswith("{pg_catalog,"), calls) == (True, 0), (
        f"search_path {path}: a function planted before {spelling!r} ran {calls} times as the copying role"
    )


# -- 2. the replica role default is undone in _local_conn only ------------------------------------


def test_hook_run_under_a_replica_role_default_does_not_skip_foreign_keys(sandbox):
    """docs/hook.md: every local connection the hook opens sets session_replication_role back to
    origin. Since ed09e4b only _local_conn does: FdwHook.get_conn() (run, get_records, insert_rows …,
    the inherited PostgresHook methods the docs list) keeps replica, and an orphan is committed."""
    role, conn = role_connection(sandbox)
    parent, child = new_target(), new_target()
    local(sandbox, "CREATE TABLE {p} (id int PRIMARY KEY)", p=parent)
    local(sandbox, "CREATE TABLE {c} (id int PRIMARY KEY, pid int REFERENCES {p})", c=child, p=parent)
    local(sandbox, "ALTER ROLE {r} SET session_replication_role = replica", r=role)
    try:
        with FdwHook(postgres_conn_id=conn, fdw_conn_id="fdw_source") as hook:
            setting = hook.get_first("SHOW session_replication_role")[0]
            with contextlib.suppress(Exception):  # the foreign key refusing it is right
                hook.run(f"INSERT INTO {child} VALUES (1, 99)")
    finally:
        local(sandbox, "ALTER ROLE {r} RESET session_replication_role", r=role)
    orphans = local(sandbox, "SELECT count(*) FROM {c}", c=child)[0][0]
    assert (setting, orphans) == ("origin", 0)


# -- 3. appended_rows_missing: false refusals ------------------------------------------------------


def routed_target(sandbox, column_v: str, body: str) -> str:
    """An inheritance parent (id, name, v <column_v>) whose BEFORE INSERT trigger runs ``body``
    ({c}: the child) and returns NULL."""
    target = new_target()
    name = target.split(".")[1]
    local(sandbox, f"CREATE TABLE {{t}} (id bigint PRIMARY KEY, name text, v {column_v})", t=target)
    local(sandbox, "CREATE TABLE {c} () INHERITS ({t})", c=f"{target}_c", t=target)
    row_trigger(
        sandbox, target, "BEFORE INSERT", body.format(c=f"public.{name}_c") + " RETURN NULL;", "route"
    )
    return target


def test_append_routed_by_a_trigger_with_an_exception_block_is_not_refused(sandbox):
    """The legacy routing trigger that creates a missing child on demand inserts inside
    BEGIN … EXCEPTION WHEN undefined_table: the row's xmin is the subtransaction's XID, never
    txid_current(), so every routed row counts as missing and the append is refused."""
    src = remote_source(sandbox)
    target = routed_target(
        sandbox,
        "numeric",
        "BEGIN INSERT INTO {c} VALUES (NEW.*); EXCEPTION WHEN undefined_table THEN RAISE; END;",
    )
    copy(src, target, mode="append", watermark_column="v")
    assert local(sandbox, "SELECT count(*) FROM {t}", t=target) == [(20,)]
