"""Incremental runs (append/upsert) keep their watermark in a state table, as safely as max() did.

The recorded watermark moves only when the merged rows commit; a failure after the load (even at
COMMIT) leaves it unchanged and the retry copies the same rows; concurrent runs converge; a replace,
TRUNCATE or recreated target makes the next run read max() from the target again; a row that
commits late with an older timestamp inside ``overlap`` is still caught.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime

import pytest
from conftest import TARGET_DB, RemoteTable, fdw_sandbox, local

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "incr_src"
ROWS = 200
UPSERT = {"mode": "upsert", "key_columns": ["id"], "watermark_column": "updated_at"}


@pytest.fixture(scope="module")
def incr(airflow_connections):
    return fdw_sandbox(airflow_connections, "incr", SERVER)


class Source(RemoteTable):
    """``incr.<name>`` (id, name, updated_at: row g at 2024-01-01 + g minutes) and its foreign table."""

    def __init__(self, pair, rows: int = ROWS) -> None:
        super().__init__(
            pair,
            "incr",
            SERVER,
            "id bigint, name text, updated_at timestamptz",
            remote_columns="id bigint PRIMARY KEY, name text NOT NULL, updated_at timestamptz NOT NULL",
        )
        self.remote(
            "INSERT INTO {t} SELECT g, 'name ' || g, '2024-01-01'::timestamptz + g * interval '1 minute' "
            "FROM generate_series(1, %s) g",
            (rows,),
        )

    def rows(self):
        return self.remote("SELECT id, name, updated_at FROM {t} ORDER BY id")


def copy(source: Source, target: str, log: logging.Logger | None = None, **kwargs):
    plan = plan_copy(source.foreign, target, **kwargs)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        if log is not None:
            hook._log = log  # a stdlib logger: caplog sees it
        return hook.bulk_copy(plan)


def new_target() -> str:
    return f"public.i_{uuid.uuid4().hex[:8]}"


def target_rows(pair, target: str):
    return local(pair, "SELECT id, name, updated_at FROM {t} ORDER BY id", t=target)


def recorded(pair, target: str):
    """The watermark recorded for ``target`` (None when there is no record)."""
    rows = pair.target.execute(
        "SELECT watermark::timestamptz FROM public.fdw_copy_state WHERE target_table = %s",
        (target.split(".")[1],),
        dbname=TARGET_DB,
    )
    return rows[0][0] if rows else None


def ts(value: str):
    """A summary's watermark (text) as a datetime."""
    return datetime.fromisoformat(value)


def target_max(pair, target: str):
    return local(pair, "SELECT max(updated_at) FROM {t}", t=target)[0][0]


def test_an_incremental_run_records_the_watermark_it_reached_with_the_merge(incr):
    src, t = Source(incr), new_target()
    first = copy(src, t, **UPSERT)
    assert recorded(incr, t) == ts(first["watermark"]) == target_max(incr, t)
    src.remote("UPDATE {t} SET name = 'changed', updated_at = '2025-01-01' WHERE id % 10 = 0")
    second = copy(src, t, **UPSERT)
    assert second["rows"] == ROWS // 10 + 0  # the bound row itself is one of the changed ones
    assert recorded(incr, t) == ts(second["watermark"]) == target_max(incr, t)
    assert target_rows(incr, t) == src.rows()
    again = copy(src, t, **UPSERT)
    assert again["updated"] == again["inserted"] == 0 and recorded(incr, t) == ts(second["watermark"])


def test_the_bound_comes_from_the_record_not_from_rows_written_to_the_target_by_others(incr):
    """Proof that the target is not scanned for max(): a row another writer put in the target with a
    later watermark does not move the bound (with max() it would have hidden the source's change)."""
    src, t = Source(incr), new_target()
    copy(src, t, **UPSERT)
    local(incr, "INSERT INTO {t} VALUES (-1, 'written by hand', '2030-01-01')", t=t)
    src.remote("UPDATE {t} SET name = 'changed', updated_at = '2025-01-01' WHERE id = 5")
    delta = copy(src, t, **UPSERT)
    assert delta["rows"] == 2 and delta["updated"] == 1  # row 5 and the bound row (200, unchanged)
    assert local(incr, "SELECT name FROM {t} WHERE id = 5", t=t)[0][0] == "changed"


@pytest.mark.parametrize("mode", ["upsert", "append"])
def test_a_failure_at_commit_after_the_load_leaves_the_record_and_the_retry_copies_the_same_rows(incr, mode):
    """A deferred constraint trigger on the target fails the merge's COMMIT itself (after the record
    was written in that transaction): rows and record stay as they were; the retry copies the same
    rows, from the same bound."""
    src, t = Source(incr), new_target()
    kwargs = UPSERT if mode == "upsert" else {"mode": "append", "watermark_column": "updated_at"}
    first = copy(src, t, **kwargs)
    before = recorded(incr, t)
    assert before == ts(first["watermark"])
    local(
        incr,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'refused at commit'; END $$",
        f=f"{t}_refuse",
    )
    local(
        incr,
        "CREATE CONSTRAINT TRIGGER refuse AFTER INSERT OR UPDATE ON {t} DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION {f}()",
        t=t,
        f=f"{t}_refuse",
    )
    if mode == "upsert":
        src.remote("UPDATE {t} SET name = 'changed', updated_at = '2025-01-01' WHERE id % 20 = 0")
    else:
        src.remote(
            "INSERT INTO {t} SELECT g, 'new ' || g, '2025-01-01'::timestamptz + g * interval '1 second' "
            "FROM generate_series(1001, 1010) g"
        )
    rows_before = target_rows(incr, t)
    with pytest.raises(FdwError, match="refused at commit"):
        copy(src, t, **kwargs)
    assert recorded(incr, t) == before
    assert target_rows(incr, t) == rows_before
    local(incr, "DROP TRIGGER refuse ON {t}", t=t)
    retry = copy(src, t, **kwargs)
    assert retry["previous_watermark"] == first["watermark"]
    assert retry["rows"] == 10
    assert target_rows(incr, t) == src.rows()
    assert recorded(incr, t) == ts(retry["watermark"]) == target_max(incr, t)


