"""Every network step is bounded by default: a remote that accepts TCP and never answers (a tarpit)
fails each operation within a bounded time instead of hanging it (issue 11, item 1).

Each test runs the operation in a daemon thread with a generous bound (``HANG``): when the code
under test hangs, the test fails instead of hanging the suite. Durations are only compared with that
generous bound; the measured figures are printed (``-s``) for the docs.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import READER, READER_PASSWORD, SOURCE_DB, TARGET_DB, ident, python_json, users_foreign_table

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.operators.copy import BulkCopyOperator
from airflow_provider_fdw.operators.server import CreateForeignServerOperator
from airflow_provider_fdw.sensors.replication import ReplicationLagSensor
from airflow_provider_fdw.timeouts import DEFAULT_CONNECT_TIMEOUT, FdwTimeoutError, run_bounded
from fdw_testing.sample_data import postgres_connection
from fdw_testing.tarpit import Tarpit

# Far above every default bound (10 s logins, 8 s sensor timeouts), far below "hangs for ever".
HANG = 90.0


def outcome(fn: Callable[[], Any]) -> tuple[BaseException | None, float]:
    """Run ``fn`` (bounded by HANG); return the exception it raised (or None) and the seconds it took."""
    started = time.monotonic()

    def call() -> BaseException | None:
        try:
            fn()
        except BaseException as exc:
            return exc
        return None

    error = run_bounded(call, HANG, "operation under test")  # FdwTimeoutError here = it hung
    elapsed = time.monotonic() - started
    print(f"\n[time-to-failure] {elapsed:.1f}s: {type(error).__name__}: {error}")
    return error, elapsed


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    with Tarpit() as pit:
        yield pit


@pytest.fixture
def tarpit_conns(pair, tarpit, monkeypatch) -> Tarpit:
    """``fdw_tarpit`` (postgres_fdw) and ``pg_tarpit`` (postgres) point at the tarpit."""
    common = {"host": tarpit.host, "port": tarpit.port, "login": READER, "password": READER_PASSWORD}
    monkeypatch.setenv(
        "AIRFLOW_CONN_FDW_TARPIT", json.dumps({"conn_type": "postgres_fdw", "schema": SOURCE_DB, **common})
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_PG_TARPIT", json.dumps({"conn_type": "postgres", "schema": SOURCE_DB, **common})
    )
    return tarpit


def tarpit_foreign_table(target, server_name: str, schema: str) -> str:
    """A server on the tarpit (created without the check) and a foreign table on it."""
    return users_foreign_table(target, "fdw_tarpit", server_name, schema, "app", "users")


def test_create_server_check_fails_in_bounded_time_against_a_tarpit(tarpit_conns, server_name):
    op = CreateForeignServerOperator(task_id="server", server_name=server_name, fdw_conn_id="fdw_tarpit")
    error, elapsed = outcome(lambda: op.execute({}))
    assert isinstance(error, FdwError), error
    assert server_name in str(error) and "not reachable" in str(error)
    assert elapsed < HANG
    assert tarpit_conns.accepted >= 1  # the local server really dialled the tarpit


def test_bulk_copy_through_fdw_fails_in_bounded_time_against_a_tarpit(
    tarpit_conns, target, server_name, local_schema
):
    source = tarpit_foreign_table(target, server_name, local_schema)
    op = BulkCopyOperator(task_id="copy", source_table=source, target_table=f"{local_schema}.copy")
    error, elapsed = outcome(lambda: op.execute({}))
    assert isinstance(error, FdwError), error
    assert elapsed < HANG


@pytest.mark.parametrize("relay", ["psql", "python"])
def test_bulk_copy_direct_fails_in_bounded_time_against_a_tarpit(
    tarpit_conns, target, server_name, local_schema, relay
):
    source = tarpit_foreign_table(target, server_name, local_schema)
    plan = plan_copy(source, f"{local_schema}.copy")

    def copy() -> None:
        with FdwHook(fdw_conn_id="fdw_tarpit") as hook:
            hook.bulk_copy(plan, direct=True, relay=relay)

    error, elapsed = outcome(copy)
    assert isinstance(error, FdwError), error
    assert "timeout" in str(error).lower()
    assert elapsed < HANG


def test_second_copy_of_the_same_target_waits_a_bounded_time_and_names_the_holder(
    pair, target, server_name, local_schema
):
    source = tarpit_foreign_table_on_source(target, server_name, local_schema)
    holder = target.connect(TARGET_DB)
    holder.execute("SET application_name = 'someone else copying'")
    holder.execute(
        "SELECT pg_advisory_lock(hashtext(%s))", (f"airflow_provider_fdw:copy:{local_schema}.copy",)
    )
    try:
        op = BulkCopyOperator(
            task_id="copy", source_table=source, target_table=f"{local_schema}.copy", target_lock_wait=3
        )
        error, elapsed = outcome(lambda: op.execute({}))
    finally:
        holder.close()
    assert isinstance(error, FdwTimeoutError), error
    assert "someone else copying" in str(error)
    assert elapsed < HANG


def tarpit_foreign_table_on_source(target, server_name: str, schema: str) -> str:
    """A working foreign table (server on the real source) for tests that need the copy to start."""
    return users_foreign_table(target, "fdw_source", server_name, schema, "app", "users")


@pytest.mark.parametrize("hung", ["replica", "primary"])
def test_sensor_poke_timeout_holds_when_a_server_hangs(tarpit_conns, hung):
    sensor = ReplicationLagSensor(
        task_id=f"lag_{uuid.uuid4().hex[:6]}",
        postgres_conn_id="pg_tarpit" if hung == "replica" else "source_db",
        primary_conn_id="pg_tarpit" if hung == "primary" else None,
        max_lag_bytes=0,
        timeout=8,
        poke_interval=1,
        mode="poke",
    )
    from airflow.sdk.exceptions import AirflowSensorTimeout

    error, elapsed = outcome(lambda: sensor.execute({}))
    assert isinstance(error, AirflowSensorTimeout | FdwError), error
    assert elapsed < HANG


def test_deferred_sensor_timeout_holds_when_the_replica_hangs(airflow_db, tarpit_conns, capfd):
    from airflow.sdk import DAG

    from fdw_testing.dagrun import run_dag

    with DAG(
        f"lag_tarpit_{uuid.uuid4().hex[:6]}",
        schedule=None,
        start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    ) as dag:
        ReplicationLagSensor(
            task_id="lag",
            postgres_conn_id="pg_tarpit",
            max_lag_bytes=0,
            timeout=8,
            poke_interval=1,
            deferrable=True,
            measurement_timeout=3,
        )
    started = time.monotonic()  # dag.test() needs the main thread (signals): not run via outcome()
    result = run_dag(dag)
    elapsed = time.monotonic() - started
    print(f"\n[time-to-failure] deferred sensor, hung replica: {elapsed:.1f}s")
    assert result.task_states == {"lag": "failed"}
    assert "Sensor timed out waiting for replication lag" in "".join(capfd.readouterr())
    assert elapsed < HANG


def test_connections_get_bounded_defaults_unless_the_connection_sets_them(pair):
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        conn = hook.get_conn()
        params = conn.info.get_parameters()
        conn.close()
    assert params["connect_timeout"] == str(DEFAULT_CONNECT_TIMEOUT)
    assert params["keepalives"] == "1"
    assert params["application_name"] == "airflow_provider_fdw"


def test_a_long_reader_delays_new_readers_by_one_lock_timeout_not_its_whole_read(pair, target, local_schema):
    """The swap waits for its lock in short attempts (default lock_timeout 1 s, retried): readers that
    arrive meanwhile queue behind it for at most one attempt, not for the long reader's 10 s."""
    from airflow_provider_fdw.bulkcopy import BulkCopy

    target.execute(sql.SQL("CREATE SCHEMA {}").format(ident(local_schema)), dbname=TARGET_DB)
    target.execute(
        sql.SQL("CREATE TABLE {} AS SELECT g AS id FROM generate_series(1, 100) g").format(
            ident(local_schema, "src")
        ),
        dbname=TARGET_DB,
    )
    target.execute(
        sql.SQL("CREATE TABLE {} (LIKE {})").format(ident(local_schema, "t"), ident(local_schema, "src")),
        dbname=TARGET_DB,
    )
    plan = plan_copy(f"{local_schema}.src", f"{local_schema}.t")
    assert plan.lock_timeout == "1s"  # the documented default
    long_reader = target.connect(TARGET_DB, autocommit=False)
    long_reader.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(local_schema, "t")))
    waiting_swap = threading.Event()
    result: dict[str, Any] = {}

    def copy() -> None:
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            log = hook.log

            class Spy:  # notices the first "lock busy" retry
                def __getattr__(self, name):
                    return getattr(log, name)

                def info(self, msg, *args):
                    if "lock busy" in msg:
                        waiting_swap.set()
                    log.info(msg, *args)

            result["summary"] = BulkCopy(plan, hook._new_session, Spy()).run(hook.session).summary()

    worker = threading.Thread(target=copy)
    worker.start()
    try:
        assert waiting_swap.wait(30), "the swap never waited for the long reader"
        waits = []
        for _ in range(3):  # new readers while the swap keeps retrying
            started = time.monotonic()
            target.execute(
                sql.SQL("SELECT count(*) FROM {}").format(ident(local_schema, "t")), dbname=TARGET_DB
            )
            waits.append(time.monotonic() - started)
            time.sleep(0.5)
        print(f"\n[new readers behind the swap] waited {', '.join(f'{w:.2f}s' for w in waits)}")
        assert max(waits) < 5.0  # the long reader holds its lock for 10 s
        time.sleep(max(0.0, 8 - sum(waits)))
    finally:
        long_reader.rollback()
        long_reader.close()
    worker.join(60)
    assert result["summary"]["rows"] == 100 and result["summary"]["swap"] in ("renamed", "in-place")


