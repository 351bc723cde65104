"""Mirror mode benchmark: mirror runs against a full replace of the same table, measured in the same run.

Starts a fresh pair, generates ``--rows`` rows (bigint id PK, email with an index, 100-byte payload,
timestamptz), copies them once, then times, for each ``transport`` (``fdw``: through postgres_fdw, the
default; ``copy``: the direct connection):

- ``full replace``: a whole ``replace`` copy (the baseline every ratio of that transport is against);
- ``mirror, nothing changed``: a mirror run when source and target are equal;
- ``mirror, 0.1% changed``: a mirror run after 0.1% of the source rows changed (a third updated, a
  third deleted, a third inserted, at random keys).

After every mirror run the target is checked equal to the source by a full checksum computed
independently of the mirror (md5 of each row's text form, on each server directly). Targets (issue 16):
0.1% changed <= 10% of a full replace, nothing changed <= 5%.

Floors, what any mirror comparing contents does at least (the servers' execution times from
``EXPLAIN ANALYZE``: no connection, client or network):

- ``hash every source row``: one pass over the source computing the mirror's own row hashes;
- ``hash both sides at once``: that pass over the source and over the target side by side (the two
  servers share this machine's cores), the later of the two; every comparison of contents reads both;
- ``write the changed rows``: the target's own delete, update and insert of as many rows as a 0.1%
  change (rolled back); the changed mirror writes them after comparing.

A target below its floor (both sides at once, plus the writes when rows changed) cannot be met here
by comparing contents; the mirror's distance to the floor is what its own work costs.

``--key email`` mirrors by the unique ``email`` column instead of the integer ``id``: a key that is
not one integer column is bucketed by its hash (the scenario names say "text key").

    python bench/mirror.py [--rows 1000000] [--repeat 3] [--key id|email] [--json bench/results/mirror.json]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from private_home import airflow_home

os.environ["AIRFLOW_HOME"] = airflow_home()
# The test harness (fdw_testing) lives in the repository, outside the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bulk_copy import new_report, server_seconds, write_report
from inplace_apply import TARGET, setup

from fdw_testing.pgcluster import Pair, local_pair
from fdw_testing.sample_data import SOURCE_DB, TARGET_DB, install_sample_data, set_airflow_connections

SOURCE = "proxy.bench_users"
TRANSPORTS = {"fdw": "", "copy": ", direct"}  # the scenario names' suffix per transport
TARGETS = {"mirror, 0.1% changed": 0.10, "mirror, nothing changed": 0.05}
# An independent full checksum: md5 of each row's text form, same settings on both servers.
FULL_CHECKSUM = (
    "SELECT count(*), sum(('x' || substr(md5(ROW(t.*)::text), 1, 15))::bit(60)::int8) FROM {} AS t"
)


def main() -> int:
    args = parse_args()
    with local_pair() as pair:
        install_sample_data(pair)
        set_airflow_connections(pair)
        setup(pair, args.rows)
        if args.key != "id":  # a replace keeps it (the staging table is created LIKE the target)
            pair.target.execute(
                f"CREATE UNIQUE INDEX users_copy_{args.key}_key ON {TARGET} ({args.key})", dbname=TARGET_DB
            )
        results = run_all(pair, args)
    report = new_report(args, results)
    print(f"\n{'scenario':<46} {'median s':>9} {'ratio to replace':>17} {'target':>8} {'met':>5}  details")
    for r in results:
        target = TARGETS.get(r["scenario"].replace(", direct", "").replace(", text key", ""))
        met = "" if target is None else ("yes" if r["ratio_to_replace"] <= target else "no")
        details = r.get("details", "")
        if met == "no" and r["floor_ratio"] > target:
            details = f"target below the floor ({r['floor_ratio']:.3f}): impossible here; {details}"
        print(
            f"{r['scenario']:<46} {r['seconds']:>9.2f} {r['ratio_to_replace']:>17.3f} "
            f"{'' if target is None else f'<= {target:.2f}':>8} {met:>5}  {details}"
        )
    write_report(report, args.json)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--key", choices=["id", "email"], default="id")
    parser.add_argument("--json", default=None)
    return parser.parse_args()


def run_all(pair: Pair, args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = random.Random(16)
    replace = {
        transport: statistics.median(timed(full_replace, transport)[0] for _ in range(args.repeat))
        for transport in TRANSPORTS
    }
    # The new table's autovacuum (a pass over all of it, started after the replace) would otherwise
    # run during the mirrors: they are timed as a scheduled mirror runs, on a settled table.
    pair.target.execute(f"VACUUM ANALYZE {TARGET}", dbname=TARGET_DB)
    runs: dict[tuple[str, str], list[tuple[float, dict]]] = {}
    for _ in range(args.repeat):
        for transport in TRANSPORTS:
            # A scheduled mirror follows an earlier run of itself, whose record of the source's change
            # counters the direct path reads first (the other transport's runs changed the source).
            mirror(transport, args.key)
            seconds, summary = timed(mirror, transport, args.key)
            check_equal(pair)
            assert summary["rows_fetched"] == 0, summary
            runs.setdefault((transport, "mirror, nothing changed"), []).append((seconds, summary))
            change_source(pair, args.rows, rng)
            seconds, summary = timed(mirror, transport, args.key)
            check_equal(pair)
            runs.setdefault((transport, "mirror, 0.1% changed"), []).append((seconds, summary))
    row_hash = source_row_hash()
    source_pass = min(
        server_seconds(pair.source, hashing(row_hash, SOURCE_TABLE), SOURCE_DB) for _ in range(3)
    )
    both_sides = min(both_sides_at_once(pair, row_hash) for _ in range(3))
    writes = min(write_floor(pair, args.rows, rng) for _ in range(3))
    results = []
    for transport in TRANSPORTS:

        def row(
            name: str, seconds: float, floor: float = 0.0, transport: str = transport, **extra: Any
        ) -> dict[str, Any]:
            baseline = replace[transport]
            key = "" if args.key == "id" or "mirror" not in name else ", text key"
            return {
                "scenario": f"{name}{key}{TRANSPORTS[transport]}",
                "transport": transport,
                "seconds": seconds,
                "ratio_to_replace": seconds / baseline,
                "ratio_to_fdw_replace": seconds / replace["fdw"],
                "floor_ratio": floor / baseline,
                **extra,
            }

        results.append(row("full replace", replace[transport]))
        results.append(row("floor: hash every source row", source_pass))
        results.append(row("floor: hash both sides at once", both_sides))
        results.append(row("floor: write the changed rows", writes))
        for name in ("mirror, nothing changed", "mirror, 0.1% changed"):
            measured = runs[(transport, name)]
            seconds = statistics.median(s for s, _ in measured)
            floor = both_sides + (0.0 if "nothing" in name else writes)
            last = measured[-1][1]
            details = (
                f"{seconds / floor:.1f}x floor, {seconds / replace['fdw']:.3f} of the fdw replace; "
                f"ins/upd/del {last['inserted']}/{last['updated']}/{last['deleted']}, "
                f"fetched {last['rows_fetched']}, {last['levels']} levels, "
                f"{last['buckets_compared']} buckets; target = source (full checksum)"
            )
            results.append(row(name, seconds, floor, times_floor=seconds / floor, details=details))
    return results


SOURCE_TABLE = "app.bench_users"


def source_row_hash() -> str:
    """The mirror's own row hash of the source's columns (the same expression on both sides)."""
    from airflow_provider_fdw.bulkcopy.mirror_compare import hash_kinds
    from airflow_provider_fdw.catalog import read_columns, read_oid
    from airflow_provider_fdw.hooks.fdw import FdwHook
    from airflow_provider_fdw.names import parse_qualified_name
    from airflow_provider_fdw.sql import mirror as mq

    source = parse_qualified_name(SOURCE, "source")
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        s = hook.session
        with s.transaction():
            columns = list(read_columns(s, source))
            kinds = hash_kinds(s, read_oid(s, source, "source"), columns, source)
            return s.render(mq.row_hash_expr(columns, kinds))


def hashing(row_hash: str, table: str) -> str:
    return f"SELECT count(*), sum({row_hash}) FROM {table}"


def both_sides_at_once(pair: Pair, row_hash: str) -> float:
    """One hashing pass over the source and one over the target, side by side: the later one."""
    with ThreadPoolExecutor(2) as pool:
        target = pool.submit(server_seconds, pair.target, hashing(row_hash, TARGET), TARGET_DB)
        source = server_seconds(pair.source, hashing(row_hash, SOURCE_TABLE), SOURCE_DB)
        return max(source, target.result())


def write_floor(pair: Pair, rows: int, rng: random.Random) -> float:
    """The target's own writes of a 0.1% change (as many deletes, updates and inserts), rolled back."""
    n = max(3, rows // 1000) // 3
    top = int(pair.target.execute(f"SELECT max(id) FROM {TARGET}", dbname=TARGET_DB)[0][0])
    ids = rng.sample(range(1, rows + 1), 2 * n)
    conn = pair.target.connect(TARGET_DB, autocommit=False)
    try:
        cur = conn.cursor()
        started = time.monotonic()
        cur.execute(f"DELETE FROM {TARGET} WHERE id = ANY(%s)", (ids[n:],))
        cur.execute(f"UPDATE {TARGET} SET payload = md5(payload) WHERE id = ANY(%s)", (ids[:n],))
        cur.execute(
            f"INSERT INTO {TARGET} SELECT g, 'new' || g || '@example.com', md5(g::text), now() "
            "FROM generate_series(%s::int8, %s::int8) g",
            (top + 1, top + n),
        )
        seconds = time.monotonic() - started
        conn.rollback()
    finally:
        conn.close()
    return seconds


def timed(run: Callable[..., dict], *args: Any) -> tuple[float, dict]:
    started = time.monotonic()
    summary = run(*args)
    return time.monotonic() - started, summary


def full_replace(transport: str) -> dict:
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.hooks.fdw import FdwHook

    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(SOURCE, TARGET, key_columns=["id"], transport=transport))


