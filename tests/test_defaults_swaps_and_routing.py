"""False refusals and holes a review of the first fixes for role defaults, rename swaps and skipped
writes found (2026-12-07): where unqualified objects are created, a read-only remote session with a
replica role default, REINDEX CONCURRENTLY during a load, a trigger routing appended rows to
inheritance children, an owner that revoked its own privileges. Each failed on the code it was
written against."""

from __future__ import annotations

import os
import uuid

import pytest
from conftest import SOURCE_DB, TARGET_DB, RemoteTable, fdw_sandbox, local, row_trigger, small_source
from conftest import copy_table as copy

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.hooks.fdw import FdwHook
from fdw_testing.sample_data import READER, postgres_connection

SERVER = "review2_src"
SCHEMA = "review2"


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, SCHEMA, SERVER)


def fresh_database(pair) -> tuple[str, str]:
    db = f"r2_{uuid.uuid4().hex[:8]}"
    pair.target.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    conn_id = f"r2_local_{db}"
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = postgres_connection(pair.target, db)
    return db, conn_id


def test_ensure_extension_installs_the_wrapper_where_create_extension_would(sandbox):
    """CREATE EXTENSION without SCHEMA goes to the first schema of search_path: with pg_catalog put
    first by prepare_session, postgres_fdw's functions land in pg_catalog instead of public."""
    db, conn_id = fresh_database(sandbox)
    with FdwHook(postgres_conn_id=conn_id, fdw_conn_id="fdw_source") as hook:
        assert hook.ensure_extension()
    schema = sandbox.target.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'postgres_fdw'", dbname=db
    )[0][0]
    assert schema == "public"


def test_hook_run_creates_an_unqualified_table_in_public(sandbox):
    """FdwHook is a PostgresHook: hook.run('CREATE TABLE t …') by user code now targets pg_catalog."""
    name = f"r2_{uuid.uuid4().hex[:8]}"
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.run(f"CREATE TABLE {name} (id int)")
    assert local(sandbox, "SELECT to_regclass({n})::text", n=sql.Literal(f"public.{name}"))[0][0] == f"{name}"


# -- helpers for copies -----------------------------------------------------------------------------


def remote_source(sandbox, rows: int = 20) -> RemoteTable:
    return small_source(sandbox, SCHEMA, SERVER, rows, v="g", v_type="bigint")


def new_target() -> str:
    return f"public.r2_{uuid.uuid4().hex[:8]}"


# -- 0549c3b on the REMOTE side: the direct path's source sessions go through prepare_session ------


def test_a_direct_copy_from_a_source_whose_reader_defaults_to_replica_is_not_refused(sandbox):
    """session_replication_role = replica as the source role's default (a logical/trigger-based
    replica keeps it so triggers do not fire twice) changes nothing a read-only COPY does; the
    reader (no superuser) may not set it back, and the direct path is refused with a message about
    'foreign keys and triggers of the tables a copy writes'. Through postgres_fdw it copies."""
    src, target = remote_source(sandbox), new_target()
    stmt = sql.SQL("ALTER ROLE {} IN DATABASE {} SET session_replication_role = replica").format(
        sql.Identifier(READER), sql.Identifier(SOURCE_DB)
    )
    sandbox.source.execute(stmt, dbname=SOURCE_DB)
    try:
        copy(src, target, key_columns=["id"], transport="fdw")  # fine
        copy(src, target, key_columns=["id"], transport="copy")
    finally:
        sandbox.source.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} RESET session_replication_role").format(
                sql.Identifier(READER), sql.Identifier(SOURCE_DB)
            ),
            dbname=SOURCE_DB,
        )
    assert local(sandbox, "SELECT count(*) FROM {t}", t=target)[0][0] == 20


# -- ca80ac1: the definition fingerprint under the swap's lock -----------------------------------------


