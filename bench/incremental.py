"""Incremental-copy benchmark: upsert and append of 1% and 0.1% of a table, as a share of a full copy.

Starts a fresh source/target pair, generates ``--rows`` rows (the table of bench/bulk_copy.py, with an
index on the watermark column ``created_at`` on the source unless ``--no-source-index``), times a full
copy (mode replace) on each path, then changes 1% / 0.1% of the source and times the upsert / append
that copies the change. Every share is against the full copy on the same path, in the same run.

    python bench/incremental.py [--rows 1000000] [--repeat 3] [--paths fdw,direct] [--json FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="fdw-bench-airflow-"))
# The test harness (fdw_testing) lives in the repository, outside the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
OUT = "public.copy_out"
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


def main() -> int:
    args = parse_args()
    with local_pair() as pair:
        install_sample_data(pair)
        set_airflow_connections(pair)
        setup(pair, args.rows, args.source_index)
        results = []
        for path in args.paths.split(","):
            results += run_path(pair, args, path == "direct")
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": args.rows,
        "repeat": args.repeat,
        "source_index": args.source_index,
        "results": results,
    }
    print_table(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwritten to {args.json}")
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
    src.execute("SELECT count(*) FROM app.bench_users", dbname=SOURCE_DB)  # warm-up: every page read once
    tgt.execute("SELECT 1", dbname=TARGET_DB)


def copy(mode: str, direct: bool, **kwargs: object) -> tuple[float, dict]:
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
        result = hook.bulk_copy(plan)
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
    for every in TARGETS:
        for mode in ("upsert", "append"):
            seconds, copied = [], []
            kwargs: dict = {"watermark_column": "created_at"}
            if mode == "upsert":
                kwargs["overlap"] = "1 second"
            # The first incremental run after a replace records the watermark: unrecorded.
            copy(mode, direct, **kwargs)
            pages = []
            for _ in range(args.repeat):
                tick = next(TICKS)
                change(pair, args.rows, every, mode, tick)
                pages.append(pages_touched(pair, every, tick) if mode == "upsert" else None)
                took, result = copy(mode, direct, **kwargs)
                seconds.append(took)
                copied.append(result["rows"])
            check_equal(pair)
            share = statistics.median(seconds) / full_copy
            name = f"{mode} {100 / every:g}% changed ({path})"
            results.append(
                {
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
            )
            print(f"  {name}: {statistics.median(seconds):.2f}s ({share:.2%})", flush=True)
    del src, tgt
    return results


def change(pair: Pair, rows: int, every: int, mode: str, tick: int) -> None:
    """Upsert: update every ``every``-th row; append: add rows/every new ones. All with a newer watermark,
    spread over an hour (changes over time: the upsert's 1-second overlap re-reads a few rows, not all)."""
    src = pair.source
    if mode == "upsert":
        src.execute(
            "UPDATE app.bench_users SET payload = md5(payload), "
            "created_at = now() + %s * interval '1 day' + (id %% 3600) * interval '1 second' "
            "WHERE id %% %s = %s",
            (tick, every, tick % every),
            dbname=SOURCE_DB,
        )
    else:
        src.execute(
            "INSERT INTO app.bench_users SELECT m + g, 'new' || (m + g), md5(g::text), "
            "now() + %s * interval '1 day' + g * %s * interval '1 second' "
            "FROM (SELECT max(id) AS m FROM app.bench_users) x, generate_series(1, %s) g",
            (tick, 3600 / (rows // every), rows // every),
            dbname=SOURCE_DB,
        )
    src.execute("ANALYZE app.bench_users", dbname=SOURCE_DB)


def pages_touched(pair: Pair, every: int, tick: int) -> float:
    """The share of the TARGET's pages that hold a row the upsert will update (before it runs): the
    merge reads and rewrites each of them, in key order, not sequentially."""
    return float(
        pair.target.execute(
            f"SELECT count(DISTINCT (ctid::text::point)[0]) / greatest(1, pg_relation_size('{OUT}') "
            f"/ current_setting('block_size')::int)::float FROM {OUT} WHERE id %% %s = %s",
            (every, tick % every),
            dbname=TARGET_DB,
        )[0][0]
    )


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
        f"{report['date']}, source watermark column {index}"
    )
    print(f"{'method':44} {'seconds':>8} {'rows':>9} {'share':>8} {'target':>7}      pages touched")
    for r in report["results"]:
        if "share_of_full_copy" not in r:
            print(f"{r['method']:44} {r['seconds']:8.2f}")
            continue
        met = "ok" if r["met"] else "MISSED"
        pages = f"{r['pages_touched']:.1%}" if r.get("pages_touched") is not None else ""
        print(
            f"{r['method']:44} {r['seconds']:8.2f} {r['rows']:9,.0f} {r['share_of_full_copy']:8.2%} "
            f"{r['target']:6.0%} {met:6} {pages:>8}"
        )


if __name__ == "__main__":
    sys.exit(main())
