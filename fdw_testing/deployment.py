"""A real Airflow 3 deployment on 127.0.0.1 for tests: no ``dag.test()``, the components users run.

``Deployment`` runs ``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` (and,
with the CeleryExecutor, ``airflow celery worker`` processes on a ``RedisServer`` broker) as separate
processes, each in its own process group, on a PostgreSQL metadata database. Everything a test
does goes through the REST API ``/api/v2`` (SimpleAuthManager, a JWT from ``/auth/token``): create
connections, unpause and trigger DAGs, read states, task logs, XComs and rendered fields back.
``stop()`` ends every process it started (SIGTERM to the group, SIGKILL after a grace period).

Reusable by any test that needs real workers (e.g. mapped tasks spread over two Celery workers).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fdw_testing.pgcluster import free_port

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
ADMIN_USER = "admin"
HOSTNAME_ENV = "FDW_DEPLOY_HOSTNAME"
TERMINAL_RUN_STATES = ("success", "failed")


def component_hostname() -> str:
    """``[core] hostname_callable`` for the deployment: one name per Celery worker on one machine."""
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()


class DeploymentError(RuntimeError):
    """A component did not start, or the API answered with an error."""


@dataclass
class Component:
    name: str
    process: subprocess.Popen
    log: Path


@dataclass
class RedisServer:
    """Debian's ``redis-server`` on a free port bound to 127.0.0.1, no persistence; ``stop()`` ends it."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise DeploymentError("redis-server is missing: scripts/bootstrap.sh installs Debian's package")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "redis.log"
        args = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.workdir), "--logfile", str(log), "--protected-mode", "yes"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise DeploymentError(f"redis-server did not start: {_tail(log)}")

    def stop(self) -> None:
        if self.process is not None:
            _stop_group(self.process)
            self.process = None


