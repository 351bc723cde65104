"""Bulk-copy benchmark: BulkCopyOperator against the usual ways of moving a table, in the same run.

Starts a fresh source/target pair, generates ``--rows`` rows (bigint id, email, 100-byte payload,
timestamptz: ~166 MB per million), warms both servers up, then times every method ``--repeat``
times and reports the median. Every method produces the same table on the target; the ratio column
is each method's time over the local ceiling (CREATE TABLE AS from a local copy of the same data).
The "physical replace" row (binary COPY pipe into a new table, then the same primary key) is the
work a replace cannot avoid: the direct path's targets are ratios to it. Each target of issue 13 is
printed next to its row (met / NOT met). CPU: the CPU seconds of both servers, the worker and its
children during a method, over its wall time (cores busy; this machine's cores bound any speed-up).
Per-step times of the BulkCopy runs come from the copy's own summary (``steps``).
Machines here are noisy: compare ratios from one run, not seconds across runs.

    python bench/bulk_copy.py [--rows 1000000] [--repeat 3] [--only TEXT] [--json [PATH]]

Nothing is written unless ``--json`` is given (default path bench/results/bulk_copy.json; the
results files are tracked).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from private_home import airflow_home

os.environ["AIRFLOW_HOME"] = airflow_home()
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
GENERATE = (
    "CREATE TABLE app.bench_users (id bigint NOT NULL, email text NOT NULL, payload text NOT NULL, "
    "created_at timestamptz NOT NULL)",
    "INSERT INTO app.bench_users SELECT g, 'user' || g || '@example.com', "
    "rpad(md5(g::text), 100, md5((g + 1)::text)), '2024-01-01'::timestamptz + g * interval '1 second' "
    "FROM generate_series(1, {rows}) g",
    "ALTER TABLE app.bench_users ADD PRIMARY KEY (id)",  # after the rows: quicker to set up
    "VACUUM ANALYZE app.bench_users",
)


def main() -> int:
    args = parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    with local_pair() as pair:
        install_sample_data(pair)
        set_airflow_connections(pair)
        setup(pair, args.rows)
        results = run_all(pair, args)
        memory = worker_memory(pair, args.rows, args.rss_relays) if wanted(args, "rss") else []
    report = new_report(args, results, worker_memory=memory)
    print_table(report)
    write_report(report, args.json)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate (up to 10,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per method (median reported)")
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated methods to run (the ceiling always runs): {', '.join(KEYS)}",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also time the FDW path at fetch_size 1,000 to 200,000 and parallelism 1 to 4",
    )
    parser.add_argument(
        "--rss-relays",
        default="psql,python",
        help="relays whose worker RSS is measured (psql: the default relay; python: rows pass through "
        "the worker process)",
    )
    add_json_option(parser, "bench/results/bulk_copy.json")
    parser.add_argument(
        "--markdown", metavar="JSON", help="print the tables of a results file as Markdown (no run)"
    )
    args = parser.parse_args()
    if not 1_000 <= args.rows <= 10_000_000:
        parser.error("--rows must be between 1,000 and 10,000,000")
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat must be between 1 and 20")
    args.only = {k.strip() for k in args.only.split(",")} if args.only else None
    args.rss_relays = [r.strip() for r in args.rss_relays.split(",") if r.strip()]
    if not set(args.rss_relays) <= {"psql", "python"}:
        parser.error("--rss-relays: psql and/or python")
    unknown = (args.only or set()) - set(KEYS)
    if unknown:
        parser.error(f"--only: unknown methods {sorted(unknown)}; choose from {', '.join(KEYS)}")
    return args


def wanted(args: argparse.Namespace, key: str) -> bool:
    return args.only is None or key in args.only or key == "ceiling"


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
    # The local ceiling reads a local copy of the same rows (made by the fastest way there is).
    copy_pipe(pair, into="public.local_copy")
    tgt.execute("VACUUM ANALYZE public.local_copy", dbname=TARGET_DB)
    # Warm-up: every page of both tables read once, and one unrecorded copy (the quickest path).
    src.execute("SELECT count(*) FROM app.bench_users", dbname=SOURCE_DB)
    bulk_copy(pair, "replace", 1, True)()
    reset_output(pair, OUT)


OUT = "public.copy_out"  # where most methods write
RESTORED = "app.bench_users"  # where pg_dump | psql and pgcopydb write (they keep the source's name)


@dataclass
class Method:
    key: str  # for --only and the targets
    name: str
    run: Callable[[], Any]
    output: str


KEYS = (
    "ceiling",
    "physical",
    "pipe",
    "pgcopydb",
    "pg_dump",
    "naive",
    "fdw1",
    "fdw2",
    "direct1",
    "direct2",
    "rss",
)


SWEEP_FETCH_SIZES = (1_000, 10_000, 50_000, 200_000)
SWEEP_PARALLELISM = (1, 2, 3, 4)


def sweep_methods(pair: Pair) -> list[Method]:
    """The FDW path's knobs, for choosing their defaults (docs/performance.md)."""
    found = [
        Method(
            f"fetch{size}",
            f"BulkCopy FDW, parallelism 1, fetch_size {size:,}",
            bulk_copy(pair, "replace", 1, fetch_size=size),
            OUT,
        )
        for size in SWEEP_FETCH_SIZES
    ]
    found += [
        Method(
            f"par{n}",
            f"BulkCopy FDW, parallelism {n}, fetch_size default",
            bulk_copy(pair, "replace", n),
            OUT,
        )
        for n in SWEEP_PARALLELISM
    ]
    return found