# -- mysql_fdw: its client library has no connect or read time-out ---------------------------------
# A backend reading from a MySQL server that accepts and never answers waits in the client library
# for ever: statement_timeout, pg_cancel_backend and pg_terminate_backend do nothing until the TCP
# connection ends. So the provider must not let the local server dial such a remote at all.


@pytest.fixture
def mysql_tarpit(pair, tarpit, server_name, local_schema, monkeypatch) -> tuple[str, str]:
    """A ``mysql_tarpit`` connection, a mysql_fdw server made by hand on the tarpit (its user mapping,
    a schema) and a foreign table on it: (server, foreign table)."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_MYSQL_TARPIT",
        json.dumps(
            {
                "conn_type": "mysql_fdw",
                "host": tarpit.host,
                "port": tarpit.port,
                "schema": "shop",
                "login": "reader",
                "password": "tarpit-secret",
            }
        ),
    )
    statements = [
        sql.SQL("CREATE EXTENSION IF NOT EXISTS mysql_fdw"),
        # character_set as the provider sets it (a copy or import refuses a server without one)
        sql.SQL(
            "CREATE SERVER {} FOREIGN DATA WRAPPER mysql_fdw "
            "OPTIONS (host {}, port {}, character_set 'utf8mb4')"
        ).format(ident(server_name), sql.Literal(tarpit.host), sql.Literal(str(tarpit.port))),
        sql.SQL(
            "CREATE USER MAPPING FOR CURRENT_USER SERVER {} "
            "OPTIONS (username 'reader', password 'tarpit-secret')"
        ).format(ident(server_name)),
        sql.SQL("CREATE SCHEMA {}").format(ident(local_schema)),
        sql.SQL(
            "CREATE FOREIGN TABLE {} (id int, name text) SERVER {} "
            "OPTIONS (dbname 'shop', table_name 'items')"
        ).format(ident(local_schema, "items"), ident(server_name)),
    ]
    for statement in statements:
        pair.target.execute(statement, dbname=TARGET_DB)
    return server_name, f"{local_schema}.items"


def assert_no_backend_left_waiting(pair) -> None:
    """No backend of the local database is still running a statement (one stuck in the MySQL client
    library cannot be ended; it would hold its locks and snapshot until the remote closes)."""
    query = (
        "SELECT pid, query FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    deadline = time.monotonic() + 10
    while (
        active := pair.target.execute(query, (TARGET_DB,), dbname="postgres")
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert active == []


def test_create_mysql_server_check_fails_in_bounded_time_against_a_tarpit(mysql_tarpit, tarpit, pair):
    server = f"{mysql_tarpit[0]}_new"
    op = CreateForeignServerOperator(task_id="server", server_name=server, fdw_conn_id="mysql_tarpit")
    error, elapsed = outcome(lambda: op.execute({}))
    assert isinstance(error, FdwTimeoutError), error
    assert f"{tarpit.host}:{tarpit.port}" in str(error) and "never answered" in str(error)
    assert elapsed < HANG
    assert tarpit.accepted >= 1
    assert_no_backend_left_waiting(pair)
    left = pair.target.execute(
        "SELECT 1 FROM pg_foreign_server WHERE srvname = %s", (server,), dbname=TARGET_DB
    )
    assert left == []


@pytest.mark.parametrize("read", ["foreign table", "view over it"])
@pytest.mark.parametrize("mode", ["replace", "append"])
def test_bulk_copy_from_mysql_fails_in_bounded_time_against_a_tarpit(
    mysql_tarpit, tarpit, pair, local_schema, read, mode
):
    server, source = mysql_tarpit
    if read == "view over it":
        pair.target.execute(
            sql.SQL("CREATE VIEW {} AS SELECT id, name FROM {}").format(
                ident(local_schema, "items_view"), ident(local_schema, "items")
            ),
            dbname=TARGET_DB,
        )
        source = f"{local_schema}.items_view"
    target = ident(local_schema, "copy")
    pair.target.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, name text); INSERT INTO {} VALUES (1, 'kept')").format(
            target, target
        ),
        dbname=TARGET_DB,
    )
    op = BulkCopyOperator(
        task_id="copy",
        source_table=source,
        target_table=f"{local_schema}.copy",
        mode=mode,
        key_columns=["id"],
    )
    error, elapsed = outcome(lambda: op.execute({}))
    assert isinstance(error, FdwTimeoutError), error
    assert server in str(error) and f"{tarpit.host}:{tarpit.port}" in str(error)
    assert "Nothing was changed" in str(error)
    assert elapsed < HANG
    assert_no_backend_left_waiting(pair)
    assert pair.target.execute(sql.SQL("SELECT id, name FROM {}").format(target), dbname=TARGET_DB) == [
        (1, "kept")
    ]


def test_import_from_mysql_fails_in_bounded_time_against_a_tarpit(mysql_tarpit, tarpit, pair, local_schema):
    from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator

    op = ImportForeignSchemaOperator(
        task_id="import",
        server_name=mysql_tarpit[0],
        remote_schema="shop",
        local_schema=f"{local_schema}_imp",
    )
    error, elapsed = outcome(lambda: op.execute({}))
    assert isinstance(error, FdwTimeoutError), error
    assert f"{tarpit.host}:{tarpit.port}" in str(error)
    assert elapsed < HANG
    assert_no_backend_left_waiting(pair)


def test_refresh_of_a_materialized_view_over_mysql_fails_in_bounded_time_against_a_tarpit(
    mysql_tarpit, tarpit, pair, local_schema
):
    from airflow_provider_fdw.operators.matview import RefreshMaterializedViewOperator

    pair.target.execute(
        sql.SQL("CREATE MATERIALIZED VIEW {} AS SELECT id, name FROM {} WITH NO DATA").format(
            ident(local_schema, "items_mv"), ident(local_schema, "items")
        ),
        dbname=TARGET_DB,
    )
    op = RefreshMaterializedViewOperator(
        task_id="refresh", views=f"{local_schema}.items_mv", concurrently=False
    )
    error, elapsed = outcome(lambda: op.execute({}))
    assert isinstance(error, FdwTimeoutError), error
    assert f"{tarpit.host}:{tarpit.port}" in str(error)
    assert elapsed < HANG
    assert_no_backend_left_waiting(pair)


def test_the_greeting_wait_is_the_operators_connect_timeout(mysql_tarpit, tarpit, pair, local_schema):
    """A network where a MySQL server greets late (slow reverse DNS on its side) raises the wait with
    the operator's ``connect_timeout``, as it does for every login; lowered here."""
    op = BulkCopyOperator(
        task_id="copy", source_table=mysql_tarpit[1], target_table=f"{local_schema}.copy", connect_timeout=2
    )
    error, elapsed = outcome(lambda: op.execute({}))
    assert isinstance(error, FdwTimeoutError), error
    assert "within 2 s" in str(error)
    assert elapsed < 8  # the default wait is 10 s


