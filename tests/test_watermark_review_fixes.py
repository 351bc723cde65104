"""Incremental copies (append/upsert with a watermark), fixes of a review (2026-12-07): a real
watermark's bound, an overlap that raised the bound, an inheritance target's record, and one record
per feed (source and ``where``) of a target."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from conftest import SOURCE_DB, RemoteTable, fdw_sandbox, local

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError
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


@pytest.mark.parametrize("overlap", [-10, float("nan")], ids=["minus ten", "nan"])
def test_an_overlap_that_raises_the_bound_is_refused_or_skips_nothing(rev, overlap):
    """overlap lowers the bound (watermark - overlap) so late rows are caught. A negative one raised
    it above the recorded watermark; NaN made the bound NaN, above every value."""
    src = table(rev, "id bigint, v bigint", remote_columns="id bigint PRIMARY KEY, v bigint")
    src.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 10) g")
    t = new_target()
    kwargs = {"mode": "upsert", "key_columns": ["id"], "watermark_column": "v", "overlap": overlap}
    try:
        plan_copy(src.foreign, t, **kwargs)
    except FdwConfigError:
        return  # refused before anything runs: fine
    copy(src, t, **kwargs)
    src.remote("INSERT INTO {t} SELECT g, g FROM generate_series(11, 15) g")
    second = copy(src, t, **kwargs)
    assert count(rev, t) == 15, f"rows 11-15 are newer than the watermark; {second['rows']} copied"


@pytest.mark.parametrize(
    "overlap",
    [
        float("inf"),
        Decimal("NaN"),
        Decimal("-1"),
        timedelta(minutes=-5),
        "-5 minutes",
        "1 day -2 hours",
        "-10",
    ],
)
def test_a_negative_or_infinite_overlap_is_refused_by_plan_copy(overlap):
    with pytest.raises(FdwConfigError, match="overlap"):
        plan_copy(
            "proxy.a", "public.b", mode="upsert", key_columns=["id"], watermark_column="v", overlap=overlap
        )


def test_a_number_written_as_text_is_a_number_for_a_numeric_watermark(rev):
    """overlap='10' was cast to interval: the first run (no bound) passed, every later one failed
    with bigint - interval."""
    src = table(rev, "id bigint, v bigint", remote_columns="id bigint PRIMARY KEY, v bigint")
    src.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 20) g")
    t = new_target()
    kwargs = {"mode": "upsert", "key_columns": ["id"], "watermark_column": "v", "overlap": "10"}
    copy(src, t, **kwargs)
    second = copy(src, t, **kwargs)
    assert (second["previous_watermark"], second["rows"]) == (10, 11)  # v >= 20 - 10


@pytest.mark.parametrize(
    ("columns", "overlap", "message"),
    [
        ("id bigint, v bigint", "5 minutes", "is an interval but watermark_column v is bigint"),
        ("id bigint, v bigint", timedelta(minutes=5), "is an interval but watermark_column v is bigint"),
        ("id bigint, v timestamptz", 10, "is a number but watermark_column v is timestamp with time zone"),
        ("id bigint, v timestamptz", "10", "is a number but watermark_column v is timestamp with time zone"),
        ("id bigint, v text", "5 minutes", "applies to a numeric, date or time watermark_column; v is text"),
    ],
)
def test_an_overlap_of_the_wrong_kind_for_the_watermark_is_refused_before_anything_changes(
    rev, columns, overlap, message
):
    src = table(rev, columns, remote_columns=columns.replace("id bigint", "id bigint PRIMARY KEY"))
    t = new_target()
    local(rev, f"CREATE TABLE {{t}} ({columns.replace('id bigint', 'id bigint PRIMARY KEY')})", t=t)
    with pytest.raises(FdwConfigError, match=message):
        copy(src, t, mode="upsert", key_columns=["id"], watermark_column="v", overlap=overlap)
    assert local(
        rev,
        "SELECT to_regclass('public.fdw_copy_state') IS NULL OR NOT EXISTS ("
        "SELECT 1 FROM public.fdw_copy_state WHERE target_table = %s)",
        (t.split(".")[1],),
    )[0][0]


def test_a_whole_number_of_days_is_an_overlap_for_a_date_watermark(rev):
    """date - integer is PostgreSQL's date arithmetic (days): it keeps working."""
    src = table(rev, "id bigint, d date", remote_columns="id bigint PRIMARY KEY, d date")
    src.remote("INSERT INTO {t} SELECT g, date '2024-01-01' + g FROM generate_series(1, 10) g")
    t = new_target()
    kwargs = {"mode": "upsert", "key_columns": ["id"], "watermark_column": "d", "overlap": 2}
    copy(src, t, **kwargs)
    assert copy(src, t, **kwargs)["rows"] == 3  # d >= 2024-01-11 - 2 days


