"""What writing the in-process relay's rows straight into libpq's buffer saves a small direct run.

psycopg hands ``COPY … TO STDOUT`` over one row per read. The relay wrote each row on with the local
``Copy.write`` (its waiting machinery once per row); it now puts rows into libpq's buffer itself,
which sends them every 8 kB as before (``compat.copy_between``). Starts a fresh pair with the table
of bench/incremental.py, then for each size, ``--repeat`` times, appends that many new source rows
and times the one-range direct append (``relay="python"``) once each way, alternating. Prints both
medians and the ratio Copy.write / libpq: above 1, the direct puts save that share of a run.

    python bench/relay_writes.py [--rows 1000000] [--sizes 10000,50000] [--repeat 9] [--json FILE]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from private_home import airflow_home

os.environ["AIRFLOW_HOME"] = airflow_home()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bulk_copy import new_report, write_report
from relay_threshold import add_rows, append, appending_args, appending_pair

from airflow_provider_fdw.bulkcopy import relay


def copy_with_copy_write(remote: Any, local: Any, out_stmt: Any, in_stmt: Any, on_rows: Callable) -> int:
    """The relay as it was: every row through ``Copy.write``."""
    seen, local_cur = 0, local.cursor()
    with remote.cursor().copy(out_stmt) as out, local_cur.copy(in_stmt) as inp:
        for chunk in out:
            inp.write(chunk)
            seen += 1
            if seen == 10_000:
                on_rows(seen)
                seen = 0
    return int(local_cur.rowcount)


WAYS = {"Copy.write": copy_with_copy_write, "libpq": relay.copy_between}


def main() -> int:
    args = parse_args()
    logging.disable(logging.INFO)  # one log line per run would drown the table
    results = []
    with appending_pair(args.rows) as pair:
        try:
            for size in args.sizes:
                seconds: dict[str, list[float]] = {way: [] for way in WAYS}
                for _ in range(args.repeat):
                    for way, relay_rows in WAYS.items():  # alternating: a drift of the machine touches both
                        relay.copy_between = relay_rows
                        add_rows(pair, size)
                        took, copied = append("python")
                        if copied != size:
                            raise SystemExit(f"copied {copied} rows, not {size}")
                        seconds[way].append(took)
                before, now = (statistics.median(seconds[w]) for w in WAYS)
                results.append(
                    {"size": size, "copy_write": before, "libpq": now, "ratio": before / now, "runs": seconds}
                )
        finally:
            relay.copy_between = WAYS["libpq"]
    print(f"\nOne-range direct appends into {args.rows:,} rows, in-process relay (median of {args.repeat})")
    print(f"{'rows appended':>14} {'Copy.write':>11} {'libpq':>9} {'Copy.write / libpq':>19}")
    for r in results:
        print(f"{r['size']:>14,} {r['copy_write']:>10.4f}s {r['libpq']:>8.4f}s {r['ratio']:>19.3f}")
    write_report(new_report(args, results), args.json)
    return 0


def parse_args() -> argparse.Namespace:
    return appending_args(__doc__, "10000,50000", 9)


if __name__ == "__main__":
    sys.exit(main())
