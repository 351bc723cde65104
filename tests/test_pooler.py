"""A connection pooler (PgBouncer 1.18, as many teams deploy it) in front of the target or the source.

Each test starts its own ``pgbouncer`` on 127.0.0.1 and a free port (scripts/bootstrap.sh installs
the Debian package; its system service is not used). What the provider must do through a pooler:
work correctly, or refuse with an :class:`FdwConfigError` before anything changes. A run lock two
runs hold together, a lock left behind, a failure half-way or a success on wrong data is a defect
(an adversarial review, 2026-12-07).
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TARGET_DB, RemoteTable, fdw_sandbox, local, server_as, small_source

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.locks import acquire_run_lock, lock_key, release_run_lock
from fdw_testing.pgcluster import Cluster, free_port
from fdw_testing.sample_data import READER, READER_PASSWORD, SOURCE_DB, postgres_connection

SERVER = "pooler_src"
LOG = logging.getLogger("test_pooler")
IV_ROLE, IV_PASSWORD = "pooler_iv_reader", "Iv-Reader-Secret-3"


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
    )
    assert found, "pgbouncer is not installed: run scripts/bootstrap.sh (apt-get install pgbouncer)"
    return found


class Bouncer:
    """One pgbouncer process of this test (started and stopped by PID), in front of ``backend``."""

    def __init__(
        self,
        backend: Cluster,
        mode: str,
        pool_size: int = 20,
        ignore: str = "extra_float_digits",
        users: dict[str, str] | None = None,
    ) -> None:
        self.backend, self.mode, self.port = backend, mode, free_port()
        self.home = Path(tempfile.mkdtemp(prefix="fdw-pgbouncer-"))
        users = {backend.superuser: backend.password, READER: READER_PASSWORD, **(users or {})}
        (self.home / "userlist.txt").write_text("".join(f'"{u}" "{p}"\n' for u, p in users.items()))
        (self.home / "pgbouncer.ini").write_text(
            f"[databases]\n* = host={backend.host} port={backend.port}\n\n[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {self.home / 'userlist.txt'}\n"
            f"pool_mode = {mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n"
            f"ignore_startup_parameters = {ignore}\nlogfile = {self.home / 'pgbouncer.log'}\n"
        )
        command = [pgbouncer_binary()]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            user = pwd.getpwnam("nobody")
            for path in [self.home, *self.home.iterdir()]:
                os.chown(path, user.pw_uid, user.pw_gid)
            command += ["-u", "nobody"]
        self.process = subprocess.Popen([*command, str(self.home / "pgbouncer.ini")], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, (
                self.process.stderr.read().decode() if self.process.stderr else ""
            )
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "pgbouncer did not start"
                time.sleep(0.05)

    def cluster(self) -> Cluster:
        """The backend as clients see it through this pooler."""
        return Cluster(
            self.backend.name, "127.0.0.1", self.port, self.backend.password, self.backend.superuser
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def pooled(airflow_connections, monkeypatch) -> Iterator[Callable[..., str]]:
    """``pooled(mode, pool_size=20, extra=None)``: a pgbouncer in front of the TARGET, and the id of
    an Airflow postgres connection to the target database through it."""
    started: list[Bouncer] = []

    def make(mode: str, pool_size: int = 20, extra: dict | None = None) -> str:
        bouncer = Bouncer(airflow_connections.target, mode, pool_size)
        started.append(bouncer)
        conn_id = f"pooled_{uuid.uuid4().hex[:8]}"
        conn = json.loads(postgres_connection(bouncer.cluster(), TARGET_DB))
        if extra is not None:
            conn["extra"] = extra
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    yield make
    for bouncer in started:
        bouncer.stop()


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "pooler", SERVER)


def remote_table(sandbox, rows: int = 50_000) -> RemoteTable:
    return small_source(sandbox, "pooler", SERVER, rows)


def together(run: Callable[[], object]) -> list[BaseException]:
    """``run()`` in two threads started at the same moment; what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def one() -> None:
        barrier.wait()
        try:
            run()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def copy(conn_id: str, source: str, target: str, **kwargs) -> dict:
    wait = kwargs.pop("target_lock_wait", 30)
    with FdwHook(postgres_conn_id=conn_id, fdw_conn_id=kwargs.pop("fdw_conn_id", "fdw_source")) as hook:
        return hook.bulk_copy(plan_copy(source, target, **kwargs), target_lock_wait=wait)


def advisory_holders(sandbox, key: str) -> list[tuple]:
    return local(
        sandbox,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND objid::bigint = (hashtext(%s)::bigint & 4294967295)",
        (key,),
    )


# -- the target behind a transaction-mode pool --------------------------------------------------------


