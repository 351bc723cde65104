"""Test harness: a real "source" (remote) and "target" (local) PostgreSQL pair for the whole session.

Backend: ``FDW_TEST_BACKEND=local`` (initdb/pg_ctl, the default when no Docker engine answers) or
``docker`` (pytest-docker with tests/docker-compose.yml; chosen automatically when ``docker info``
succeeds). Both give the same fixtures, so every test runs unchanged on either.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

# Airflow reads its configuration at import: point it at a throwaway home before anything imports it.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="fdw-airflow-home-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
atexit.register(shutil.rmtree, _AIRFLOW_HOME, True)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
# One key for every process of the session (tests, airflow CLI, api-server): connection passwords
# saved by one must decrypt in the others.
os.environ.setdefault("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())

from airflow_provider_fdw.compat import sql  # noqa: E402
from fdw_testing.mariadb import MariaDB, mariadb_server  # noqa: E402
from fdw_testing.pgcluster import (  # noqa: E402
    Cluster,
    Pair,
    start_local_pair,
    wait_until_ready,
)
from fdw_testing.sample_data import (  # noqa: E402, F401 - re-exported for tests
    READER,
    READER_PASSWORD,
    SOURCE_DB,
    TARGET_DB,
    fdw_connection,
    install_sample_data,
    postgres_connection,
    set_airflow_connections,
)

REPO = Path(__file__).resolve().parents[1]


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _backend() -> str:
    backend = os.environ.get("FDW_TEST_BACKEND", "auto")
    if backend not in ("auto", "local", "docker"):
        raise pytest.UsageError("FDW_TEST_BACKEND must be auto, local or docker")
    if backend == "auto":
        return "docker" if _docker_available() else "local"
    return backend


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(REPO / "tests" / "docker-compose.yml")


@pytest.fixture(scope="session")
def pg_pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    """Both servers running, with the source database, the reader role and sample data in place."""
    started = time.monotonic()
    base: Path | None = None
    # A CI time-out sends SIGTERM: turn it into KeyboardInterrupt so pytest still runs the teardown.
    signal.signal(signal.SIGTERM, _interrupt)
    if _backend() == "docker":
        services = request.getfixturevalue("docker_services")
        ip = request.getfixturevalue("docker_ip")
        pair = Pair(
            source=Cluster("source", ip, services.port_for("source", 5432), fdw_host="source", fdw_port=5432),
            target=Cluster("target", ip, services.port_for("target", 5432)),
        )
        compose = services._docker_compose
        for cluster in (pair.source, pair.target):
            name = cluster.name
            cluster.stop_command = lambda mode, name=name: compose.execute(
                f"kill {name}" if mode == "immediate" else f"stop {name}"
            )
            cluster.start_command = lambda name=name: compose.execute(f"start {name}")
            wait_until_ready(cluster)
    else:
        base = Path(tempfile.mkdtemp(prefix="fdw-pair-"))
        pair = start_local_pair(base)
    try:
        install_sample_data(pair)
        print(f"\n[harness] {_backend()} pair ready in {time.monotonic() - started:.2f}s")
        yield pair
    finally:
        if base is not None:
            for cluster in (pair.target, pair.source):
                cluster.stop("immediate")
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    """A private MariaDB server on 127.0.0.1 (database ``shop``, user ``fdw_app`` with a password)."""
    started = time.monotonic()
    with mariadb_server() as server:
        print(f"\n[harness] MariaDB ready in {time.monotonic() - started:.2f}s on port {server.port}")
        yield server


@pytest.fixture
def server_readable_dir() -> Iterator[Path]:
    """A directory the local PostgreSQL server (an unprivileged user when we are root) can read,
    for file_fdw's files; pytest's tmp_path sits under a directory only its owner may enter."""
    path = Path(tempfile.mkdtemp(prefix="fdw-files-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


@pytest.fixture(scope="session")
def airflow_connections(pg_pair: Pair) -> Pair:
    """``postgres_default`` = the target (local) database, ``fdw_source`` = the remote source."""
    set_airflow_connections(pg_pair)
    return pg_pair


@pytest.fixture(scope="session")
def airflow_db(airflow_connections: Pair) -> Pair:
    """An initialised Airflow metadata database (sqlite in the throwaway AIRFLOW_HOME) for DAG runs."""
    airflow = Path(sys.executable).with_name("airflow")
    proc = subprocess.run(
        [str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return airflow_connections


@pytest.fixture
def pair(airflow_connections: Pair) -> Pair:
    return airflow_connections


@pytest.fixture
def target(airflow_connections: Pair) -> Cluster:
    return airflow_connections.target


@pytest.fixture
def source(airflow_connections: Pair) -> Cluster:
    return airflow_connections.source


@pytest.fixture
def server_name() -> str:
    """A fresh server name per test, so tests do not see each other's objects."""
    return f"src_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def local_schema() -> str:
    return f"proxy_{uuid.uuid4().hex[:8]}"


# -- copy tests: a remote schema reached through a provider-made server, and tables in it ------------


