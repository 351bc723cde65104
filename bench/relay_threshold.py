"""Where the direct path's in-process relay stops paying: one-range appends of n rows, both relays.

A one-range direct load goes through two ``psql`` children (``relay="psql"``) or through the worker
process (``relay="python"``). ``relay="auto"`` relays in-process the loads the remote estimates at up
to ``load.SMALL_LOAD_ROWS`` rows. This bench starts a fresh pair with the table of
bench/incremental.py, then for each size appends that many new source rows and times the whole
incremental run (``mode="append"``) through each relay, alternating, ``--repeat`` times. It prints
the medians and the ratio psql / in-process: above 1, the in-process relay is faster at that size.

    python bench/relay_threshold.py [--rows 1000000] [--sizes 5000,10000,20000,40000,80000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from private_home import airflow_home

os.environ["AIRFLOW_HOME"] = airflow_home()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bulk_copy import new_report, write_report
from incremental import copy, setup

from airflow_provider_fdw.bulkcopy.load import SMALL_LOAD_ROWS
from fdw_testing.pgcluster import Pair, local_pair
from fdw_testing.sample_data import SOURCE_DB, install_sample_data, set_airflow_connections

RELAYS = ("python", "psql")


def main() -> int:
    args = parse_args()
    logging.disable(logging.INFO)  # one log line per run would drown the table
    with appending_pair(args.rows) as pair:
        results = [measure(pair, size, args.repeat) for size in args.sizes]
    report = new_report(args, results, threshold=SMALL_LOAD_ROWS)
    print(f"\nOne-range direct appends into a {args.rows:,}-row table (median of {args.repeat})")
    print(f"{'rows':>8} {'in-process s':>13} {'psql s':>8} {'psql / in-process':>18}")
    for r in results:
        print(f"{r['rows']:8,} {r['python']:13.3f} {r['psql']:8.3f} {r['ratio']:18.2f}")
    print(f"relay='auto' relays in-process up to {SMALL_LOAD_ROWS:,} estimated rows")
    write_report(report, args.json)
    return 0


def parse_args() -> argparse.Namespace:
    return appending_args(__doc__, "5000,10000,20000,40000,80000", 5)


def appending_args(doc: str | None, sizes: str, repeat: int) -> argparse.Namespace:
    """The arguments of a bench of appends of several sizes into an appending pair."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the source table")
    parser.add_argument("--sizes", default=sizes, help="rows appended per run (comma-separated)")
    parser.add_argument("--repeat", type=int, default=repeat, help="timed runs per size, each way")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    return args


@contextmanager
def appending_pair(rows: int) -> Iterator[Pair]:
    """A fresh pair whose target holds the ``rows`` of the source and a recorded watermark."""
    with local_pair() as pair:
        install_sample_data(pair)
        set_airflow_connections(pair)
        setup(pair, rows, True)
        append("psql", mode="replace")
        append("psql")  # the first append after a replace records the watermark: unrecorded
        yield pair


def append(relay: str, mode: str = "append") -> tuple[float, int]:
    watermark = {"watermark_column": "created_at"} if mode == "append" else {}
    took, result = copy(mode, True, relay=relay, **watermark)
    return took, int(result["rows"])


def add_rows(pair: Pair, rows: int) -> None:
    """``rows`` new keys, each newer than every row copied so far."""
    pair.source.execute(
        "INSERT INTO app.bench_users SELECT m + g, 'new' || (m + g), md5(g::text), "
        "w + g * interval '1 millisecond' "
        "FROM (SELECT max(id) AS m, max(created_at) AS w FROM app.bench_users) x, generate_series(1, %s) g",
        (rows,),
        dbname=SOURCE_DB,
    )
    pair.source.execute("ANALYZE app.bench_users", dbname=SOURCE_DB)


def measure(pair: Pair, size: int, repeat: int) -> dict:
    seconds: dict[str, list[float]] = {relay: [] for relay in RELAYS}
    for _ in range(repeat):
        for relay in RELAYS:  # alternating: a drift of the machine touches both alike
            add_rows(pair, size)
            took, copied = append(relay)
            if copied != size:
                raise SystemExit(f"the {relay} relay copied {copied} rows, not {size}")
            seconds[relay].append(took)
    python, psql = (statistics.median(seconds[relay]) for relay in RELAYS)
    print(f"  {size:,} rows: in-process {python:.3f}s, psql {psql:.3f}s", flush=True)
    return {"rows": size, "python": python, "psql": psql, "ratio": psql / python, "runs": seconds}


if __name__ == "__main__":
    sys.exit(main())
