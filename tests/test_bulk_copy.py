"""BulkCopyOperator / FdwHook.bulk_copy against the real pair: modes, equivalence, types, failures."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from conftest import READER, SOURCE_DB, TARGET_DB, ident

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.operators.copy import BulkCopyOperator

ROWS = 20_000
ITEMS_DDL = [
    "CREATE SCHEMA IF NOT EXISTS shop",
    "CREATE TYPE shop.mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE TABLE shop.items (id bigint PRIMARY KEY, amount numeric(20,6), at timestamptz, doc jsonb, "
    "tags text[], blob bytea, uid uuid, mood shop.mood, moods shop.mood[], note text, flag boolean, "
    "f8 double precision, d date, iv interval, updated_at timestamptz NOT NULL)",
]
ITEMS_ROWS = (
    "INSERT INTO shop.items SELECT g, (g * 1.000001)::numeric(20,6), "
    "'2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute', "
    "jsonb_build_object('g', g, 'name', 'ñame ' || g, 'nested', jsonb_build_array(g, null, true)), "
    "ARRAY['a' || g, 'b,\"quoted\"', NULL], decode(md5(g::text), 'hex'), md5(g::text)::uuid, "
    "(ARRAY['sad','ok','happy'])[1 + g % 3]::shop.mood, ARRAY['ok'::shop.mood, 'happy'], "
    "CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || g || E' tab\\there \\u00e9' END, g % 2 = 0, "
    "CASE g % 1000 WHEN 1 THEN 'NaN'::float8 WHEN 2 THEN 'Infinity' ELSE g / 7.0 END, "
    "'2020-02-29'::date + g, make_interval(secs => g), "
    "'2024-06-01 00:00:00+00'::timestamptz + g * interval '1 second' FROM generate_series(1, {rows}) g"
)


@pytest.fixture(scope="module")
def shop(airflow_connections):
    """shop.items on the source (with an enum on both sides), imported as proxy_shop.items on the target."""
    pair = airflow_connections
    source, target = pair.source, pair.target
    for statement in ITEMS_DDL:
        source.execute(statement, dbname=SOURCE_DB)
    source.execute(ITEMS_ROWS.format(rows=ROWS), dbname=SOURCE_DB)
    source.execute(
        "INSERT INTO shop.items (id, note, updated_at) VALUES (0, repeat('x', 1000000), now())",
        dbname=SOURCE_DB,
    )
    source.execute(
        sql.SQL("GRANT USAGE ON SCHEMA shop TO {0}; GRANT SELECT ON ALL TABLES IN SCHEMA shop TO {0}").format(
            ident(READER)
        ),
        dbname=SOURCE_DB,
    )
    target.execute("CREATE SCHEMA IF NOT EXISTS shop", dbname=TARGET_DB)
    target.execute("CREATE TYPE shop.mood AS ENUM ('sad', 'ok', 'happy')", dbname=TARGET_DB)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.ensure_extension()
        hook.create_server("shop_src")
        hook.create_user_mapping("shop_src")
        hook.import_foreign_schema("shop_src", "shop", "proxy_shop")
    return pair


def fingerprint(cluster, dbname, table, where="true"):
    """Row count and an md5 over every row's text form, in key order: equal means identical data."""
    rows = cluster.execute(
        sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {} t WHERE {}"
        ).format(sql.Identifier(*table.split(".")), sql.SQL(where)),
        dbname=dbname,
    )
    return rows[0]


def source_fp(shop, where="true"):
    return fingerprint(shop.source, SOURCE_DB, "shop.items", where)


def target_fp(shop, table, where="true"):
    return fingerprint(shop.target, TARGET_DB, table, where)


def copy(target_table, **kwargs):
    kwargs.setdefault("source_table", "proxy_shop.items")
    direct = kwargs.pop("direct", False)
    relay = kwargs.pop("relay", "auto")
    retries = {"lock_retries": kwargs.pop("lock_retries")} if "lock_retries" in kwargs else {}
    plan = plan_copy(target_table=target_table, **kwargs)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan, direct=direct, relay=relay, **retries)


def new_table():
    return f"analytics_{uuid.uuid4().hex[:8]}"


def test_replace_creates_the_target_with_the_remote_primary_key_and_exact_rows(shop):
    table = f"public.{new_table()}"
    first = copy(table)
    assert first["rows"] == ROWS + 1 and first["swap"] == "created" and first["bytes"] > 0
    assert target_fp(shop, table) == source_fp(shop)
    pk = shop.target.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
        (table,),
        dbname=TARGET_DB,
    )
    assert pk == [("id",)]
    second = copy(table)  # idempotent: same rows, swapped in again
    assert second["swap"] == "renamed" and target_fp(shop, table) == source_fp(shop)