# Paths an adversarial review found that still made the local server dial a silent MySQL server:
# mysql_fdw connects when a statement is planned (EXPLAIN too), on ANALYZE and before a write.


def refused_before_dialling(pair, fn: Callable[[], Any]) -> None:
    """``fn`` fails by the greeting check, in bounded time, leaving no backend waiting on MySQL."""
    error, elapsed = outcome(fn)
    assert isinstance(error, FdwTimeoutError) and "never answered" in str(error), error
    assert elapsed < HANG
    assert_no_backend_left_waiting(pair)


def one_row_table(pair, schema: str, name: str) -> None:
    table = ident(schema, name)
    statement = sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, name text); INSERT INTO {} VALUES (1, 'x')")
    pair.target.execute(statement.format(table, table), dbname=TARGET_DB)


def test_creating_a_materialized_view_over_mysql_is_checked_before_it_reads(
    mysql_tarpit, tarpit, pair, local_schema
):
    from airflow_provider_fdw.operators.matview import RefreshMaterializedViewOperator

    view = f"{local_schema}.items_mv"
    op = RefreshMaterializedViewOperator(
        task_id="refresh", views=view, query=f"SELECT id, name FROM {local_schema}.items"
    )
    refused_before_dialling(pair, lambda: op.execute({}))
    assert pair.target.execute("SELECT to_regclass(%s)", (view,), dbname=TARGET_DB) == [(None,)]