class Deployment:
    """The Airflow components on one metadata database and one AIRFLOW_HOME (see the module docstring).

    :param home: AIRFLOW_HOME for every component (logs, generated passwords, ``dags/``).
    :param executor: ``LocalExecutor`` or ``CeleryExecutor``.
    :param metadata_url: SQLAlchemy URL of an existing, migrated metadata database.
    :param dag_files: DAG files copied into ``home/dags``, the DAGs folder.
    :param broker_url: the Celery broker (Redis) for ``CeleryExecutor``.
    :param config: more ``AIRFLOW__SECTION__KEY`` settings for every component.
    """

    def __init__(
        self,
        home: Path,
        executor: str,
        metadata_url: str,
        dag_files: Iterable[Path] = (),
        broker_url: str | None = None,
        config: dict[str, str] | None = None,
    ) -> None:
        if executor == "CeleryExecutor" and not broker_url:
            raise ValueError("CeleryExecutor needs a broker_url")
        self.home = home
        self.executor = executor
        self.metadata_url = metadata_url
        self.broker_url = broker_url
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.components: list[Component] = []
        self.dags_folder = home / "dags"
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        for path in dag_files:
            shutil.copy(path, self.dags_folder / Path(path).name)
        self.env = self._environment(config or {})
        self._token: str | None = None
        self._token_at = 0.0

    # -- processes -------------------------------------------------------------------------------

    def _environment(self, config: dict[str, str]) -> dict[str, str]:
        # Nothing from the test process's own Airflow setup: connections come from the metadata DB only.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
        settings = {
            "CORE__EXECUTOR": self.executor,
            "CORE__FERNET_KEY": os.environ["AIRFLOW__CORE__FERNET_KEY"],
            "CORE__LOAD_EXAMPLES": "False",
            "CORE__UNIT_TEST_MODE": "False",
            "CORE__DAGS_FOLDER": str(self.dags_folder),
            "CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "CORE__HOSTNAME_CALLABLE": f"{__name__}.component_hostname",
            "CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "CORE__PARALLELISM": "8",
            "DATABASE__SQL_ALCHEMY_CONN": self.metadata_url,
            "API__BASE_URL": self.url,
            "API__SECRET_KEY": secrets.token_hex(16),
            "API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            # Not the default 8793/8794: other deployments may run on this machine.
            "LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # Short loops: a test waits seconds, not the production defaults, for each step.
            "SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "SCHEDULER__TASK_INSTANCE_HEARTBEAT_SEC": "2",
            "DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        }
        if self.broker_url:
            settings["CELERY__BROKER_URL"] = self.broker_url
            settings["CELERY__WORKER_CONCURRENCY"] = "2"
            settings["CELERY__SYNC_PARALLELISM"] = "1"
        settings.update(config)
        env.update({f"AIRFLOW__{k}": v for k, v in settings.items()})
        env["AIRFLOW_HOME"] = str(self.home)
        # The components import this harness (hostname_callable): it lives in the repository, not in
        # the installed package, so put the repository on their path.
        repo = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
        return env

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run one ``airflow`` CLI command in the deployment's environment; raise on failure."""
        proc = subprocess.run(
            [_airflow_binary(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise DeploymentError(f"airflow {args[0]} failed: {proc.stderr[-3000:]}")
        return proc

    def start(self, celery_workers: int = 2, timeout: float = 180) -> Deployment:
        """Start every component; return once the API answers and the scheduler, dag-processor and
        triggerer (and each Celery worker) report healthy heartbeats."""
        try:
            self._spawn("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.api_port))
            self._spawn("dag-processor", "dag-processor")
            self._spawn("scheduler", "scheduler")
            self._spawn("triggerer", "triggerer")
            if self.executor == "CeleryExecutor":
                for i in range(1, celery_workers + 1):
                    name = f"celery-worker-{i}"
                    self._spawn(
                        name,
                        "celery",
                        "worker",
                        "--celery-hostname",
                        f"{name}@%h",
                        "--skip-serve-logs",
                        "--without-gossip",
                        "--without-mingle",
                        env={HOSTNAME_ENV: name},
                    )
            self.wait_until(self._healthy, timeout, "components healthy")
            workers = [c for c in self.components if c.name.startswith("celery-worker-")]
            # Celery logs "<node> ready." once it consumes from the broker; cheaper than a ping per poll.
            self.wait_until(
                lambda: all(re.search(rf"{c.name}@\S+ ready\.", _tail(c.log, 10**6)) for c in workers),
                timeout,
                "celery workers ready",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = self.home / f"{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [_airflow_binary(), *args],
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,  # its own process group: stop() ends it and its children only
            )
        self.components.append(Component(name, process, log))

    def stop(self) -> None:
        """End every process this deployment started (each process group), even after a failure."""
        # SIGTERM to every group first, so the components shut down in parallel, not one by one.
        for component in reversed(self.components):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(component.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for component in reversed(self.components):
            _stop_group(component.process, grace=max(deadline - time.monotonic(), 0.1), terminate=False)

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _healthy(self) -> bool:
        self._check_alive()
        try:
            health = self.get("/api/v2/monitor/health", auth=False)
        except (OSError, DeploymentError):
            return False
        wanted = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all(health.get(part, {}).get("status") == "healthy" for part in wanted)

    def _check_alive(self) -> None:
        for component in self.components:
            if component.process.poll() is not None:
                raise DeploymentError(
                    f"{component.name} exited with {component.process.returncode}: {_tail(component.log)}"
                )

    def celery_workers_online(self) -> list[str]:
        """Names of the Celery workers that answer a ping on the broker."""
        code = (
            "import json\n"
            "from airflow.providers.celery.executors.celery_executor import app\n"
            "replies = app.control.ping(timeout=2.0)\n"
            "print(json.dumps(sorted(name for reply in replies for name in reply)))\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            return []
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def component_logs(self) -> dict[str, str]:
        return {c.name: c.log.read_text(errors="replace") for c in self.components}

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` every second; after ``timeout`` seconds fail with every component's log tail."""
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {c.name}\n{_tail(c.log, 1500)}" for c in self.components)
                raise DeploymentError(f"timed out after {timeout}s waiting for {what}\n{logs}")
            time.sleep(1)

    # -- REST API /api/v2 --------------------------------------------------------------------------

    def token(self) -> str:
        """A JWT for the admin user (SimpleAuthManager), renewed every 10 minutes."""
        if self._token is None or time.monotonic() - self._token_at > 600:
            password = json.loads((self.home / "passwords.json").read_text())[ADMIN_USER]
            body = self.request(
                "POST", "/auth/token", {"username": ADMIN_USER, "password": password}, auth=False
            )
            self._token, self._token_at = body["access_token"], time.monotonic()
        return self._token

    def request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise DeploymentError(f"{method} {path}: HTTP {exc.code} {exc.read()[:2000]!r}") from exc
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def get(self, path: str, auth: bool = True, **params: Any) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return self.request("GET", path + query, auth=auth)

    def add_connection(self, conn_id: str, connection: dict[str, Any]) -> None:
        """Create (or replace) a connection through the API, from the JSON form used for env vars."""
        body = {"connection_id": conn_id, **connection}
        if isinstance(body.get("extra"), dict):
            body["extra"] = json.dumps(body["extra"])
        try:
            self.request("DELETE", f"/api/v2/connections/{conn_id}")
        except DeploymentError as exc:
            if "HTTP 404" not in str(exc):
                raise
        self.request("POST", "/api/v2/connections", body)

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 180) -> None:
        wanted = set(dag_ids)

        def parsed() -> bool:
            self._check_alive()
            dags = self.get("/api/v2/dags", limit=100)["dags"]
            return wanted <= {d["dag_id"] for d in dags}

        self.wait_until(parsed, timeout, f"DAGs {sorted(wanted)} parsed")

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        from datetime import datetime, timezone

        body = {"logical_date": datetime.now(timezone.utc).isoformat(), "conf": conf or {}}
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns", limit=100, order_by="id")["dag_runs"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}")["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """The final state of a DAG run (success or failed), waiting at most ``timeout`` seconds."""
        state: list[str] = []

        def done() -> bool:
            self._check_alive()
            state[:] = [self.run_state(dag_id, run_id)]
            return state[0] in TERMINAL_RUN_STATES

        self.wait_until(done, timeout, f"run {dag_id}/{run_id} to finish")
        return state[0]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances"
        return self.get(path, limit=100)["task_instances"]

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log for one try as the UI shows it (worker and triggerer parts)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/logs/{try_number}"
        body = self.get(path, full_content="true")
        content = body.get("content", body) if isinstance(body, dict) else body
        if isinstance(content, list):
            return "\n".join(json.dumps(line) if not isinstance(line, str) else line for line in content)
        return str(content)

    def task_log_files(self, dag_id: str, run_id: str, task_id: str) -> str:
        """Every log file of a task instance on disk (all tries, the triggerer's parts included): the
        API serves only tries it has a record of, and a try ended by the scheduler may have none."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "\n".join(path.read_text(errors="replace") for path in sorted(folder.glob("attempt=*")))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.get(path, deserialize="true")["value"]


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _airflow_binary() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def _stop_group(process: subprocess.Popen, grace: float = 20.0, terminate: bool = True) -> None:
    """SIGTERM to the process group we created (unless sent already), then SIGKILL if it is still
    there after ``grace`` seconds."""
    if process.poll() is None:
        if terminate:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    # Children (task processes, pool workers) may outlive the leader: the group goes either way.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(10)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
