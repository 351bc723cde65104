"""A throwaway MariaDB server on 127.0.0.1 for the mysql_fdw tests and example DAG.

``start_mariadb()`` runs ``mariadb-install-db`` into a temporary directory and starts ``mariadbd`` on
127.0.0.1, a free port and its own socket (as an unprivileged user when we are root, like
:mod:`fdw_testing.pgcluster`), then creates a database and a user with a password, reachable over
TCP like a real remote server. The harness talks to it as root over the private socket with the
``mariadb`` client (no Python driver needed); it is always stopped by its PID.
"""

from __future__ import annotations

import os
import pwd
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fdw_testing.pgcluster import UNPRIVILEGED_USER, free_port

DATABASE = "shop"
USER = "fdw_app"
PASSWORD = "Maria-Secret-4c2e1"


class MariaDBError(RuntimeError):
    """The MariaDB server could not be created, started, queried or stopped."""


@dataclass
class MariaDB:
    """A running private MariaDB server: clients reach it at ``host``:``port`` as ``user``."""

    host: str
    port: int
    home: Path
    database: str = DATABASE
    user: str = USER
    password: str = field(default=PASSWORD, repr=False)
    run_as: str | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def socket(self) -> Path:
        return self.home / "mysqld.sock"

    @property
    def datadir(self) -> Path:
        return self.home / "data"

    @property
    def logfile(self) -> Path:
        return self.home / "error.log"

    @property
    def pidfile(self) -> Path:
        return self.home / "mysqld.pid"

    def execute(
        self, statement: str, database: str | None = None, sql_mode: str | None = None
    ) -> list[tuple]:
        """Run ``statement`` (one or more, ``;``-separated) as root over the private socket.

        Returns the rows of the last result set as tuples of text (``None`` for NULL). ``sql_mode``
        sets the session's sql_mode first (zero dates need a permissive one).
        """
        if sql_mode is not None:
            statement = f"SET SESSION sql_mode = '{sql_mode}'; {statement}"
        cmd = [*self._root_client(database), "--skip-column-names", "--default-character-set=utf8mb4"]
        proc = subprocess.run(
            cmd, input=statement, capture_output=True, text=True, timeout=60, check=False, env=_env()
        )
        if proc.returncode != 0:
            raise MariaDBError(f"mariadb client failed ({proc.returncode}): {proc.stderr.strip()}")
        return [tuple(_unescape(v) for v in line.split("\t")) for line in proc.stdout.splitlines()]

    def _root_client(self, database: str | None) -> list[str]:
        """The command line of a ``mariadb`` client in batch mode, as root over the private socket."""
        cmd = [_client(), "--no-defaults", "--user=root", f"--socket={self.socket}", "--batch"]
        return [*cmd, f"--database={database}"] if database else cmd

    @contextmanager
    def holding(self, statement: str, database: str | None = None) -> Iterator[None]:
        """Run ``statement`` (e.g. ``LOCK TABLES t WRITE``) as root in a session that stays open, with
        what it holds, until the block ends."""
        cmd = [*self._root_client(database), "--unbuffered"]
        client = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
        try:
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write(f"{statement}; SELECT 'held';\n")
            client.stdin.flush()
            deadline = time.monotonic() + 30
            line = ""
            while line.strip() != "held":
                if not select.select([client.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    raise MariaDBError(f"{statement!r} did not take effect within 30 s")
                line = client.stdout.readline()
                if not line:
                    raise MariaDBError(f"the holding session ended before {statement!r} took effect")
            yield
        finally:
            if client.stdin is not None:
                client.stdin.close()
            try:
                client.wait(30)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()

    def start(self, timeout: float = 60.0) -> None:
        """Start ``mariadbd`` and wait (bounded) until it answers on its socket."""
        if self.process is not None and self.process.poll() is None:
            return
        kwargs: dict[str, Any] = {}
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        with open(self.home / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                [
                    _server(),
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    f"--port={self.port}",
                    "--bind-address=127.0.0.1",
                    f"--socket={self.socket}",
                    f"--pid-file={self.pidfile}",
                    f"--log-error={self.logfile}",
                    "--skip-name-resolve",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=64M",
                    "--innodb-flush-log-at-trx-commit=0",
                    "--character-set-server=utf8mb4",
                    "--collation-server=utf8mb4_general_ci",
                    "--max-connections=200",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=_env(),
                start_new_session=True,  # a Ctrl-C of pytest must not kill it before the teardown
                **kwargs,
            )
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MariaDBError(f"mariadbd exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                self.execute("SELECT 1")
                return
            except MariaDBError as exc:
                last = str(exc)
                time.sleep(0.2)
        self.stop()
        raise MariaDBError(f"mariadbd not ready after {timeout:.0f}s: {last}\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server by its PID: SIGTERM (a clean shutdown), SIGKILL after ``timeout`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def create_mariadb(
    basedir: Path, database: str = DATABASE, user: str = USER, password: str = PASSWORD
) -> MariaDB:
    """``mariadb-install-db`` a new data directory in ``basedir`` (not started)."""
    run_as = UNPRIVILEGED_USER if os.geteuid() == 0 else None
    home = basedir / "mariadb"
    home.mkdir(parents=True)
    if run_as:
        user_info = pwd.getpwnam(run_as)
        for path in (basedir, home):
            os.chown(path, user_info.pw_uid, user_info.pw_gid)
    server = MariaDB("127.0.0.1", free_port(), home, database, user, password, run_as)
    cmd = [
        _tool("mariadb-install-db"),
        "--no-defaults",
        f"--datadir={server.datadir}",
        "--auth-root-authentication-method=normal",  # root without a password, over the private socket only
        "--skip-test-db",
        "--skip-name-resolve",
    ]
    kwargs: dict[str, Any] = {}
    if run_as:
        user_info = pwd.getpwnam(run_as)
        kwargs.update(user=user_info.pw_uid, group=user_info.pw_gid, extra_groups=[])
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd="/", env=_env(), timeout=300, check=False, **kwargs
    )
    if proc.returncode != 0:
        raise MariaDBError(f"mariadb-install-db failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return server


def start_mariadb(
    basedir: Path, database: str = DATABASE, user: str = USER, password: str = PASSWORD
) -> MariaDB:
    """A started server with ``database`` and ``user`` (all privileges on it) logging in over TCP."""
    server = create_mariadb(basedir, database, user, password)
    server.start()
    try:
        server.execute(
            f"CREATE DATABASE {quote_name(database)}; "
            f"CREATE USER {quote_string(user)}@'%' IDENTIFIED BY {quote_string(password)}; "
            f"GRANT ALL ON {quote_name(database)}.* TO {quote_string(user)}@'%'"
        )
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def mariadb_server(basedir: str | Path | None = None) -> Iterator[MariaDB]:
    """Start a MariaDB server in a temporary directory; always stop it (by PID) and remove it."""
    base = Path(basedir) if basedir else Path(tempfile.mkdtemp(prefix="fdw-mariadb-"))
    server: MariaDB | None = None
    try:
        server = start_mariadb(base)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def quote_name(name: str) -> str:
    """A MySQL identifier in backquotes (the harness's own statements; never user input)."""
    return "`" + name.replace("`", "``") + "`"


def quote_string(value: str) -> str:
    """A MySQL string literal (NO_BACKSLASH_ESCAPES is off by default: escape backslashes too)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _unescape(value: str) -> str | None:
    # --batch prints NULL as the word NULL and escapes tab, newline, NUL and backslash.
    if value == "NULL":
        return None
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            out.append({"t": "\t", "n": "\n", "0": "\x00", "\\": "\\"}.get(value[i + 1], value[i + 1]))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _env() -> dict[str, str]:
    # No MYSQL_PWD / MYSQL_HOST from the caller's environment may steer the client or the server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSQL")}
    return {**env, "LC_ALL": "C"}


def _tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise MariaDBError(
            f"{name} not found; install the MariaDB server binaries (Debian: apt-get install "
            "mariadb-server, or run scripts/bootstrap.sh)."
        )
    return path


def _server() -> str:
    return _tool("mariadbd")


def _client() -> str:
    return _tool("mariadb")