def test_a_write_to_a_mysql_foreign_table_is_checked(mysql_tarpit, tarpit, pair, local_schema):
    from airflow_provider_fdw.operators.embedding import CopyToForeignTableOperator

    one_row_table(pair, local_schema, "outbox")
    op = CopyToForeignTableOperator(
        task_id="write",
        local_table=f"{local_schema}.outbox",
        foreign_table=f"{local_schema}.items",
        key_column="id",
        columns=["name"],
    )
    refused_before_dialling(pair, lambda: op.execute({}))


def test_analyze_of_a_mysql_foreign_table_is_checked(mysql_tarpit, tarpit, pair, local_schema):
    from airflow_provider_fdw.names import QualifiedName

    def analyze() -> None:
        with FdwHook() as hook:
            hook.analyze_tables([QualifiedName(local_schema, "items")])

    refused_before_dialling(pair, analyze)


def test_a_copy_whose_where_reads_a_mysql_foreign_table_is_checked(mysql_tarpit, tarpit, pair, local_schema):
    one_row_table(pair, local_schema, "src")
    op = BulkCopyOperator(
        task_id="copy",
        source_table=f"{local_schema}.src",
        target_table=f"{local_schema}.copy",
        where=f"id IN (SELECT id FROM {local_schema}.items)",
    )
    refused_before_dialling(pair, lambda: op.execute({}))
    assert pair.target.execute("SELECT to_regclass(%s)", (f"{local_schema}.copy",), dbname=TARGET_DB) == [
        (None,)
    ]


