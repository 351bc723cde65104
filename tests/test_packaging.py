"""The package as users install it: a fresh interpreter, the built sdist and wheel, a clean venv.

The wheel test installs the wheel into a new virtualenv with its declared dependencies pinned to
their declared floors (apache-airflow, apache-airflow-providers-postgres), so the floors in
pyproject.toml are exactly what is tested; the rest of the suite runs on the newest releases.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from conftest import REPO, postgres_connection
from packaging.requirements import Requirement
from packaging.version import Version

from airflow_provider_fdw.compat import sql

# Run with the repo importable (PYTHONPATH) but nothing of Airflow imported before the statement.
FRESH = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}


def run_fresh(code: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(FRESH, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_connection_module_imports_in_a_fresh_interpreter():
    """Importing the connection module first starts Airflow's provider discovery: no circular import."""
    proc = run_fresh("import airflow_provider_fdw.connection as c; print(c.remote_server_from_connection)")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_get_provider_info_is_plain_data_and_imports_no_airflow():
    code = (
        "import json, sys\n"
        "import airflow_provider_fdw as p\n"
        "info = p.get_provider_info()\n"
        "loaded = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))\n"
        "print(json.dumps({'info': info, 'airflow_modules': loaded}))\n"
    )
    proc = run_fresh(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])  # json round trip: plain data only
    assert result["airflow_modules"] == []
    conn_type, mysql = result["info"]["connection-types"]
    assert conn_type["connection-type"] == "postgres_fdw" and mysql["connection-type"] == "mysql_fdw"
    assert conn_type["conn-fields"]["fetch_size"]["schema"] == {"type": ["integer", "null"], "minimum": 1}


def test_airflow_discovers_the_provider_in_a_fresh_interpreter():
    code = (
        "from airflow.providers_manager import ProvidersManager\n"
        "pm = ProvidersManager()\n"
        "hooks = pm.hooks\n"
        "print(pm.providers['airflow-provider-fdw'].version, 'postgres_fdw' in hooks, 'mysql_fdw' in hooks)\n"
    )
    proc = run_fresh(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-3:] == ["0.1.0", "True", "True"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel built as a release would be (the wheel from the sdist), checked by twine."""
    out = tmp_path_factory.mktemp("dist")
    # Build from a copy: the working tree gets no build/ or egg-info, and none of its leftovers get in.
    src = out / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "dist", "_build", "*.egg-info", "__pycache__", ".*cache"
        ),
    )
    build = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    assert files == ["airflow_provider_fdw-0.1.0-py3-none-any.whl", "airflow_provider_fdw-0.1.0.tar.gz"]
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *(str(out / f) for f in files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    return out


def wheel_metadata(dist: Path) -> tuple[zipfile.ZipFile, dict]:
    wheel = zipfile.ZipFile(dist / "airflow_provider_fdw-0.1.0-py3-none-any.whl")
    meta = Parser().parsestr(wheel.read("airflow_provider_fdw-0.1.0.dist-info/METADATA").decode())
    return wheel, meta


def test_wheel_declares_airflow_and_providers_postgres_and_ships_the_provider_entry_point(dist):
    wheel, meta = wheel_metadata(dist)
    required = {
        Requirement(r).name: str(Requirement(r).specifier)
        for r in meta.get_all("Requires-Dist")
        if "extra ==" not in r
    }
    assert required == {"apache-airflow": ">=3.3.0", "apache-airflow-providers-postgres": ">=6.0"}
    entry_points = wheel.read("airflow_provider_fdw-0.1.0.dist-info/entry_points.txt").decode()
    assert "provider_info = airflow_provider_fdw:get_provider_info" in entry_points
    names = wheel.namelist()
    assert "airflow_provider_fdw/connection_form.py" in names
    # The harness (fixed passwords, Airflow internals) stays in the repository.
    assert not [n for n in names if n.startswith(("tests/", "example_dags/", "docs/", "fdw_testing/"))]
    assert not [n for n in names if n.startswith("airflow_provider_fdw/testing")]


def declared_floors(dist: Path) -> dict[str, str]:
    """The floor of every required dependency declared as ``name>=floor``."""
    _, meta = wheel_metadata(dist)
    pins = {}
    for raw in meta.get_all("Requires-Dist"):
        req = Requirement(raw)
        if req.marker is None:
            (spec,) = [s for s in req.specifier if s.operator == ">="]
            pins[req.name] = spec.version
    return pins


@pytest.fixture
def wheel_target_db(target) -> str:
    """A database of its own on the target, so the DAG run here cannot meet the other tests' objects."""
    name = f"wheel_{uuid.uuid4().hex[:8]}"
    target.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    target.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


# pip downloads Airflow into a new venv (about 40 s on an idle machine); a busy CI machine needs more.
@pytest.mark.timeout(900)
def test_wheel_installed_in_a_clean_venv_at_the_declared_floors_runs_an_example_dag(
    dist, tmp_path, pair, wheel_target_db
):
    """pip install the wheel (deps pinned to their floors) into a new venv; airflow dags test from it."""
    started = time.monotonic()
    venv = tmp_path / "venv"
    # No PYTHONPATH (the tests' own, pointing at the repo): pip must see only the new venv.
    clean = {k: v for k, v in FRESH.items() if k != "PYTHONPATH" and not k.startswith("AIRFLOW")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=clean)
    pins = declared_floors(dist)
    assert set(pins) == {"apache-airflow", "apache-airflow-providers-postgres"}
    install = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            str(dist / "airflow_provider_fdw-0.1.0-py3-none-any.whl"),
            *(f"{name}=={floor}" for name, floor in pins.items()),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=clean,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    installed = time.monotonic()

    home, dags = tmp_path / "airflow-home", tmp_path / "dags"
    dags.mkdir()
    shutil.copy(REPO / "example_dags" / "fdw_matview_sync.py", dags)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_POSTGRES_DEFAULT": postgres_connection(pair.target, wheel_target_db),
        "AIRFLOW_CONN_FDW_SOURCE": os.environ["AIRFLOW_CONN_FDW_SOURCE"],
    }

    def airflow(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        # cwd outside the repo and no PYTHONPATH: only the installed wheel can be imported.
        return subprocess.run(
            [str(venv / "bin" / "airflow"), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=timeout,
        )

    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import airflow_provider_fdw, airflow; print(airflow_provider_fdw.__file__, airflow.__version__)",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr[-2000:]
    module_file, airflow_version = where.stdout.split()
    assert module_file.startswith(str(venv)), module_file
    assert Version(airflow_version) == Version(pins["apache-airflow"])  # the floor, not the newest

    migrate = airflow("db", "migrate")
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    migrated = time.monotonic()
    run = airflow("dags", "test", "fdw_matview_sync", "2024-01-02", timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    # Shown with -s: what the test spends where (the build is in the dist fixture's setup time).
    print(
        f"\n[wheel] venv + pip install {installed - started:.0f}s, db migrate {migrated - installed:.0f}s, "
        f"dags test {time.monotonic() - migrated:.0f}s"
    )
    users = pair.target.execute("SELECT count(*) FROM reporting.users", dbname=wheel_target_db)[0][0]
    totals = pair.target.execute("SELECT count(*) FROM reporting.order_totals", dbname=wheel_target_db)[0][0]
    assert (users, totals) == (1000, 1000)