def test_an_inheritance_target_whose_child_holding_the_rows_is_truncated_reads_max_again(rev):
    """An inheritance parent whose BEFORE INSERT trigger routes rows to a child (PostgreSQL < 10
    partitioning, which append supports): the record's storage was the parent's relfilenode only
    (pg_partition_tree does not follow inheritance), so a TRUNCATE of the child left the record
    trusted and the rows were never copied again."""
    src = table(rev, "id bigint, v bigint")
    src.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 10) g")
    t = new_target()
    child = f"{t}_c"
    local(rev, "CREATE TABLE {t} (id bigint, v bigint)", t=t)
    local(rev, "CREATE TABLE {c} () INHERITS ({t})", c=child, t=t)
    fn = f"{t}_route"
    local(
        rev,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"INSERT INTO {child} VALUES (NEW.*); RETURN NULL; END $$",
        f=fn,
    )
    local(rev, "CREATE TRIGGER route BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()", t=t, f=fn)
    assert copy(src, t, mode="append", watermark_column="v")["rows"] == 10
    assert count(rev, t) == 10
    local(rev, "TRUNCATE {c}", c=child)  # the month's child emptied by hand, to be filled again
    second = copy(src, t, mode="append", watermark_column="v")
    assert count(rev, t) == 10, f"{second['rows']} rows copied: the record still said v > 10"


def test_a_truncated_grandchild_of_an_inheritance_target_reads_max_again_and_a_plain_target_keeps_its_record(
    rev,
):
    """Descendants at any depth count; a table without descendants keeps its relfilenode as storage,
    so records written before (plain and partitioned targets) stay valid."""
    src = table(rev, "id bigint, v bigint")
    src.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 10) g")
    t = new_target()
    child, grandchild = f"{t}_c", f"{t}_g"
    local(rev, "CREATE TABLE {t} (id bigint, v bigint)", t=t)
    local(rev, "CREATE TABLE {c} () INHERITS ({t})", c=child, t=t)
    local(rev, "CREATE TABLE {g} () INHERITS ({c})", g=grandchild, c=child)
    fn = f"{t}_route"
    local(
        rev,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"INSERT INTO {grandchild} VALUES (NEW.*); RETURN NULL; END $$",
        f=fn,
    )
    local(rev, "CREATE TRIGGER route BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()", t=t, f=fn)
    assert copy(src, t, mode="append", watermark_column="v")["rows"] == 10
    local(rev, "TRUNCATE {g}", g=grandchild)
    assert copy(src, t, mode="append", watermark_column="v")["rows"] == 10
    assert count(rev, t) == 10
    plain = new_target()
    copy(src, plain, mode="append", watermark_column="v")
    stored = local(
        rev,
        "SELECT target_filenode = pg_relation_filenode({p}::regclass) FROM public.fdw_copy_state "
        "WHERE target_table = %s",
        (plain.split(".")[1],),
        p=sql.Literal(plain),
    )
    assert stored == [(True,)]


def statement_in(message: str, verb: str) -> str:
    """The statement the error tells the user to run (its own line, ending with ';')."""
    return next(line for line in message.splitlines() if line.startswith(verb)).rstrip(";")