def test_the_port_is_read_as_mysql_fdw_reads_it():
    """mysql_fdw reads ``port`` with C ``atoi`` (leading digits; 0 or none: 3306) and never checks it:
    a server made by hand may hold any of these, and the check must dial what mysql_fdw dials."""
    from airflow_provider_fdw.wrappers import MYSQL_FDW

    for raw, port in (
        ("", 3306),
        ("3306.0", 3306),
        (" 3307 # replica", 3307),
        ("0", 3306),
        ("x", 3306),
        ("\uff13\uff13\uff10\uff17", 3306),  # fullwidth digits: not digits to atoi
        ("4294970602", 3306),  # glibc's atoi wraps to a 32-bit int
    ):
        assert MYSQL_FDW.greeting_address({"host": "db.example", "port": raw}) == ("db.example", port), raw
    assert MYSQL_FDW.greeting_address({}) == ("127.0.0.1", 3306)
    assert MYSQL_FDW.greeting_address({"host": "localhost"}) is None  # the client library's Unix socket
    assert MYSQL_FDW.greeting_address({"host": "db.example", "port": "70000"}) is None


def test_every_address_of_a_host_name_is_checked(monkeypatch):
    """A name with several addresses (DNS round robin: each lookup may order them differently) where
    one greets and one accepts and stays silent: the local server's client library may get the
    silent one first, so the name is refused."""
    import socket

    from airflow_provider_fdw.remote_answers import first_answer

    greeter = socket.create_server(("127.0.0.1", 0))
    greeter.settimeout(0.2)
    stop = threading.Event()

    def greet() -> None:
        while not stop.is_set():
            try:
                conn, _ = greeter.accept()
            except TimeoutError:
                continue
            conn.sendall(b"\x4a\x00\x00\x00\x0a5.5.5-10.11.19-MariaDB")
            conn.close()

    thread = threading.Thread(target=greet, daemon=True)
    thread.start()
    resolve = socket.getaddrinfo
    try:
        with Tarpit() as pit:
            addresses = [("127.0.0.1", greeter.getsockname()[1]), ("127.0.0.1", pit.port)]

            def round_robin(host, port, *args, **kwargs):
                if host != "mysql.example":
                    return resolve(host, port, *args, **kwargs)
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", a) for a in addresses]

            monkeypatch.setattr(socket, "getaddrinfo", round_robin)
            answer = first_answer("mysql.example", 3306, 2.0)
            assert pit.accepted >= 1
    finally:
        stop.set()
        thread.join(5)
        greeter.close()
    assert answer == ("silent", " (address 127.0.0.1)")