def test_replace_keeps_indexes_constraints_grants_and_comments(shop):
    t = new_table()
    tgt = shop.target
    copy(f"public.{t}")
    for statement in [
        "CREATE INDEX {idx} ON {t} (updated_at DESC)",
        "CREATE UNIQUE INDEX {uidx} ON {t} (uid) WHERE uid IS NOT NULL",
        "ALTER TABLE {t} ADD CONSTRAINT {chk} CHECK (id >= 0)",
        "CREATE ROLE {role}",
        "GRANT SELECT ON {t} TO {role}",
        "COMMENT ON TABLE {t} IS 'nightly copy of shop.items'",
        "COMMENT ON COLUMN {t}.note IS 'free text'",
    ]:
        tgt.execute(
            sql.SQL(statement).format(
                t=ident("public", t),
                idx=ident(f"{t}_by_update"),
                uidx=ident(f"{t}_uid"),
                chk=ident(f"{t}_id_positive"),
                role=ident(f"{t}_reader"),
            ),
            dbname=TARGET_DB,
        )
    before = describe(tgt, t)
    result = copy(f"public.{t}")
    assert result["swap"] == "renamed"
    assert describe(tgt, t) == before
    assert target_fp(shop, f"public.{t}") == source_fp(shop)


def describe(cluster, table):
    return {
        "indexes": cluster.execute(
            "SELECT indexname, replace(indexdef, indexname, '') FROM pg_indexes "
            "WHERE tablename = %s ORDER BY 1",
            (table,),
            dbname=TARGET_DB,
        ),
        "constraints": cluster.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass ORDER BY 1",
            (table,),
            dbname=TARGET_DB,
        ),
        "grants": cluster.execute(
            "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
            "WHERE table_name = %s ORDER BY 1, 2",
            (table,),
            dbname=TARGET_DB,
        ),
        "comments": cluster.execute(
            "SELECT obj_description(%s::regclass, 'pg_class'), col_description(%s::regclass, 10)",
            (table, table),
            dbname=TARGET_DB,
        ),
    }


def test_replace_with_a_dependent_view_exchanges_rows_in_place(shop):
    t = new_table()
    copy(f"public.{t}", where="id <= 100")
    shop.target.execute(
        sql.SQL("CREATE VIEW {} AS SELECT id FROM {}").format(ident(f"{t}_v"), ident(t)), dbname=TARGET_DB
    )
    result = copy(f"public.{t}")
    assert result["swap"] == "in-place"
    assert shop.target.execute(
        sql.SQL("SELECT count(*) FROM {}").format(ident(f"{t}_v")), dbname=TARGET_DB
    ) == [(ROWS + 1,)]
    assert target_fp(shop, f"public.{t}") == source_fp(shop)


@pytest.mark.parametrize(
    ("direct", "relay"), [(False, "auto"), (True, "psql"), (True, "python")], ids=["fdw", "psql", "python"]
)
def test_parallel_copies_equal_the_serial_copy(shop, direct, relay):
    serial, parallel = f"public.{new_table()}", f"public.{new_table()}"
    one = copy(serial, key_columns=["id"], direct=direct, relay=relay)
    three = copy(parallel, key_columns=["id"], parallelism=3, direct=direct, relay=relay)
    assert one["rows"] == three["rows"] == ROWS + 1
    assert one["path"] == three["path"] == ("direct" if direct else "fdw")
    assert target_fp(shop, serial) == target_fp(shop, parallel) == source_fp(shop)


@pytest.mark.parametrize("relay", ["psql", "python"])
def test_direct_copy_of_builtin_types_uses_binary_and_equals_the_fdw_copy(shop, relay):
    cols = ["id", "amount", "at", "doc", "tags", "blob", "uid", "note", "flag", "f8", "d", "iv", "updated_at"]
    via_fdw, direct = f"public.{new_table()}", f"public.{new_table()}"
    copy(via_fdw, columns=cols)
    result = copy(direct, columns=cols, direct=True, relay=relay)
    assert result["path"] == "direct"
    assert target_fp(shop, via_fdw) == target_fp(shop, direct)


