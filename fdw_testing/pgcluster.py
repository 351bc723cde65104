"""Throwaway PostgreSQL clusters on 127.0.0.1 for tests, the demo and the benchmarks.

``LocalCluster`` runs ``initdb`` / ``pg_ctl`` from the server binaries on this machine (as an
unprivileged user when we are root: PostgreSQL refuses to run as root). Each cluster uses password
(scram-sha-256) authentication over TCP, like a real remote server, and is tuned for throwaway use
(fsync off). ``start_pair()`` returns the "source" (remote) and "target" (local, where postgres_fdw
objects live) clusters the whole project is tested against.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPERUSER = "postgres"
DEFAULT_PASSWORD = "harness-superuser-pw"
UNPRIVILEGED_USER = "nobody"


class ClusterError(RuntimeError):
    """A cluster could not be created, started or stopped."""


@dataclass
class Cluster:
    """Where a running PostgreSQL server is, as seen by clients (``host``/``port``) and by the
    other cluster's postgres_fdw (``fdw_host``/``fdw_port``, which differ under Docker)."""

    name: str
    host: str
    port: int
    password: str = DEFAULT_PASSWORD
    superuser: str = SUPERUSER
    dbname: str = "postgres"
    fdw_host: str = ""
    fdw_port: int = 0
    datadir: Path | None = None
    bindir: Path | None = None
    run_as: str | None = None
    logfile: Path | None = None
    # For servers we did not start ourselves (Docker): how to stop and start them.
    stop_command: Any = field(default=None, repr=False)
    start_command: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.fdw_host = self.fdw_host or self.host
        self.fdw_port = self.fdw_port or self.port

    def conninfo(
        self, dbname: str | None = None, user: str | None = None, password: str | None = None
    ) -> dict:
        return {
            "host": self.host,
            "port": self.port,
            "dbname": dbname or self.dbname,
            "user": user or self.superuser,
            "password": password if password is not None else self.password,
        }

    def connect(
        self,
        dbname: str | None = None,
        user: str | None = None,
        password: str | None = None,
        autocommit: bool = True,
    ) -> Any:
        """A driver connection (the one PostgresHook uses: psycopg 3 or psycopg2)."""
        return connect(self.conninfo(dbname, user, password), autocommit=autocommit)

    def execute(self, statement: Any, params: Any = None, dbname: str | None = None) -> list[tuple]:
        """Run one statement as the superuser in autocommit; return its rows (if any)."""
        conn = self.connect(dbname)
        try:
            cur = conn.cursor()
            cur.execute(statement, params)
            return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def env(self) -> dict[str, str]:
        """Environment for libpq command-line tools (psql, pg_dump) pointing at this cluster."""
        return {
            **os.environ,
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.superuser,
            "PGPASSWORD": self.password,
            "PGDATABASE": self.dbname,
        }

    # -- lifecycle (local clusters only) -------------------------------------------------------

    def start(self) -> None:
        if self.datadir is None:
            if self.start_command is None:
                raise ClusterError(f"Cluster {self.name} cannot be started from here")
            self.start_command()
            wait_until_ready(self)
            return
        _run_pg(self, "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it is running (``mode``: smart, fast or immediate)."""
        if self.datadir is None and self.stop_command is not None:
            self.stop_command(mode)
            return
        if self.datadir is None or not self.is_running():
            return
        _run_pg(self, "pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def is_running(self) -> bool:
        return self.datadir is not None and self.postmaster_pid() is not None

    def postmaster_pid(self) -> int | None:
        pidfile = (self.datadir or Path("/nonexistent")) / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(Path(self.logfile or "").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Pair:
    source: Cluster
    target: Cluster


def connect(conninfo: dict, autocommit: bool = True) -> Any:
    """A connection of the driver PostgresHook uses, so statements composed with our ``sql`` render."""
    from airflow_provider_fdw.compat import USE_PSYCOPG3

    if USE_PSYCOPG3:
        import psycopg

        return psycopg.connect(**conninfo, autocommit=autocommit)
    import psycopg2

    conn = psycopg2.connect(**conninfo)
    conn.autocommit = autocommit
    return conn


def find_bindir() -> Path:
    """The PostgreSQL server binaries: $FDW_PG_BINDIR, ``pg_config --bindir``, or the usual paths."""
    candidates: list[str] = []
    if os.environ.get("FDW_PG_BINDIR"):
        candidates.append(os.environ["FDW_PG_BINDIR"])
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates += ["/usr/local/pgsql/bin", "/usr/pgsql/bin"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise ClusterError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install them (Debian: "
        "apt-get install postgresql postgresql-contrib) or set FDW_PG_BINDIR."
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_local_cluster(
    name: str, basedir: Path, password: str = DEFAULT_PASSWORD, settings: dict[str, str] | None = None
) -> Cluster:
    """``initdb`` a new cluster in ``basedir/name`` (not started)."""
    bindir = find_bindir()
    run_as = UNPRIVILEGED_USER if os.geteuid() == 0 else None
    home = basedir / name
    home.mkdir(parents=True)
    datadir = home / "data"
    pwfile = home / "pwfile"
    pwfile.write_text(password + "\n")
    if run_as:
        user = pwd.getpwnam(run_as)
        for path in (basedir, home, pwfile):
            os.chown(path, user.pw_uid, user.pw_gid)
    cluster = Cluster(
        name=name,
        host="127.0.0.1",
        port=free_port(),
        password=password,
        datadir=datadir,
        bindir=bindir,
        run_as=run_as,
        logfile=home / "server.log",
    )
    _run_pg(
        cluster,
        "initdb",
        "-D",
        str(datadir),
        "-U",
        SUPERUSER,
        "--auth=scram-sha-256",
        f"--pwfile={pwfile}",
        "-E",
        "UTF8",
        "--locale=C",
        "-N",
    )
    pwfile.unlink()
    conf = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(cluster.port),
        "unix_socket_directories": f"'{home}'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "wal_level": "logical",
        "max_wal_senders": "10",
        "max_replication_slots": "10",
        "max_connections": "60",
        "shared_buffers": "128MB",
        "log_min_messages": "warning",
        "log_line_prefix": "'%m [%p] %q%u@%d '",
        **(settings or {}),
    }
    with open(datadir / "postgresql.conf", "a") as fh:
        fh.write("\n# airflow-provider-fdw test cluster\n")
        fh.writelines(f"{k} = {v}\n" for k, v in conf.items())
    (datadir / "pg_hba.conf").write_text(
        "local all all scram-sha-256\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
        "host replication all 127.0.0.1/32 scram-sha-256\n"
    )
    return cluster


def create_standby(
    primary: Cluster,
    basedir: Path,
    name: str = "standby",
    application_name: str = "fdw_standby",
    slot_name: str = "fdw_standby_slot",
) -> Cluster:
    """A physical streaming standby of ``primary`` (``pg_basebackup -R`` with a physical slot), started.

    Its walsender on the primary shows ``application_name``; ``slot_name`` keeps the WAL it needs.
    """
    if primary.datadir is None:
        raise ClusterError("a standby needs a local primary")
    home = basedir / name
    home.mkdir(parents=True)
    if primary.run_as:
        user = pwd.getpwnam(primary.run_as)
        for path in (basedir, home):
            os.chown(path, user.pw_uid, user.pw_gid)
    standby = Cluster(
        name=name,
        host="127.0.0.1",
        port=free_port(),
        password=primary.password,
        datadir=home / "data",
        bindir=primary.bindir,
        run_as=primary.run_as,
        logfile=home / "server.log",
    )
    conninfo = (
        f"host={primary.host} port={primary.port} user={primary.superuser} "
        f"application_name={application_name}"
    )
    _run_pg(
        standby,
        "pg_basebackup",
        "-D",
        str(standby.datadir),
        "-d",
        conninfo,
        "-R",
        "-X",
        "stream",
        "-C",
        "-S",
        slot_name,
        "--no-sync",
        "--checkpoint=fast",
        env={"PGPASSWORD": primary.password},
    )
    with open(home / "data" / "postgresql.auto.conf", "a") as fh:
        fh.write(f"port = {standby.port}\nunix_socket_directories = '{home}'\nhot_standby_feedback = on\n")
    standby.start()
    return standby


@contextmanager
def standby_of(
    primary: Cluster,
    application_name: str = "fdw_standby",
) -> Iterator[Cluster]:
    """A started standby of ``primary`` (see ``create_standby``), its slot named after
    ``application_name``; always stopped, its slot dropped and its data directory removed (500 MB
    each: leftovers of earlier runs once filled the disk)."""
    slot_name = f"{application_name}_slot"
    base = Path(tempfile.mkdtemp(prefix=f"fdw-{application_name}-"))
    standby: Cluster | None = None
    try:
        standby = create_standby(primary, base, application_name=application_name, slot_name=slot_name)
        yield standby
    finally:
        if standby is not None:
            standby.stop("immediate")
        primary.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
            (slot_name,),
        )
        shutil.rmtree(base, ignore_errors=True)


def start_local_pair(basedir: Path) -> Pair:
    source = create_local_cluster("source", basedir)
    target = create_local_cluster("target", basedir)
    for cluster in (source, target):
        cluster.start()
    return Pair(source, target)


@contextmanager
def local_pair(basedir: str | Path | None = None) -> Iterator[Pair]:
    """Start a source/target pair in a temporary directory; always stop and remove them."""
    base = Path(basedir) if basedir else Path(tempfile.mkdtemp(prefix="fdw-pair-"))
    pair: Pair | None = None
    try:
        pair = start_local_pair(base)
        yield pair
    finally:
        if pair is not None:
            for cluster in (pair.target, pair.source):
                cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def wait_until_ready(cluster: Cluster, timeout: float = 60.0) -> None:
    """Wait until the server accepts a login (used for servers we did not start, e.g. Docker)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            cluster.execute("SELECT 1")
            return
        except Exception as exc:
            last = exc
            time.sleep(0.3)
    raise ClusterError(f"{cluster.name} at {cluster.host}:{cluster.port} not ready: {last}")


def _run_pg(
    cluster: Cluster, tool: str, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    assert cluster.bindir is not None
    cmd = [str(cluster.bindir / tool), *args]
    kwargs: dict[str, Any] = {}
    env = {**os.environ, "LC_ALL": "C", **(env or {})}
    if cluster.run_as:
        user = pwd.getpwnam(cluster.run_as)
        kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        env["HOME"] = str(cluster.datadir.parent if cluster.datadir else "/tmp")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/", check=False, **kwargs)
    if check and proc.returncode != 0:
        raise ClusterError(
            f"{tool} for cluster {cluster.name} failed ({proc.returncode}): {proc.stderr.strip()}\n"
            f"{cluster.log_tail()}"
        )
    return proc


def _version_key(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0