def test_concurrent_incremental_runs_on_one_target_converge_with_the_record_at_the_max(incr):
    src, t = Source(incr), new_target()
    copy(src, t, **UPSERT)
    src.remote("UPDATE {t} SET name = 'changed', updated_at = '2025-01-01' WHERE id % 3 = 0")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            copy(src, t, **UPSERT)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads) and errors == []
    assert target_rows(incr, t) == src.rows()
    assert recorded(incr, t) == target_max(incr, t)


@pytest.mark.parametrize("swap", ["rename", "in_place"])
def test_after_a_replace_of_the_target_the_next_run_reads_the_target_again(incr, swap):
    """The record said 2030; the replace brought the target down to 2024 rows: a row the source then
    gets at 2025 must be copied (a stale record would skip it). Other targets' records survive."""
    src, t, other = Source(incr), new_target(), new_target()
    src.remote("INSERT INTO {t} VALUES (9999, 'late', '2030-01-01')")
    copy(src, t, **UPSERT)
    copy(src, other, **UPSERT)
    assert recorded(incr, t).year == 2030
    src.remote("DELETE FROM {t} WHERE id = 9999")
    copy(src, t, mode="replace", key_columns=["id"], swap=swap)
    src.remote("INSERT INTO {t} VALUES (5000, 'new', '2025-01-01')")
    delta = copy(src, t, **UPSERT)
    assert delta["inserted"] == 1
    assert target_rows(incr, t) == src.rows()
    assert recorded(incr, t).year == 2025 and recorded(incr, other).year == 2030


def test_a_truncated_or_recreated_target_is_filled_again_from_the_start(incr):
    src, t = Source(incr), new_target()
    copy(src, t, **UPSERT)
    local(incr, "TRUNCATE {t}", t=t)
    assert copy(src, t, **UPSERT)["inserted"] == ROWS
    local(incr, "DROP TABLE {t}", t=t)
    assert copy(src, t, **UPSERT)["inserted"] == ROWS
    assert target_rows(incr, t) == src.rows()


def test_a_late_commit_inside_the_overlap_is_still_caught(incr):
    """A row that commits after the run with a timestamp older than the recorded watermark (a long
    transaction) is copied by the next run when it is within ``overlap``; outside it, it is not."""
    src, t = Source(incr), new_target()
    first = copy(src, t, overlap="1 hour", **UPSERT)
    assert recorded(incr, t) == ts(first["watermark"])
    src.remote(
        "INSERT INTO {t} VALUES (7001, 'late, inside the overlap', %s::timestamptz - interval '30 minutes'), "
        "(7002, 'late, outside the overlap', %s::timestamptz - interval '2 hours')",
        (first["watermark"], first["watermark"]),
    )
    delta = copy(src, t, overlap="1 hour", **UPSERT)
    assert delta["inserted"] == 1
    ids = {r[0] for r in target_rows(incr, t)}
    assert 7001 in ids and 7002 not in ids
    assert recorded(incr, t) == ts(first["watermark"])  # the late row is older: the watermark stays


def test_the_log_names_the_index_to_create_when_the_source_has_none_for_the_watermark(incr, caplog):
    caplog.set_level(logging.INFO)
    src, t = Source(incr), new_target()
    log = logging.getLogger("test_incremental_state")
    copy(src, t, log=log, **UPSERT)
    copy(src, t, log=log, **UPSERT)
    assert "no index on the source serves the watermark filter" in caplog.text
    assert f'CREATE INDEX ON "incr"."{src.name}" ("updated_at")' in caplog.text
    caplog.clear()
    src.remote("CREATE INDEX ON {t} (updated_at)")
    copy(src, t, log=log, **UPSERT)
    assert "no index on the source serves the watermark filter" not in caplog.text


def test_a_parallel_copy_through_postgres_fdw_logs_that_ranges_read_separate_snapshots(incr, caplog):
    caplog.set_level(logging.INFO)
    src, t = Source(incr), new_target()
    log = logging.getLogger("test_incremental_state")
    copy(src, t, log=log, key_columns=["id"], parallelism=2, transport="fdw")
    assert "each of the 2 ranges reads in its own remote transaction" in caplog.text
    caplog.clear()
    copy(src, new_target(), log=log, key_columns=["id"], parallelism=1, transport="fdw")
    assert "own remote transaction" not in caplog.text


def test_datestyle_of_the_session_does_not_change_the_recorded_value(incr):
    """The record is text written under ISO: a session with DateStyle 'SQL, DMY' reads it back equal."""
    src, t = Source(incr), new_target()
    src.remote("UPDATE {t} SET updated_at = '2024-02-03 04:05:06.789+00' WHERE id = %s", (ROWS,))
    first = copy(src, t, **UPSERT)
    incr.target.execute("ALTER DATABASE " + TARGET_DB + " SET datestyle = 'SQL, DMY'", dbname=TARGET_DB)
    try:
        src.remote("UPDATE {t} SET name = 'x' WHERE id = %s", (ROWS,))
        second = copy(src, t, **UPSERT)
    finally:
        incr.target.execute("ALTER DATABASE " + TARGET_DB + " RESET datestyle", dbname=TARGET_DB)
    assert second["previous_watermark"] == first["watermark"]
    assert second["rows"] == 1 and target_rows(incr, t) == src.rows()
