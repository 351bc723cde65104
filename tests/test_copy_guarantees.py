"""Replace in place, append and upsert under hostile targets: after a reported success the target holds
what the mode says, or the run fails with the target unchanged. Each case once ended in a success
with wrong data (an adversarial review, 2026-12-07)."""

from __future__ import annotations

import uuid

import pytest
from conftest import (
    TARGET_DB,
    RemoteTable,
    after_trigger,
    fdw_sandbox,
    local,
    map_role_to_reader,
    partitioned_target,
    small_source,
)
from conftest import copy_table as copy

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from fdw_testing.sample_data import READER, postgres_connection

SERVER = "guarantees_src"
TRANSPORTS = pytest.mark.parametrize("transport", ["fdw", "copy"])
INCREMENTAL = {"key_columns": ["id"], "watermark_column": "v"}


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "guarantees", SERVER)


def source(sandbox, rows: int = 50) -> RemoteTable:
    return small_source(sandbox, "guarantees", SERVER, rows)


def rows(sandbox, table: str) -> list[tuple]:
    return local(sandbox, "SELECT * FROM {t} ORDER BY id", t=table)


@TRANSPORTS
def test_an_in_place_replace_fails_when_a_trigger_updates_another_row(sandbox, transport):
    src = source(sandbox)
    target = f"public.g_{uuid.uuid4().hex[:8]}"
    copy(src, target, mode="replace", transport=transport)
    after_trigger(
        sandbox, target, "UPDATE", "IF NEW.id <> 1 THEN UPDATE {t} SET name = 'bumped' WHERE id = 1; END IF;"
    )
    before = rows(sandbox, target)
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 40")
    with pytest.raises(FdwError, match=r"Replace check failed: it chose to insert 0, update 1 .* 2 updated"):
        copy(src, target, mode="replace", swap="in_place", transport=transport)
    assert rows(sandbox, target) == before


@TRANSPORTS
@pytest.mark.parametrize("verify", ["off", "checksum"])
def test_an_upsert_fails_when_a_trigger_deletes_another_row(sandbox, transport, verify):
    """``verify="checksum"`` re-reads only the staged keys: the counts catch the other row."""
    src = source(sandbox)
    target = f"public.g_{uuid.uuid4().hex[:8]}"
    copy(src, target, mode="upsert", transport=transport, verify=verify, **INCREMENTAL)
    after_trigger(sandbox, target, "UPDATE", "DELETE FROM {t} WHERE id = 2;")
    before = rows(sandbox, target)
    src.remote("UPDATE {t} SET name = 'changed', v = 100 WHERE id = 40")
    with pytest.raises(
        FdwError, match=r"Upsert check failed: .* but 0 were inserted, 1 updated and 1 deleted"
    ):
        copy(src, target, mode="upsert", transport=transport, verify=verify, **INCREMENTAL)
    assert rows(sandbox, target) == before


@TRANSPORTS
def test_an_append_fails_when_a_trigger_inserts_another_row(sandbox, transport):
    src = source(sandbox, rows=10)
    target = f"public.g_{uuid.uuid4().hex[:8]}"
    copy(src, target, mode="append", transport=transport, watermark_column="v")
    after_trigger(
        sandbox,
        target,
        "INSERT",
        "IF NEW.id < 1000 THEN INSERT INTO {t} VALUES (NEW.id + 1000, 'echo', 0); END IF;",
    )
    before = rows(sandbox, target)
    src.remote("INSERT INTO {t} VALUES (11, 'new', 2)")
    with pytest.raises(FdwError, match=r"Append check failed: it chose to insert 1, .* but 2 were inserted"):
        copy(src, target, mode="append", transport=transport, watermark_column="v")
    assert rows(sandbox, target) == before


@TRANSPORTS
def test_an_upsert_into_a_partitioned_target_counts_what_it_wrote(sandbox, transport):
    """RETURNING cannot read xmax there: the transaction's counts tell inserts from updates."""
    src = source(sandbox, rows=30)
    target = f"public.g_{uuid.uuid4().hex[:8]}"
    partitioned_target(sandbox, target)
    copy(src, target, mode="upsert", transport=transport, **INCREMENTAL)
    src.remote("UPDATE {t} SET name = 'x', v = 2 WHERE id IN (3, 25)")
    src.remote("INSERT INTO {t} VALUES (31, 'new', 2), (5000, 'far', 2)")
    result = copy(src, target, mode="upsert", transport=transport, **INCREMENTAL)
    assert (result["inserted"], result["updated"]) == (2, 2)
    assert rows(sandbox, target) == src.remote("SELECT * FROM {t} ORDER BY id")


