"""Upsert statements benchmark: the upsert's merge statement against other ways to write the same
rows, on the same rows, in the same run (why the merge stays ``INSERT … ON CONFLICT``).

Generates ``--rows`` rows in a target table (bench/incremental.py's: bigint id primary key, email,
100-byte payload, timestamptz) and a staging table of ``--changed`` of them with new values, in two
layouts: ``recent`` (the newest keys: a few contiguous pages) and ``scattered`` (evenly spread keys:
a row on many pages). Then times, each in a transaction rolled back, after a VACUUM and a CHECKPOINT
(every variant pays the same full-page writes), in an order that rotates between rounds:

- ``ON CONFLICT (floor)``: ``INSERT … SELECT … ORDER BY id ON CONFLICT DO UPDATE``, the write that
  bench/incremental.py counts in an upsert's floor;
- ``provider upsert``: the statement the upsert's merge runs (``counted_upsert(upsert_from(…))``):
  the same, skipping rows already equal and counting what it inserted and updated;
- ``UPDATE FROM + INSERT``: a join update of the existing keys, then an anti-join insert of new keys;
- ``MERGE``: one ``MERGE`` (PostgreSQL 15), nested-loop joins (the planner's default here is a hash
  join over the whole target, many times slower).

Ratios are against the floor statement of the same layout in this run.

    python bench/upsert_statements.py [--rows 1000000] [--changed 0.01] [--repeat 5] [--json [PATH]]

Nothing is written unless ``--json`` is given (the results file is tracked).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from private_home import airflow_home

os.environ["AIRFLOW_HOME"] = airflow_home()
# The test harness (fdw_testing) lives in the repository, outside the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bulk_copy import add_json_option, new_report, write_report

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.names import QualifiedName
from fdw_testing.pgcluster import local_pair
from fdw_testing.sample_data import TARGET_DB, install_sample_data

TARGET = QualifiedName("public", "upsert_target")
STAGING = QualifiedName("public", "upsert_staging")
COLUMNS = ["id", "email", "payload", "created_at"]
KEYS = ["id"]
SET = "email = s.email, payload = s.payload, created_at = s.created_at"
CHANGED = "ROW(t.email, t.payload, t.created_at) IS DISTINCT FROM ROW(s.email, s.payload, s.created_at)"


def main() -> int:
    args = parse_args()
    with local_pair() as pair:
        install_sample_data(pair)
        target = pair.target
        target.execute(
            "CREATE TABLE public.upsert_target (id bigint PRIMARY KEY, email text NOT NULL, "
            "payload text NOT NULL, created_at timestamptz NOT NULL)",
            dbname=TARGET_DB,
        )
        target.execute(
            "INSERT INTO public.upsert_target SELECT g, 'user' || g || '@example.com', "
            "rpad(md5(g::text), 100, md5((g + 1)::text)), "
            "'2024-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, %s) g",
            (args.rows,),
            dbname=TARGET_DB,
        )
        target.execute("VACUUM ANALYZE public.upsert_target", dbname=TARGET_DB)
        image_equal = [c for (c,) in target.execute(q.IMAGE_EQUAL_COLUMNS_QUERY, (oid(target),), TARGET_DB)]
        results = []
        for layout in ("recent", "scattered"):
            stage(target, args.rows, args.changed, layout)
            results += time_statements(pair.target, statements(image_equal), layout, args.repeat)
    print(f"\n{'layout':<10} {'statement':<26} {'median s':>9} {'ratio to floor':>15}")
    for r in results:
        print(f"{r['layout']:<10} {r['method']:<26} {r['seconds']:>9.3f} {r['ratio_to_floor']:>15.2f}")
    write_report(new_report(args, results, changed=args.changed), args.json)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the target")
    parser.add_argument("--changed", type=float, default=0.01, help="share of the rows upserted")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (median reported)")
    add_json_option(parser, "bench/results/upsert_statements.json")
    args = parser.parse_args()
    if not 1_000 <= args.rows <= 20_000_000 or not 0 < args.changed <= 1:
        parser.error("--rows must be 1,000 to 20,000,000 and --changed in (0, 1]")
    return args


def oid(target: Any) -> int:
    return int(target.execute("SELECT 'public.upsert_target'::regclass::oid", dbname=TARGET_DB)[0][0])


def stage(target: Any, rows: int, changed: float, layout: str) -> None:
    """The staging table: ``changed`` of the keys with new payloads and timestamps."""
    count = max(1, int(rows * changed))
    keys = f"id > {rows - count}" if layout == "recent" else f"id % {max(1, rows // count)} = 0"
    target.execute("DROP TABLE IF EXISTS public.upsert_staging", dbname=TARGET_DB)
    target.execute(
        "CREATE UNLOGGED TABLE public.upsert_staging AS SELECT id, email, md5(payload) AS payload, "
        f"created_at + interval '1 day' AS created_at FROM public.upsert_target WHERE {keys}",
        dbname=TARGET_DB,
    )
    target.execute("ANALYZE public.upsert_staging", dbname=TARGET_DB)


def statements(image_equal: list[str]) -> dict[str, list[sql.Composable]]:
    t, s = sql.Identifier(*TARGET), sql.Identifier(*STAGING)
    floor = sql.SQL(
        "INSERT INTO {t} AS t (id, email, payload, created_at) SELECT id, email, payload, created_at "
        "FROM {s} ORDER BY id ON CONFLICT (id) DO UPDATE SET email = excluded.email, "
        "payload = excluded.payload, created_at = excluded.created_at"
    ).format(t=t, s=s)
    provider = q.counted_upsert(q.upsert_from(TARGET, STAGING, COLUMNS, KEYS, image_equal))
    update = sql.SQL("UPDATE {t} AS t SET " + SET + " FROM {s} AS s WHERE t.id = s.id AND " + CHANGED)
    insert = sql.SQL(
        "INSERT INTO {t} SELECT s.* FROM {s} AS s WHERE NOT EXISTS (SELECT FROM {t} AS t WHERE t.id = s.id)"
    )
    merge = sql.SQL(
        "MERGE INTO {t} AS t USING (SELECT * FROM {s} ORDER BY id) AS s ON t.id = s.id "
        "WHEN MATCHED AND " + CHANGED + " THEN UPDATE SET " + SET + " "
        "WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.email, s.payload, s.created_at)"
    )
    nested_loops = [sql.SQL("SET LOCAL enable_hashjoin = off"), sql.SQL("SET LOCAL enable_mergejoin = off")]
    return {
        "ON CONFLICT (floor)": [floor],
        "provider upsert": [provider],
        "UPDATE FROM + INSERT": [update.format(t=t, s=s), insert.format(t=t, s=s)],
        "MERGE": [*nested_loops, merge.format(t=t, s=s)],
    }


def time_statements(
    target: Any, variants: dict[str, list[sql.Composable]], layout: str, repeat: int
) -> list[dict]:
    names = list(variants)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    conn = target.connect(TARGET_DB)  # autocommit: VACUUM and CHECKPOINT outside a transaction
    try:
        cur = conn.cursor()
        for round_ in range(repeat):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                cur.execute("VACUUM public.upsert_target")
                cur.execute("CHECKPOINT")
                cur.execute("BEGIN")
                started = time.perf_counter()
                for statement in variants[name]:
                    cur.execute(statement)
                seconds[name].append(time.perf_counter() - started)
                cur.execute("ROLLBACK")  # the next variant writes the same rows
    finally:
        conn.close()
    floor = statistics.median(seconds[names[0]])
    return [
        {
            "layout": layout,
            "method": name,
            "seconds": statistics.median(seconds[name]),
            "runs": seconds[name],
            "ratio_to_floor": statistics.median(seconds[name]) / floor,
        }
        for name in names
    ]


if __name__ == "__main__":
    sys.exit(main())