def methods(pair: Pair) -> list[Method]:
    tgt = pair.target
    found = [
        Method(
            "ceiling",
            "local ceiling: CREATE TABLE AS (local copy)",
            lambda: tgt.execute(
                "CREATE TABLE public.copy_out AS SELECT * FROM public.local_copy", dbname=TARGET_DB
            ),
            OUT,
        ),
        Method(
            "physical",
            "physical replace: binary COPY pipe + same PK",
            lambda: copy_pipe(pair, primary_key=True),
            OUT,
        ),
        Method("pipe", "binary COPY pipe (psql, no PK)", lambda: copy_pipe(pair), OUT),
    ]
    if shutil.which("pgcopydb"):
        found.append(Method("pgcopydb", "pgcopydb copy table-data (no PK)", lambda: pgcopydb(pair), RESTORED))
    found += [
        Method("pg_dump", "pg_dump -t | psql (PK)", lambda: pg_dump_psql(pair), RESTORED),
        Method("naive", "naive FDW: CREATE LIKE + INSERT SELECT", lambda: naive_fdw(pair), OUT),
        Method("fdw1", "BulkCopy replace, FDW, parallelism 1 (PK)", bulk_copy(pair, "replace", 1), OUT),
        Method("fdw2", "BulkCopy replace, FDW, parallelism 2 (PK)", bulk_copy(pair, "replace", 2), OUT),
        Method(
            "direct1",
            "BulkCopy replace, direct, parallelism 1 (PK)",
            bulk_copy(pair, "replace", 1, True),
            OUT,
        ),
        Method(
            "direct2",
            "BulkCopy replace, direct, parallelism 2 (PK)",
            bulk_copy(pair, "replace", 2, True),
            OUT,
        ),
    ]
    return found


