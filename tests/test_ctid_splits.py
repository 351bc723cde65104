"""Parallel direct copies of tables without an integer key: ranges of ctid, all in one snapshot.

A table keyed by text and a table with no key at all, copied with ``parallelism=3`` on the direct
path while a server-side loop commits numbered versions (version k deletes a row near the start,
updates one in the middle, inserts one at the end): the copy must equal exactly one version.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from conftest import SOURCE_DB, RemoteTable, fdw_sandbox, ident, local

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "ctid_src"
ROWS = 20_000
MIDDLE = ROWS // 2
MAX_VERSIONS = ROWS // 4  # the writer never reaches MIDDLE
KEYS = {
    "text key": ("k text, ver int, name text", "k text PRIMARY KEY, ver int NOT NULL, name text"),
    "no key": ("k text, ver int, name text", "k text, ver int NOT NULL, name text"),
}


@pytest.fixture(scope="module")
def ctid_pair(airflow_connections):
    return fdw_sandbox(airflow_connections, "ctid", SERVER)


def key(i: int) -> str:
    return f"k{i:08d}"


class Source(RemoteTable):
    def __init__(self, pair, shape: str) -> None:
        columns, remote_columns = KEYS[shape]
        super().__init__(pair, "ctid", SERVER, columns, remote_columns=remote_columns)
        self.remote(
            "INSERT INTO {t} SELECT 'k' || lpad(g::text, 8, '0'), 0, 'row ' || g "
            "FROM generate_series(1, %s) g",
            (ROWS,),
        )


class Writer(threading.Thread):
    """Commits version 1, 2, 3, ... (one small transaction each, in a server-side loop) until stopped."""

    def __init__(self, source: Source) -> None:
        super().__init__(daemon=True)
        self.source, self.conn, self.error = source, source.pair.source.connect(SOURCE_DB), None
        self.statement = sql.SQL(
            "DO $$ BEGIN FOR v IN 1..{versions} LOOP "
            "DELETE FROM {t} WHERE k = 'k' || lpad(v::text, 8, '0'); "
            "UPDATE {t} SET ver = v WHERE k = {middle}; "
            "INSERT INTO {t} VALUES ('n' || lpad(v::text, 8, '0'), v, 'new'); COMMIT; "
            "PERFORM pg_sleep(0.0005); END LOOP; END $$"
        ).format(
            t=ident("ctid", source.name),
            versions=sql.Literal(MAX_VERSIONS),
            middle=sql.Literal(key(MIDDLE)),
        )

    def run(self) -> None:
        try:
            self.conn.cursor().execute(self.statement)
        except Exception as exc:  # cancelled by stop(), or a failure the test reports
            self.error = exc

    @property
    def version(self) -> int:
        return self.source.remote("SELECT count(*) FROM {t} WHERE k LIKE 'n%%'")[0][0]

    def wait_for(self, version: int) -> None:
        deadline = time.monotonic() + 60
        while self.version < version and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.01)
        assert self.version >= version, self.error

    def stop(self) -> None:
        self.conn.cancel()
        self.join(timeout=60)
        self.conn.close()


def expected_rows(version: int) -> list[tuple[str, int]]:
    """The source as version ``version`` committed it (k, ver), in key order."""
    kept = [(key(i), version if i == MIDDLE else 0) for i in range(version + 1, ROWS + 1)]
    return kept + [(f"n{k:08d}", k) for k in range(1, version + 1)]


@pytest.mark.parametrize("shape", ["text key", "no key"])
@pytest.mark.parametrize("relay", ["psql", "python"])
def test_parallel_direct_copy_without_an_integer_key_splits_by_ctid_in_one_snapshot(
    ctid_pair, shape, relay, caplog
):
    caplog.set_level(logging.INFO)
    src, t = Source(ctid_pair, shape), f"public.ctid_{uuid.uuid4().hex[:8]}"
    keys = {"key_columns": ["k"]} if shape == "text key" else {}
    writer = Writer(src)
    writer.start()
    try:
        writer.wait_for(20)
        before = writer.version
        plan = plan_copy(src.foreign, t, transport="copy", parallelism=3, **keys)
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            hook._log = logging.getLogger("test_ctid_splits")  # a stdlib logger: caplog sees it
            result = hook.bulk_copy(plan, relay=relay)
        after = writer.version
    finally:
        writer.stop()
    assert writer.error is None or "cancel" in str(writer.error), writer.error
    assert result["path"] == "direct" and result["parallelism"] == 3
    assert "by ctid into 3 ranges" in caplog.text
    assert after > before, "the writer must commit while the copy reads, or this test proves nothing"
    rows = local(ctid_pair, "SELECT k, ver FROM {t} ORDER BY k", t=t)
    version = sum(1 for k, _ in rows if k.startswith("n"))
    assert before <= version <= after
    assert rows == expected_rows(version)  # every range read the same version, each row once


def test_parallel_copy_through_postgres_fdw_without_an_integer_key_is_refused_before_anything_runs(
    ctid_pair,
):
    src, t = Source(ctid_pair, "text key"), f"public.ctid_{uuid.uuid4().hex[:8]}"
    with pytest.raises(FdwConfigError, match="parallelism > 1 through postgres_fdw splits by key ranges"):
        plan_copy(src.foreign, t, transport="fdw", parallelism=3)
    plan = plan_copy(src.foreign, t, transport="fdw", parallelism=3, key_columns=["k"])
    with (
        pytest.raises(FdwConfigError, match=r"k is text.*transport='copy' splits any table by ctid"),
        FdwHook(fdw_conn_id="fdw_source") as hook,
    ):
        hook.bulk_copy(plan)
    exists = ctid_pair.target.execute("SELECT to_regclass(%s)", (t,), dbname="analytics")[0][0]
    assert exists is None