def mirror(transport: str, key: str) -> dict:
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.hooks.fdw import FdwHook

    keys = None if key == "id" else [key]  # the primary key, or another unique column
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        summary = hook.bulk_copy(
            plan_copy(SOURCE, TARGET, mode="mirror", key_columns=keys, transport=transport)
        )
    assert summary["path"] == ("fdw" if transport == "fdw" else "direct"), summary
    return summary


def change_source(pair: Pair, rows: int, rng: random.Random) -> None:
    """0.1% of the rows: a third updated, a third deleted, a third inserted (new keys)."""
    n = max(3, rows // 1000) // 3
    top = int(pair.source.execute("SELECT max(id) FROM app.bench_users", dbname=SOURCE_DB)[0][0])
    ids = rng.sample(range(1, rows + 1), 2 * n)
    pair.source.execute(
        "UPDATE app.bench_users SET payload = md5(payload) WHERE id = ANY(%s)", (ids[:n],), dbname=SOURCE_DB
    )
    pair.source.execute("DELETE FROM app.bench_users WHERE id = ANY(%s)", (ids[n:],), dbname=SOURCE_DB)
    pair.source.execute(
        "INSERT INTO app.bench_users SELECT g, 'new' || g || '@example.com', md5(g::text), now() "
        "FROM generate_series(%s::int8, %s::int8) g",
        (top + 1, top + n),
        dbname=SOURCE_DB,
    )


def check_equal(pair: Pair) -> None:
    # Both servers of the pair run with the same settings, so the rows' text forms compare.
    source = pair.source.execute(FULL_CHECKSUM.format("app.bench_users"), dbname=SOURCE_DB)
    target = pair.target.execute(FULL_CHECKSUM.format(TARGET), dbname=TARGET_DB)
    if source != target:
        raise SystemExit(f"target differs from source: {target} != {source}")


if __name__ == "__main__":
    raise SystemExit(main())
