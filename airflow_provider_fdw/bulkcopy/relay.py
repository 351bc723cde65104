"""Moving rows of the direct path: ``psql`` piped into ``psql`` (:class:`PsqlRelay`), or relayed in this
process (:func:`copy_stream`); and the server's own message out of a failed ``psql``."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_fdw.cancel import CancelScope, die_with_parent
from airflow_provider_fdw.compat import copy_between, make_conninfo
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.progress import Progress

# util-linux's setpriv sets the parent-death signal, then execs: no Python runs in the child.
SETPRIV = shutil.which("setpriv")


def _die_with_parent() -> dict[str, Any]:
    """How a psql child dies with the worker. A ``preexec_fn`` makes subprocess fork() the whole
    worker (tens of ms per child for a large, threaded process; vfork otherwise), so with setpriv
    on the PATH the child sets PR_SET_PDEATHSIG itself (:meth:`PsqlRelay._command`)."""
    return {} if SETPRIV else {"preexec_fn": die_with_parent}  # only prctl, before exec


@dataclass
class PsqlRelay:
    """``psql`` COPY TO STDOUT piped into ``psql`` COPY FROM STDIN: the stream stays in C (twice the
    in-process relay's speed, which pays a Python call per row). Used when ``psql`` is on the PATH.

    Secrets never reach a command line (visible in ``ps``) nor an environment (``/proc/PID/environ``):
    each child reads its password from a private 0600 passfile (``PGPASSFILE``), unlinked before the
    child starts where it can read it through an inherited descriptor (:meth:`_env`),
    and gets a minimal environment (no ``AIRFLOW_CONN_*``, no ``PG*`` of the worker). Children die
    with the worker (``PR_SET_PDEATHSIG``) and are recorded in ``scope`` so ``on_kill`` stops them.
    """

    psql: str
    remote: dict[str, Any] = field(repr=False)
    local: dict[str, Any] = field(repr=False)
    scope: CancelScope | None = field(default=None, repr=False)
    # Opens a LOCAL connection: watches the load's session, whose error psql reports only at EOF.
    monitor: Callable[[], Any] | None = field(default=None, repr=False)
    _interrupted: dict[str, bool] = field(default_factory=dict, repr=False, init=False)

    def copy(self, out_statement: str, load_statements: Sequence[str], first: Sequence[str] = ()) -> int:
        """``load_statements``: the loader's, its COPY FROM STDIN among them; ``first``: statements the
        reader runs before its COPY, in one transaction (the snapshot)."""
        base = str(self.local.get("application_name") or "airflow_provider_fdw")
        load_name = f"{base.encode()[:50].decode(errors='ignore')}:L{uuid.uuid4().hex[:8]}"
        local = {**self.local, "application_name": load_name}
        sweep_private_directories()
        # mode 0700, named for this worker so that the next one can tell it from a live worker's
        with tempfile.TemporaryDirectory(prefix=private_prefix()) as private:
            remote_env, remote_fd = self._env(self.remote, os.path.join(private, "remote.pgpass"))
            try:
                local_env, local_fd = self._env(local, os.path.join(private, "local.pgpass"))
            except BaseException:
                _close(remote_fd)
                raise
            try:
                out = self._start(
                    self._command(self.remote, [*first, out_statement], quiet=bool(first)),
                    remote_env,
                    None,
                    subprocess.PIPE,
                    remote_fd,
                )
                assert out.stdout is not None and out.stderr is not None  # both are pipes
                try:
                    # not quiet: its "COPY n" tag on stdout is the row count
                    load_command = self._command(local, load_statements)
                    load = self._start(load_command, local_env, out.stdout, subprocess.PIPE, local_fd)
                except BaseException:
                    out.kill()
                    out.wait()
                    raise
            finally:  # each child has its own copy of its passfile's descriptor
                _close(remote_fd)
                _close(local_fd)
            out.stdout.close()  # the load child holds the pipe now: a dead reader means EOF there
            stop = threading.Event()
            watcher = threading.Thread(
                target=self._stop_reader_when_load_fails, args=(load_name, out, stop), daemon=True
            )
            watcher.start()
            try:
                load_out, load_err = load.communicate()
                stop.set()
                if load.returncode != 0 and out.poll() is None:
                    out.send_signal(signal.SIGINT)  # psql cancels the remote read now, not at its next write
                out_err = out.stderr.read()
                out.wait()
            except BaseException:  # interrupted (execution_timeout): the children must not outlive us
                for proc in (out, load):
                    proc.kill()
                    proc.wait()
                raise
            finally:
                out.stderr.close()
        load_error = (
            FdwError(
                f"writing the staging table on {endpoint(self.local)} failed: "
                f"{server_message(load_err, load.returncode)}",
                step="copy into staging",
            )
            if load.returncode != 0
            else None
        )
        if load_error is not None and out.returncode != 0 and self._interrupted.get(load_name):
            raise load_error  # the reader was stopped because of the load's failure: that is the cause
        if out.returncode != 0:
            raise FdwError(
                f"reading the remote {endpoint(self.remote)} failed: "
                f"{server_message(out_err, out.returncode)}",
                step="copy from remote",
            )
        if load_error is not None:
            raise load_error
        match = re.search(r"^COPY (\d+)$", load_out, re.MULTILINE)
        return int(match.group(1)) if match else 0

    def _stop_reader_when_load_fails(
        self, load_name: str, out: subprocess.Popen[Any], stop: threading.Event
    ) -> None:
        """psql keeps feeding a COPY the server already refused until its input ends: when the load's
        session stops being active while the reader still runs, interrupt the reader (psql then
        cancels the remote read), so the load's error is reported at once."""
        if self.monitor is None or stop.wait(0.5):  # its first look is 0.5 s in: a short load needs none
            return
        try:
            conn = self.monitor()
        except Exception:  # no watcher: the error still arrives, only later
            return
        seen_active = False
        query = "SELECT state FROM pg_stat_activity WHERE application_name = %s"
        try:
            while True:
                with conn.cursor() as cur:
                    cur.execute(query, (load_name,))
                    row = cur.fetchone()
                conn.commit()  # a new snapshot of pg_stat_activity next time
                state = row[0] if row else None
                if state == "active":
                    seen_active = True
                elif seen_active and out.poll() is None:
                    self._interrupted[load_name] = True
                    out.send_signal(signal.SIGINT)
                    return
                if stop.wait(0.5):
                    return
        except Exception:  # best effort, like the rest of the clean-up
            return
        finally:
            with suppress(Exception):
                conn.close()

    def _start(
        self, command: list[str], env: dict[str, str], stdin: Any, stdout: Any, passfile_fd: int | None
    ) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(
            command,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=stdout is subprocess.PIPE and stdin is not None,
            pass_fds=() if passfile_fd is None else (passfile_fd,),
            **_die_with_parent(),
        )
        if self.scope is not None:
            self.scope.add_process(proc)
        return proc

    def _command(self, params: dict[str, Any], statements: Sequence[str], quiet: bool = False) -> list[str]:
        """The psql command line, one session running ``statements`` in order; run through
        ``setpriv --pdeathsig`` when there is one (see :func:`_die_with_parent`). ``quiet``: no
        command tags on stdout (the reader's BEGIN and SET must not mix into the COPY data)."""
        conninfo = make_conninfo(**{k: v for k, v in params.items() if k != "password"})
        commands = [arg for statement in statements for arg in ("-c", statement)]
        flags = ["-q"] if quiet else []
        command = [self.psql, "-X", *flags, "-v", "ON_ERROR_STOP=1", "-d", conninfo, *commands]
        return [SETPRIV, "--pdeathsig", "KILL", "--", *command] if SETPRIV else command

    @staticmethod
    def _env(params: dict[str, Any], passfile: str) -> tuple[dict[str, str], int | None]:
        """Only what psql needs: PATH, locale, HOME (for ~/.postgresql certificates), a passfile; and
        the passfile's descriptor for the child to inherit, when there is one.

        Where ``/proc/self/fd`` exists the passfile is unlinked as soon as written: the child reads
        it through its inherited descriptor (``PGPASSFILE=/proc/self/fd/N``, a plain 0600 file to
        libpq), so no password stays on disk even when the worker is killed (``kill -9`` runs no
        clean-up). Elsewhere the file stays in the private directory until the copy ends."""
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        if not params.get("password"):
            return env, None
        line = ":".join(["*", "*", "*", "*", _pgpass_escape(str(params["password"]))]) + "\n"
        fd = _above_standard_fds(os.open(passfile, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            os.write(fd, line.encode())
            if not os.path.isdir(PROC_FDS):
                os.close(fd)
                env["PGPASSFILE"] = passfile
                return env, None
            os.unlink(passfile)
        except BaseException:
            _close(fd)
            raise
        env["PGPASSFILE"] = f"{PROC_FDS}/{fd}"
        return env, fd


PROC_FDS = "/proc/self/fd"  # Linux: a child reopens an inherited descriptor's file by this path


PRIVATE_PREFIX = "fdw-psql-"
_PRIVATE_NAME = re.compile(re.escape(PRIVATE_PREFIX) + r"([0-9a-f]{8})-(\d+)-(\d+)-")


def _pid_namespace() -> int:
    """The PID namespace's inode (0 where there is none to read): a pid means a process only in its
    namespace, and containers may share one temporary directory."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _host() -> str:
    """This machine's (or container's) name, hashed: a temporary directory may be shared between
    hosts, whose first PID namespaces have the same inode."""
    return hashlib.sha256(os.uname().nodename.encode()).hexdigest()[:8]


def private_prefix() -> str:
    """This worker's private directories' prefix: its host, PID namespace and pid."""
    return f"{PRIVATE_PREFIX}{_host()}-{_pid_namespace()}-{os.getpid()}-"


def sweep_private_directories(parent: str | None = None) -> None:
    """Remove the private directories of relays whose worker died without removing its own (killed
    with SIGKILL, by the OOM killer). Only this user's, named for a process of this host and PID
    namespace that no longer exists: a passfile left where it could not be unlinked early (no
    ``/proc``) goes with its directory. On Linux without a readable PID namespace nothing is
    removed: a pid there may be another container's live worker."""
    namespace = _pid_namespace()
    if namespace == 0 and sys.platform.startswith("linux"):
        return
    parent = parent or tempfile.gettempdir()
    try:
        names = os.listdir(parent)
    except OSError:
        return
    host = _host()
    for name in names:
        match = _PRIVATE_NAME.match(name)
        if match is None or match.group(1) != host or int(match.group(2)) != namespace:
            continue
        if _alive(int(match.group(3))):
            continue
        path = os.path.join(parent, name)
        with suppress(OSError):
            info = os.lstat(path)  # not a link's target
            if info.st_uid == os.getuid() and stat.S_ISDIR(info.st_mode):
                shutil.rmtree(path)


def _alive(pid: int) -> bool:
    """False only for a pid no process has (another user's process, or no pid at all, counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        pass
    return True


def _above_standard_fds(fd: int) -> int:
    """``fd``, or a copy of it numbered 3 or more: a worker started with stdin, stdout or stderr
    closed gets its passfile there, and the child's own standard streams would replace it before
    psql reads ``/proc/self/fd/N`` (a pipe, not the passfile: no password supplied)."""
    if fd > 2:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _close(fd: int | None) -> None:
    if fd is not None:
        with suppress(OSError):
            os.close(fd)


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def endpoint(params: dict[str, Any]) -> str:
    """``host:port/dbname`` of libpq parameters, for messages (never the user or password)."""
    return f"{params.get('host')}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


def server_message(stderr: str | bytes, returncode: int | None = None) -> str:
    """The server's own error from psql's stderr: the ERROR/FATAL line with its DETAIL and HINT
    (not the CONTEXT line, which only says where in the stream it happened)."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith(("ERROR:", "FATAL:", "psql: error:", "PANIC:")):
            message = line.removeprefix("psql: error:").strip()
            for extra in lines[i + 1 :]:
                if extra.startswith(("DETAIL:", "HINT:")):
                    message += f" ({extra.replace(':  ', ': ', 1)})"
                elif extra.startswith(("ERROR:", "FATAL:", "CONTEXT:")):
                    break
            return message
    if lines:
        return lines[0]
    if returncode is not None and returncode < 0:
        return f"psql was stopped by signal {-returncode} (cancelled)"
    return f"psql exited with status {returncode} and no message"


def copy_stream(remote: Any, local: Any, out_stmt: Any, in_stmt: Any, progress: Progress) -> int:
    """Relay ``COPY … TO STDOUT`` on ``remote`` into ``COPY … FROM STDIN`` on ``local`` chunk by chunk.

    Memory stays flat whatever the table size. Returns the rows the local COPY reported.
    """
    return copy_between(remote, local, out_stmt, in_stmt, progress.add)


class SwallowedCopyErrors(logging.Handler):
    """psycopg logs (and drops) the server's error of a COPY FROM ended by another exception
    ("error ignored terminating …"); this keeps it, for this thread, so it can be reported."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread and "error ignored terminating" in str(record.msg):
            self.errors.extend(a for a in record.args or () if isinstance(a, BaseException))

    def first(self) -> BaseException | None:
        return self.errors[0] if self.errors else None

    def __enter__(self) -> SwallowedCopyErrors:
        logging.getLogger("psycopg").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("psycopg").removeHandler(self)
