"""Bulk-copy benchmark: BulkCopyOperator against the usual ways of moving a table, in the same run.

Starts a fresh source/target pair, generates ``--rows`` rows (bigint id, email, 100-byte payload,
timestamptz: ~166 MB per million), warms both servers up, then times every method ``--repeat``
times and reports the median. Every method produces the same table on the target; the ratio column
is each method's time over the local ceiling (CREATE TABLE AS from a local copy of the same data).
Machines here are noisy: compare ratios from one run, not seconds across runs.

    python bench/bulk_copy.py [--rows 1000000] [--repeat 3] [--json bench/results/bulk_copy.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="fdw-bench-airflow-"))
# The test harness (fdw_testing) lives in the repository, outside the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_provider_fdw._driver import sql
from fdw_testing.pgcluster import Pair, local_pair
from fdw_testing.sample_data import (
    READER,
    SOURCE_DB,
    TARGET_DB,
    install_sample_data,
    set_airflow_connections,
)

TABLE = "bench_users"
GENERATE = (
    "CREATE TABLE app.bench_users (id bigint PRIMARY KEY, email text NOT NULL, payload text NOT NULL, "
    "created_at timestamptz NOT NULL)",
    "INSERT INTO app.bench_users SELECT g, 'user' || g || '@example.com', "
    "rpad(md5(g::text), 100, md5((g + 1)::text)), '2024-01-01'::timestamptz + g * interval '1 second' "
    "FROM generate_series(1, {rows}) g",
    "VACUUM ANALYZE app.bench_users",
)


def main() -> int:
    args = parse_args()
    with local_pair() as pair:
        install_sample_data(pair)
        set_airflow_connections(pair)
        setup(pair, args.rows)
        results = run_all(pair, args)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "rows": args.rows,
        "repeat": args.repeat,
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
    parser.add_argument("--json", default="bench/results/bulk_copy.json", help="where to write the results")
    args = parser.parse_args()
    if not 1_000 <= args.rows <= 10_000_000:
        parser.error("--rows must be between 1,000 and 10,000,000")
    return args


def setup(pair: Pair, rows: int) -> None:
    src, tgt = pair.source, pair.target
    for statement in GENERATE:
        src.execute(statement.format(rows=rows), dbname=SOURCE_DB)
    src.execute(
        sql.SQL("GRANT SELECT ON app.bench_users TO {}").format(sql.Identifier(READER)), dbname=SOURCE_DB
    )
    from airflow_provider_fdw.hooks.fdw import FdwHook

    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.ensure_extension()
        # The naive baseline must use postgres_fdw's defaults, so this server carries no fetch_size.
        hook.create_server("bench_src", options=None)
        hook.create_user_mapping("bench_src")
        hook.import_foreign_schema("bench_src", "app", "proxy", limit_to=[TABLE])
    tgt.execute("ALTER SERVER bench_src OPTIONS (DROP fetch_size)", dbname=TARGET_DB)
    # The copies read proxy.bench_users; pg_dump and pgcopydb read app.bench_users on the source.
    tgt.execute("CREATE SCHEMA app", dbname=TARGET_DB)  # pg_dump and pgcopydb restore into app.bench_users
    # The local ceiling reads a local copy of the same rows.
    tgt.execute("CREATE TABLE public.local_copy AS SELECT * FROM proxy.bench_users", dbname=TARGET_DB)
    tgt.execute("VACUUM ANALYZE public.local_copy", dbname=TARGET_DB)
    # Warm-up: every page of both tables read once, and one unrecorded copy.
    src.execute("SELECT count(*) FROM app.bench_users", dbname=SOURCE_DB)
    bulk_copy(pair, "replace", 1)()


OUT = "public.copy_out"  # where most methods write
RESTORED = "app.bench_users"  # where pg_dump | psql and pgcopydb write (they keep the source's name)


def run_all(pair: Pair, args: argparse.Namespace) -> list[dict]:
    tgt = pair.target
    methods: list[tuple[str, Callable[[], object], str]] = [
        (
            "local ceiling: CREATE TABLE AS (local copy)",
            lambda: tgt.execute(
                "CREATE TABLE public.copy_out AS SELECT * FROM public.local_copy", dbname=TARGET_DB
            ),
            OUT,
        ),
        ("naive FDW: CREATE LIKE + INSERT SELECT (fetch_size 100)", lambda: naive_fdw(pair), OUT),
        ("pg_dump -t | psql (with PK)", lambda: pg_dump_psql(pair), RESTORED),
        ("COPY TO STDOUT | COPY FROM STDIN (psql pipe, binary)", lambda: copy_pipe(pair), OUT),
    ]
    if shutil.which("pgcopydb"):
        methods.append(("pgcopydb copy table-data", lambda: pgcopydb(pair), RESTORED))
    methods += [
        ("BulkCopyOperator replace, parallelism 1 (with PK)", bulk_copy(pair, "replace", 1), OUT),
        ("BulkCopyOperator replace, parallelism 2 (with PK)", bulk_copy(pair, "replace", 2), OUT),
        (
            "BulkCopyOperator replace direct, parallelism 1 (with PK)",
            bulk_copy(pair, "replace", 1, True),
            OUT,
        ),
        (
            "BulkCopyOperator replace direct, parallelism 2 (with PK)",
            bulk_copy(pair, "replace", 2, True),
            OUT,
        ),
    ]
    results = []
    for name, method, output in methods:
        seconds = []
        for _ in range(args.repeat):
            reset_output(pair, output)
            started = time.perf_counter()
            method()
            seconds.append(time.perf_counter() - started)
            check_output(pair, output, args.rows)
        reset_output(pair, output)
        results.append({"method": name, "seconds": statistics.median(seconds), "runs": seconds})
        print(f"  {name}: {statistics.median(seconds):.2f}s", flush=True)
    results.append(upsert_one_percent(pair, args))
    results.append(worker_memory(pair))
    ceiling = results[0]["seconds"]
    size_mb = table_mb(pair)
    full_copy = next(r["seconds"] for r in results if r["method"].startswith("BulkCopyOperator replace, par"))
    for r in results:
        if "seconds" in r:
            r["rows_per_s"] = r.get("rows", args.rows) / r["seconds"]
            r["mb_per_s"] = size_mb / r["seconds"] if "rows" not in r else None
            r["ratio_to_ceiling"] = r["seconds"] / ceiling
            r["ratio_to_full_copy"] = r["seconds"] / full_copy
    return results


def reset_output(pair: Pair, output: str) -> None:
    schema, name = output.split(".")
    pair.target.execute(
        sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, name)), dbname=TARGET_DB
    )


def check_output(pair: Pair, output: str, rows: int) -> None:
    schema, name = output.split(".")
    got = pair.target.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name)), dbname=TARGET_DB
    )[0][0]
    if got != rows:
        raise SystemExit(f"benchmark method wrote {got} rows to {output}, expected {rows}")


def naive_fdw(pair: Pair) -> None:
    pair.target.execute("CREATE TABLE public.copy_out (LIKE proxy.bench_users)", dbname=TARGET_DB)
    pair.target.execute("INSERT INTO public.copy_out SELECT * FROM proxy.bench_users", dbname=TARGET_DB)


def pg_dump_psql(pair: Pair) -> None:
    dump = subprocess.Popen(
        ["pg_dump", "--no-owner", "--no-acl", "-t", RESTORED, SOURCE_DB],
        env=pair.source.env(),
        stdout=subprocess.PIPE,
    )
    restore = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", TARGET_DB],
        env=pair.target.env(),
        stdin=dump.stdout,
        capture_output=True,
        check=False,
    )
    dump.wait()
    if restore.returncode != 0 or dump.returncode != 0:
        raise SystemExit(restore.stderr.decode())


def copy_pipe(pair: Pair) -> None:
    pair.target.execute("CREATE TABLE public.copy_out (LIKE proxy.bench_users)", dbname=TARGET_DB)
    out = subprocess.Popen(
        ["psql", "-X", "-q", "-d", SOURCE_DB, "-c", f"COPY {RESTORED} TO STDOUT (FORMAT binary)"],
        env=pair.source.env(),
        stdout=subprocess.PIPE,
    )
    load = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            TARGET_DB,
            "-c",
            "COPY public.copy_out FROM STDIN (FORMAT binary)",
        ],
        env=pair.target.env(),
        stdin=out.stdout,
        capture_output=True,
        check=False,
    )
    out.wait()
    if load.returncode != 0:
        raise SystemExit(load.stderr.decode())


def pgcopydb(pair: Pair) -> None:
    """pgcopydb copies table data into an existing table of the same name (schema made beforehand)."""
    pair.target.execute("CREATE TABLE app.bench_users (LIKE proxy.bench_users)", dbname=TARGET_DB)
    workdir = Path(tempfile.mkdtemp(prefix="fdw-bench-pgcopydb-"))
    (workdir / "filters.ini").write_text(f"[include-only-table]\n{RESTORED}\n")
    uri = "postgres://{user}@{host}:{port}/{db}"
    src, tgt = pair.source, pair.target
    cmd = [
        "pgcopydb",
        "copy",
        "table-data",
        "--not-consistent",
        "--table-jobs",
        "2",
        "--dir",
        str(workdir / "work"),
        "--filters",
        str(workdir / "filters.ini"),
        "--source",
        uri.format(user=src.superuser, host=src.host, port=src.port, db=SOURCE_DB),
        "--target",
        uri.format(user=tgt.superuser, host=tgt.host, port=tgt.port, db=TARGET_DB),
    ]
    proc = subprocess.run(
        cmd, env={**os.environ, "PGPASSWORD": src.password}, capture_output=True, check=False
    )
    shutil.rmtree(workdir, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.decode()[-2000:])


def bulk_copy(pair: Pair, mode: str, parallelism: int, direct: bool = False) -> Callable[[], dict]:
    def run() -> dict:
        from airflow_provider_fdw.bulkcopy import plan_copy
        from airflow_provider_fdw.hooks.fdw import FdwHook

        plan = plan_copy(
            f"proxy.{TABLE}", "public.copy_out", mode=mode, key_columns=["id"], parallelism=parallelism
        )
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            return hook.bulk_copy(plan, direct=direct)

    return run


def upsert_one_percent(pair: Pair, args: argparse.Namespace) -> dict:
    """Upsert after 1% of the source rows changed, against a full copy's time (same run)."""
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.hooks.fdw import FdwHook

    src = pair.source
    reset_output(pair, OUT)
    bulk_copy(pair, "replace", 1)()
    plan = plan_copy(
        f"proxy.{TABLE}",
        "public.copy_out",
        mode="upsert",
        key_columns=["id"],
        watermark_column="created_at",
        overlap="1 second",
    )
    seconds, changed = [], []
    for i in range(args.repeat):
        src.execute(
            "UPDATE app.bench_users SET payload = md5(payload), created_at = now() + %s * interval '1 day' "
            "WHERE id %% 100 = 0",
            (i + 1,),
            dbname=SOURCE_DB,
        )
        started = time.perf_counter()
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            result = hook.bulk_copy(plan)
        seconds.append(time.perf_counter() - started)
        changed.append(result["rows"])
    diff = pair.target.execute(
        "SELECT count(*) FROM public.copy_out c JOIN proxy.bench_users s USING (id) "
        "WHERE c.payload <> s.payload",
        dbname=TARGET_DB,
    )[0][0]
    if diff:
        raise SystemExit(f"upsert left {diff} rows different from the source")
    return {
        "method": "BulkCopyOperator upsert, 1% rows changed",
        "seconds": statistics.median(seconds),
        "runs": seconds,
        "rows": statistics.median(changed),
    }


