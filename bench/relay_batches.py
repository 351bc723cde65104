"""What writing the in-process relay's rows in batches saves a small direct run.

psycopg hands ``COPY … TO STDOUT`` over one row per read; the relay used to write each row to the
local ``COPY … FROM STDIN`` as it came, and now gathers ``compat.RELAY_BATCH_BYTES`` first. Starts a
fresh pair with the table of bench/incremental.py, then for each size, ``--repeat`` times, appends
that many new source rows and times the one-range direct append (``relay="python"``) once writing
row by row and once in batches, alternating. Prints both medians and the ratio rows / batches:
above 1, batching saves that share of a run.

    python bench/relay_batches.py [--rows 1000000] [--sizes 10000,50000] [--repeat 9] [--json FILE]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
from pathlib import Path

from private_home import airflow_home

os.environ["AIRFLOW_HOME"] = airflow_home()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bulk_copy import new_report, write_report
from relay_threshold import add_rows, append, appending_args, appending_pair

from airflow_provider_fdw import compat

# bytes gathered before each write: 0 writes every row as it comes (the relay before batching)
WAYS = {"rows": 0, "batches": compat.RELAY_BATCH_BYTES}


def main() -> int:
    args = parse_args()
    logging.disable(logging.INFO)  # one log line per run would drown the table
    results = []
    with appending_pair(args.rows) as pair:
        try:
            for size in args.sizes:
                seconds: dict[str, list[float]] = {way: [] for way in WAYS}
                for _ in range(args.repeat):
                    for way, batch in WAYS.items():  # alternating: a drift of the machine touches both
                        compat.RELAY_BATCH_BYTES = batch
                        add_rows(pair, size)
                        took, copied = append("python")
                        if copied != size:
                            raise SystemExit(f"copied {copied} rows, not {size}")
                        seconds[way].append(took)
                rows, batches = (statistics.median(seconds[w]) for w in WAYS)
                results.append(
                    {"size": size, "rows": rows, "batches": batches, "ratio": rows / batches, "runs": seconds}
                )
        finally:
            compat.RELAY_BATCH_BYTES = WAYS["batches"]
    print(f"\nOne-range direct appends into {args.rows:,} rows, in-process relay (median of {args.repeat})")
    print(f"{'rows appended':>14} {'row by row':>11} {'batches':>9} {'rows / batches':>15}")
    for r in results:
        print(f"{r['size']:>14,} {r['rows']:>10.4f}s {r['batches']:>8.4f}s {r['ratio']:>15.3f}")
    write_report(new_report(args, results), args.json)
    return 0


def parse_args() -> argparse.Namespace:
    return appending_args(__doc__, "10000,50000", 9)


if __name__ == "__main__":
    sys.exit(main())
