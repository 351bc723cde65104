"""Replace in place, append and upsert under hostile targets: after a reported success the target holds
what the mode says, or the run fails with the target unchanged. Each case once ended in a success
with wrong data (an adversarial review, 2026-12-07)."""

from __future__ import annotations

import uuid

import pytest
from conftest import RemoteTable, fdw_sandbox, local

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "guarantees_src"
TRANSPORTS = pytest.mark.parametrize("transport", ["fdw", "copy"])
INCREMENTAL = {"key_columns": ["id"], "watermark_column": "v"}


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "guarantees", SERVER)


def source(sandbox, rows: int = 50) -> RemoteTable:
    src = RemoteTable(
        sandbox,
        "guarantees",
        SERVER,
        "id bigint, name text, v bigint",
        "id bigint PRIMARY KEY, name text, v bigint",
    )
    src.remote("INSERT INTO {t} SELECT g, 'n' || g, 1 FROM generate_series(1, %s) g", (rows,))
    return src


def copy(src: RemoteTable, target: str, **kwargs) -> dict:
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(src.foreign, target, **kwargs))


def rows(sandbox, table: str) -> list[tuple]:
    return local(sandbox, "SELECT * FROM {t} ORDER BY id", t=table)


def trigger(sandbox, target: str, event: str, body: str) -> None:
    """A row trigger on ``target`` running ``body`` ({t}: the target) after each ``event``."""
    function = f"{target}_{event.lower()}_trigger"
    local(
        sandbox,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN " + body + " RETURN NULL; END $$",
        f=function,
        t=target,
    )
    local(
        sandbox,
        f"CREATE TRIGGER t AFTER {event} ON {{t}} FOR EACH ROW EXECUTE FUNCTION {{f}}()",
        t=target,
        f=function,
    )


@TRANSPORTS
def test_an_in_place_replace_fails_when_a_trigger_updates_another_row(sandbox, transport):
    src = source(sandbox)
    target = f"public.g_{uuid.uuid4().hex[:8]}"
    copy(src, target, mode="replace", transport=transport)
    trigger(
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
    trigger(sandbox, target, "UPDATE", "DELETE FROM {t} WHERE id = 2;")
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
    trigger(
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
    local(
        sandbox,
        "CREATE TABLE {t} (id bigint PRIMARY KEY, name text, v bigint) PARTITION BY RANGE (id)",
        t=target,
    )
    local(sandbox, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (1) TO (11)", p=f"{target}_a", t=target)
    local(sandbox, "CREATE TABLE {p} PARTITION OF {t} DEFAULT", p=f"{target}_d", t=target)
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
    trigger(sandbox, target, "UPDATE", undone)
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 40")
    result = copy(src, target, mode="replace", swap="in_place", transport=transport)
    assert result["updated"] == 1
    assert rows(sandbox, target) == src.remote("SELECT * FROM {t} ORDER BY id")