def worker_memory(pair: Pair) -> dict:
    """Peak RSS of a worker process running the direct-path copy (data streams through it)."""
    code = (
        "import json, resource, sys\n"
        "from airflow_provider_fdw.bulkcopy import plan_copy\n"
        "from airflow_provider_fdw.hooks.fdw import FdwHook\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"plan = plan_copy('proxy.{TABLE}', 'public.copy_out', key_columns=['id'])\n"
        "with FdwHook(fdw_conn_id='fdw_source') as hook:\n"
        "    hook.bulk_copy(plan, direct=True)\n"
        "print(json.dumps([base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))\n"
    )
    reset_output(pair, OUT)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "method": "worker peak RSS, direct copy (MB): before -> after",
        "rss_mb_before": before / 1024,
        "rss_mb_after": after / 1024,
        "table_mb": table_mb(pair),
    }


def table_mb(pair: Pair) -> float:
    return float(pair.source.execute("SELECT pg_table_size('app.bench_users') / 1e6", dbname=SOURCE_DB)[0][0])


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}"


def print_table(report: dict) -> None:
    print(
        f"\nBulk copy of {report['rows']:,} rows (median of {report['repeat']}), {report['date']}, "
        f"{report['machine']}"
    )
    print(f"{'method':58} {'seconds':>8} {'rows/s':>11} {'MB/s':>7} {'x ceiling':>9}")
    for r in report["results"]:
        if "seconds" not in r:
            print(
                f"{r['method']:58} {r['rss_mb_before']:.0f} -> {r['rss_mb_after']:.0f} MB "
                f"(table {r['table_mb']:.0f} MB)"
            )
            continue
        mb = f"{r['mb_per_s']:7.1f}" if r["mb_per_s"] else f"{'':7}"
        extra = f"  ({r['ratio_to_full_copy']:.1%} of a full copy)" if "rows" in r else ""
        print(
            f"{r['method']:58} {r['seconds']:8.2f} {r['rows_per_s']:11,.0f} {mb} "
            f"{r['ratio_to_ceiling']:9.2f}{extra}"
        )


if __name__ == "__main__":
    sys.exit(main())
