"""Embedding backfill throughput end to end vs the model alone on the same rows (same run).

Generates ``--rows`` sentences in a table on a fresh local cluster, embeds them once with the model
alone (same batches, no database) and once with the backfill (read a batch, embed, write, commit),
after a warm-up, and prints both rates and the database overhead. Median of ``--repeat`` runs.

    python bench/embedding.py [--rows 2000] [--batch-size 256] [--repeat 3] [--json [PATH]]

Nothing is written unless ``--json`` is given (the results file is tracked).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from private_home import airflow_home

os.environ["AIRFLOW_HOME"] = airflow_home()
# The test harness (fdw_testing) lives in the repository, outside the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_provider_fdw.backfill import SentenceTransformerEmbedder, plan_backfill
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.hooks.fdw import FdwHook
from fdw_testing.pgcluster import local_pair
from fdw_testing.sample_data import TARGET_DB, install_sample_data, set_airflow_connections

WORDS = ["river", "market", "engine", "garden", "winter", "coffee", "violin", "harbor", "planet", "ladder"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    # The results file is tracked: written only when asked to.
    parser.add_argument("--json", nargs="?", const="bench/results/embedding.json")
    args = parser.parse_args()
    texts = [
        f"the {WORDS[i % 10]} near the {WORDS[(i // 10) % 10]} is {WORDS[(i // 100) % 10]} number {i}"
        for i in range(args.rows)
    ]
    model = SentenceTransformerEmbedder()
    model(texts[:64])  # warm-up: load the model, first forward pass
    with local_pair() as pair:
        install_sample_data(pair)
        set_airflow_connections(pair)
        target = pair.target
        target.execute("CREATE TABLE public.sentences (id bigint PRIMARY KEY, body text)", dbname=TARGET_DB)
        target.execute(
            sql.SQL(
                "INSERT INTO public.sentences SELECT g, (ARRAY[{}])[g] FROM generate_series(1, {}) g"
            ).format(sql.SQL(", ").join(map(sql.Literal, texts)), sql.Literal(args.rows)),
            dbname=TARGET_DB,
        )
        alone, end_to_end = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            for i in range(0, len(texts), args.batch_size):
                model(texts[i : i + args.batch_size])
            alone.append(time.perf_counter() - started)
            target.execute(
                "UPDATE public.sentences SET embedding = NULL", dbname=TARGET_DB
            ) if end_to_end else None
            plan = plan_backfill("public.sentences", "body", batch_size=args.batch_size)
            started = time.perf_counter()
            with FdwHook() as hook:
                result = hook.backfill_embeddings(plan, model, 384)
            end_to_end.append(time.perf_counter() - started)
            assert result["rows_embedded"] == args.rows, result
    a, e = statistics.median(alone), statistics.median(end_to_end)
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": args.rows,
        "batch_size": args.batch_size,
        "model_alone_s": a,
        "end_to_end_s": e,
        "model_rows_per_s": args.rows / a,
        "end_to_end_rows_per_s": args.rows / e,
        "overhead": e / a - 1,
        "runs": {"alone": alone, "end_to_end": end_to_end},
    }
    print(f"model alone:  {a:.2f}s  {args.rows / a:,.0f} rows/s")
    print(f"end to end:   {e:.2f}s  {args.rows / e:,.0f} rows/s")
    print(f"ratio end-to-end / model alone: {e / a:.3f}  (database overhead {report['overhead']:.1%})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
