"""Incremental-copy benchmark: upsert and append of 1% and 0.1% of a table, as a share of a full copy.

Starts a fresh source/target pair, generates ``--rows`` rows (the table of bench/bulk_copy.py, with an
index on the watermark column ``created_at`` on the source unless ``--no-source-index``), times a full
copy (mode replace) on each path, then changes 1% / 0.1% of the source and times the upsert / append
that copies the change. Every share is against the full copy on the same path, in the same run.

Upserts run on two layouts of the change: ``scattered`` (every 100th / 1000th key: the changed rows lie
on about half / a twentieth of the pages of both tables) and ``recent`` (the newest 1% / 0.1% of the keys:
a few contiguous pages). Each run also gets its **floor**, measured right after it on the same rows:
the source's read of the changed rows (the execution time of ``SELECT … WHERE created_at >= …`` on the
source itself, from ``EXPLAIN ANALYZE``: no connection, client or transfer) plus the target's write of
them (an upsert: ``INSERT … ON CONFLICT DO UPDATE`` of as many rows at the same keys from a local table,
in key order; an append: ``INSERT`` of as many rows under new keys; rolled back). Any incremental copy
does at least that work; both run after the copy on pages it has just read, so the floor is, if
anything, low. The **path floor** replaces the source's read by the
same rows moved through the copy's transport and nothing else: through postgres_fdw, the target's
execution time of the foreign scan (``EXPLAIN ANALYZE`` on the target, at the copy's ``fetch_size``);
directly, a binary ``COPY (SELECT …) TO STDOUT`` of them, received and dropped by this process; both
with the connection to the source that carries them, plus opening a session on the target: every run
(a new task process) opens both. A target below the path floor cannot be met on that path, whatever
the copy does after the rows arrive.

Both floors run on pages the copy has just read and written. The copy itself is the first to touch the
change: on the source it sets the hint bits of the new row versions and writes out the pages the change
left dirty as it evicts them; on the target it reads the rows' pages in. The **first-touch floor**
measures that same work in rounds of its own, before any copy: after a change like the timed ones, the
source's ``EXPLAIN ANALYZE`` of the read comes first, then the target's write of the new rows (taken
from the source through postgres_fdw, so that no statement read the target's pages before); then an
untimed copy brings the target up to date. A target below it cannot be met here either.

    python bench/incremental.py [--rows 1000000] [--repeat 3] [--paths fdw,direct] [--json FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

from private_home import airflow_home

os.environ["AIRFLOW_HOME"] = airflow_home()
# The test harness (fdw_testing) lives in the repository, outside the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bulk_copy import new_report, server_seconds, write_report

from airflow_provider_fdw.bulkcopy.plan import DEFAULT_FETCH_SIZE
from airflow_provider_fdw.compat import sql
from fdw_testing.pgcluster import Pair, local_pair
from fdw_testing.sample_data import (
    READER,
    SOURCE_DB,
    TARGET_DB,
    install_sample_data,
    set_airflow_connections,
)

TABLE = "bench_users"
# The source table again, read at the copy's fetch_size: the path floor's read through postgres_fdw.
FLOOR_TABLE = "proxy.bench_users_floor"
OUT = "public.copy_out"
COLUMNS = "id, email, payload, created_at"
GENERATE = (
    "CREATE TABLE app.bench_users (id bigint PRIMARY KEY, email text NOT NULL, payload text NOT NULL, "
    "created_at timestamptz NOT NULL)",
    "INSERT INTO app.bench_users SELECT g, 'user' || g || '@example.com', "
    "rpad(md5(g::text), 100, md5((g + 1)::text)), '2024-01-01'::timestamptz + g * interval '1 second' "
    "FROM generate_series(1, {rows}) g",
)
# Each change is one day later than the one before (across paths): always above the last watermark.
TICKS = itertools.count(1)
# The share of the full copy each incremental run may take (issue 13, target 1).
TARGETS = {100: 0.05, 1000: 0.01}
# (1 row in every, mode, layout of the changed keys) of each measured incremental run.
RUNS = [
    (every, mode, layout)
    for every in TARGETS
    for mode, layout in (("upsert", "scattered"), ("upsert", "recent"), ("append", ""))
]


def main() -> int:
    args = parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    with local_pair() as pair:
        install_sample_data(pair)
        set_airflow_connections(pair)
        setup(pair, args.rows, args.source_index)
        results = []
        for path in args.paths.split(","):
            results += run_path(pair, args, path == "direct")
    report = new_report(args, results, source_index=args.source_index)
    print_table(report)
    write_report(report, args.json)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate (up to 10,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per method (median reported)")
    parser.add_argument("--paths", default="fdw,direct", help="fdw, direct or both (comma-separated)")
    parser.add_argument(
        "--no-source-index",
        dest="source_index",
        action="store_false",
        help="leave the source's created_at unindexed (the copy then logs the CREATE INDEX to run)",
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--markdown", help="print the table of docs/performance.md from a results file")
    return parser.parse_args()


def setup(pair: Pair, rows: int, source_index: bool) -> None:
    src, tgt = pair.source, pair.target
    for statement in GENERATE:
        src.execute(statement.format(rows=rows), dbname=SOURCE_DB)
    if source_index:
        src.execute("CREATE INDEX ON app.bench_users (created_at)", dbname=SOURCE_DB)
    src.execute("VACUUM ANALYZE app.bench_users", dbname=SOURCE_DB)
    src.execute(
        sql.SQL("GRANT SELECT ON app.bench_users TO {}").format(sql.Identifier(READER)), dbname=SOURCE_DB
    )
    from airflow_provider_fdw.hooks.fdw import FdwHook

    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.ensure_extension()
        hook.create_server("bench_src", options=None)
        hook.create_user_mapping("bench_src")
        hook.import_foreign_schema("bench_src", "app", "proxy", limit_to=[TABLE])
    tgt.execute(
        sql.SQL(
            "CREATE FOREIGN TABLE {} (id bigint, email text, payload text, created_at timestamptz) "
            "SERVER bench_src OPTIONS (schema_name 'app', table_name {}, fetch_size {})"
        ).format(
            sql.Identifier(*FLOOR_TABLE.split(".")), sql.Literal(TABLE), sql.Literal(str(DEFAULT_FETCH_SIZE))
        ),
        dbname=TARGET_DB,
    )
    src.execute("SELECT count(*) FROM app.bench_users", dbname=SOURCE_DB)  # warm-up: every page read once
    tgt.execute("SELECT 1", dbname=TARGET_DB)


def copy(mode: str, direct: bool, relay: str = "auto", **kwargs: object) -> tuple[float, dict]:
    """One timed copy of the bench table into ``OUT``; ``kwargs`` go to ``plan_copy``."""
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.hooks.fdw import FdwHook

    transport = "copy" if direct else "fdw"
    plan = plan_copy(
        f"proxy.{TABLE}",
        OUT,
        mode=mode,
        key_columns=["id"],
        transport=transport,
        **kwargs,  # type: ignore[arg-type]
    )
    started = time.perf_counter()
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        result = hook.bulk_copy(plan, relay=relay)
    return time.perf_counter() - started, result


def run_path(pair: Pair, args: argparse.Namespace, direct: bool) -> list[dict]:
    src, tgt = pair.source, pair.target
    path = "direct" if direct else "fdw"
    tgt.execute(f"DROP TABLE IF EXISTS {OUT}", dbname=TARGET_DB)
    copy("replace", direct)  # warm-up, unrecorded
    full = []
    for _ in range(args.repeat):
        tgt.execute(f"DROP TABLE IF EXISTS {OUT}", dbname=TARGET_DB)
        full.append(copy("replace", direct)[0])
    full_copy = statistics.median(full)
    print(f"  full copy ({path}): {full_copy:.2f}s", flush=True)
    results = [{"method": f"full copy (replace, {path}, parallelism 1)", "seconds": full_copy, "runs": full}]
    for every, mode, layout in RUNS:
        seconds, copied, floors = [], [], []
        kwargs: dict = {"watermark_column": "created_at"}
        if mode == "upsert":
            kwargs["overlap"] = "1 second"
        # The first incremental run after a replace records the watermark: unrecorded.
        copy(mode, direct, **kwargs)
        first_touch = []
        for _ in range(args.repeat):
            tick = next(TICKS)
            change(pair, args.rows, every, mode, layout, tick)
            first_touch.append(first_touch_floor(pair, tick, mode))
            copy(mode, direct, **kwargs)  # untimed: the target takes the change before the timed rounds
        pages = []
        for _ in range(args.repeat):
            tick = next(TICKS)
            keys = change(pair, args.rows, every, mode, layout, tick)
            pages.append(pages_touched(pair, keys) if mode == "upsert" else None)
            took, result = copy(mode, direct, **kwargs)
            seconds.append(took)
            copied.append(result["rows"])
            floors.append(floor(pair, tick, keys, direct, mode))
        check_equal(pair)
        share = statistics.median(seconds) / full_copy
        name = f"{mode} {100 / every:g}% changed{f', {layout}' if layout else ''} ({path})"
        row = {
            "method": name,
            "seconds": statistics.median(seconds),
            "runs": seconds,
            "rows": statistics.median(copied),
            "share_of_full_copy": share,
            # upsert: the share of the target's pages holding a row it updates
            "pages_touched": pages[-1],
            "target": TARGETS[every],
            "met": share <= TARGETS[every],
        }
        row["floor_seconds"] = statistics.median(f for f, _ in floors)
        row["floor_share"] = row["floor_seconds"] / full_copy
        row["path_floor_seconds"] = statistics.median(p for _, p in floors)
        row["path_floor_share"] = row["path_floor_seconds"] / full_copy
        row["first_touch_floor_seconds"] = statistics.median(first_touch)
        row["first_touch_floor_share"] = row["first_touch_floor_seconds"] / full_copy
        results.append(row)
        print(f"  {name}: {statistics.median(seconds):.2f}s ({share:.2%})", flush=True)
    del src, tgt
    return results


def change(pair: Pair, rows: int, every: int, mode: str, layout: str, tick: int) -> str:
    """Upsert: update 1 row in ``every`` (``scattered``: every ``every``-th key; ``recent``: the newest
    keys); append: add rows/every new ones. All with a newer watermark, spread over an hour (changes
    over time: the upsert's 1-second overlap re-reads a few rows, not all). Returns the updated keys
    as a condition on ``id`` (upsert)."""
    src = pair.source
    if mode == "upsert":
        if layout == "scattered":
            keys = f"id % {every} = {tick % every}"
        else:
            keys = f"id > {rows - rows // every} AND id <= {rows}"
        src.execute(
            "UPDATE app.bench_users SET payload = md5(payload), "
            "created_at = now() + %s * interval '1 day' + (id %% 3600) * interval '1 second' "
            f"WHERE {keys.replace('%', '%%')}",
            (tick,),
            dbname=SOURCE_DB,
        )
    else:
        keys = ""
        src.execute(
            "INSERT INTO app.bench_users SELECT m + g, 'new' || (m + g), md5(g::text), "
            "now() + %s * interval '1 day' + g * %s * interval '1 second' "
            "FROM (SELECT max(id) AS m FROM app.bench_users) x, generate_series(1, %s) g",
            (tick, 3600 / (rows // every), rows // every),
            dbname=SOURCE_DB,
        )
    src.execute("ANALYZE app.bench_users", dbname=SOURCE_DB)
    return keys


def pages_touched(pair: Pair, keys: str) -> float:
    """The share of the TARGET's pages that hold a row the upsert will update (before it runs): the
    merge reads and rewrites each of them, in key order, not sequentially."""
    return float(
        pair.target.execute(
            f"SELECT count(DISTINCT (ctid::text::point)[0]) / greatest(1, pg_relation_size('{OUT}') "
            f"/ current_setting('block_size')::int)::float FROM {OUT} WHERE {keys}",
            dbname=TARGET_DB,
        )[0][0]
    )


def floor(pair: Pair, tick: int, keys: str, direct: bool, mode: str) -> tuple[float, float]:
    """The physical work of copying this change, measured on the servers themselves (module docstring):
    reading the changed rows on the source plus writing as many rows on the target (an upsert's at the
    same keys); and the path floor: the same write plus moving the rows through the copy's transport."""
    condition = changed_rows(pair, tick)
    read = server_seconds(pair.source, source_read(condition), SOURCE_DB)
    if direct:
        moved = copy_out_seconds(pair, source_read(condition))
    else:
        moved = server_seconds(
            pair.target, f"SELECT {COLUMNS} FROM {FLOOR_TABLE} WHERE {condition}", TARGET_DB
        )
    if mode == "upsert":  # new values for the same keys, as the change made them on the source
        rows = f"SELECT id, email, md5(payload) AS payload, created_at FROM {OUT} WHERE {keys}"
    else:  # the appended rows again, under keys beyond the table's
        rows = f"SELECT id + 1000000000000 AS id, email, payload, created_at FROM {OUT} WHERE {condition}"
    connect, write = write_seconds(pair, rows, mode)
    return read + write, connect + moved + write


def first_touch_floor(pair: Pair, tick: int, mode: str) -> float:
    """The floor's read and write, each the first statement to touch the change's pages on its server."""
    condition = changed_rows(pair, tick)
    read = server_seconds(pair.source, source_read(condition), SOURCE_DB)
    return read + write_seconds(pair, f"SELECT {COLUMNS} FROM {FLOOR_TABLE} WHERE {condition}", mode)[1]


def source_read(condition: str) -> str:
    """The source's own read of the changed rows."""
    return f"SELECT {COLUMNS} FROM app.bench_users WHERE {condition}"


def changed_rows(pair: Pair, tick: int) -> str:
    """A condition selecting the rows of change ``tick`` (and none older), as a literal bound: a
    condition postgres_fdw sends to the source."""
    since = pair.source.execute(
        "SELECT (now() - interval '1 hour' + %s * interval '1 day')::text", (tick,), dbname=SOURCE_DB
    )[0][0]
    return f"created_at >= '{since}'::timestamptz"


def write_seconds(pair: Pair, rows: str, mode: str) -> tuple[float, float]:
    """Opening a session on the target, then its write of ``rows`` (a query over the target's
    database) from a temporary table: an upsert's ``INSERT … ON CONFLICT DO UPDATE`` in key order, an
    append's ``INSERT``; rolled back, the target stays equal to the source."""
    started = time.perf_counter()
    conn = pair.target.connect(TARGET_DB)
    connect = time.perf_counter() - started
    try:
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute(f"CREATE TEMP TABLE floor_rows AS {rows}")
        started = time.perf_counter()
        insert = f"INSERT INTO {OUT} AS t ({COLUMNS}) SELECT {COLUMNS} FROM floor_rows"
        if mode == "upsert":
            insert += (
                " ORDER BY id ON CONFLICT (id) DO UPDATE SET email = excluded.email, "
                "payload = excluded.payload, created_at = excluded.created_at"
            )
        cur.execute(insert)
        took = time.perf_counter() - started
        cur.execute("ROLLBACK")
        return connect, took
    finally:
        conn.close()


def copy_out_seconds(pair: Pair, query: str) -> float:
    """A binary ``COPY (query) TO STDOUT`` from the source, every chunk received and dropped; with the
    connection, as the foreign scan's time includes postgres_fdw's: every run opens one."""
    started = time.perf_counter()
    conn = pair.source.connect(SOURCE_DB)
    try:
        statement = f"COPY ({query}) TO STDOUT (FORMAT binary)"
        cursor = conn.cursor()
        if hasattr(cursor, "copy"):  # psycopg 3
            with cursor.copy(statement) as copy:
                for _ in copy:
                    pass
        else:  # psycopg2
            cursor.copy_expert(statement, Discard())
        return time.perf_counter() - started
    finally:
        conn.close()


class Discard:
    """A file that drops what is written to it."""

    def write(self, data: bytes) -> int:
        return len(data)


def check_equal(pair: Pair) -> None:
    diff = pair.target.execute(
        f"SELECT (SELECT count(*) FROM {OUT}) - (SELECT count(*) FROM proxy.{TABLE}), "
        f"(SELECT count(*) FROM {OUT} c JOIN proxy.{TABLE} s USING (id) WHERE c.payload <> s.payload)",
        dbname=TARGET_DB,
    )[0]
    if any(diff):
        raise SystemExit(f"the incremental copy left the target different from the source: {diff}")


def print_table(report: dict) -> None:
    index = "indexed" if report["source_index"] else "NOT indexed"
    print(
        f"\nIncremental copies of a {report['rows']:,}-row table (median of {report['repeat']}), "
        f"{report['date']}, {report['machine']}, source watermark column {index}"
    )
    print(
        f"{'method':46} {'seconds':>8} {'rows':>9} {'share':>8} {'target':>7}      "
        f"{'pages':>6} {'floor':>7} {'path floor':>10} {'1st touch':>9}  vs floor"
    )
    for r in report["results"]:
        if "share_of_full_copy" not in r:
            print(f"{r['method']:46} {r['seconds']:8.2f}")
            continue
        met = "ok" if r["met"] else "MISSED"
        pages = f"{r['pages_touched']:.1%}" if r.get("pages_touched") is not None else ""
        floor_share = f"{r['floor_share']:.2%}" if "floor_share" in r else ""
        path_share = f"{r['path_floor_share']:.2%}" if "path_floor_share" in r else ""
        first = f"{r['first_touch_floor_share']:.2%}" if "first_touch_floor_share" in r else ""
        versus = ""
        if "floor_seconds" in r:
            versus = f"{r['seconds'] / r['floor_seconds']:.2f}x"
            why = "" if r["met"] else below_floor(r)
            versus += f" ({why})" if why else ""
        print(
            f"{r['method']:46} {r['seconds']:8.2f} {r['rows']:9,.0f} {r['share_of_full_copy']:8.2%} "
            f"{r['target']:6.0%} {met:6} {pages:>6} {floor_share:>7} {path_share:>10} {first:>9}  {versus}"
        )


def markdown(report: dict) -> str:
    """The table of docs/performance.md, from a results file."""
    index = "indexed" if report["source_index"] else "not indexed"
    lines = [
        f"{report['rows']:,} rows, median of {report['repeat']}, {report['date']}, {report['machine']}, "
        f"source watermark column {index}.",
        "",
        "| method | seconds | rows | share of full copy | target | pages touched | floor (share) "
        "| path floor (share) | first-touch floor (share) | x first-touch floor |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        if "share_of_full_copy" not in r:
            lines.append(f"| {r['method']} | {r['seconds']:.2f} | | | | | | | | |")
            continue
        why = "" if r["met"] else below_floor(r)
        verdict = ("met" if r["met"] else "**not met**") + (f" ({why})" if why else "")
        cells = [
            f"{r['pages_touched']:.1%}" if r.get("pages_touched") is not None else "",
            *(f"{r[k]:.2%}" if k in r else "" for k in SHARES),
            f"{r['seconds'] / r['first_touch_floor_seconds']:.2f}" if SHARES[2] in r else "",
        ]
        lines.append(
            f"| {r['method']} | {r['seconds']:.2f} | {r['rows']:,.0f} | {r['share_of_full_copy']:.2%} | "
            f"≤ {r['target']:.0%}: {verdict} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


SHARES = ("floor_share", "path_floor_share", "first_touch_floor_share")


def below_floor(row: dict) -> str:
    """Why a missed target cannot be met here, if a floor proves it."""
    if row.get("floor_share", 0) > row["target"]:
        return "target below the floor: impossible here"
    if row.get("first_touch_floor_share", 0) > row["target"]:
        return "target below the first-touch floor: impossible here"
    if row.get("path_floor_share", 0) > row["target"]:
        return "target below the path floor: impossible on this path here"
    return ""


if __name__ == "__main__":
    sys.exit(main())
