"""Regression tests of a third review: feeds sharing a target go on after it is rewritten (a partition
added or dropped, VACUUM FULL), emptied (TRUNCATE) or replaced, the statements a refusal prints work,
and a direct copy of a security_invoker view the role may not lock goes on unlocked."""

from __future__ import annotations

import uuid

import pytest
from conftest import local


def _two_append_feeds(airflow_connections, partitioned: bool):
    from conftest import RemoteTable, fdw_sandbox

    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.hooks.fdw import FdwHook

    pair = fdw_sandbox(airflow_connections, "feeds", "feeds_src")
    a, b = (RemoteTable(pair, "feeds", "feeds_src", "id bigint, wm bigint") for _ in range(2))
    a.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 10) g")
    b.remote("INSERT INTO {t} SELECT 100 + g, g FROM generate_series(1, 5) g")
    target = f"public.f3_{uuid.uuid4().hex[:8]}"
    if partitioned:
        local(pair, "CREATE TABLE {t} (id bigint, wm bigint) PARTITION BY RANGE (id)", t=target)
        local(
            pair, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (0) TO (1000)", p=target + "_0", t=target
        )

    def run(src) -> int:
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            return hook.bulk_copy(plan_copy(src.foreign, target, mode="append", watermark_column="wm"))[
                "rows"
            ]

    return pair, a, b, target, run


def _start_both(pair, a, b, target, run):
    """Both feeds started the documented way: A first, B by the record the refusal tells to insert."""
    from airflow_provider_fdw.exceptions import FdwConfigError

    assert run(a) == 10
    with pytest.raises(FdwConfigError) as refused:
        run(b)
    insert = next(line for line in str(refused.value).splitlines() if line.startswith("INSERT INTO"))
    local(pair, insert.rstrip(";"))
    assert run(b) == 5


def test_two_append_feeds_into_a_partitioned_target_go_on_after_a_partition_is_added(airflow_connections):
    """Adding the next partition to a partitioned target changes the storage hash: each feed's own
    record stops describing the target, other_feeds() (oid only) finds the other one, and the
    (non-empty) target makes every append of either feed a refusal from then on."""
    pair, a, b, target, run = _two_append_feeds(airflow_connections, partitioned=True)
    _start_both(pair, a, b, target, run)
    b.remote("INSERT INTO {t} SELECT 105 + g, 5 + g FROM generate_series(1, 3) g")
    local(
        pair, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (1000) TO (2000)", p=target + "_1", t=target
    )
    assert run(b) == 3
    assert local(pair, "SELECT count(*) FROM {t}", t=target) == [(18,)]


@pytest.mark.parametrize("rewrite", ["VACUUM FULL", "TRUNCATE"])
def test_the_remedies_a_shared_target_refusal_gives_work_for_a_feed_that_has_a_record(
    airflow_connections, rewrite
):
    """After VACUUM FULL of a target two feeds append into, both are refused (after a TRUNCATE, the
    second to run is: the round-2 test); the refusal says the feed has no record, and the statements it
    gives (hand over / start from NULL) fail: the feed has a (stale) record, the feed key is unique."""
    from airflow_provider_fdw.exceptions import FdwConfigError

    pair, a, b, target, run = _two_append_feeds(airflow_connections, partitioned=False)
    _start_both(pair, a, b, target, run)
    local(pair, rewrite + " {t}", t=target)
    if rewrite == "TRUNCATE":
        assert run(b) == 5  # empty: copies every row
        feed = a
    else:
        b.remote("INSERT INTO {t} SELECT 105 + g, 5 + g FROM generate_series(1, 3) g")
        feed = b
    try:
        run(feed)
        return
    except FdwConfigError as exc:
        message = str(exc)
    statements = [line.rstrip(";") for line in message.splitlines() if line.startswith(("INSERT", "UPDATE"))]
    failures = []
    for statement in statements:
        try:
            local(pair, statement)
        except Exception as err:
            failures.append(f"{statement[:40]}…: {type(err).__name__}: {str(err).splitlines()[0]}")
    assert not failures, failures


