"""What opening the direct path's remote connection during the catalog reads saves a small run.

Starts a fresh pair with the table of bench/incremental.py, then, ``--repeat`` times, appends
``--size`` new source rows and times the one-range direct append (``relay="python"``) once with the
remote connection opened while the local catalog is read (``EarlyConnect``, what a run does) and
once opened after it (as before), alternating. Prints both medians and the ratio after / during:
above 1, opening it early saves that share of a run.

    python bench/early_connect.py [--rows 1000000] [--size 10000] [--repeat 15] [--json FILE]
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
from relay_threshold import add_rows, append, appending_pair

from airflow_provider_fdw.bulkcopy import engine


def main() -> int:
    args = parse_args()
    logging.disable(logging.INFO)  # one log line per run would drown the table
    early = engine.EarlyConnect.start
    seconds: dict[str, list[float]] = {"during": [], "after": []}
    with appending_pair(args.rows) as pair:
        try:
            for _ in range(args.repeat):
                for when in seconds:  # alternating: a drift of the machine touches both alike
                    engine.EarlyConnect.start = early if when == "during" else (lambda *a, **k: None)
                    add_rows(pair, args.size)
                    took, copied = append("python")
                    if copied != args.size:
                        raise SystemExit(f"copied {copied} rows, not {args.size}")
                    seconds[when].append(took)
        finally:
            engine.EarlyConnect.start = early
    during, after = (statistics.median(seconds[w]) for w in ("during", "after"))
    print(f"\nOne-range direct appends of {args.size:,} rows into {args.rows:,} (median of {args.repeat})")
    print(
        f"remote connection opened during the catalog reads: {during:.4f}s (min {min(seconds['during']):.4f})"
    )
    print(
        f"remote connection opened after them:               {after:.4f}s (min {min(seconds['after']):.4f})"
    )
    print(f"after / during: {after / during:.3f}")
    result = {"size": args.size, "during": during, "after": after, "ratio": after / during, "runs": seconds}
    write_report(new_report(args, [result]), args.json)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the source table")
    parser.add_argument("--size", type=int, default=10_000, help="rows appended per run")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs each way")
    parser.add_argument("--json", help="also write the results to this file")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