def test_a_view_query_ending_in_a_line_comment_is_checked_before_it_reads(
    mysql_tarpit, tarpit, pair, local_schema
):
    """The view is created empty whatever the query's last line is (a trailing ``--`` comment used to
    comment out ``WITH NO DATA``, and the creation read MySQL before the check)."""
    from airflow_provider_fdw.operators.matview import RefreshMaterializedViewOperator

    op = RefreshMaterializedViewOperator(
        task_id="refresh",
        views=f"{local_schema}.items_mv",
        query=f"SELECT id, name FROM {local_schema}.items -- the MySQL items",
    )
    refused_before_dialling(pair, lambda: op.execute({}))


PSYCOPG2_COPY = """
import json, sys
sys.modules["psycopg"] = None  # an install without psycopg 3: PostgresHook uses psycopg2
from airflow_provider_fdw.compat import USE_PSYCOPG3
from airflow_provider_fdw.operators.copy import BulkCopyOperator
schema = sys.argv[1]
op = BulkCopyOperator(task_id="copy", source_table=f"{schema}.src", target_table=f"{schema}.copy",
                      where=f"id IN (SELECT id FROM {schema}.items)")
try:
    op.execute({})
    error = None
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"psycopg3": USE_PSYCOPG3, "error": error}))
"""