@pytest.mark.parametrize("relay", ["psql", "python"])
def test_a_one_range_direct_replace_swaps_in_a_table_loaded_frozen(shop, relay):
    """COPY FREEZE into the staging table its loader truncated: every page all-visible and frozen, so
    neither the index build nor ANALYZE nor a later VACUUM rewrites them. Ranges loaded side by side
    share one staging table and cannot truncate it: theirs are not frozen."""
    shop.target.execute("CREATE EXTENSION IF NOT EXISTS pg_visibility", dbname=TARGET_DB)
    summary = "SELECT all_visible, all_frozen, pg_relation_size(%s) / 8192 FROM pg_visibility_map_summary(%s)"
    frozen, parallel = f"public.{new_table()}", f"public.{new_table()}"
    copy(frozen, key_columns=["id"], direct=True, relay=relay)
    visible, all_frozen, pages = shop.target.execute(summary, (frozen, frozen), dbname=TARGET_DB)[0]
    assert pages > 0 and visible == all_frozen == pages
    copy(parallel, key_columns=["id"], parallelism=2, direct=True, relay=relay)
    assert shop.target.execute(summary, (parallel, parallel), dbname=TARGET_DB)[0][:2] == (0, 0)
    assert target_fp(shop, frozen) == target_fp(shop, parallel) == source_fp(shop)


def test_append_copies_only_rows_past_the_watermark(shop):
    t = f"public.{new_table()}"
    first = copy(t, mode="append", watermark_column="updated_at", where="id BETWEEN 1 AND 15000")
    assert first["rows"] == 15000
    again = copy(t, mode="append", watermark_column="updated_at", where="id BETWEEN 1 AND 15000")
    assert again["rows"] == 0 and again["watermark"] == first["watermark"]
    rest = copy(t, mode="append", watermark_column="updated_at")
    assert rest["rows"] == ROWS - 15000 + 1  # ids 15001.. and row 0 (updated now)
    assert target_fp(shop, t) == source_fp(shop)


def test_upsert_merges_changed_and_new_rows_and_advances_the_watermark(shop):
    t = f"public.{new_table()}"
    src = shop.source
    full = copy(t, mode="upsert", key_columns=["id"], watermark_column="updated_at", overlap="1 minute")
    assert full["rows"] == ROWS + 1
    try:
        src.execute(
            "UPDATE shop.items SET note = 'changed', updated_at = now() + interval '1 day' "
            "WHERE id % 100 = 7",
            dbname=SOURCE_DB,
        )
        src.execute(
            "INSERT INTO shop.items (id, note, updated_at) VALUES (-1, 'new row', now() + interval '1 day')",
            dbname=SOURCE_DB,
        )
        delta = copy(t, mode="upsert", key_columns=["id"], watermark_column="updated_at", overlap="1 minute")
        assert ROWS // 100 + 1 <= delta["rows"] < ROWS // 10
        assert delta["watermark"] > full["watermark"]
        assert target_fp(shop, t) == source_fp(shop)
        assert (
            copy(t, mode="upsert", key_columns=["id"], watermark_column="updated_at")["rows"] >= 1
        )  # bound row
    finally:
        src.execute("DELETE FROM shop.items WHERE id = -1", dbname=SOURCE_DB)
        src.execute(
            "UPDATE shop.items SET note = 'note ' || id || E' tab\\there \\u00e9', "
            "updated_at = '2024-06-01 00:00:00+00'::timestamptz + id * interval '1 second' "
            "WHERE id % 100 = 7",
            dbname=SOURCE_DB,
        )


def test_bulk_copy_operator_in_a_dag_run(airflow_db, shop):
    from airflow.sdk import DAG

    from fdw_testing.dagrun import run_dag

    t = f"public.{new_table()}"
    with DAG("bulk_copy_op", schedule=None) as dag:
        BulkCopyOperator(
            task_id="copy", source_table="proxy_shop.items", target_table=t, key_columns=["id"], parallelism=2
        )
    result = run_dag(dag)
    assert result.state == "success", result.task_states
    summary = result.xcom["copy"]
    assert summary["rows"] == ROWS + 1 and summary["mode"] == "replace" and summary["parallelism"] == 2
    assert target_fp(shop, t) == source_fp(shop)
    assert [a.uri for a in dag.get_task("copy").outlets] == [f"x-postgres://postgres_default/public/{t[7:]}"]


def test_killing_the_remote_session_mid_copy_leaves_the_target_intact_and_a_retry_succeeds(shop):
    t = f"public.{new_table()}"
    copy(t, where="id <= 1000")
    before = target_fp(shop, t)
    killer_done = threading.Event()

    def kill_remote_reader():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # The copy's remote session while it fetches (idle cached sessions are left alone).
            killed = shop.source.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s "
                "AND query LIKE 'FETCH%%'",
                (READER,),
            )
            if killed:
                break
            time.sleep(0.005)
        killer_done.set()

    thread = threading.Thread(target=kill_remote_reader)
    thread.start()
    with pytest.raises(FdwError) as info:
        # pg_sleep is volatile, so it runs locally per row: the copy is still reading when it is killed.
        copy(t, fetch_size=100, where="pg_sleep(0.0005) IS NOT NULL")
    thread.join()
    message = str(info.value)
    assert "proxy_shop.items" in message and t in message and "loading rows" in message
    assert target_fp(shop, t) == before
    assert leftovers(shop, t) == []
    assert copy(t)["rows"] == ROWS + 1
    assert target_fp(shop, t) == source_fp(shop)