@TRANSPORTS
def test_a_copy_state_table_another_role_planted_stops_the_run(sandbox, transport):
    """Another role with CREATE on the schema creates fdw_copy_state first, with a trigger moving the
    watermark: its code never runs as this role, and the run stops before any change."""
    schema, other = f"shared_{uuid.uuid4().hex[:6]}", f"other_{uuid.uuid4().hex[:6]}"
    local(sandbox, "CREATE ROLE {r}", r=other)
    local(sandbox, "CREATE SCHEMA {s}", s=schema)
    local(sandbox, "GRANT CREATE, USAGE ON SCHEMA {s} TO {r}", s=schema, r=other)
    local(
        sandbox,
        "SET ROLE {r}; CREATE TABLE {s}.fdw_copy_state (target_table text PRIMARY KEY, "
        "watermark_column text NOT NULL, target_oid oid NOT NULL, target_filenode oid, watermark text, "
        "recorded_at timestamptz NOT NULL DEFAULT now()); "
        "CREATE FUNCTION {s}.bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "NEW.watermark := '1000000'; RETURN NEW; END $$; "
        "CREATE TRIGGER bump BEFORE INSERT OR UPDATE ON {s}.fdw_copy_state "
        "FOR EACH ROW EXECUTE FUNCTION {s}.bump(); "
        "GRANT ALL ON {s}.fdw_copy_state TO PUBLIC; RESET ROLE",
        s=schema,
        r=other,
    )
    src = source(sandbox, rows=10)
    src.remote("UPDATE {t} SET v = id")
    target = f"{schema}.g_{uuid.uuid4().hex[:8]}"
    with pytest.raises(FdwConfigError, match=f"may not use it: it belongs to {other}"):
        copy(src, target, mode="upsert", transport=transport, **INCREMENTAL)
    assert local(sandbox, "SELECT to_regclass(%s)", (target,)) == [(None,)]


@TRANSPORTS
def test_an_in_place_replace_whose_trigger_leaves_the_table_equal_to_the_new_data_goes_on(sandbox, transport):
    """ "Make sure row 1 exists": an insert undone in a subtransaction still counts, so the counts do
    not add up; the whole target is compared with the new data, equal, and the run goes on."""
    src = source(sandbox)
    target = f"public.g_{uuid.uuid4().hex[:8]}"
    copy(src, target, mode="replace", transport=transport)
    undone = "BEGIN INSERT INTO {t} VALUES (1, 'parent', 1); EXCEPTION WHEN unique_violation THEN NULL; END;"
    after_trigger(sandbox, target, "UPDATE", undone)
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 40")
    result = copy(src, target, mode="replace", swap="in_place", transport=transport)
    assert result["updated"] == 1
    assert rows(sandbox, target) == src.remote("SELECT * FROM {t} ORDER BY id")


# -- 1. append/upsert: a DEFERRED constraint trigger writes at commit, after the count check ----------


@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_deferred_constraint_trigger_writing_another_row_is_caught_in_append_and_upsert(sandbox, mode):
    src = source(sandbox, rows=10)
    target = f"public.rc_{uuid.uuid4().hex[:8]}"
    copy(src, target, mode=mode, transport="fdw", **INCREMENTAL)
    local(
        sandbox,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "DELETE FROM {t} WHERE id = 1; RETURN NULL; END $$",
        f=f"{target}_purge",
        t=target,
    )
    local(
        sandbox,
        "CREATE CONSTRAINT TRIGGER purge AFTER INSERT OR UPDATE ON {t} DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION {f}()",
        t=target,
        f=f"{target}_purge",
    )
    before = rows(sandbox, target)
    src.remote("INSERT INTO {t} VALUES (11, 'new', 2)")
    # the same trigger, not deferred, fails the run ("Append check failed ... 1 deleted")
    with pytest.raises(FdwError, match="check failed"):
        copy(src, target, mode=mode, transport="fdw", **INCREMENTAL)
    assert rows(sandbox, target) == before


