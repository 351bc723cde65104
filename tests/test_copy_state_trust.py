"""The record of where incremental copies start (fdw_copy_state) under the roles of real deployments:
one made by a superuser, by another member of the target's owner group, read by a superuser; a plain
replace beside it; a partitioned target truncated. Each case once failed (a review, 2026-12-07)."""

from __future__ import annotations

import uuid

import pytest
from conftest import TARGET_DB, RemoteTable, fdw_sandbox, local, map_role_to_reader

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.hooks.fdw import FdwHook
from fdw_testing.sample_data import postgres_connection

SERVER = "rvf_src"
A, B, GRP, PASSWORD = "rvf_etl_a", "rvf_etl_b", "rvf_owners", "Rvf-Secret-42"


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "rvf", SERVER)


@pytest.fixture(scope="module")
def roles(sandbox):
    local(sandbox, "CREATE ROLE {g} NOLOGIN", g=GRP)
    for role in (A, B):
        local(
            sandbox, "CREATE ROLE {r} LOGIN PASSWORD {p} IN ROLE {g}", r=role, p=sql.Literal(PASSWORD), g=GRP
        )
        map_role_to_reader(sandbox, role, SERVER)
        local(sandbox, "GRANT USAGE ON SCHEMA proxy_rvf TO {r}", r=role)
    with pytest.MonkeyPatch.context() as mp:
        for conn, role in (("RVF_A", A), ("RVF_B", B)):
            mp.setenv(f"AIRFLOW_CONN_{conn}", postgres_connection(sandbox.target, TARGET_DB, role, PASSWORD))
        yield sandbox


def source(pair) -> RemoteTable:
    src = RemoteTable(
        pair, "rvf", SERVER, "id bigint, name text, v bigint", "id bigint PRIMARY KEY, name text, v bigint"
    )
    src.remote("INSERT INTO {t} SELECT g, 'n' || g, 1 FROM generate_series(1, 10) g")
    local(pair, "GRANT SELECT ON {f} TO {a}, {b}", f=src.foreign, a=A, b=B)
    return src


def schema(pair) -> str:
    name = f"rvf_{uuid.uuid4().hex[:6]}"
    local(pair, "CREATE SCHEMA {s}", s=name)
    local(pair, "GRANT USAGE, CREATE ON SCHEMA {s} TO {a}, {b}", s=name, a=A, b=B)
    return name


def copy(src: RemoteTable, target: str, conn: str = "postgres_default", **kwargs) -> dict:
    with FdwHook(postgres_conn_id=conn, fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(src.foreign, target, **kwargs))


def rows(pair, table: str) -> list[tuple]:
    return local(pair, "SELECT * FROM {t} ORDER BY id", t=table)


def group_owned_target(pair, s: str) -> str:
    target = f"{s}.t_{uuid.uuid4().hex[:6]}"
    local(pair, "CREATE TABLE {t} (id bigint PRIMARY KEY, name text, v bigint)", t=target)
    local(pair, "ALTER TABLE {t} OWNER TO {g}", t=target, g=GRP)
    return target


# A plain replace (a new table, renamed in) has no record to forget, whoever owns fdw_copy_state.
def test_a_replace_beside_another_roles_copy_state_goes_on(roles):
    src, s = source(roles), schema(roles)
    copy(src, f"{s}.incremental", mode="append", transport="fdw", watermark_column="v")  # as postgres
    copy(src, f"{s}.snapshot", conn="rvf_a", mode="replace", transport="fdw")
    assert rows(roles, f"{s}.snapshot") == src.remote("SELECT * FROM {t} ORDER BY id")


# A state table a superuser made (a first run by the DBA), granted to the ETL role's group.
def test_a_copy_state_a_superuser_made_serves_the_etl_role(roles):
    src, s = source(roles), schema(roles)
    target = group_owned_target(roles, s)
    copy(src, target, mode="append", transport="fdw", watermark_column="v")  # as postgres
    local(roles, "GRANT ALL ON {t} TO {g}", t=f"{s}.fdw_copy_state", g=GRP)
    src.remote("INSERT INTO {t} VALUES (11, 'new', 2)")
    copy(src, target, conn="rvf_b", mode="append", transport="fdw", watermark_column="v")
    assert rows(roles, target) == src.remote("SELECT * FROM {t} ORDER BY id")