def run_all(pair: Pair, args: argparse.Namespace) -> list[dict]:
    """Every method once per round, ``--repeat`` rounds: load from others on a shared machine then
    falls on all methods alike, which keeps the ratios of one run comparable."""
    chosen = [m for m in methods(pair) if wanted(args, m.key)]
    if args.sweep:
        chosen += sweep_methods(pair)
    timed: dict[str, dict[str, list]] = {
        m.key: {"seconds": [], "cpu": [], "machine": [], "steps": []} for m in chosen
    }
    for round_no in range(args.repeat):
        for method in chosen:
            reset_output(pair, method.output)
            cpu_before, machine_before = cpu_seconds(pair), machine_busy_seconds()
            started = time.perf_counter()
            outcome = method.run()
            elapsed = time.perf_counter() - started
            runs = timed[method.key]
            runs["seconds"].append(elapsed)
            runs["cpu"].append(cpu_seconds(pair) - cpu_before)
            runs["machine"].append((machine_busy_seconds() - machine_before) / elapsed)
            check_output(pair, method.output, args.rows)
            reset_output(pair, method.output)
            if isinstance(outcome, dict) and outcome.get("steps"):
                runs["steps"].append(outcome["steps"])
            print(f"  round {round_no + 1}: {method.name}: {elapsed:.2f}s", flush=True)
    results = []
    for method in chosen:
        runs = timed[method.key]
        result = {
            "key": method.key,
            "method": method.name,
            "seconds": statistics.median(runs["seconds"]),
            "runs": runs["seconds"],
            "cpu_seconds": statistics.median(runs["cpu"]),
            "cores_busy": statistics.median(c / w for c, w in zip(runs["cpu"], runs["seconds"], strict=True)),
            # every process of the machine (other users' too): near the core count = a contended run
            "machine_cores_busy": statistics.median(runs["machine"]),
        }
        if runs["steps"]:
            names = list(dict.fromkeys(n for run in runs["steps"] for n in run))
            result["steps"] = {n: statistics.median(run.get(n, 0.0) for run in runs["steps"]) for n in names}
            result["steps_runs"] = runs["steps"]
        results.append(result)
    ceiling = results[0]["seconds"]
    size_mb = table_mb(pair)
    for r in results:
        r["rows_per_s"] = r.get("rows", args.rows) / r["seconds"]
        r["mb_per_s"] = size_mb / r["seconds"] if "rows" not in r else None
        r["ratio_to_ceiling"] = r["seconds"] / ceiling
    add_targets(results, args.rows)
    return results


def add_targets(results: list[dict], rows: int) -> None:
    """Issue 13's targets, each next to its row: the measured value, the bound, met or not."""
    by_key = {r["key"]: r for r in results}

    def seconds(key: str) -> float | None:
        return by_key[key]["seconds"] if key in by_key else None

    cores = os.cpu_count() or 1
    physical, naive, fdw1 = seconds("physical"), seconds("naive"), seconds("fdw1")
    direct_bound = 1.10 if rows >= 10_000_000 else 1.25
    for r in results:
        target = None
        if r["key"] == "direct1" and physical:
            ratio = r["seconds"] / physical
            target = (f"{ratio:.2f}x physical replace, target <= {direct_bound:.2f}x", ratio <= direct_bound)
        elif r["key"] == "fdw1" and naive:
            ratio = r["seconds"] / naive
            target = (f"{ratio:.2f}x naive FDW, target <= 1.00x", ratio <= 1.0)
        elif r["key"] == "fdw2" and fdw1:
            speedup = fdw1 / r["seconds"]
            wanted_speedup = 0.75 * min(2, cores)
            # Parallelism can only use cores nobody else uses: say how busy the machine was meanwhile.
            target = (
                f"{speedup:.2f}x faster than parallelism 1, target >= {wanted_speedup:.2f}x "
                f"({cores} cores, machine busy {r['machine_cores_busy']:.2f} during the run)",
                speedup >= wanted_speedup,
            )
        if target is not None:
            r["target"] = {"text": target[0], "met": target[1]}


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


def copy_pipe(pair: Pair, primary_key: bool = False, into: str = OUT) -> None:
    """Binary COPY piped between two psql; with ``primary_key`` the physical work of a replace: the
    new table's primary key built after the load, as BulkCopy builds it."""
    table = sql.Identifier(*into.split("."))
    pair.target.execute(sql.SQL("CREATE TABLE {} (LIKE proxy.bench_users)").format(table), dbname=TARGET_DB)
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
            f"COPY {into} FROM STDIN (FORMAT binary)",
        ],
        env=pair.target.env(),
        stdin=out.stdout,
        capture_output=True,
        check=False,
    )
    out.wait()
    if load.returncode != 0:
        raise SystemExit(load.stderr.decode())
    if primary_key:
        pair.target.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(table), dbname=TARGET_DB)


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


def bulk_copy(
    pair: Pair, mode: str, parallelism: int, direct: bool = False, **plan_args: Any
) -> Callable[[], dict]:
    def run() -> dict:
        from airflow_provider_fdw.bulkcopy import plan_copy
        from airflow_provider_fdw.hooks.fdw import FdwHook

        plan = plan_copy(
            f"proxy.{TABLE}",
            "public.copy_out",
            mode=mode,
            key_columns=["id"],
            parallelism=parallelism,
            **plan_args,
        )
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            return hook.bulk_copy(plan, direct=direct)

    return run