def test_with_psycopg2_a_where_reading_mysql_is_checked_before_it_is_parsed(
    mysql_tarpit, tarpit, pair, local_schema
):
    """psycopg2 parses ``where`` by running ``SELECT 1 … WHERE (…) LIMIT 0``, which plans it (and a
    subquery over a mysql_fdw table dials MySQL): the check comes first."""
    one_row_table(pair, local_schema, "src")
    out = python_json(PSYCOPG2_COPY, local_schema, timeout=HANG)
    assert out["psycopg3"] is False
    assert out["error"] and "never answered" in out["error"]
    assert_no_backend_left_waiting(pair)


def test_a_role_without_temp_keeps_copying_with_a_where(
    mysql_tarpit, pair, local_schema, monkeypatch, capsys
):
    """Which foreign tables a ``where`` reads is read from a temporary view: a role that may not create
    one (TEMPORARY revoked from PUBLIC, a common hardening) still copies, with a warning."""
    role, t = f"notemp_{uuid.uuid4().hex[:6]}", pair.target
    names = {
        "t": ident(local_schema, "src"),
        "r": ident(role),
        "s": ident(local_schema),
        "d": ident(TARGET_DB),
    }

    def run(statement: str) -> list[tuple]:
        return t.execute(sql.SQL(statement).format(**names), dbname=TARGET_DB)

    run("CREATE ROLE {r} LOGIN PASSWORD 'notemp-pw-1'")
    run("REVOKE TEMPORARY ON DATABASE {d} FROM PUBLIC")
    try:
        run("CREATE TABLE {t} AS SELECT g AS id, 'n' || g AS name FROM generate_series(1, 10) g")
        run("ALTER TABLE {t} OWNER TO {r}")
        run("GRANT USAGE, CREATE ON SCHEMA {s} TO {r}")
        local_conn = postgres_connection(t, TARGET_DB, role, "notemp-pw-1")
        monkeypatch.setenv("AIRFLOW_CONN_NOTEMP_LOCAL", local_conn)
        op = BulkCopyOperator(
            task_id="copy",
            postgres_conn_id="notemp_local",
            source_table=f"{local_schema}.src",
            target_table=f"{local_schema}.copy",
            where="id > 5",
        )
        op.execute({})
    finally:
        run("GRANT TEMPORARY ON DATABASE {d} TO PUBLIC")
    assert t.execute(
        sql.SQL("SELECT count(*) FROM {}").format(ident(local_schema, "copy")), dbname=TARGET_DB
    )[0] == (5,)
    assert "Could not read which foreign tables the where condition reads" in "".join(capsys.readouterr())


def test_a_name_whose_addresses_are_all_silent_is_refused_after_one_wait(monkeypatch):
    import socket

    from airflow_provider_fdw.remote_answers import first_answer

    resolve = socket.getaddrinfo
    with Tarpit() as a, Tarpit() as b, Tarpit() as c:
        addresses = [("127.0.0.1", p.port) for p in (a, b, c)]

        def round_robin(host, port, *args, **kwargs):
            if host != "mysql.example":
                return resolve(host, port, *args, **kwargs)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", x) for x in addresses]

        monkeypatch.setattr(socket, "getaddrinfo", round_robin)
        started = time.monotonic()
        answer = first_answer("mysql.example", 3306, 2.0)
        elapsed = time.monotonic() - started
    assert answer[0] == "silent"
    assert elapsed < 4  # one wait of 2 s, not three