def test_two_sources_appending_into_one_target_each_keep_their_own_watermark(rev):
    """Two shards copied into one target by two tasks: the record was keyed by the target (and
    column) only, so the shard copied second started from the first shard's watermark and its older
    rows were never copied. Now each feed keeps its own record; the first append of a second feed is
    refused (its max() is not the target's, and copying all of it could append rows again) and says
    how to start it, after which both go on from their own watermark."""
    a = table(rev, "id bigint, v bigint")
    b = table(rev, "id bigint, v bigint")
    a.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 10) g")
    b.remote("INSERT INTO {t} SELECT 100 + g, g FROM generate_series(1, 5) g")
    t = new_target()
    assert copy(a, t, mode="append", watermark_column="v")["rows"] == 10
    with pytest.raises(FdwConfigError, match="also fed by other copies") as refused:
        copy(b, t, mode="append", watermark_column="v")
    assert count(rev, t) == 10
    local(rev, statement_in(str(refused.value), "INSERT INTO"))
    second = copy(b, t, mode="append", watermark_column="v")
    assert count(rev, t) == 15, f"shard b: {second['rows']} of its 5 rows copied"
    a.remote("INSERT INTO {t} VALUES (11, 11), (12, 12)")
    b.remote("INSERT INTO {t} VALUES (106, 6), (107, 7)")
    assert copy(a, t, mode="append", watermark_column="v")["rows"] == 2
    assert copy(b, t, mode="append", watermark_column="v")["rows"] == 2
    assert copy(a, t, mode="append", watermark_column="v")["rows"] == 0
    assert count(rev, t) == 19


def test_a_second_feed_upserting_into_a_shared_target_starts_from_its_first_row(rev):
    a = table(rev, "id bigint, v bigint", remote_columns="id bigint PRIMARY KEY, v bigint")
    b = table(rev, "id bigint, v bigint", remote_columns="id bigint PRIMARY KEY, v bigint")
    a.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 10) g")
    b.remote("INSERT INTO {t} SELECT 100 + g, g FROM generate_series(1, 5) g")
    t = new_target()
    upsert = {"mode": "upsert", "key_columns": ["id"], "watermark_column": "v"}
    copy(a, t, **upsert)
    assert copy(b, t, **upsert)["inserted"] == 5
    b.remote("UPDATE {t} SET v = 6 WHERE id = 101")
    assert copy(b, t, **upsert)["rows"] == 2  # v >= 5 from b's own record, not v >= 10 from a's
    assert count(rev, t) == 15


def test_a_where_templated_per_run_is_one_feed(rev):
    """The where is not part of a feed: a filter templated per run (``v <= {{ … }}``) or edited keeps
    the record, so each run starts where the last one ended (no refusal, nothing copied twice)."""
    src = table(rev, "id bigint, v bigint")
    src.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 10) g")
    t = new_target()
    assert copy(src, t, mode="append", watermark_column="v", where="v <= 5")["rows"] == 5
    second = copy(src, t, mode="append", watermark_column="v", where="v <= 10")
    assert (second["previous_watermark"], second["rows"], count(rev, t)) == (5, 5, 10)


def test_a_copy_state_of_an_earlier_version_is_upgraded_and_its_record_taken_over(rev):
    """An earlier version kept one record per target (target_table its primary key): the first feed
    that runs takes it over (the bound is the same), and the table gets one record per feed."""
    schema = f"wmold_{uuid.uuid4().hex[:6]}"
    local(rev, "CREATE SCHEMA {s}", s=schema)
    local(
        rev,
        "CREATE TABLE {s}.fdw_copy_state (target_table text PRIMARY KEY, watermark_column text NOT NULL, "
        "target_oid oid NOT NULL, target_filenode oid, watermark text, "
        "recorded_at timestamptz NOT NULL DEFAULT now())",
        s=schema,
    )
    src = table(rev, "id bigint, v bigint")
    src.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 10) g")
    t = f"{schema}.t"
    local(rev, "CREATE TABLE {t} (id bigint, v bigint)", t=t)
    local(rev, "INSERT INTO {t} SELECT g, g FROM generate_series(1, 7) g", t=t)
    local(
        rev,
        "INSERT INTO {s}.fdw_copy_state (target_table, watermark_column, target_oid, target_filenode, "
        "watermark) SELECT 't', 'v', c.oid, pg_relation_filenode(c.oid), '7' FROM pg_class c "
        "WHERE c.oid = {r}::regclass",
        s=schema,
        r=sql.Literal(t),
    )
    first = copy(src, t, mode="append", watermark_column="v")
    assert (first["previous_watermark"], first["rows"], count(rev, t)) == (7, 3, 10)
    records = local(rev, "SELECT source_table, watermark FROM {s}.fdw_copy_state", s=schema)
    assert records == [(src.foreign, "10")]
    assert copy(src, t, mode="append", watermark_column="v")["rows"] == 0