# Two ETL logins in the group owning the target share the record one of them made.
def test_members_of_the_target_owners_group_share_the_copy_state(roles):
    src, s = source(roles), schema(roles)
    local(
        roles,
        "ALTER DEFAULT PRIVILEGES FOR ROLE {a} IN SCHEMA {s} GRANT ALL ON TABLES TO {g}",
        a=A,
        s=s,
        g=GRP,
    )
    target = group_owned_target(roles, s)
    copy(src, target, conn="rvf_a", mode="append", transport="fdw", watermark_column="v")
    src.remote("INSERT INTO {t} VALUES (11, 'new', 2)")
    copy(src, target, conn="rvf_b", mode="append", transport="fdw", watermark_column="v")
    assert rows(roles, target) == src.remote("SELECT * FROM {t} ORDER BY id")


# A DBA's run as a superuser uses the record an ETL login of the target owner's group made.
def test_a_superuser_uses_the_copy_state_of_the_target_owners_group(roles):
    src, s = source(roles), schema(roles)
    target = group_owned_target(roles, s)
    copy(src, target, conn="rvf_a", mode="append", transport="fdw", watermark_column="v")
    src.remote("INSERT INTO {t} VALUES (11, 'new', 2)")
    copy(src, target, mode="append", transport="fdw", watermark_column="v")  # as postgres
    assert rows(roles, target) == src.remote("SELECT * FROM {t} ORDER BY id")


# A partitioned table has no relfilenode: its record follows its leaves', which TRUNCATE changes.
def test_a_truncated_partitioned_target_reads_max_again(sandbox):
    src = RemoteTable(sandbox, "rvf", SERVER, "id bigint, name text, v bigint")
    src.remote("INSERT INTO {t} SELECT g, 'n' || g, g FROM generate_series(1, 10) g")
    target = f"public.rvf_p_{uuid.uuid4().hex[:6]}"
    local(sandbox, "CREATE TABLE {t} (id bigint, name text, v bigint) PARTITION BY RANGE (id)", t=target)
    local(sandbox, "CREATE TABLE {p} PARTITION OF {t} DEFAULT", p=f"{target}_d", t=target)
    copy(src, target, mode="append", transport="fdw", watermark_column="v")
    local(sandbox, "TRUNCATE {t}", t=target)
    copy(src, target, mode="append", transport="fdw", watermark_column="v")
    assert rows(sandbox, target) == src.remote("SELECT * FROM {t} ORDER BY id")


# An earlier version's fdw_copy_state (one record per target) a superuser made and granted to the
# ETL group: the ETL role may not upgrade it, and stops before any change with the owner's statements.
def test_an_earlier_versions_copy_state_the_role_may_not_upgrade_stops_with_the_owners_statements(roles):
    src, s = source(roles), schema(roles)
    target = group_owned_target(roles, s)
    state = f"{s}.fdw_copy_state"
    local(
        roles,
        "CREATE TABLE {t} (target_table text PRIMARY KEY, watermark_column text NOT NULL, "
        "target_oid oid NOT NULL, target_filenode oid, watermark text, "
        "recorded_at timestamptz NOT NULL DEFAULT now())",
        t=state,
    )
    local(roles, "GRANT ALL ON {t} TO {g}", t=state, g=GRP)
    with pytest.raises(FdwConfigError, match="made by an earlier version") as refused:
        copy(src, target, conn="rvf_b", mode="append", transport="fdw", watermark_column="v")
    assert rows(roles, target) == []
    script = str(refused.value).split("its owner can run:\n", 1)[1]
    for statement in script.rstrip(";").split(";\n"):
        local(roles, statement)  # as the owner (postgres)
    copy(src, target, conn="rvf_b", mode="append", transport="fdw", watermark_column="v")
    assert rows(roles, target) == src.remote("SELECT * FROM {t} ORDER BY id")