WORKER = """
import json, os, resource, sys, threading
from pathlib import Path
from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.hooks.fdw import FdwHook

def children_peak(stop, peak):
    # ru_maxrss of RUSAGE_CHILDREN counts a child's forked Python image before its exec: read the
    # children's own high-water mark (VmHWM, reset by exec) while they run instead.
    me = str(os.getpid())
    while not stop.wait(0.05):
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            if fields.get("PPid", "").strip() == me and "VmHWM" in fields:
                peak[0] = max(peak[0], int(fields["VmHWM"].split()[0]) / 1024)

table, where, relay = sys.argv[1], sys.argv[2] or None, sys.argv[3]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stop, peak = threading.Event(), [0.0]
watcher = threading.Thread(target=children_peak, args=(stop, peak), daemon=True)
watcher.start()
plan = plan_copy(table, "public.copy_out", key_columns=["id"], where=where, transport="copy")
with FdwHook(fdw_conn_id="fdw_source") as hook:
    summary = hook.bulk_copy(plan, relay=relay)
stop.set()
watcher.join()
print(json.dumps({
    "rows": summary["rows"],
    "worker_before_mb": base / 1024,
    "worker_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "children_peak_mb": peak[0],
}))
"""


def worker_memory(pair: Pair, rows: int, relays: list[str]) -> list[dict]:
    """Peak RSS of a worker process (and of its largest child, a psql of the relay) copying a tenth of
    the table and all of it on the direct path, where the data streams through the worker."""
    found = []
    for relay in relays:
        for share in (rows // 10, rows):
            reset_output(pair, OUT)
            where = f"id <= {share}" if share < rows else ""
            out = subprocess.run(
                [sys.executable, "-c", WORKER, f"proxy.{TABLE}", where, relay],
                capture_output=True,
                text=True,
                check=False,
                env=os.environ,
            )
            if out.returncode != 0:
                raise SystemExit(out.stderr[-2000:])
            measured = {"relay": relay, **json.loads(out.stdout.strip().splitlines()[-1])}
            found.append(measured)
            print(
                f"  worker RSS, direct copy of {measured['rows']:,} rows, {relay} relay: "
                f"worker {measured['worker_peak_mb']:.0f} MB, largest child "
                f"{measured['children_peak_mb']:.0f} MB",
                flush=True,
            )
    reset_output(pair, OUT)
    return found


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (not idle or waiting for I/O), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pair: Pair) -> float:
    """CPU seconds used so far by both servers (postmaster, its live and ended children), this process
    and its ended children (psql, pg_dump, pgcopydb)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    postmasters = {pid for pid in (pair.source.postmaster_pid(), pair.target.postmaster_pid()) if pid}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile: its time is in its parent's cutime now
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid in postmasters:  # its own time and its reaped children's
            total += sum(int(v) for v in fields[11:15]) / tick
        elif ppid in postmasters:
            total += (int(fields[11]) + int(fields[12])) / tick
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def table_mb(pair: Pair) -> float:
    return float(pair.source.execute("SELECT pg_table_size('app.bench_users') / 1e6", dbname=SOURCE_DB)[0][0])


def server_seconds(cluster: Any, statement: str, dbname: str) -> float:
    """The server's own execution time of ``statement`` (``EXPLAIN ANALYZE``): no connection, client
    or transfer in it, so a floor measured this way is, if anything, low."""
    plan = cluster.execute(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {statement}", dbname=dbname)[0][0]
    plan = json.loads(plan) if isinstance(plan, str) else plan  # psycopg2 without a json adapter: text
    return float(plan[0]["Execution Time"]) / 1000


def new_report(args: argparse.Namespace, results: list[dict], **extra: Any) -> dict:
    """What every bench's results file holds: when, on what machine, with which --rows/--repeat."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "rows": args.rows,
        "repeat": args.repeat,
        **extra,
        "results": results,
    }