# -- 2. fdw_copy_state distrusted by one run, trusted by the next: a stale watermark, duplicates -----

ROLE_A, ROLE_B, PASSWORD = "rc_etl", "rc_etl_clone", "Rc-Secret-42"


@pytest.fixture(scope="module")
def roles(sandbox):
    local(sandbox, "CREATE ROLE {r} LOGIN PASSWORD {p}", r=ROLE_A, p=sql.Literal(PASSWORD))
    local(
        sandbox, "CREATE ROLE {r} LOGIN PASSWORD {p} IN ROLE {a}", r=ROLE_B, p=sql.Literal(PASSWORD), a=ROLE_A
    )
    local(sandbox, "CREATE SCHEMA rc_data")
    for role in (ROLE_A, ROLE_B):
        map_role_to_reader(sandbox, role, SERVER)
        local(sandbox, "GRANT USAGE ON SCHEMA {s} TO {r}", s="proxy_guarantees", r=role)
        local(sandbox, "GRANT USAGE, CREATE ON SCHEMA rc_data TO {r}", r=role)
    with pytest.MonkeyPatch.context() as mp:
        for conn, role in (("RC_A", ROLE_A), ("RC_B", ROLE_B)):
            mp.setenv(f"AIRFLOW_CONN_{conn}", postgres_connection(sandbox.target, TARGET_DB, role, PASSWORD))
        yield sandbox


def test_a_role_that_belongs_to_the_copy_states_owner_keeps_the_record_moving(roles):
    """The target belongs to the DBA; run 1 (rc_etl) creates fdw_copy_state (owned by rc_etl); run 2
    as rc_etl_clone (a member of rc_etl) uses and moves the record; back on rc_etl the record is
    current: no row is copied twice (a run that ignored the record left it behind the target)."""
    src = source(roles, rows=10)
    local(roles, "GRANT SELECT ON {f} TO {a}, {b}", f=src.foreign, a=ROLE_A, b=ROLE_B)
    target = f"rc_data.t_{uuid.uuid4().hex[:8]}"
    local(roles, "CREATE TABLE {t} (id bigint, name text, v bigint)", t=target)
    local(roles, "GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {a}, {b}", t=target, a=ROLE_A, b=ROLE_B)
    copy(src, target, conn="rc_a", mode="append", transport="fdw", watermark_column="v")
    src.remote("INSERT INTO {t} VALUES (11, 'new', 2)")
    copy(src, target, conn="rc_b", mode="append", transport="fdw", watermark_column="v")
    copy(src, target, conn="rc_a", mode="append", transport="fdw", watermark_column="v")
    assert rows(roles, target) == src.remote("SELECT * FROM {t} ORDER BY id")


# -- 3. append into a partitioned target with a foreign partition ------------------------------------


def test_an_append_routing_rows_into_a_foreign_partition_is_not_refused(sandbox):
    src = source(sandbox, rows=10)
    archive = RemoteTable(sandbox, "guarantees", SERVER, "id bigint, name text, v bigint", prefix="arch")
    archive.remote("GRANT INSERT ON {t} TO " + READER)
    target = f"public.rc_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {t} (id bigint, name text, v bigint) PARTITION BY RANGE (id)", t=target)
    local(
        sandbox, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (1) TO (1000)", p=f"{target}_a", t=target
    )
    local(
        sandbox,
        "CREATE FOREIGN TABLE {p} PARTITION OF {t} FOR VALUES FROM (1000) TO (MAXVALUE) SERVER {s} "
        "OPTIONS (schema_name 'guarantees', table_name {n})",
        p=f"{target}_far",
        t=target,
        s=SERVER,
        n=sql.Literal(archive.name),
    )
    copy(src, target, mode="append", transport="fdw", watermark_column="v")
    src.remote("INSERT INTO {t} VALUES (5000, 'far', 2)")
    result = copy(src, target, mode="append", transport="fdw", watermark_column="v")
    assert result["inserted"] == 1
    assert archive.remote("SELECT id FROM {t}") == [(5000,)]