@pytest.mark.parametrize("default_partition", [False, True])
def test_upsert_feeds_into_a_partitioned_target_go_on_after_an_old_partition_is_dropped(
    airflow_connections, default_partition
):
    """Retention: the oldest partition of a target two upsert feeds write is dropped. The storage hash
    changes, each feed's own record stops describing the target, other_feeds() (oid only) finds the
    other feed, and the feed "copies every row of it": the rows of the dropped range again (no partition
    holds them: the copy fails, on every run; with a DEFAULT partition they would come back)."""
    from conftest import RemoteTable, fdw_sandbox

    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.hooks.fdw import FdwHook

    pair = fdw_sandbox(airflow_connections, "feeds", "feeds_src")
    a, b = (RemoteTable(pair, "feeds", "feeds_src", "id bigint, wm bigint") for _ in range(2))
    a.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 10) g")
    b.remote("INSERT INTO {t} SELECT 100 + g, g FROM generate_series(1, 5) g")
    target = f"public.f3r_{uuid.uuid4().hex[:8]}"
    local(
        pair,
        "CREATE TABLE {t} (id bigint, wm bigint, PRIMARY KEY (id, wm)) PARTITION BY RANGE (wm)",
        t=target,
    )
    local(pair, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (0) TO (5)", p=target + "_old", t=target)
    local(
        pair, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (5) TO (1000)", p=target + "_new", t=target
    )
    if default_partition:
        local(pair, "CREATE TABLE {p} PARTITION OF {t} DEFAULT", p=target + "_def", t=target)

    def run(src) -> int:
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            plan = plan_copy(
                src.foreign, target, mode="upsert", key_columns=["id", "wm"], watermark_column="wm"
            )
            return hook.bulk_copy(plan)["rows"]

    assert (run(a), run(b)) == (10, 5)
    local(pair, "DROP TABLE {p}", p=target + "_old")  # retention: rows with wm < 5 are not kept
    b.remote("INSERT INTO {t} SELECT 105 + g, 5 + g FROM generate_series(1, 3) g")  # wm 6..8
    run(b)
    assert local(pair, "SELECT count(*) FROM {t} WHERE id > 100", t=target) == [(4,)]  # 105..108


@pytest.mark.parametrize("swap", ["rename", "in_place"])
def test_a_feed_behind_a_replace_of_its_shared_target_copies_its_rows_again(airflow_connections, swap):
    """A and B append into T. A replace of T from A's source swaps in a new table (new oid): B's rows
    are gone, but every record (A's, B's) names the old oid, which other_feeds() now filters on, so B
    finds neither its record nor another feed's and reads max(wm) of T, which is A's (10): B's rows
    (wm 1..8) are never copied again, reported as a success."""
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.exceptions import FdwConfigError
    from airflow_provider_fdw.hooks.fdw import FdwHook

    pair, a, b, target, run = _two_append_feeds(airflow_connections, partitioned=False)
    _start_both(pair, a, b, target, run)
    (old_oid,) = local(pair, "SELECT to_regclass(%s)::oid", (target,))[0]
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        assert hook.bulk_copy(plan_copy(a.foreign, target, mode="replace", swap=swap))["rows"] == 10
    (new_oid,) = local(pair, "SELECT to_regclass(%s)::oid", (target,))[0]
    assert (new_oid != old_oid) == (swap == "rename")
    b.remote("INSERT INTO {t} SELECT 105 + g, 5 + g FROM generate_series(1, 3) g")  # wm 6..8
    assert run(b) == 8  # its rows were replaced away: its record starts again from its first row
    assert local(pair, "SELECT count(*) FROM {t} WHERE id > 100", t=target) == [(8,)]
    # a's rows are all there, b's too now: a cannot tell which of them are its own
    with pytest.raises(FdwConfigError, match="also fed by other copies"):
        run(a)


@pytest.mark.parametrize("transport", ["auto", "copy"])
def test_a_direct_copy_of_a_security_invoker_view_over_column_privileges_is_not_refused(
    airflow_connections, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    """d30361f reads has_table_privilege on the remote relation only. LOCK TABLE on a view also locks
    the relations it reads, checking (for a security_invoker view, PostgreSQL 15) the caller's
    table-level privilege on them: a role with SELECT on the view and on some columns of its table
    reads it, but the holder's LOCK fails the copy ('permission denied for table …')."""
    from conftest import READER, READER_PASSWORD, SOURCE_DB, RemoteTable, fdw_sandbox, ident, server_as

    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.compat import sql
    from airflow_provider_fdw.hooks.fdw import FdwHook

    rev = fdw_sandbox(airflow_connections, "colpriv", "colpriv_src")
    src = RemoteTable(
        rev,
        "colpriv",
        "colpriv_src",
        "id bigint, name text",
        remote_columns="id bigint, name text, secret text",
    )
    src.remote("INSERT INTO {t} SELECT g, 'n' || g, 's' FROM generate_series(1, 100) g")
    view = f"{src.name}_v"
    rev.source.execute(
        sql.SQL(
            "REVOKE SELECT ON {t} FROM {r}; GRANT SELECT (id, name) ON {t} TO {r}; "
            "CREATE VIEW {v} WITH (security_invoker = true) AS SELECT id, name FROM {t}; "
            "GRANT SELECT ON {v} TO {r}"
        ).format(t=ident("colpriv", src.name), v=ident("colpriv", view), r=ident(READER)),
        dbname=SOURCE_DB,
    )
    conn_id, server = server_as(rev, rev.source, READER, READER_PASSWORD, monkeypatch)
    foreign = f"proxy_colpriv.{view}"
    local(
        rev,
        "CREATE FOREIGN TABLE {f} (id bigint, name text) SERVER {s} OPTIONS (schema_name 'colpriv', "
        "table_name {n})",
        f=foreign,
        s=server,
        n=sql.Literal(view),
    )
    with FdwHook(fdw_conn_id=conn_id) as hook:
        assert (
            hook.bulk_copy(plan_copy(foreign, f"public.cv_{uuid.uuid4().hex[:8]}", transport="fdw"))["rows"]
            == 100
        )
        result = hook.bulk_copy(plan_copy(foreign, f"public.cv_{uuid.uuid4().hex[:8]}", transport=transport))
    assert result["rows"] == 100
