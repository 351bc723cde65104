"""The postgres_fdw connection form in a real Airflow 3 UI, driven by headless Chromium as a person would.

Starts ``airflow api-server`` on 127.0.0.1 (SimpleAuthManager, test_connection enabled) on the
session's metadata database, logs in, adds a "Postgres FDW remote server" connection pointing at
the harness's source, presses Test (success), runs a DAG that uses that connection, then edits the
password to a wrong one and presses Test again (a clear failure). The password must never appear in
the page, the API responses the page receives, or the server log. Screenshots go to .artifacts/ui/.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import READER, READER_PASSWORD, REPO, SOURCE_DB

from fdw_testing.pgcluster import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / ".artifacts" / "ui"
CONN_ID = "fdw_ui_source"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
WRONG_PASSWORD = "Wrong-UI-Password-55"


@pytest.fixture(scope="module")
def api_server(airflow_db):
    """``airflow api-server`` on the session's AIRFLOW_HOME; stopped (its process group) at the end."""
    home = Path(os.environ["AIRFLOW_HOME"])
    port = free_port()
    log = home / "api-server.log"
    env = {
        **os.environ,
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
    }
    airflow = str(Path(sys.executable).with_name("airflow"))
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        yield url, password, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started, nothing else
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: scripts/bootstrap.sh installs Debian's chromium"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def toast_text(page, contains: str, timeout: float = 30.0) -> str:
    """The text of the notification that reports an action, once it says ``contains``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for toast in page.locator("[data-scope=toast][data-part=root]").all():
            text = toast.inner_text()
            if contains.lower() in text.lower():
                return text
        page.wait_for_timeout(200)
    raise AssertionError(f"no notification saying {contains!r}; page: {page.inner_text('body')[-1500:]}")


def test_a_person_adds_tests_and_uses_a_postgres_fdw_connection_in_the_ui(api_server, browser, pair, capfd):
    from airflow.sdk import DAG

    from airflow_provider_fdw.operators.server import CreateForeignServerOperator
    from fdw_testing.dagrun import run_dag

    url, admin_password, server_log = api_server
    page = browser.new_page(viewport={"width": 1300, "height": 1400})
    seen: list[str] = []  # every API response body the page received

    def record(response):
        if "/api/" in response.url or "/ui/" in response.url:
            # the bodies of redirects and aborted requests cannot be read
            with contextlib.suppress(Exception):
                seen.append(response.text())

    page.on("response", record)

    # Log in, open Admin -> Connections, add a connection of our type.
    page.goto(url, wait_until="networkidle")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(admin_password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda u: "login" not in u)  # the app's own redirect after sign-in comes first
    page.wait_for_load_state("networkidle")
    goto(page, f"{url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.locator("[role=dialog]")
    dialog.locator("[name=connection_id]").fill(CONN_ID)
    combo = dialog.get_by_role("combobox").first
    combo.click()
    combo.fill("Postgres FDW")
    page.keyboard.press("Enter")
    # The standard fields, relabelled for this type.
    for label in ("Host", "Remote user", "Password", "Port", "Database"):
        assert dialog.get_by_text(label, exact=True).count() >= 1, label
    dialog.locator("[name=host]").fill(pair.source.fdw_host)
    dialog.locator("[name=port]").fill(str(pair.source.fdw_port))
    dialog.locator("[name=schema]").fill(SOURCE_DB)
    dialog.locator("[name=login]").fill(READER)
    dialog.locator("[name=password]").fill(READER_PASSWORD)
    # The provider's own fields, with their labels.
    dialog.get_by_text("Extra Fields", exact=True).click()
    for label in (
        "Fetch size",
        "Batch size",
        "SSL mode",
        "Use remote estimate",
        "Keep connections",
        "Extensions",
        "Updatable",
        "Other server options (JSON)",
    ):
        assert dialog.get_by_text(label, exact=True).count() == 1, label
    dialog.locator("[name=element_fetch_size]").fill("5000")
    shot(page, "connection-form")
    dialog.get_by_role("button", name="Save").click()
    toast_text(page, "successfully created")
    goto(page, f"{url}/connections")  # a fresh page: only what the server sends
    assert READER_PASSWORD not in page.content()

    # Test: success, from the real remote.
    page.get_by_role("button", name="Test Connection").first.click()
    success = toast_text(page, "Connected to PostgreSQL")
    shot(page, "connection-test-success")
    assert READER in success

    # The connection saved by the UI drives a real DAG run: the UI and the operators agree.
    with DAG("ui_connection", schedule=None) as dag:
        CreateForeignServerOperator(task_id="server", server_name="ui_src", fdw_conn_id=CONN_ID)
    result = run_dag(dag)
    assert result.state == "success", result.task_states
    assert result.xcom["server"]["remote_version"]
    task_output = "".join(capfd.readouterr())  # the DAG run's task logs
    # The mapping step is logged; its statement is not (it sets the password): see docs/security.md.
    assert "statement not logged: it sets a password" in task_output and READER_PASSWORD not in task_output

    # Edit the password to a wrong one: Test reports a clear failure.
    page.get_by_role("button", name="Edit Connection").first.click()
    dialog = page.locator("[role=dialog]")
    dialog.locator("[name=password]").fill(WRONG_PASSWORD)
    dialog.get_by_role("button", name="Save").click()
    toast_text(page, "updated")
    page.get_by_role("button", name="Test Connection").first.click()
    failure = toast_text(page, "password authentication failed")
    shot(page, "connection-test-failure")
    assert WRONG_PASSWORD not in failure

    # Never in the page, the responses it received, or the server's log.
    goto(page, f"{url}/connections")
    page.get_by_role("button", name="Edit Connection").first.click()
    page.wait_for_timeout(1000)
    shot(page, "connection-edit-masked")
    html = page.content()
    for secret in (READER_PASSWORD, WRONG_PASSWORD):
        assert secret not in html
        assert not [body for body in seen if secret in body]
        assert secret not in server_log.read_text()
    page.close()


def goto(page, url: str) -> None:
    """Open ``url``; a navigation the app itself starts at that moment aborts ours (ERR_ABORTED): retry."""
    from playwright.sync_api import Error

    for attempt in range(3):
        try:
            page.goto(url, wait_until="networkidle")
            return
        except Error as exc:
            if "ERR_ABORTED" not in str(exc) or attempt == 2:
                raise
            page.wait_for_load_state("networkidle")