def test_two_runs_through_a_transaction_pool_never_hold_the_run_lock_together(sandbox, pooled):
    """The run lock is a session advisory lock: through pool_mode=transaction the second run's attempt
    lands on the backend the first one took it on (pgbouncer hands out the most recently used idle
    server), so pg_try_advisory_lock succeeds again there: both runs "hold" it."""
    conn_id = pooled("transaction")
    key = lock_key("copy", f"public.pooler_probe_{uuid.uuid4().hex[:8]}")
    first, second = FdwHook(postgres_conn_id=conn_id), FdwHook(postgres_conn_id=conn_id)
    try:
        try:
            acquire_run_lock(first.session, key, 2, LOG)
        except FdwConfigError:
            return  # the provider refuses a transaction-mode pooler up front: fine
        with pytest.raises(FdwError):
            acquire_run_lock(second.session, key, 2, LOG)
    finally:
        for hook in (first, second):
            if hook._session is not None:
                release_run_lock(hook._session, key, LOG)
            hook.close()


def test_two_overlapping_appends_through_a_transaction_pool_both_succeed_or_are_refused(sandbox, pooled):
    """Two appends of one target at once (a retry racing a slow attempt). Today both take the run lock
    on the pool's one backend, and the second one's leftover cleanup drops the first one's staging
    table: the first fails half-way with 'relation … does not exist'."""
    conn_id = pooled("transaction", pool_size=1, extra={"prepare_threshold": None})
    src = remote_table(sandbox, rows=100_000)
    target = f"public.pool_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {t} (id bigint, name text, v bigint)", t=target)
    local(sandbox, "INSERT INTO {t} VALUES (0, 'seed', 0)", t=target)
    errors = together(lambda: copy(conn_id, src.foreign, target, mode="append", watermark_column="v"))
    unexpected = [f"{type(e).__name__}: {e}" for e in errors if not isinstance(e, FdwConfigError)]
    assert unexpected == []
    expected = 1 if len(errors) == 2 else 100_001
    assert local(sandbox, "SELECT count(*), count(DISTINCT id) FROM {t}", t=target) == [(expected, expected)]


def test_a_copy_through_a_transaction_pool_leaves_no_run_lock_behind(sandbox, pooled):
    """The unlock runs on whichever backend the pool hands out; when it is not the one that took the
    lock, pg_advisory_unlock returns false (ignored) and the lock stays on an idle pooled backend:
    every later run of the target that lands elsewhere waits target_lock_wait and fails naming an
    'idle' holder, until pgbouncer recycles that server."""
    conn_id = pooled("transaction", extra={"prepare_threshold": None})
    src = remote_table(sandbox)
    target = f"public.pool_{uuid.uuid4().hex[:8]}"
    key = lock_key("copy", target)
    outcomes = []
    for _ in range(3):
        try:
            result = copy(conn_id, src.foreign, target, mode="replace", key_columns=["id"], parallelism=2)
            outcomes.append(("copied", result["rows"], advisory_holders(sandbox, key)))
        except FdwConfigError:
            outcomes.append(("refused", None, advisory_holders(sandbox, key)))
    assert [holders for *_, holders in outcomes] == [[], [], []], outcomes


def test_copies_through_a_transaction_pool_never_fail_on_prepared_statements(sandbox, pooled):
    """psycopg 3 prepares a statement run 5 times on a connection (_pg3_0, _pg3_1 …); through
    pool_mode=transaction (pgbouncer < 1.21) that name lands on a backend other clients share:
    'prepared statement "_pg3_0" already exists' / 'does not exist' at random steps."""
    conn_id = pooled("transaction")
    src = remote_table(sandbox, rows=5_000)
    failures = []
    for i in range(6):
        target = f"public.pool_{uuid.uuid4().hex[:8]}"
        try:
            copy(conn_id, src.foreign, target, mode="replace")
            copy(conn_id, src.foreign, target, mode="upsert", key_columns=["id"], watermark_column="v")
        except FdwConfigError:
            continue  # refused up front
        except FdwError as exc:
            failures.append(f"copy {i}: {exc}")
    assert failures == []


def test_a_pooler_in_front_of_the_target_is_refused_at_connect_unless_said_to_pin_sessions(sandbox, pooled):
    """A pooler reports its own process id to the client: refused before anything changes, naming
    the extra that says the pool gives each client a server of its own."""
    for mode in ("transaction", "session"):
        refused = r'connection pooler or proxy.*\{"pool_mode": "session"\}'
        with pytest.raises(FdwConfigError, match=refused), FdwHook(postgres_conn_id=pooled(mode)) as hook:
            hook.session.fetchvalue("probe", sql.SQL("SELECT 1"))
    with FdwHook(postgres_conn_id=pooled("session", extra={"pool_mode": "session"})) as hook:
        assert hook.session.fetchvalue("probe", sql.SQL("SELECT 1")) == 1


def test_copies_through_a_session_pool_said_to_be_one_are_correct(sandbox, pooled):
    conn_id = pooled("session", extra={"pool_mode": "session"})
    src = remote_table(sandbox, rows=5_000)
    target = f"public.pool_{uuid.uuid4().hex[:8]}"
    copy(conn_id, src.foreign, target, mode="replace", key_columns=["id"], parallelism=2)
    src.remote("UPDATE {t} SET v = 2, name = 'changed' WHERE id % 100 = 0")
    copy(conn_id, src.foreign, target, mode="replace", key_columns=["id"], transport="copy")
    rows = "SELECT id, name, v FROM {t} ORDER BY id"
    assert local(sandbox, rows, t=target) == src.remote(rows)
    assert advisory_holders(sandbox, lock_key("copy", target)) == []


