"""In-place replace benchmark: the diff apply against the DELETE + INSERT exchange it replaced, same run.

Starts a fresh pair, generates ``--rows`` rows (bigint id PK, email with an index, 100-byte payload,
timestamptz), copies them once, then for each scenario (nothing changed, 1% of rows changed, every
row changed) times whole ``replace`` copies through FdwHook.bulk_copy:

- ``in_place diff``: ``swap="in_place"`` (delete vanished keys, update changed rows, insert new keys);
- ``DELETE+INSERT``: the same copy with the apply replaced by the old exchange (delete every row,
  insert every row) — what an in-place replace did before;
- ``rename``: ``swap="rename"`` (staging with indexes built after the load, renamed in).

Before every timed run the target is reset to the previous state (not timed) and vacuumed. Ratios are
against the in-place diff of the same scenario in this run; compare ratios, not seconds across runs.

    python bench/inplace_apply.py [--rows 200000] [--repeat 3] [--json [PATH]]

Nothing is written unless ``--json`` is given (the results file is tracked).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from private_home import airflow_home

os.environ["AIRFLOW_HOME"] = airflow_home()
# The test harness (fdw_testing) lives in the repository, outside the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bulk_copy import add_json_option, new_report, write_report

from airflow_provider_fdw.compat import sql
from fdw_testing.pgcluster import Pair, local_pair
from fdw_testing.sample_data import (
    READER,
    SOURCE_DB,
    TARGET_DB,
    install_sample_data,
    set_airflow_connections,
)

TARGET = "public.users_copy"
SCENARIOS = {
    "nothing changed": None,
    "1% of rows changed": "UPDATE app.bench_users SET payload = md5(payload) WHERE id % 100 = 0",
    "every row changed": "UPDATE app.bench_users SET payload = md5(payload)",
}


def main() -> int:
    args = parse_args()
    with local_pair() as pair:
        install_sample_data(pair)
        set_airflow_connections(pair)
        setup(pair, args.rows)
        results = run_all(pair, args)
    report = new_report(args, results)
    print(f"\n{'scenario':<22} {'method':<16} {'median s':>9} {'ratio to diff':>14}")
    for r in results:
        print(f"{r['scenario']:<22} {r['method']:<16} {r['seconds']:>9.2f} {r['ratio_to_diff']:>14.2f}")
    write_report(report, args.json)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="rows to generate")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per method (median reported)")
    add_json_option(parser, "bench/results/inplace_apply.json")
    args = parser.parse_args()
    if not 1_000 <= args.rows <= 5_000_000:
        parser.error("--rows must be between 1,000 and 5,000,000")
    return args


def setup(pair: Pair, rows: int) -> None:
    src = pair.source
    src.execute(
        "CREATE TABLE app.bench_users (id bigint PRIMARY KEY, email text NOT NULL, payload text NOT NULL, "
        "created_at timestamptz NOT NULL)",
        dbname=SOURCE_DB,
    )
    src.execute(
        "INSERT INTO app.bench_users SELECT g, 'user' || g || '@example.com', "
        "rpad(md5(g::text), 100, md5((g + 1)::text)), '2024-01-01'::timestamptz + g * interval '1 second' "
        f"FROM generate_series(1, {int(rows)}) g",
        dbname=SOURCE_DB,
    )
    src.execute("VACUUM ANALYZE app.bench_users", dbname=SOURCE_DB)
    src.execute(
        sql.SQL("GRANT SELECT ON app.bench_users TO {}").format(sql.Identifier(READER)), dbname=SOURCE_DB
    )
    from airflow_provider_fdw.hooks.fdw import FdwHook

    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.ensure_extension()
        hook.create_server("bench_src")
        hook.create_user_mapping("bench_src")
        hook.import_foreign_schema("bench_src", "app", "proxy", limit_to=["bench_users"])
    copy("rename")()
    pair.target.execute("CREATE INDEX users_copy_email ON public.users_copy (email)", dbname=TARGET_DB)


def copy(swap: str) -> Callable[[], dict]:
    def run() -> dict:
        from airflow_provider_fdw.bulkcopy import plan_copy
        from airflow_provider_fdw.hooks.fdw import FdwHook

        plan = plan_copy("proxy.bench_users", TARGET, key_columns=["id"], swap=swap)
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            return hook.bulk_copy(plan)

    return run


def delete_insert() -> dict:
    """The in-place exchange before the diff apply: every row deleted and inserted again."""
    from airflow_provider_fdw import sql as q
    from airflow_provider_fdw.bulkcopy import apply

    def exchange(s: Any, staging: Any, target: Any, *args: Any) -> Any:
        deleted = s.execute("clear", sql.SQL("DELETE FROM {}").format(sql.Identifier(*target))).rowcount
        columns = args[3]  # diff_apply(s, staging, target, oid, relkind, key_columns, columns, staged_rows)
        inserted = s.execute("fill", q.insert_select(target, columns, staging)).rowcount
        return apply.ApplyCounts(inserted, 0, deleted, 0)

    original = apply.diff_apply
    apply.diff_apply = exchange
    try:
        return copy("in_place")()
    finally:
        apply.diff_apply = original


def run_all(pair: Pair, args: argparse.Namespace) -> list[dict]:
    tgt = pair.target
    methods = [
        ("in_place diff", copy("in_place")),
        ("DELETE+INSERT", delete_insert),
        ("rename", copy("rename")),
    ]
    results = []
    for scenario, change in SCENARIOS.items():
        # The state every timed run starts from: the target as the previous copy left it.
        tgt.execute("DROP TABLE IF EXISTS public.users_before", dbname=TARGET_DB)
        tgt.execute("CREATE TABLE public.users_before AS SELECT * FROM public.users_copy", dbname=TARGET_DB)
        if change:
            pair.source.execute(change, dbname=SOURCE_DB)
        seconds: dict[str, list[float]] = {name: [] for name, _ in methods}
        written: dict[str, dict] = {}
        for _ in range(args.repeat):
            for name, method in methods:  # interleaved: a noisy minute hurts every method alike
                tgt.execute("TRUNCATE public.users_copy", dbname=TARGET_DB)
                tgt.execute(
                    "INSERT INTO public.users_copy SELECT * FROM public.users_before", dbname=TARGET_DB
                )
                tgt.execute("VACUUM ANALYZE public.users_copy", dbname=TARGET_DB)
                started = time.perf_counter()
                summary = method()
                seconds[name].append(time.perf_counter() - started)
                if summary["rows"] != args.rows:
                    raise SystemExit(f"{name} copied {summary['rows']} rows, expected {args.rows}")
                written[name] = {k: summary[k] for k in ("inserted", "updated", "deleted")}
        for name, _ in methods:
            median = statistics.median(seconds[name])
            results.append(
                {
                    "scenario": scenario,
                    "method": name,
                    "seconds": median,
                    "runs": seconds[name],
                    "written": written[name],
                }
            )
            print(f"  {scenario}, {name}: {median:.2f}s {written[name]}", flush=True)
        diff = next(
            r["seconds"] for r in results if r["scenario"] == scenario and r["method"] == "in_place diff"
        )
        for r in results:
            if r["scenario"] == scenario:
                r["ratio_to_diff"] = r["seconds"] / diff
    return results


if __name__ == "__main__":
    sys.exit(main())
