"""Mirror mode of two versions of the provider, on one pair, run after run: which one is faster.

Starts a fresh pair with ``--rows`` rows (bench/mirror.py's table: bigint id, indexed email, 100-byte
payload, timestamptz), copies them once, then ``--repeat`` rounds of: for each version, change 0.1% of
the source (a third updated, a third deleted, a third inserted, at random keys) and time one mirror
by that version's code (a child process with ``PYTHONPATH`` at its checkout), checking the target
equal to the source by an independent full checksum after each. Alternating the versions on the
same tables puts both under the same load, cache and bloat; the ratio is of their medians.

    git worktree add /tmp/before <commit>      # or any checkout of the version to compare with
    python bench/mirror_versions.py --before /tmp/before [--after .] [--rows 10000000] \\
        [--repeat 3] [--transport fdw|copy]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

from private_home import airflow_home

os.environ["AIRFLOW_HOME"] = airflow_home()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from inplace_apply import setup
from mirror import change_source, check_equal

from fdw_testing.pgcluster import local_pair
from fdw_testing.sample_data import install_sample_data, set_airflow_connections

# One mirror by the code on PYTHONPATH; prints its seconds and summary as JSON.
CHILD = """
import json, sys, time
from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.hooks.fdw import FdwHook
started = time.perf_counter()
with FdwHook(fdw_conn_id="fdw_source") as hook:
    summary = hook.bulk_copy(plan_copy("proxy.bench_users", "public.users_copy", mode="mirror",
                                       transport=sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - started, "summary": summary}, default=str))
"""


def main() -> int:
    args = parse_args()
    versions = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    rng = random.Random(16)
    times: dict[str, list[float]] = {name: [] for name in versions}
    with local_pair() as pair:
        install_sample_data(pair)
        set_airflow_connections(pair)
        setup(pair, args.rows)
        for code in versions.values():  # each version's first run: unrecorded
            mirror(code, args.transport)
        for round_ in range(args.repeat):
            for name, code in versions.items():
                change_source(pair, args.rows, rng)
                seconds, summary = mirror(code, args.transport)
                check_equal(pair)
                times[name].append(seconds)
                print(
                    f"round {round_ + 1} {name:<6} {seconds:7.2f}s  inserted/updated/deleted "
                    f"{summary['inserted']}/{summary['updated']}/{summary['deleted']}",
                    flush=True,
                )
    before, after = (statistics.median(times[name]) for name in versions)
    print(f"median before {before:.2f}s, after {after:.2f}s: after is {before / after:.2f}x as fast")
    return 0


def mirror(code: str, transport: str) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": code}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, transport], env=env, check=True, capture_output=True, text=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), result["summary"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="checkout of the version to compare with")
    parser.add_argument("--after", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--transport", choices=["fdw", "copy"], default="fdw")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