def test_a_reindex_concurrently_during_the_load_does_not_fail_the_rename_swap(sandbox, monkeypatch):
    """REINDEX CONCURRENTLY (routine bloat maintenance) gives an index a new OID with the same name and
    definition; DEFINITION_QUERY lists index definitions ORDER BY indexrelid, so the order changes and
    the unchanged target is refused as 'changed while the new rows were loaded'."""
    from airflow_provider_fdw.bulkcopy import engine

    src, target = remote_source(sandbox), new_target()
    local(sandbox, "CREATE TABLE {t} (id bigint PRIMARY KEY, name text, v bigint)", t=target)
    local(sandbox, "CREATE INDEX ON {t} (name)", t=target)
    assert copy(src, target, mode="replace", swap="rename")["swap"] == "renamed"
    # the index listed first (lowest OID) gets a new, highest one
    pkey = local(
        sandbox,
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = {l}::regclass ORDER BY indexrelid",
        l=sql.Literal(target),
    )[0][0]
    real_load = engine.load

    def load_then_reindex(*args, **kwargs):
        done = real_load(*args, **kwargs)
        sandbox.target.execute(f"REINDEX INDEX CONCURRENTLY {pkey}", dbname=TARGET_DB)
        return done

    monkeypatch.setattr(engine, "load", load_then_reindex)
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 2")
    copy(src, target, mode="replace", swap="rename")
    assert local(sandbox, "SELECT name FROM {t} WHERE id = 2", t=target) == [("changed",)]


# -- d4e19c2: append into a table partitioned the legacy way (inheritance + a routing BEFORE trigger) ---


def test_append_into_a_trigger_routed_inheritance_parent_is_not_refused(sandbox):
    """Before PostgreSQL 10 tables were partitioned by INHERITS and a BEFORE INSERT trigger on the
    parent that inserts into the right child and RETURNs NULL. Every row is written (into a child);
    INSERT's count is 0 and the append is now refused, the message suggesting to disable the trigger
    (which would put every row in the parent)."""
    src, target = remote_source(sandbox), new_target()
    local(sandbox, "CREATE TABLE {t} (id bigint PRIMARY KEY, name text, v bigint)", t=target)
    local(sandbox, "CREATE TABLE {c} (CHECK (v <= 10)) INHERITS ({t})", c=f"{target}_lo", t=target)
    local(sandbox, "CREATE TABLE {c} (CHECK (v > 10)) INHERITS ({t})", c=f"{target}_hi", t=target)
    name = target.split(".")[1]
    row_trigger(
        sandbox,
        target,
        "BEFORE INSERT",
        f"IF NEW.v <= 10 THEN INSERT INTO public.{name}_lo VALUES (NEW.*); "
        f"ELSE INSERT INTO public.{name}_hi VALUES (NEW.*); END IF; RETURN NULL;",
        "route",
    )
    copy(src, target, mode="append", watermark_column="v")
    assert local(sandbox, "SELECT count(*), max(v) FROM {t}", t=target) == [(20, 20)]


# -- ca80ac1: "the swapped-in table's ACL is exactly the target's" -------------------------------------


def acl(sandbox, table: str) -> str:
    return local(
        sandbox, "SELECT relacl::text FROM pg_class WHERE oid = {l}::regclass", l=sql.Literal(table)
    )[0][0]


def test_an_owner_that_revoked_its_own_privileges_does_not_get_them_back_by_a_rename_swap(sandbox):
    """An owner's own entry with privileges revoked (REVOKE TRUNCATE/DELETE … FROM the owner: an
    append-only or do-not-truncate guard) is granted onto the new table's implicit full owner entry,
    which is never revoked when the staging table had no ACL: the owner silently regains them."""
    src, target = remote_source(sandbox), new_target()
    local(sandbox, "CREATE TABLE {t} (id bigint PRIMARY KEY, name text, v bigint)", t=target)
    local(sandbox, "GRANT SELECT ON {t} TO PUBLIC", t=target)
    local(sandbox, "REVOKE TRUNCATE, DELETE ON {t} FROM CURRENT_USER", t=target)
    before = acl(sandbox, target)
    result = copy(src, target, mode="replace", swap="rename")
    assert result["swap"] == "renamed"
    assert acl(sandbox, target) == before
