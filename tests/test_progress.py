"""Progress lines of real copies (both paths), read from the captured task log; quiet model loading."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid

import pytest
from conftest import READER, REPO, SOURCE_DB, ident

from airflow_provider_fdw import progress as progress_module
from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.hooks.fdw import FdwHook

ROWS = 300_000
# Airflow renders hook logs with structlog: "<time> [info     ] <message> [<logger>] loc=<file:line>".
LINE = re.compile(
    r"((?:Copying|Loaded) proxy_progress\.\w+ -> public\.\w+: .*?)(?: \[airflow\S*\] loc=\S+)?$"
)


@pytest.fixture(scope="module")
def progress_source(airflow_connections):
    """``progress.analyzed`` (VACUUMed: exact reltuples) and ``progress.fresh`` (never analyzed)."""
    pair = airflow_connections
    for statement in [
        "CREATE SCHEMA progress",
        "CREATE TABLE progress.analyzed (id bigint PRIMARY KEY, body text)",
        f"INSERT INTO progress.analyzed SELECT g, repeat('x', 40) || g FROM generate_series(1, {ROWS}) g",
        "VACUUM progress.analyzed",
        # autovacuum off: nothing may analyze it behind the test's back
        "CREATE TABLE progress.fresh (id bigint PRIMARY KEY, body text) WITH (autovacuum_enabled = false)",
        "INSERT INTO progress.fresh SELECT g, 'row ' || g FROM generate_series(1, 5000) g",
    ]:
        pair.source.execute(statement, dbname=SOURCE_DB)
    pair.source.execute(
        sql.SQL(
            "GRANT USAGE ON SCHEMA progress TO {0}; GRANT SELECT ON ALL TABLES IN SCHEMA progress TO {0}"
        ).format(ident(READER)),
        dbname=SOURCE_DB,
    )
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.ensure_extension()
        hook.create_server("progress_src")
        hook.create_user_mapping("progress_src")
        hook.import_foreign_schema("progress_src", "progress", "proxy_progress")
    reltuples = pair.source.execute(
        "SELECT reltuples FROM pg_class WHERE oid = 'progress.analyzed'::regclass", dbname=SOURCE_DB
    )[0][0]
    assert reltuples == ROWS  # VACUUM counted every row
    return pair


def copy_and_capture(capfd, table: str, where: str | None = None, **kwargs) -> tuple[dict, list[str]]:
    """Run a real copy; return its summary and the progress lines of the log it wrote."""
    plan = plan_copy(f"proxy_progress.{table}", f"public.progress_{uuid.uuid4().hex[:8]}", where=where)
    capfd.readouterr()
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        result = hook.bulk_copy(plan, **kwargs)
    out, err = capfd.readouterr()
    return result, [m.group(1) for line in (out + err).splitlines() if (m := LINE.search(line))]


@pytest.fixture
def every_20ms(monkeypatch):
    monkeypatch.setattr(progress_module, "PROGRESS_EVERY_SECONDS", 0.02)


def test_fdw_path_logs_estimated_rows_percent_rate_and_eta_then_a_final_line(
    progress_source, capfd, every_20ms
):
    result, lines = copy_and_capture(capfd, "analyzed")
    assert result["rows"] == ROWS
    *during, final = lines
    assert during, lines  # 0.02 s apart while 300,000 rows are inserted: at least one
    for line in during:
        # rows come from the staged bytes and the remote's bytes per row: approximate, marked with ~
        assert re.search(
            r": ~[\d,]+ of ~300,000 rows \(\d+%\) \([\d.]+ MB staged\), [\d,]+ rows/s, ETA ", line
        ), line
    assert re.fullmatch(
        r"Loaded proxy_progress\.analyzed -> public\.\w+: 300,000 of ~300,000 rows \(100%\), [\d,]+ rows/s, "
        r"\d+[smh\d]* elapsed",
        final,
    ), final


def test_direct_path_counts_rows_and_reads_reltuples_over_its_own_connection(
    progress_source, capfd, every_20ms, monkeypatch
):
    # At 600,000 rows/s the load could end before the first tick: each 10,000 rows take 20 ms more.
    add = progress_module.Progress.add

    def slow_add(self: progress_module.Progress, rows: int) -> None:
        add(self, rows)
        time.sleep(0.02)

    monkeypatch.setattr(progress_module.Progress, "add", slow_add)
    result, lines = copy_and_capture(capfd, "analyzed", direct=True, relay="python")
    assert result["rows"] == ROWS and result["path"] == "direct"
    *during, final = lines
    assert during, lines
    counts = []
    for line in during:
        match = re.search(
            r": ([\d,]+) of ~300,000 rows \(\d+%\), [\d,]+ rows/s, (ETA \w+, )?\w+ elapsed$", line
        )
        assert match, line
        counts.append(int(match.group(1).replace(",", "")))
        assert bool(match.group(2)) == (counts[-1] > 0), line  # an ETA once rows flow
    assert counts == sorted(counts) and counts[-1] <= ROWS
    assert ": 300,000 of ~300,000 rows (100%), " in final


def test_psql_relay_logs_the_rows_the_server_has_copied_while_the_load_holds_its_table(
    progress_source, capfd, every_20ms
):
    """psql reports rows only at the end; the lines read the local COPY's progress instead. The
    load truncated the staging table to write it frozen and holds it locked until it commits: the
    count must not wait for that lock."""
    result, lines = copy_and_capture(capfd, "analyzed", direct=True, relay="psql")
    assert result["rows"] == ROWS and result["path"] == "direct"
    *during, final = lines
    assert during, lines
    counts = []
    for line in during:
        match = re.search(r": ([\d,]+) of ~300,000 rows \(\d+%\), [\d,]+ rows/s, ", line)
        assert match, line
        counts.append(int(match.group(1).replace(",", "")))
    assert counts == sorted(counts) and counts[-1] <= ROWS
    assert any(0 < c < ROWS for c in counts), counts  # counted while the rows flowed
    assert ": 300,000 of ~300,000 rows (100%), " in final


def test_a_never_analyzed_remote_table_says_the_total_is_unknown(progress_source, capfd):
    result, lines = copy_and_capture(capfd, "fresh", direct=True, relay="python")
    assert result["rows"] == 5000
    assert lines == [lines[-1]] and lines[-1].startswith("Loaded proxy_progress.fresh")
    assert ": 5,000 rows (estimated total unknown: the source table was never analyzed), " in lines[-1]


def test_a_copy_shorter_than_the_interval_logs_exactly_one_progress_line(progress_source, capfd):
    """Default interval (10 s): no line while a short copy runs, and one when it ends."""
    assert progress_module.PROGRESS_EVERY_SECONDS == 10.0
    result, lines = copy_and_capture(capfd, "fresh")
    assert result["rows"] == 5000
    assert len(lines) == 1 and lines[0].startswith("Loaded proxy_progress.fresh"), lines


def test_filtered_copies_log_rows_without_a_percentage_of_the_whole_table(progress_source, capfd):
    result, lines = copy_and_capture(capfd, "analyzed", where="id <= 1000", direct=True, relay="python")
    assert result["rows"] == 1000
    assert len(lines) == 1 and ": 1,000 rows, " in lines[0] and "%" not in lines[0], lines


def test_loading_the_embedding_model_prints_no_progress_bars():
    """tqdm bars (``Loading weights: 100%|███|``) go to stderr, which Airflow copies into the task log."""
    code = (
        "from airflow_provider_fdw.backfill import SentenceTransformerEmbedder\n"
        "print(len(SentenceTransformerEmbedder()(['a cat on a mat'])[0]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "384"
    output = proc.stdout + proc.stderr
    assert "Loading weights" not in output and "it/s]" not in output, output[-2000:]


@pytest.mark.parametrize("estimate", [None, (None, None), (300_000.0, None), (300_000.0, 24_000_000)])
@pytest.mark.parametrize("staged", [None, 0, 12_000_000])
def test_every_kind_of_line_renders(estimate, staged):
    """Each combination of known/unknown estimate and counted/staged rows gives a readable line."""
    messages = []

    class Log:
        def info(self, fmt, *args):
            messages.append(fmt % args)

    progress = progress_module.Progress(
        Log(), "a.b", "c.d", probe=None if staged is None else (lambda: staged), estimate=None
    )
    if estimate is not None:
        progress.estimate_source = lambda: None  # an estimate was asked for
        progress.total = progress_module.RowEstimate(*estimate)
        progress.unknown_total = "the source table was never analyzed"
    progress.add(0 if staged is not None else 150_000)
    during = progress.line()
    progress.finish(150_000)
    assert during.startswith("Copying a.b -> c.d: ") and messages[-1].startswith(
        "Loaded a.b -> c.d: 150,000 "
    )
    total = estimate[0] if estimate else None
    assert during.count("MB staged") == (staged is not None)
    assert ("of ~300,000 rows" in during) == (total is not None)
    assert ("estimated total unknown" in during) == (estimate is not None and total is None)
    assert ("ETA" in during) == (
        total is not None and (staged is None or (staged > 0 and estimate[1] is not None))
    )


def test_rows_counted_by_the_server_never_go_backwards_when_its_copy_has_ended():
    """pg_stat_progress_copy drops the row of a COPY that ended: a line logged after that (while psql
    commits and exits) keeps the last count instead of reporting 0."""
    counted = iter([120_000, 0])
    progress = progress_module.Progress(None, "a.b", "c.d", counter=lambda: next(counted))
    assert ": 120,000 rows, " in progress.line()
    assert ": 120,000 rows, " in progress.line()