def add_json_option(parser: argparse.ArgumentParser, path: str) -> None:
    """``--json [PATH]``: write the results (a tracked file, ``path`` by default) only when given."""
    parser.add_argument(
        "--json",
        nargs="?",
        const=path,
        help="write the results (a tracked file) only when given (default path: %(const)s)",
    )


def write_report(report: dict, path: str | None) -> None:
    """Write a bench's results to ``path`` (tracked files change only when asked to: ``--json``)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwritten to {path}")


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
    print(
        f"{'method':50} {'seconds':>8} {'rows/s':>10} {'MB/s':>6} {'x ceil':>6} {'cpu s':>6} {'cores':>5}"
        f" {'machine':>7}  target"
    )
    for r in report["results"]:
        mb = f"{r['mb_per_s']:6.1f}" if r["mb_per_s"] else f"{'':6}"
        cores = (
            f"{r['cpu_seconds']:6.2f} {r['cores_busy']:5.2f} {r['machine_cores_busy']:7.2f}"
            if "cores_busy" in r
            else f"{'':20}"
        )
        target = r.get("target")
        verdict = f"  {'met' if target['met'] else 'NOT met'}: {target['text']}" if target else ""
        print(
            f"{r['method']:50} {r['seconds']:8.2f} {r['rows_per_s']:10,.0f} {mb} "
            f"{r['ratio_to_ceiling']:6.2f} {cores}{verdict}"
        )
    stepped = [r for r in report["results"] if r.get("steps")]
    if stepped:
        names = list(dict.fromkeys(n for r in stepped for n in r["steps"]))
        print("\nPer-step seconds of the BulkCopy runs (median):")
        print(f"{'method':50} " + " ".join(f"{n[:9]:>9}" for n in names))
        for r in stepped:
            print(f"{r['method']:50} " + " ".join(f"{r['steps'].get(n, 0.0):9.3f}" for n in names))
    for m in report.get("worker_memory", []):
        print(
            f"worker peak RSS, direct copy of {m['rows']:,} rows ({m['relay']} relay): worker "
            f"{m['worker_before_mb']:.0f} -> {m['worker_peak_mb']:.0f} MB, largest child "
            f"{m['children_peak_mb']:.0f} MB"
        )


def markdown(report: dict) -> str:
    """The tables of docs/performance.md, from a results file."""
    lines = [
        f"{report['rows']:,} rows, median of {report['repeat']}, {report['date']}, {report['machine']}.",
        "",
        "| method | seconds | rows/s | x ceiling | CPU s | cores busy | machine busy | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["results"]:
        target = r.get("target")
        verdict = f"{'met' if target['met'] else '**not met**'}: {target['text']}" if target else ""
        cpu = (
            f"{r['cpu_seconds']:.2f} | {r['cores_busy']:.2f} | {r['machine_cores_busy']:.2f}"
            if "cpu_seconds" in r
            else " | | "
        )
        name = r["method"].replace("|", "\\|")  # a pipe in a Markdown table cell
        lines.append(
            f"| {name} | {r['seconds']:.2f} | {r['rows_per_s']:,.0f} | "
            f"{r['ratio_to_ceiling']:.2f} | {cpu} | {verdict} |"
        )
    stepped = [r for r in report["results"] if r.get("steps")]
    if stepped:
        names = list(dict.fromkeys(n for r in stepped for n in r["steps"]))
        lines += ["", "Per step (seconds, median):", "", "| method | " + " | ".join(names) + " |"]
        lines.append("| --- |" + " ---: |" * len(names))
        for r in stepped:
            cells = " | ".join(f"{r['steps'].get(n, 0.0):.3f}" for n in names)
            lines.append(f"| {r['method']} | {cells} |")
    if report.get("worker_memory"):
        lines += [
            "",
            "| worker peak RSS, direct copy | relay | worker before | worker peak | largest child |",
            "| ---: | --- | ---: | ---: | ---: |",
        ]
        for m in report["worker_memory"]:
            lines.append(
                f"| {m['rows']:,} rows | {m['relay']} | {m['worker_before_mb']:.0f} MB | "
                f"{m['worker_peak_mb']:.0f} MB | {m['children_peak_mb']:.0f} MB |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