def wait_until(condition, limit: float = 60.0) -> float:
    """Poll ``condition`` until true; return seconds waited (fails the test after ``limit``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < limit, "still not reached after the bound"
        time.sleep(0.1)
    return time.monotonic() - started


def python_json(script: str, *args: str, timeout: float = 120) -> dict:
    """Run ``script`` in a fresh interpreter (``python -c``, with this process's environment) and
    return the JSON object on its last line of output; its failure fails the test with its stderr."""
    import json

    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def users_foreign_table(
    target: Any, conn_id: str, server_name: str, schema: str, remote_schema: str, remote_table: str
) -> str:
    """A server (and user mapping) the provider makes from ``conn_id``, and in a new ``schema`` a
    foreign table ``(id bigint, email text, created_at timestamptz)`` over the remote's
    ``remote_schema.remote_table`` (a users table or one of its slow views); its name."""
    from airflow_provider_fdw.hooks.fdw import FdwHook

    with FdwHook(fdw_conn_id=conn_id) as hook:
        hook.ensure_extension()
        hook.create_server(server_name)
        hook.create_user_mapping(server_name)
    target.execute(sql.SQL("CREATE SCHEMA {}").format(ident(schema)), dbname=TARGET_DB)
    target.execute(
        sql.SQL(
            "CREATE FOREIGN TABLE {} (id bigint, email text, created_at timestamptz) SERVER {} "
            "OPTIONS (schema_name {}, table_name {})"
        ).format(
            ident(schema, remote_table),
            ident(server_name),
            sql.Literal(remote_schema),
            sql.Literal(remote_table),
        ),
        dbname=TARGET_DB,
    )
    return f"{schema}.{remote_table}"


def kill_9_when(worker: subprocess.Popen, ready, limit: float = 60.0) -> None:
    """Wait until ``ready()``, then ``kill -9`` the worker (the test fails with the worker's stderr if
    it ended first)."""
    try:
        wait_until(lambda: ready() or worker.poll() is not None, limit=limit)
        assert worker.poll() is None, worker.stderr.read().decode()[-3000:] if worker.stderr else ""
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()


def fdw_sandbox(pair: Pair, schema: str, server: str) -> Pair:
    """``schema`` on the source (readable by the reader), server ``server`` with its user mapping, and
    ``proxy_<schema>`` on the target for the foreign tables."""
    pair.source.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident(schema)), dbname=SOURCE_DB)
    pair.source.execute(
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident(schema), ident(READER)), dbname=SOURCE_DB
    )
    from airflow_provider_fdw.hooks.fdw import FdwHook

    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.ensure_extension()
        hook.create_server(server)
        hook.create_user_mapping(server)
    pair.target.execute(
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident(f"proxy_{schema}")), dbname=TARGET_DB
    )
    return pair


def row_trigger(pair: Pair, table: Any, when: str, body: str, name: str) -> None:
    """A row trigger ``name`` on ``table`` running the PL/pgSQL ``body`` ({t}: the table; it returns
    what the trigger returns) ``when`` (``AFTER UPDATE``, ``BEFORE INSERT OR UPDATE OF a`` …)."""
    function = f"{table}_{name}"
    local(
        pair,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN " + body + " END $$",
        f=function,
        t=table,
    )
    local(
        pair,
        f"CREATE TRIGGER {name} {when} ON {{t}} FOR EACH ROW EXECUTE FUNCTION {{f}}()",
        t=table,
        f=function,
    )


def after_trigger(pair: Pair, table: Any, event: str, body: str) -> None:
    """A row trigger on ``table`` running the PL/pgSQL ``body`` ({t}: the table) after each ``event``
    (``UPDATE``, ``INSERT OR UPDATE OF a, b`` …)."""
    row_trigger(pair, table, f"AFTER {event}", body + " RETURN NULL;", "after_trigger")


class RemoteTable:
    """A new table ``<schema>.<prefix>_<random>`` on the source (``remote_columns``, default
    ``columns``) and its foreign table ``proxy_<schema>.<same name>`` declaring ``columns``."""

    def __init__(
        self,
        pair: Pair,
        schema: str,
        server: str,
        columns: str,
        remote_columns: str | None = None,
        prefix: str = "s",
    ) -> None:
        self.pair, self.schema = pair, schema
        self.name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.foreign = f"proxy_{schema}.{self.name}"
        self.remote(f"CREATE TABLE {{t}} ({remote_columns or columns})")
        pair.source.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(ident(schema, self.name), ident(READER)),
            dbname=SOURCE_DB,
        )
        pair.target.execute(
            sql.SQL(
                "CREATE FOREIGN TABLE {} (" + columns + ") SERVER {} OPTIONS (schema_name {}, table_name {})"
            ).format(
                ident(f"proxy_{schema}", self.name),
                ident(server),
                sql.Literal(schema),
                sql.Literal(self.name),
            ),
            dbname=TARGET_DB,
        )

    def remote(self, statement: str, params: Any = None) -> list[tuple]:
        """Run ``statement`` on the source; ``{t}`` is this table."""
        return self.pair.source.execute(
            sql.SQL(statement).format(t=ident(self.schema, self.name)), params, dbname=SOURCE_DB
        )


def local(pair: Pair, statement: str, params: Any = None, **names: Any) -> list[tuple]:
    """Run ``statement`` on the target database; ``{x}`` placeholders: identifiers (dotted = qualified)
    for strings, else composables (literals)."""
    idents = {k: ident(*v.split(".")) if isinstance(v, str) else v for k, v in names.items()}
    return pair.target.execute(sql.SQL(statement).format(**idents), params, dbname=TARGET_DB)


def map_role_to_reader(pair: Pair, role: Any, server: str) -> None:
    """Let local ``role`` use ``server`` as the remote reader (USAGE and its own user mapping), as a
    DBA sets up a least-privilege task role."""
    local(pair, "GRANT USAGE ON FOREIGN SERVER {s} TO {r}", s=server, r=role)
    local(
        pair,
        "CREATE USER MAPPING FOR {r} SERVER {s} OPTIONS (user {u}, password {p})",
        r=role,
        s=server,
        u=sql.Literal(READER),
        p=sql.Literal(READER_PASSWORD),
    )


def mysql_server_by_hand(pair: Pair, mariadb: MariaDB, server: str, character_set: str | None = None) -> None:
    """A mysql_fdw server to ``mariadb`` (host and port, and ``character_set`` when given, as a user
    types it) and its user mapping."""
    charset = sql.SQL("")
    if character_set:
        charset = sql.SQL(", character_set {}").format(sql.Literal(character_set))
    local(
        pair,
        "CREATE SERVER {s} FOREIGN DATA WRAPPER mysql_fdw OPTIONS (host {h}, port {p}{c})",
        s=server,
        h=sql.Literal(mariadb.host),
        p=sql.Literal(str(mariadb.port)),
        c=charset,
    )
    local(
        pair,
        "CREATE USER MAPPING FOR CURRENT_USER SERVER {s} OPTIONS (username {u}, password {pw})",
        s=server,
        u=sql.Literal(mariadb.user),
        pw=sql.Literal(mariadb.password),
    )


def small_source(
    pair: Pair, schema: str, server: str, rows: int = 20, v: str = "1", v_type: str = "bigint"
) -> RemoteTable:
    """``<schema>.s_<random>`` (id bigint primary key, name text, v ``v_type``) holding ``rows`` rows
    (id, 'n' || id, ``v``: an expression of the row number ``g``), and its foreign table."""
    src = RemoteTable(
        pair,
        schema,
        server,
        f"id bigint, name text, v {v_type}",
        f"id bigint PRIMARY KEY, name text, v {v_type}",
    )
    src.remote("INSERT INTO {t} SELECT g, 'n' || g, " + v + " FROM generate_series(1, %s) g", (rows,))
    return src


def copy_table(src: RemoteTable, target: str, conn: str = "postgres_default", **kwargs: Any) -> dict:
    """``bulk_copy`` of ``src`` into ``target`` (``kwargs``: plan_copy's; mode replace by default)."""
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.hooks.fdw import FdwHook

    with FdwHook(postgres_conn_id=conn, fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(src.foreign, target, **kwargs))


def table_rows(pair: Pair, table: str) -> list[tuple]:
    """(id, name, v) of ``table`` on the target database, by id."""
    return local(pair, "SELECT id, name, v FROM {t} ORDER BY id", t=table)


def first_value(pair: Pair, statement: str, **names: Any) -> Any:
    """The first column of the first row of ``statement`` on the target database (None: no row)."""
    result = local(pair, statement, **names)
    return result[0][0] if result else None


def partitioned_target(pair: Pair, target: str) -> None:
    """``target`` (id bigint primary key, name text, v bigint) partitioned by id: 1-10 and the rest."""
    local(
        pair,
        "CREATE TABLE {t} (id bigint PRIMARY KEY, name text, v bigint) PARTITION BY RANGE (id)",
        t=target,
    )
    local(pair, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (1) TO (11)", p=f"{target}_a", t=target)
    local(pair, "CREATE TABLE {p} PARTITION OF {t} DEFAULT", p=f"{target}_d", t=target)


def server_as(pair: Pair, cluster: Cluster, login: str, password: str, monkeypatch: Any) -> tuple[str, str]:
    """A foreign server (and the current role's user mapping) reaching the source through ``cluster``
    (a pooler in front of it, say) as ``login``: (its Airflow fdw connection id, the server's name)."""
    from airflow_provider_fdw.hooks.fdw import FdwHook

    conn_id = f"as_{login}_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        fdw_connection(type(pair)(cluster, pair.target), password=password, login=login),
    )
    server = f"as_{uuid.uuid4().hex[:8]}"
    with FdwHook(fdw_conn_id=conn_id) as hook:
        hook.create_server(server)
        hook.create_user_mapping(server)
    return conn_id, server