def test_a_transaction_pool_said_to_pin_sessions_never_lets_two_runs_write_together(sandbox, pooled):
    """A pool in transaction mode wrongly declared a session pool: each transaction checks it runs in
    the server the session was prepared on, and a run lock already held by that server is another
    client's. Two overlapping appends either both succeed, each row once, or are refused."""
    conn_id = pooled("transaction", pool_size=2, extra={"pool_mode": "session"})
    src = remote_table(sandbox, rows=50_000)
    target = f"public.pool_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {t} (id bigint, name text, v bigint)", t=target)
    local(sandbox, "INSERT INTO {t} VALUES (0, 'seed', 0)", t=target)
    for _ in range(3):
        errors = together(
            lambda: copy(
                conn_id, src.foreign, target, mode="append", watermark_column="v", target_lock_wait=5
            )
        )
        assert [e for e in errors if not isinstance(e, FdwError)] == []
        total, distinct = local(sandbox, "SELECT count(*), count(DISTINCT id) FROM {t}", t=target)[0]
        assert total == distinct, f"a row was appended twice: {errors}"


# -- the source behind a pooler that drops the startup ``options`` --------------------------------------


@pytest.fixture
def interval_source(sandbox, monkeypatch) -> Iterator[tuple[str, str]]:
    """A source role whose IntervalStyle is sql_standard, reached through a pgbouncer configured with
    ``ignore_startup_parameters = extra_float_digits, options`` (a common setting: without it
    pgbouncer refuses every client that sends ``options``). Yields (fdw conn id, foreign table)."""
    source = sandbox.source
    source.execute(
        sql.SQL(
            "DO $$ BEGIN CREATE ROLE {} LOGIN PASSWORD {}; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ).format(sql.Identifier(IV_ROLE), sql.Literal(IV_PASSWORD))
    )
    source.execute(
        sql.SQL("ALTER ROLE {} SET IntervalStyle = 'sql_standard'").format(sql.Identifier(IV_ROLE))
    )
    source.execute(
        sql.SQL("GRANT USAGE ON SCHEMA pooler TO {}").format(sql.Identifier(IV_ROLE)), dbname=SOURCE_DB
    )
    name = f"iv_{uuid.uuid4().hex[:8]}"
    # An enum column (a type OID above 10000): the direct path reads such a table as text.
    for cluster, dbname, schema in ((source, SOURCE_DB, "pooler"), (sandbox.target, TARGET_DB, "public")):
        cluster.execute(
            sql.SQL("CREATE TYPE {} AS ENUM ('ok', 'sad')").format(sql.Identifier(schema, f"{name}_mood")),
            dbname=dbname,
        )
    source.execute(
        sql.SQL("CREATE TABLE pooler.{} (id int PRIMARY KEY, d interval, m pooler.{})").format(
            sql.Identifier(name), sql.Identifier(f"{name}_mood")
        ),
        dbname=SOURCE_DB,
    )
    source.execute(
        sql.SQL(
            "INSERT INTO pooler.{} VALUES (1, '-1 days -2 hours', 'ok'), (2, '-3 days -5 seconds', 'sad')"
        ).format(sql.Identifier(name)),
        dbname=SOURCE_DB,
    )
    source.execute(
        sql.SQL("GRANT SELECT ON pooler.{} TO {}").format(sql.Identifier(name), sql.Identifier(IV_ROLE)),
        dbname=SOURCE_DB,
    )
    bouncer = Bouncer(source, "session", ignore="extra_float_digits,options", users={IV_ROLE: IV_PASSWORD})
    try:
        conn_id, server = server_as(sandbox, bouncer.cluster(), IV_ROLE, IV_PASSWORD, monkeypatch)
        local(
            sandbox,
            "CREATE FOREIGN TABLE {f} (id int, d interval, m {e}) SERVER {s} "
            "OPTIONS (schema_name 'pooler', table_name {n})",
            f=f"proxy_pooler.{name}",
            s=server,
            e=f"public.{name}_mood",
            n=sql.Literal(name),
        )
        yield conn_id, f"proxy_pooler.{name}"
    finally:
        bouncer.stop()


@pytest.mark.parametrize("transport", ["fdw", "copy"])
def test_a_copy_from_a_pooled_source_that_drops_options_keeps_interval_values(
    sandbox, interval_source, transport
):
    """The direct path pins its remote session with libpq ``options`` (-c IntervalStyle=postgres …);
    a pooler that ignores ``options`` drops them silently, the remote prints '-1 days -2 hours' the
    sql_standard way ('-1 2:00:00'), and the target reads it as -1 day +2 hours."""
    conn_id, foreign = interval_source
    target = f"public.pool_{uuid.uuid4().hex[:8]}"
    try:
        copy("postgres_default", foreign, target, transport=transport, fdw_conn_id=conn_id)
    except FdwConfigError:
        return  # refused before anything changed: fine
    assert local(sandbox, "SELECT id, extract(epoch FROM d)::bigint FROM {t} ORDER BY id", t=target) == [
        (1, -93600),
        (2, -259205),
    ]