def test_a_copy_state_the_role_may_only_read_stops_the_run_before_any_change(roles):
    """fdw_copy_state belongs to the target's owner (a first run as the DBA); the task role may read
    it (GRANT SELECT ON ALL TABLES) but not write it: each privilege is checked, and the run stops
    saying so (going on without it would leave the record behind the target)."""
    src = source(roles, rows=10)
    local(roles, "GRANT SELECT ON {f} TO {a}", f=src.foreign, a=ROLE_A)
    schema = f"rc_s_{uuid.uuid4().hex[:6]}"
    local(roles, "CREATE SCHEMA {s}", s=schema)
    local(roles, "GRANT USAGE, CREATE ON SCHEMA {s} TO {r}", s=schema, r=ROLE_A)
    target = f"{schema}.t_{uuid.uuid4().hex[:8]}"
    copy(src, target, mode="append", transport="fdw", watermark_column="v")  # as the owner: records v=1
    local(roles, "GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {a}", t=target, a=ROLE_A)
    local(roles, "GRANT SELECT ON {t} TO {a}", t=f"{schema}.fdw_copy_state", a=ROLE_A)
    src.remote("INSERT INTO {t} VALUES (11, 'new', 2)")
    before = rows(roles, target)
    with pytest.raises(FdwConfigError, match="may not SELECT, INSERT, UPDATE and DELETE its rows"):
        copy(src, target, conn="rc_a", mode="append", transport="fdw", watermark_column="v")
    assert rows(roles, target) == before


def test_an_upsert_with_a_numeric_key_needs_no_update_privilege_on_the_key(roles):
    """The task role may update the payload columns only (GRANT UPDATE (name, v)); a changed row of a
    numeric key now also runs SET id = EXCLUDED.id."""
    src = RemoteTable(
        roles,
        "guarantees",
        SERVER,
        "id numeric, name text, v bigint",
        "id numeric PRIMARY KEY, name text, v bigint",
    )
    src.remote("INSERT INTO {t} VALUES (1, 'a', 1), (2, 'b', 1)")
    local(roles, "GRANT SELECT ON {f} TO {a}", f=src.foreign, a=ROLE_A)
    target = f"rc_data.t_{uuid.uuid4().hex[:8]}"
    local(roles, "CREATE TABLE {t} (id numeric PRIMARY KEY, name text, v bigint)", t=target)
    local(roles, "GRANT SELECT, INSERT ON {t} TO {a}", t=target, a=ROLE_A)
    local(roles, "GRANT UPDATE (name, v) ON {t} TO {a}", t=target, a=ROLE_A)
    copy(src, target, conn="rc_a", mode="upsert", transport="fdw", **INCREMENTAL)
    src.remote("UPDATE {t} SET name = 'changed', v = 2 WHERE id = 2")
    result = copy(src, target, conn="rc_a", mode="upsert", transport="fdw", **INCREMENTAL)
    assert result["updated"] == 1


@pytest.mark.parametrize("transport", ["fdw"])
def test_in_place_replace_moving_rows_between_partitions_holds(sandbox, transport):
    src = source(sandbox, rows=20)
    target = f"public.rc_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {t} (id bigint, name text, v bigint) PARTITION BY LIST (v)", t=target)
    local(sandbox, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES IN (1)", p=f"{target}_1", t=target)
    local(
        sandbox,
        "CREATE TABLE {p} PARTITION OF {t} DEFAULT PARTITION BY RANGE (id)",
        p=f"{target}_d",
        t=target,
    )
    local(
        sandbox,
        "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (MINVALUE) TO (MAXVALUE)",
        p=f"{target}_dd",
        t=f"{target}_d",
    )
    copy(src, target, mode="replace", swap="in_place", transport=transport, key_columns=["id"])
    src.remote("UPDATE {t} SET v = 7 WHERE id IN (3, 4)")
    src.remote("DELETE FROM {t} WHERE id = 5")
    result = copy(src, target, mode="replace", swap="in_place", transport=transport, key_columns=["id"])
    assert (result["updated"], result["deleted"]) == (2, 1)
    assert rows(sandbox, target) == src.remote("SELECT * FROM {t} ORDER BY id")
