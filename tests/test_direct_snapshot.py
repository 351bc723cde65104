"""The direct path reads every parallel range in ONE exported snapshot, and verifies against it.

A writer commits a numbered version per transaction while the copy runs (version k deletes row k from
the first range, updates a row of the middle range and inserts a row in the last one); the copy must
hold exactly one version's rows.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from conftest import READER, SOURCE_DB, RemoteTable, fdw_sandbox, ident, local

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "snap_src"
ROWS = 20_000
MIDDLE = ROWS // 2
INSERTED = 1_000_000  # version k inserts INSERTED + k
MAX_VERSIONS = ROWS // 4  # the writer never reaches MIDDLE


@pytest.fixture(scope="module")
def snap(airflow_connections):
    return fdw_sandbox(airflow_connections, "snap", SERVER)


class Source(RemoteTable):
    def __init__(self, pair, rows: int = ROWS) -> None:
        super().__init__(
            pair,
            "snap",
            SERVER,
            "id bigint, ver int, name text",
            remote_columns="id bigint PRIMARY KEY, ver int NOT NULL, name text",
        )
        self.remote("INSERT INTO {t} SELECT g, 0, 'row ' || g FROM generate_series(1, %s) g", (rows,))


class Writer(threading.Thread):
    """Commits version 1, 2, 3, … of the source, one small transaction each, until stopped.

    The loop runs on the server (a DO block that commits), so the copy's threads cannot starve it.
    """

    def __init__(self, source: Source) -> None:
        super().__init__(daemon=True)
        self.source, self.conn, self.error = source, source.pair.source.connect(SOURCE_DB), None
        self.statement = sql.SQL(
            "DO $$ BEGIN FOR k IN 1..{versions} LOOP "
            "DELETE FROM {t} WHERE id = k; UPDATE {t} SET ver = k WHERE id = {middle}; "
            "INSERT INTO {t} VALUES ({inserted} + k, k, 'new'); COMMIT; PERFORM pg_sleep(0.0005); "
            "END LOOP; END $$"
        ).format(
            t=ident("snap", source.name),
            versions=sql.Literal(MAX_VERSIONS),
            middle=sql.Literal(MIDDLE),
            inserted=sql.Literal(INSERTED),
        )

    def run(self) -> None:
        try:
            self.conn.cursor().execute(self.statement)
        except Exception as exc:  # cancelled by stop(), or a failure the test reports
            self.error = exc

    @property
    def version(self) -> int:
        top = self.source.remote("SELECT max(id) FROM {t} WHERE id > %s", (INSERTED,))[0][0]
        return 0 if top is None else top - INSERTED

    def wait_for(self, version: int) -> None:
        deadline = time.monotonic() + 60
        while self.version < version and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.01)
        assert self.version >= version, self.error

    def stop(self) -> None:
        self.conn.cancel()
        self.join(timeout=60)
        self.conn.close()


def new_target() -> str:
    return f"public.snap_{uuid.uuid4().hex[:8]}"


def bulk_copy(source: Source, target: str, relay: str, **kwargs):
    plan = plan_copy(source.foreign, target, transport="copy", key_columns=["id"], **kwargs)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan, relay=relay)


def expected_rows(version: int) -> list[tuple[int, int]]:
    """The source as version ``version`` committed it (id, ver)."""
    kept = [(i, version if i == MIDDLE else 0) for i in range(version + 1, ROWS + 1)]
    return kept + [(INSERTED + k, k) for k in range(1, version + 1)]


@pytest.mark.parametrize("relay", ["psql", "python"])
def test_parallel_direct_copy_of_a_live_table_holds_exactly_one_snapshot(snap, relay):
    src, t = Source(snap), new_target()
    writer = Writer(src)
    writer.start()
    try:
        writer.wait_for(20)
        before = writer.version
        result = bulk_copy(src, t, relay, parallelism=3)
        after = writer.version
    finally:
        writer.stop()
    assert writer.error is None or "cancel" in str(writer.error), writer.error  # cancelled, or done
    assert result["path"] == "direct" and result["parallelism"] == 3
    assert after > before, "the writer must commit while the copy reads, or this test proves nothing"
    rows = local(snap, "SELECT id, ver FROM {t} ORDER BY id", t=t)
    version = max((i - INSERTED for i, _ in rows if i > INSERTED), default=0)
    assert before <= version <= after
    # Every range read the same version: rows deleted (first range), updated (middle), inserted (last).
    assert rows == expected_rows(version)


# -- verify on the direct path ----------------------------------------------------------------------


class TypedSource:
    """Many built-in types (and an array, which is only counted), imported as is: binary direct COPY."""

    def __init__(self, pair) -> None:
        self.pair = pair
        self.name = f"v_{uuid.uuid4().hex[:8]}"
        self.foreign = f"proxy_snap.{self.name}"
        remote = ident("snap", self.name)
        pair.source.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, amount numeric, at timestamptz, span interval, "
                "f8 float8, doc jsonb, note text, code varchar(8), blob bytea, uid uuid, tags text[])"
            ).format(remote),
            dbname=SOURCE_DB,
        )
        pair.source.execute(
            sql.SQL(
                "INSERT INTO {} SELECT g, g * 1.005, '2024-03-10 01:30+00'::timestamptz + g * interval '1h', "
                "make_interval(secs => g * 1.5), "
                "CASE g % 50 WHEN 1 THEN 'NaN'::float8 WHEN 2 THEN '-Infinity' WHEN 3 THEN -0.0 "
                "ELSE g / 3.0 END, jsonb_build_object('g', g), "
                "CASE WHEN g % 9 = 0 THEN NULL ELSE 'ñ ' || g END, 'c' || g % 10, "
                "decode(md5(g::text), 'hex'), md5(g::text)::uuid, ARRAY['a', NULL] "
                "FROM generate_series(1, 500) g"
            ).format(remote),
            dbname=SOURCE_DB,
        )
        pair.source.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(remote, ident(READER)), dbname=SOURCE_DB
        )
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            hook.import_foreign_schema(SERVER, "snap", "proxy_snap", limit_to=[self.name])


def fdw_copy(source, target: str, **kwargs):
    plan = plan_copy(source.foreign, target, key_columns=["id"], **kwargs)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan)


@pytest.mark.parametrize("parallelism", [1, 3])
@pytest.mark.parametrize("relay", ["psql", "python"])
def test_verify_on_the_direct_path_gives_the_fdw_paths_count_and_checksum(snap, relay, parallelism):
    src, t = TypedSource(snap), new_target()
    reference = fdw_copy(src, new_target(), verify="checksum", parallelism=parallelism)["verify"]
    assert reference["result"] == "match" and reference["not_checksummed"] == ["tags"]
    created = bulk_copy(src, t, relay, verify="checksum", parallelism=parallelism)
    assert created["path"] == "direct" and created["swap"] == "created"
    assert created["verify"] == reference  # the same checksum, computed by the remote in the snapshot
    in_place = bulk_copy(src, t, relay, verify="checksum", parallelism=parallelism, swap="in_place")
    assert in_place["path"] == "direct" and in_place["verify"] == reference
    counted = bulk_copy(src, t, relay, verify="count", parallelism=parallelism, where="id > 100")
    assert counted["verify"] == {
        "mode": "count",
        "result": "match",
        "rows": 400,
        "checksum": None,
        "not_checksummed": [],
    }


@pytest.mark.parametrize("relay", ["psql", "python"])
def test_verify_on_the_direct_path_catches_a_target_trigger_that_rewrites_rows_and_commits_nothing(
    snap, relay
):
    src, t = Source(snap, rows=100), new_target()
    assert bulk_copy(src, t, relay, verify="checksum", parallelism=3)["verify"]["result"] == "match"
    local(
        snap,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "NEW.name := upper(NEW.name); RETURN NEW; END $$",
        f=f"{t}_shout",
    )
    local(
        snap,
        "CREATE TRIGGER shout BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()",
        t=t,
        f=f"{t}_shout",
    )
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 1")
    before = local(snap, "SELECT * FROM {t} ORDER BY id", t=t)
    # a BEFORE trigger is refused before the verify's own check, whatever verify is (test_skipped_writes)
    with pytest.raises(
        FdwError, match=r"check failed: after the .* BEFORE row trigger or rule on the target"
    ):
        bulk_copy(src, t, relay, verify="checksum", parallelism=3)
    assert local(snap, "SELECT * FROM {t} ORDER BY id", t=t) == before
    assert local(snap, "SELECT count(*) FROM pg_tables WHERE tablename LIKE %s", (f"{t[7:]}_%",)) == [(0,)]


def test_verify_checksum_is_refused_when_the_direct_path_reads_text_before_any_change(snap):
    src, t = Source(snap, rows=100), new_target()
    # Declared text over the remote's varchar: the direct path reads text; checksum only for binary reads.
    src.remote("ALTER TABLE {t} ADD COLUMN code varchar(20)")
    src.remote("UPDATE {t} SET code = 'c' || id")
    local(snap, "ALTER FOREIGN TABLE {f} ADD COLUMN code text", f=src.foreign)
    with pytest.raises(FdwConfigError, match=r"verify='checksum' on the direct path .* read as text"):
        bulk_copy(src, t, "python", verify="checksum")
    assert local(snap, "SELECT to_regclass(%s)", (t,)) == [(None,)]
    counted = bulk_copy(src, t, "python", verify="count", parallelism=3)
    assert counted["path"] == "direct" and counted["verify"]["rows"] == 100
    plan = plan_copy(src.foreign, new_target(), verify="checksum", transport="auto")
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        auto = hook.bulk_copy(plan)
    assert auto["path"] == "fdw" and auto["verify"]["result"] == "match"  # postgres_fdw checksums text