def test_stopping_the_source_server_mid_copy_leaves_the_target_intact(shop):
    t = f"public.{new_table()}"
    copy(t, where="id <= 1000")
    before = target_fp(shop, t)
    source = shop.source

    def stop_soon():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # stop the server while the copy is fetching from it
            if source.execute(
                "SELECT 1 FROM pg_stat_activity WHERE usename = %s AND query LIKE 'FETCH%%'",
                (READER,),
            ):
                break
            time.sleep(0.005)
        source.stop("immediate")

    thread = threading.Thread(target=stop_soon)
    thread.start()
    try:
        with pytest.raises(FdwError, match=r"proxy_shop\.items"):
            copy(t, fetch_size=100, where="pg_sleep(0.0005) IS NOT NULL")
    finally:
        thread.join()
        source.start()
    assert target_fp(shop, t) == before
    assert copy(t)["rows"] == ROWS + 1


def leftovers(shop, table):
    return shop.target.execute(
        "SELECT relname FROM pg_class WHERE relname LIKE %s",
        (table.split(".")[1] + "_fdw_%",),
        dbname=TARGET_DB,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source_table": "proxy_shop.nope"}, "does not exist"),
        ({"columns": ["id", "bogus"]}, r"columns \['bogus'\] do not exist"),
        ({"mode": "upsert", "key_columns": ["nope"], "watermark_column": "updated_at"}, "key_columns"),
        ({"mode": "replace", "parallelism": 2, "split_column": "note"}, "integer column"),
    ],
)
def test_bad_input_fails_clearly_before_any_change(shop, kwargs, message):
    t = f"public.{new_table()}"
    copy(t, where="id <= 10")
    before = target_fp(shop, t)
    with pytest.raises(FdwConfigError, match=message):
        copy(t, **kwargs)
    assert target_fp(shop, t) == before and leftovers(shop, t) == []


def test_mismatched_target_columns_are_refused(shop):
    t = new_table()
    shop.target.execute(sql.SQL("CREATE TABLE {} (id bigint, note int)").format(ident(t)), dbname=TARGET_DB)
    with pytest.raises(FdwConfigError, match=r"note is text in the source but integer in the target"):
        copy(f"public.{t}", columns=["id", "note"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "upsert"}, "needs key_columns"),
        ({"mode": "upsert", "key_columns": ["id"]}, "needs watermark_column"),
        ({"mode": "merge"}, "mode must be one of"),
        ({"parallelism": 0}, "parallelism must be"),
        ({"parallelism": 2}, "pass key_columns or split_column"),
        ({"watermark_column": "x"}, "replace always copies everything"),
        ({"mode": "append", "overlap": 5}, "overlap applies to mode='upsert' only"),
        ({"target_table": "proxy_shop.items"}, "the same table"),
        ({"columns": ["note"], "key_columns": ["id"]}, "must include the key"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs, message):
    args = {"task_id": "t", "source_table": "proxy_shop.items", "target_table": "public.x", **kwargs}
    with pytest.raises(FdwConfigError, match=message):
        BulkCopyOperator(**args)


def test_a_lock_timeout_at_the_swap_leaves_the_target_intact_and_a_retry_succeeds(shop):
    t = new_table()
    copy(f"public.{t}", where="id <= 1000")
    before = target_fp(shop, f"public.{t}")
    reader = shop.target.connect(TARGET_DB, autocommit=False)
    try:
        # A long report holds the target open: the swap cannot take its lock within lock_timeout.
        reader.cursor().execute(sql.SQL("SELECT count(*) FROM {}").format(ident(t)))
        with pytest.raises(FdwError, match="lock timeout"):
            copy(f"public.{t}", lock_timeout="500ms", lock_retries=2)
        assert target_fp(shop, f"public.{t}") == before
    finally:
        reader.rollback()
        reader.close()
    assert leftovers(shop, f"public.{t}") == []
    assert copy(f"public.{t}", lock_timeout="5s")["rows"] == ROWS + 1
    assert target_fp(shop, f"public.{t}") == source_fp(shop)
