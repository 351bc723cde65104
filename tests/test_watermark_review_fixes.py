"""Incremental copies (append/upsert with a watermark), fixes of a review (2026-12-07): a real
watermark's bound, an overlap that raised the bound, an inheritance target's record, and one record
per feed (source and ``where``) of a target."""

from __future__ import annotations

import uuid

import pytest
from conftest import SOURCE_DB, RemoteTable, fdw_sandbox, local

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "wmfix_src"


@pytest.fixture(scope="module")
def rev(airflow_connections):
    return fdw_sandbox(airflow_connections, "wmfix", SERVER)


def table(pair, columns: str, remote_columns: str | None = None) -> RemoteTable:
    return RemoteTable(pair, "wmfix", SERVER, columns, remote_columns=remote_columns)


def copy(src: RemoteTable, target: str, **kwargs):
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(src.foreign, target, **kwargs))


def new_target() -> str:
    return f"public.w_{uuid.uuid4().hex[:8]}"


def count(pair, target: str) -> int:
    return local(pair, "SELECT count(*) FROM {t}", t=target)[0][0]


@pytest.mark.parametrize("transport", ["fdw", "copy"])
def test_append_with_a_real_watermark_does_not_copy_the_newest_row_again(rev, transport):
    """A float4 watermark: the bound came back as a Python float and was sent as an untyped numeric
    literal; real > numeric resolves to float48gt, so the real 1.1 (1.10000002384… as float8) was
    > 1.1 and the newest row passed the bound on every later append: duplicated once per run."""
    src = table(rev, "id bigint, wm real")
    src.remote("INSERT INTO {t} VALUES (1, 1.0), (2, 1.1)")
    t = new_target()
    first = copy(src, t, mode="append", watermark_column="wm", transport=transport)
    assert first["rows"] == 2
    second = copy(src, t, mode="append", watermark_column="wm", transport=transport)
    assert (second["rows"], count(rev, t)) == (0, 2), "nothing changed: append must copy nothing"


EXACT_TYPES = {
    "real": ("1.0", "1.1"),
    "double precision": ("0.1", "0.30000000000000004"),
    "numeric": ("1.5", "1.123456789012345678901234567890123"),
    "timestamptz": ("2024-01-01 00:00:00+00", "2024-01-01 00:00:00.123457+00"),
    "timestamp": ("2024-01-01 00:00:00", "2024-01-01 00:00:00.999999"),
    "wmfix_real": ("1.0", "3.3"),  # a domain: the bound is cast to its base type
}


@pytest.mark.parametrize("transport", ["fdw", "copy"])
@pytest.mark.parametrize("type_sql", list(EXACT_TYPES))
def test_append_twice_copies_nothing_new_for_every_watermark_type(rev, type_sql, transport):
    """The bound must read back to the newest row itself whatever Python makes of it."""
    if type_sql == "wmfix_real":
        local(
            rev,
            "DO $$ BEGIN CREATE DOMAIN public.wmfix_real AS real CHECK (VALUE > 0); "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        )
        rev.source.execute(
            "DO $$ BEGIN CREATE DOMAIN public.wmfix_real AS real CHECK (VALUE > 0); "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            dbname=SOURCE_DB,
        )
    src = table(rev, f"id bigint, wm {type_sql}")
    low, high = EXACT_TYPES[type_sql]
    src.remote("INSERT INTO {t} VALUES (1, %s), (2, %s)", (low, high))
    t = new_target()
    assert copy(src, t, mode="append", watermark_column="wm", transport=transport)["rows"] == 2
    second = copy(src, t, mode="append", watermark_column="wm", transport=transport)
    assert (second["rows"], count(rev, t)) == (0, 2)
    src.remote("INSERT INTO {t} VALUES (3, %s)", (high,))  # equal to the bound: not newer
    src.remote("UPDATE {t} SET wm = wm WHERE id = 3")
    assert copy(src, t, mode="append", watermark_column="wm", transport=transport)["rows"] == 0


def test_a_typed_real_bound_is_still_sent_to_the_remote(rev):
    """The cast of a constant is folded: postgres_fdw still ships the condition (Remote SQL)."""
    from airflow_provider_fdw import sql as q

    src = table(rev, "id bigint, wm real")
    predicate = q.watermark_predicate("wm", 1.1, False, "real").as_string(None)
    plan = local(
        rev, "EXPLAIN VERBOSE SELECT id FROM {f} WHERE " + predicate.replace("%", "%%"), f=src.foreign
    )
    remote = [line for (line,) in plan if "Remote SQL" in line]
    assert remote and "WHERE ((wm > 1.1::real))" in remote[0], plan
