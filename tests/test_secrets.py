"""Secrets: hostile passwords never appear in any form in task output, exceptions, the target's
server log, child environments or reprs; only exact role keywords are keywords (issue 11, item 4;
issue 10, item 5)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import (
    SOURCE_DB,
    TARGET_DB,
    fdw_connection,
    ident,
    postgres_connection,
    users_foreign_table,
    wait_until,
)

from airflow_provider_fdw.bulkcopy import PsqlRelay, plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook
from fdw_testing.dagrun import run_dag
from fdw_testing.sample_data import READER, READER_PASSWORD

HOSTILE_PASSWORDS = [
    "Back\\slash-Pw-1",
    "Quote'Dq\"-Pw-2",
    "Per%cent%s-Pw-3",
    "Ünïcødé-Pässwørd-4",
    "New\nLine-Pw-5",
]
HOSTILE_ROLE = "hostile_reader"


def every_form(secret: str) -> set[str]:
    """The ways a secret can be spelled in SQL, JSON, Python reprs, URLs and log escapes."""
    doubled = secret.replace("'", "''")
    backslashed = secret.replace("\\", "\\\\")
    forms = {
        secret,
        doubled,
        backslashed,
        backslashed.replace("'", "''"),
        json.dumps(secret)[1:-1],
        repr(secret)[1:-1],
        quote(secret, safe=""),
        secret.encode("unicode_escape").decode(),
    }
    # A newline may be split across lines: each half that is long enough is distinctive too.
    forms |= {part for part in secret.split("\n") if len(part) >= 8}
    return forms


def leaked(text: str, secret: str) -> list[str]:
    return sorted(form for form in every_form(secret) if form and form in text)


@pytest.fixture
def hostile_role(source):
    source.execute(
        sql.SQL("CREATE ROLE {} LOGIN").format(ident(HOSTILE_ROLE)),
    )
    source.execute(sql.SQL("GRANT USAGE ON SCHEMA app TO {}").format(ident(HOSTILE_ROLE)), dbname=SOURCE_DB)
    source.execute(sql.SQL("GRANT SELECT ON app.users TO {}").format(ident(HOSTILE_ROLE)), dbname=SOURCE_DB)
    yield HOSTILE_ROLE
    source.execute(sql.SQL("DROP OWNED BY {}").format(ident(HOSTILE_ROLE)), dbname=SOURCE_DB)
    source.execute(sql.SQL("DROP ROLE {}").format(ident(HOSTILE_ROLE)))


@pytest.mark.parametrize(
    "password", HOSTILE_PASSWORDS, ids=["backslash", "quote", "percent", "unicode", "newline"]
)
def test_hostile_passwords_never_appear_in_task_output(
    airflow_db, pair, source, hostile_role, password, monkeypatch, capfd
):
    from airflow.sdk import DAG

    from airflow_provider_fdw.operators.copy import BulkCopyOperator
    from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
    from airflow_provider_fdw.operators.server import CreateForeignServerOperator

    source.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident(hostile_role), sql.Literal(password)))
    monkeypatch.setenv(
        "AIRFLOW_CONN_FDW_HOSTILE", fdw_connection(pair, password=password, login=hostile_role)
    )
    suffix = uuid.uuid4().hex[:8]
    server, proxy = f"hostile_{suffix}", f"hostile_proxy_{suffix}"
    with DAG(
        f"hostile_{suffix}",
        schedule=None,
        start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    ) as dag:
        make_server = CreateForeignServerOperator(
            task_id="server", server_name=server, fdw_conn_id="fdw_hostile"
        )
        do_import = ImportForeignSchemaOperator(
            task_id="import", server_name=server, remote_schema="app", local_schema=proxy, limit_to=["users"]
        )
        copy = BulkCopyOperator(
            task_id="copy",
            source_table=f"{proxy}.users",
            target_table=f"{proxy}.users_copy",
            fdw_conn_id="fdw_hostile",
        )
        make_server >> do_import >> copy
    capfd.readouterr()
    result = run_dag(dag)
    out, err = capfd.readouterr()
    assert result.task_states == {"server": "success", "import": "success", "copy": "success"}
    assert result.xcom["copy"]["rows"] == 1000
    assert leaked(out + err + json.dumps(result.xcom), password) == []
    # A failing mapping statement: the exception and the output still carry no form of it.
    with FdwHook(fdw_conn_id="fdw_hostile") as hook, pytest.raises(FdwError) as info:
        hook.create_user_mapping(server, "no_such_role_for_hostile_test")
    out, err = capfd.readouterr()
    assert leaked(str(info.value) + out + err, password) == []


def test_failed_user_mapping_leaves_no_password_in_the_target_server_log(
    pair, target, server_name, monkeypatch
):
    password = "Server-Log-Canary\\'Pw-91f3"
    monkeypatch.setenv("AIRFLOW_CONN_FDW_CANARY", fdw_connection(pair, password=password))
    assert target.logfile is not None, "the local test backend writes the server log to a file"
    log = Path(target.logfile)
    offset = log.stat().st_size
    with FdwHook(fdw_conn_id="fdw_canary") as hook:
        hook.ensure_extension()
        hook.create_server(server_name)
        with pytest.raises(FdwError, match='role "no_such_role_canary" does not exist'):
            hook.create_user_mapping(server_name, "no_such_role_canary")
        hook.create_user_mapping(server_name)  # and a mapping that works: converged, also silent
    new_log = log.read_bytes()[offset:].decode(errors="replace")
    assert 'role "no_such_role_canary" does not exist' in new_log  # the failure was logged ...
    assert leaked(new_log, password) == []  # ... without the password
    options = target.execute(
        "SELECT umoptions FROM pg_user_mappings WHERE srvname = %s", (server_name,), dbname=TARGET_DB
    )[0][0]
    assert f"password={password}" in options  # the value arrived intact


@pytest.fixture(scope="module")
def sleepy_view(pg_pair):
    for statement in (
        "CREATE SCHEMA IF NOT EXISTS testviews",
        "GRANT USAGE ON SCHEMA testviews TO fdw_reader",
    ):
        pg_pair.source.execute(statement, dbname=SOURCE_DB)  # not app: other tests import all of app
    pg_pair.source.execute(
        "CREATE OR REPLACE VIEW testviews.sleepy_users AS SELECT u.id, u.email, u.created_at "
        "FROM app.users u, LATERAL (SELECT pg_sleep(0.005) WHERE u.id > 0) s",
        dbname=SOURCE_DB,
    )
    pg_pair.source.execute("GRANT SELECT ON testviews.sleepy_users TO fdw_reader", dbname=SOURCE_DB)


def test_psql_children_get_a_minimal_environment_and_a_private_passfile(
    pair, target, sleepy_view, server_name, local_schema
):
    users_foreign_table(target, "fdw_source", server_name, local_schema, "testviews", "sleepy_users")
    assert any(k.startswith("AIRFLOW_CONN_") for k in os.environ)  # the worker has them ...
    result: dict[str, object] = {}

    def copy() -> None:
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            result["summary"] = hook.bulk_copy(
                plan_copy(f"{local_schema}.sleepy_users", f"{local_schema}.copy"), direct=True, relay="psql"
            )

    worker = threading.Thread(target=copy)
    worker.start()
    seen: dict[int, dict[str, str]] = {}
    deadline = time.monotonic() + 30
    while worker.is_alive() and time.monotonic() < deadline and len(seen) < 2:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in seen:
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            # The loader's command names the staging table, the reader's the remote view. A process
            # read while it execs shows an empty environment for a moment: looked at again next round.
            if not environ:
                continue
            if b"psql" in cmdline and (local_schema.encode() in cmdline or b"sleepy_users" in cmdline):
                seen[int(entry.name)] = dict(
                    item.split("=", 1) for item in environ.decode().split("\0") if "=" in item
                )
        time.sleep(0.05)
    # The child's own view of its passfile (/proc/self/fd/N is the child's inherited descriptor).
    passfiles = [
        env["PGPASSFILE"].replace("/proc/self/", f"/proc/{pid}/", 1)
        for pid, env in seen.items()
        if env.get("PGPASSFILE")
    ]
    modes = {p: stat.S_IMODE(os.stat(p).st_mode) for p in passfiles if os.path.exists(p)}
    on_disk = {p: os.readlink(p) if p.startswith("/proc/") else p for p in modes}
    worker.join(60)
    assert result["summary"]["rows"] == 1000
    assert len(seen) == 2, "both psql children observed"
    for env in seen.values():  # ... the children do not
        assert not [
            k
            for k in env
            if k.startswith("AIRFLOW_CONN_") or k in ("PGPASSWORD", "AIRFLOW__CORE__FERNET_KEY")
        ]
        assert "PGPASSFILE" in env
    assert modes and set(modes.values()) == {0o600}
    # unlinked while the children read it (nothing left behind even if the worker is killed) ...
    assert all(target.endswith(" (deleted)") for target in on_disk.values()), on_disk
    assert all(not os.path.exists(p) for p in passfiles)  # ... and gone afterwards


def test_relay_repr_prints_no_password():
    relay = PsqlRelay(
        "psql", {"host": "h", "password": "Remote-Repr-Pw"}, {"host": "l", "password": "Local-Repr-Pw"}
    )
    assert "Remote-Repr-Pw" not in repr(relay) and "Local-Repr-Pw" not in repr(relay)


@pytest.mark.parametrize("role_name", ["Public", "user", "Current_User"])
def test_roles_named_like_keywords_get_their_own_mapping(target, server_name, role_name):
    target.execute(sql.SQL("CREATE ROLE {}").format(ident(role_name)))
    hook = FdwHook(fdw_conn_id="fdw_source")
    try:
        hook.ensure_extension()
        hook.create_server(server_name)
        assert hook.create_user_mapping(server_name, role_name) is True
        rows = target.execute(
            "SELECT usename FROM pg_user_mappings WHERE srvname = %s", (server_name,), dbname=TARGET_DB
        )
        assert rows == [(role_name,)]  # not public, not the current user
    finally:
        hook.drop_server(server_name, cascade=True)
        hook.close()
        target.execute(sql.SQL("DROP ROLE {}").format(ident(role_name)))


@pytest.fixture
def hostile_search_path(pair, monkeypatch):
    """A local superuser whose search_path (pg_temp listed last, a hardening recipe) starts with a
    schema where another role created tables and a function named like the provider's temporary
    ones, with a trigger that raises what it receives into the server log."""
    role, password = f"sp_{uuid.uuid4().hex[:6]}", "Local-Pw-1"
    schema = f"planted_{uuid.uuid4().hex[:6]}"
    target = pair.target
    target.execute(
        sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(ident(role), sql.Literal(password))
    )
    target.execute(
        sql.SQL("ALTER ROLE {} SET search_path = {}, public, pg_temp").format(ident(role), ident(schema))
    )
    for statement in (
        "CREATE SCHEMA {s}",
        "CREATE TABLE {s}.fdw_secret_holder (secret text)",
        "CREATE FUNCTION {s}.grab() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "  RAISE WARNING 'captured %', NEW.secret; "
        "  CREATE TEMPORARY TABLE IF NOT EXISTS fdw_secret_holder (secret text NOT NULL) ON COMMIT DROP; "
        "  INSERT INTO pg_temp.fdw_secret_holder VALUES (NEW.secret); RETURN NULL; END $$",
        "CREATE TRIGGER grab BEFORE INSERT ON {s}.fdw_secret_holder FOR EACH ROW EXECUTE FUNCTION {s}.grab()",
        # a function shadowing the one the password goes through, in a schema searched first
        "CREATE FUNCTION {s}.quote_literal(text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN "
        "  RAISE WARNING 'captured %', $1; RETURN pg_catalog.quote_literal($1); END $$",
    ):
        target.execute(sql.SQL(statement).format(s=ident(schema)), dbname=TARGET_DB)
    monkeypatch.setenv("AIRFLOW_CONN_PLANTED_LOCAL", postgres_connection(target, TARGET_DB, role, password))
    yield schema
    target.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident(schema)), dbname=TARGET_DB)
    target.execute(
        sql.SQL("DROP OWNED BY {}; DROP ROLE {}").format(ident(role), ident(role)), dbname=TARGET_DB
    )


def test_the_password_never_reaches_objects_planted_earlier_in_the_search_path(
    pair, server_name, hostile_search_path, monkeypatch
):
    """The holder table, the function and every call in it are qualified (pg_temp., pg_catalog.)."""
    password = "Rotated-Canary-Pw-5e1d"
    monkeypatch.setenv("AIRFLOW_CONN_FDW_ROTATED", fdw_connection(pair, password=password))
    log = Path(pair.target.logfile)
    offset = log.stat().st_size
    with FdwHook(fdw_conn_id="fdw_rotated", postgres_conn_id="planted_local") as hook:
        hook.ensure_extension()
        hook.create_server(server_name)
        hook.create_user_mapping(server_name)
    assert password not in log.read_bytes()[offset:].decode(errors="replace")
    options = pair.target.execute(
        "SELECT umoptions FROM pg_user_mappings WHERE srvname = %s", (server_name,), dbname=TARGET_DB
    )[0][0]
    assert f"password={password}" in options


def test_a_non_ascii_password_arrives_intact_whatever_the_sessions_client_encoding(
    pair, server_name, monkeypatch
):
    """The password travels as the hex of its UTF-8 bytes: a LATIN1 client encoding cannot alter it."""
    role, local_password = f"enc_{uuid.uuid4().hex[:6]}", "Local-Pw-2"
    pair.target.execute(
        sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(ident(role), sql.Literal(local_password))
    )
    pair.target.execute(sql.SQL("ALTER ROLE {} SET client_encoding = 'LATIN1'").format(ident(role)))
    monkeypatch.setenv(
        "AIRFLOW_CONN_LATIN1_LOCAL", postgres_connection(pair.target, TARGET_DB, role, local_password)
    )
    password = "Pässwörd-ünïcode-9"
    monkeypatch.setenv("AIRFLOW_CONN_FDW_UNICODE", fdw_connection(pair, password=password))
    with FdwHook(fdw_conn_id="fdw_unicode", postgres_conn_id="latin1_local") as hook:
        hook.ensure_extension()
        hook.create_server(server_name)
        hook.create_user_mapping(server_name)
    options = pair.target.execute(
        "SELECT umoptions FROM pg_user_mappings WHERE srvname = %s", (server_name,), dbname=TARGET_DB
    )[0][0]
    assert f"password={password}" in options


def another_roles_mapping_on_an_owned_server(pair, server_name: str, monkeypatch) -> tuple[Any, str]:
    """A non-superuser ``etl_local`` owns the server and maps another role (``reporting``) on it: it
    may not read that mapping's options."""
    suffix = uuid.uuid4().hex[:6]
    etl, reporting, etl_password = f"etl_{suffix}", f"rep_{suffix}", "Etl-Pw-3"
    target = pair.target
    target.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident(etl), sql.Literal(etl_password)))
    target.execute(sql.SQL("CREATE ROLE {}").format(ident(reporting)))
    target.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw", dbname=TARGET_DB)
    grant = sql.SQL("GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO {}")
    target.execute(grant.format(ident(etl)), dbname=TARGET_DB)
    monkeypatch.setenv("AIRFLOW_CONN_ETL_LOCAL", postgres_connection(target, TARGET_DB, etl, etl_password))
    with FdwHook(fdw_conn_id="fdw_source", postgres_conn_id="etl_local") as hook:
        hook.create_server(server_name)
        assert hook.create_user_mapping(server_name, reporting) is True
    return target, reporting


def test_a_server_owner_sets_another_roles_login_in_place_keeping_a_dbas_options(
    pair, server_name, monkeypatch
):
    """The owner may not read another role's mapping options: the login and password are SET (or
    ADDed) in place, never by dropping the mapping and losing the options a DBA added."""
    target, reporting = another_roles_mapping_on_an_owned_server(pair, server_name, monkeypatch)
    mapping = "SELECT umid, umoptions FROM pg_user_mappings WHERE srvname = %s AND usename = %s"
    ((umid, _),) = target.execute(mapping, (server_name, reporting), dbname=TARGET_DB)
    # The DBA drops the password by hand (the mapping will ADD it back, and SET the user).
    dba = sql.SQL("ALTER USER MAPPING FOR {} SERVER {} OPTIONS (DROP password)")
    target.execute(dba.format(ident(reporting), ident(server_name)), dbname=TARGET_DB)
    rotated = "Rotated-Pw-7"
    monkeypatch.setenv("AIRFLOW_CONN_FDW_ROTATED_OWNER", fdw_connection(pair, password=rotated))
    for _ in range(2):  # then both present: SET
        with FdwHook(fdw_conn_id="fdw_rotated_owner", postgres_conn_id="etl_local") as hook:
            hook.create_user_mapping(server_name, reporting)
        ((same, options),) = target.execute(mapping, (server_name, reporting), dbname=TARGET_DB)
        assert same == umid and f"password={rotated}" in options, options


def test_a_server_owner_may_not_alter_a_mapping_with_superuser_only_options(pair, server_name, monkeypatch):
    """``sslcert``/``sslkey`` set by a superuser: the owner's update fails, saying so; the mapping is
    never dropped (its options would be lost)."""
    target, reporting = another_roles_mapping_on_an_owned_server(pair, server_name, monkeypatch)
    dba = sql.SQL("ALTER USER MAPPING FOR {} SERVER {} OPTIONS (ADD sslcert '/etc/certs/rep.crt')")
    target.execute(dba.format(ident(reporting), ident(server_name)), dbname=TARGET_DB)
    with (
        FdwHook(fdw_conn_id="fdw_source", postgres_conn_id="etl_local") as hook,
        pytest.raises(FdwError, match="superuser"),
    ):
        hook.create_user_mapping(server_name, reporting)
    mapping = "SELECT umoptions FROM pg_user_mappings WHERE srvname = %s AND usename = %s"
    assert (
        "sslcert=/etc/certs/rep.crt"
        in target.execute(mapping, (server_name, reporting), dbname=TARGET_DB)[0][0]
    )


def test_a_mapping_without_options_is_set_again_without_error(pair, server_name, monkeypatch):
    """A mapping with no options reads as NULL to everyone, as hidden ones do: nothing to set."""
    monkeypatch.setenv("AIRFLOW_CONN_FDW_NO_LOGIN", fdw_connection(pair, password="", login=""))
    for changed in (True, False):
        with FdwHook(fdw_conn_id="fdw_no_login") as hook:
            hook.ensure_extension()
            hook.create_server(server_name)
            assert hook.create_user_mapping(server_name) is changed


def test_a_password_the_database_encoding_cannot_hold_is_refused_without_its_bytes(
    pair, server_name, monkeypatch
):
    """In a LATIN1 database the conversion of a euro sign fails, and its own error names the bytes."""
    database, role, local_password = f"l1_{uuid.uuid4().hex[:6]}", f"l1_{uuid.uuid4().hex[:6]}", "Local-Pw-9"
    create = sql.SQL("CREATE DATABASE {} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    pair.target.execute(create.format(ident(database)))
    login = sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}")
    pair.target.execute(login.format(ident(role), sql.Literal(local_password)))
    monkeypatch.setenv(
        "AIRFLOW_CONN_L1_LOCAL", postgres_connection(pair.target, database, role, local_password)
    )
    password = "Sekr\u20ac\u0416-tail"
    monkeypatch.setenv("AIRFLOW_CONN_FDW_EURO", fdw_connection(pair, password=password))
    log = Path(pair.target.logfile)
    offset = log.stat().st_size
    with (
        pytest.raises(FdwError, match="characters the encoding of this database cannot hold") as raised,
        FdwHook(fdw_conn_id="fdw_euro", postgres_conn_id="l1_local") as hook,
    ):
        hook.ensure_extension()
        hook.create_server(server_name)
        hook.create_user_mapping(server_name)
    server_log = log.read_bytes()[offset:].decode(errors="replace")
    for shown in (str(raised.value), server_log):
        assert "0xe2" not in shown and "Sekr" not in shown


@pytest.fixture(params=["superuser", "etl role"])
def local_role(request, pair, monkeypatch):
    """The local connection: the harness's superuser, or a role with only the grants of docs/security.md
    (whose log_lock_waits and deadlock_timeout, which it may not set, are its defaults)."""
    if request.param == "superuser":
        yield "postgres_default", pair.target.superuser
        return
    role, password = f"held_etl_{uuid.uuid4().hex[:6]}", "Etl-Local-Pw-1"
    for statement in (
        "CREATE ROLE {r} LOGIN PASSWORD {p}",
        "GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO {r}",
        "ALTER ROLE {r} SET log_lock_waits = on",
        "ALTER ROLE {r} SET deadlock_timeout = '100ms'",
    ):
        composed = sql.SQL(statement).format(r=ident(role), p=sql.Literal(password))
        pair.target.execute(composed, dbname=TARGET_DB)
    monkeypatch.setenv("AIRFLOW_CONN_HELD_LOCAL", postgres_connection(pair.target, TARGET_DB, role, password))
    yield "held_local", role
    pair.target.execute(sql.SQL("DROP OWNED BY {r}; DROP ROLE {r}").format(r=ident(role)), dbname=TARGET_DB)


@pytest.mark.parametrize("rotation", [False, True], ids=["create", "rotate"])
@pytest.mark.parametrize("interruption", ["lock wait logged", "on_kill cancel", "session terminated"])
def test_a_mapping_statement_held_up_by_another_transaction_leaves_no_password_in_the_server_log(
    pair, target, server_name, monkeypatch, local_role, rotation, interruption
):
    """A DBA's uncommitted change of the same mapping makes the provider's statement wait. Whatever the
    server reports during that wait (log_lock_waits, the cancel of on_kill or a statement_timeout, the
    FATAL of pg_terminate_backend: a retry terminating a killed try's sessions) quotes the waiting
    statement in its CONTEXT, uncaught: the statement that waits must not hold the password."""
    local_conn_id, role = local_role
    old, new = "Held-Old-Canary\\'Pw-31c7", "Held-New-Canary\\'Pw-8a0e"
    monkeypatch.setenv("AIRFLOW_CONN_FDW_HELD", fdw_connection(pair, password=old))
    with FdwHook(fdw_conn_id="fdw_held", postgres_conn_id=local_conn_id) as hook:
        hook.ensure_extension()
        hook.create_server(server_name)
        if rotation:
            hook.create_user_mapping(server_name)
    monkeypatch.setenv("AIRFLOW_CONN_FDW_HELD", fdw_connection(pair, password=new))
    log = Path(target.logfile)
    offset = log.stat().st_size
    blocker = target.connect(TARGET_DB, autocommit=False)  # the DBA's open transaction
    change = "ALTER USER MAPPING FOR {} SERVER {} OPTIONS (SET user 'fdw_reader')"
    if not rotation:
        change = "CREATE USER MAPPING FOR {} SERVER {} OPTIONS (user 'someone_else')"
    blocker.cursor().execute(sql.SQL(change).format(ident(role), ident(server_name)))
    try:
        with FdwHook(fdw_conn_id="fdw_held", postgres_conn_id=local_conn_id) as hook:
            pid = hook.session.fetchvalue("backend", sql.SQL("SELECT pg_backend_pid()"))
            if interruption == "lock wait logged":
                settings = "SET lock_timeout = '2s'"
                if role == target.superuser:
                    settings += "; SET log_lock_waits = on; SET deadlock_timeout = '100ms'"
                hook.session.execute("settings", sql.SQL(settings))

            def interrupt() -> None:
                wait_until(
                    lambda: (
                        target.execute(
                            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
                        )
                        == [(True,)]
                    ),
                    30,
                )
                time.sleep(0.3)
                if interruption == "on_kill cancel":
                    hook.cancel()
                elif interruption == "session terminated":
                    target.execute("SELECT pg_terminate_backend(%s)", (pid,))

            interrupter = threading.Thread(target=interrupt)
            interrupter.start()
            with pytest.raises(FdwError) as raised:
                hook.create_user_mapping(server_name)
            interrupter.join(30)
    finally:
        blocker.rollback()
        blocker.close()
    message, logged = {
        "lock wait logged": ("lock timeout", "still waiting for ShareLock"),
        "on_kill cancel": ("user request", "canceling statement due to user request"),
        "session terminated": ("administrator command", "FATAL:  terminating connection"),
    }[interruption]
    assert message in str(raised.value)
    time.sleep(0.2)  # the server's log line of a terminated session may come after the client's error
    server_log = log.read_bytes()[offset:].decode(errors="replace")
    assert logged in server_log  # the wait was reported ...
    assert leaked(server_log, new) == [] and leaked(server_log, old) == []  # ... without a password
    assert leaked(str(raised.value), new) == []


KILLED_WORKER = """
import sys
from airflow_provider_fdw.bulkcopy import plan_copy, relay
from airflow_provider_fdw.hooks.fdw import FdwHook
if sys.argv[3] == "file":  # as where /proc/self/fd cannot be read: the passfile stays until psql ends
    relay.PROC_FDS = "/nonexistent/fd"
with FdwHook(fdw_conn_id="fdw_source") as hook:
    hook.bulk_copy(plan_copy(sys.argv[1], sys.argv[2]), direct=True, relay="psql")
"""


def kill_9_worker_during_psql_copy(
    target, server_name: str, local_schema: str, scratch: Path, passfiles: str = "proc fd"
) -> None:
    """A worker with ``scratch`` as its TMPDIR, killed with SIGKILL while both psql children read."""
    from conftest import REPO, kill_9_when

    users_foreign_table(target, "fdw_source", server_name, local_schema, "testviews", "sleepy_users")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_WORKER,
            f"{local_schema}.sleepy_users",
            f"{local_schema}.copy",
            passfiles,
        ],
        env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def both_children_reading() -> bool:
        found = 0
        for entry in Path("/proc").iterdir():
            try:
                cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
            except OSError:
                continue
            found += b"psql" in cmdline and local_schema.encode() in cmdline
        return found >= 2

    kill_9_when(worker, both_children_reading)


def files_holding(directory: Path, *passwords: str) -> list[str]:
    left = {path: path.read_bytes() for path in directory.rglob("*") if path.is_file()}
    return [str(p) for p, data in left.items() if any(pw.encode() in data for pw in passwords)]


def test_a_worker_killed_during_a_psql_copy_leaves_no_password_on_disk(
    pair, target, sleepy_view, server_name, local_schema, tmp_path
):
    """kill -9 (the OOM killer, a zombie task reaped) runs no clean-up: the children's passfiles must
    not outlive them with the remote's and the local database's passwords in them."""
    scratch = tmp_path / "worker_tmp"
    scratch.mkdir()
    kill_9_worker_during_psql_copy(target, server_name, local_schema, scratch)
    assert files_holding(scratch, READER_PASSWORD, target.password) == []


def test_the_next_relay_removes_the_passfiles_a_killed_worker_could_not_unlink(
    pair, target, sleepy_view, server_name, local_schema, tmp_path, relay_role, monkeypatch
):
    """Where a child cannot read its passfile through /proc/self/fd, the passfile stays on disk while
    psql runs, and a worker killed then leaves it: the next relay on the machine removes the private
    directories of workers that are gone, and leaves a live worker's alone, and those named for a
    pid of another host or PID namespace (a temporary directory shared between containers)."""
    from airflow_provider_fdw.bulkcopy import relay as relay_module

    scratch = tmp_path / "worker_tmp"
    scratch.mkdir()
    kill_9_worker_during_psql_copy(target, server_name, local_schema, scratch, passfiles="file")
    assert files_holding(scratch, READER_PASSWORD, target.password) != []  # what the sweep is for
    dead = subprocess.Popen(["true"])
    dead.wait()
    host, namespace = relay_module._host(), relay_module._pid_namespace()
    kept = [
        scratch / f"{relay_module.private_prefix()}live",  # this process's: alive
        scratch / f"fdw-psql-{'0' * 8}-{namespace}-{dead.pid}-host",  # another host's pid
        scratch / f"fdw-psql-{host}-{namespace + 1}-{dead.pid}-ns",  # another container's pid
    ]
    for directory in kept:
        directory.mkdir()
        (directory / "local.pgpass").write_text("kept")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    params = relay_role("Next-Relay-Pw")
    psql = shutil.which("psql")
    assert psql is not None
    rows = PsqlRelay(psql, params, params).copy(
        "COPY (SELECT g FROM generate_series(1, 3) g) TO STDOUT",
        ["CREATE TEMPORARY TABLE relayed (g integer)", "COPY relayed FROM STDIN"],
    )
    assert rows == 3
    assert files_holding(scratch, READER_PASSWORD, target.password, "Next-Relay-Pw") == []
    assert sorted(p.name for p in scratch.iterdir() if p.name.startswith("fdw-psql-")) == sorted(
        p.name for p in kept
    )
    assert all((directory / "local.pgpass").read_text() == "kept" for directory in kept)


@pytest.fixture(scope="module")
def tracking_everything():
    """A local server with pg_stat_statements.track = all (nested statements are recorded, their
    text readable by every member of pg_read_all_stats: a monitoring role with pg_monitor)."""
    from fdw_testing.pgcluster import create_local_cluster

    base = Path(tempfile.mkdtemp(prefix="fdw-pgss-"))  # the server may run as an unprivileged user
    cluster = create_local_cluster(
        "pgss",
        base,
        settings={"shared_preload_libraries": "'pg_stat_statements'", "pg_stat_statements.track": "all"},
    )
    cluster.start()
    try:
        for statement in (
            "CREATE EXTENSION pg_stat_statements",
            "CREATE EXTENSION postgres_fdw",
            "CREATE ROLE pgss_watcher LOGIN PASSWORD 'Watcher-Pw-1' IN ROLE pg_monitor",
            "CREATE ROLE pgss_etl LOGIN PASSWORD 'Etl-Pw-1'",
            "GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO pgss_etl",
        ):
            cluster.execute(statement)
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("local_role", ["superuser", "granted", "not granted"])
def test_pg_stat_statements_tracking_nested_statements_never_records_the_password(
    pair, tracking_everything, server_name, monkeypatch, local_role
):
    cluster = tracking_everything
    login, local_password = (cluster.superuser, cluster.password)
    if local_role != "superuser":
        login, local_password = "pgss_etl", "Etl-Pw-1"
    grant = "{} SET ON PARAMETER pg_stat_statements.track_utility {} pgss_etl"
    cluster.execute(grant.format(*(("GRANT", "TO") if local_role == "granted" else ("REVOKE", "FROM"))))
    local_conn = postgres_connection(cluster, "postgres", login, local_password)
    monkeypatch.setenv("AIRFLOW_CONN_PGSS_LOCAL", local_conn)
    password = "Tracked-Canary\\'Pw-60d2"
    monkeypatch.setenv("AIRFLOW_CONN_FDW_TRACKED", fdw_connection(pair, password=password))
    with FdwHook(fdw_conn_id="fdw_tracked", postgres_conn_id="pgss_local") as hook:
        hook.create_server(server_name)
        if local_role == "not granted":
            grant_it = r"GRANT SET ON PARAMETER pg_stat_statements\.track_utility TO pgss_etl"
            with pytest.raises(FdwError, match=grant_it):
                hook.create_user_mapping(server_name)
        else:
            assert hook.create_user_mapping(server_name) is True
    watcher = cluster.connect("postgres", "pgss_watcher", "Watcher-Pw-1")
    try:
        recorded = [q for (q,) in watcher.execute("SELECT query FROM pg_stat_statements").fetchall()]
    finally:
        watcher.close()
    assert any(server_name in q and "USER MAPPING" in q for q in recorded)  # tracked (the rehearsal) ...
    assert [q for q in recorded if leaked(q, password)] == []  # ... never with the password
    mapped = cluster.execute(
        "SELECT umoptions FROM pg_user_mappings WHERE srvname = %s AND usename = %s", (server_name, login)
    )
    assert mapped == ([] if local_role == "not granted" else [([f"user={READER}", f"password={password}"],)])


def test_an_event_trigger_logging_ddl_never_logs_the_password(pair, target, server_name, monkeypatch):
    """A DBA's DDL audit (an event trigger that RAISEs LOG) fires inside the statement that sets the
    password: the server log gets no CONTEXT line quoting it."""
    password = "Audited-Canary\\'Pw-2f9b"
    monkeypatch.setenv("AIRFLOW_CONN_FDW_AUDITED", fdw_connection(pair, password=password))
    trigger = f"ddl_audit_{uuid.uuid4().hex[:6]}"
    target.execute(
        sql.SQL(
            "CREATE FUNCTION {}() RETURNS event_trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE LOG 'ddl audit: %', tg_tag; END $$"
        ).format(ident("public", trigger)),
        dbname=TARGET_DB,
    )
    target.execute(
        sql.SQL("CREATE EVENT TRIGGER {} ON ddl_command_end EXECUTE FUNCTION {}()").format(
            ident(trigger), ident("public", trigger)
        ),
        dbname=TARGET_DB,
    )
    log = Path(target.logfile)
    offset = log.stat().st_size
    try:
        with FdwHook(fdw_conn_id="fdw_audited") as hook:
            hook.ensure_extension()
            hook.create_server(server_name)
            assert hook.create_user_mapping(server_name) is True
    finally:
        target.execute(sql.SQL("DROP EVENT TRIGGER {}").format(ident(trigger)), dbname=TARGET_DB)
        target.execute(sql.SQL("DROP FUNCTION {}()").format(ident("public", trigger)), dbname=TARGET_DB)
    server_log = log.read_bytes()[offset:].decode(errors="replace")
    assert "ddl audit: CREATE USER MAPPING" in server_log  # the audit logged the statement ...
    assert leaked(server_log, password) == []  # ... without quoting the password


@pytest.mark.parametrize("rotation", [False, True], ids=["create", "rotate"])
def test_a_lock_taken_between_the_rehearsal_and_the_statement_leaves_no_password_in_the_server_log(
    pair, target, server_name, monkeypatch, rotation
):
    """The rehearsal's locks go with its savepoint: a DBA's change of the same mapping that starts
    right after it makes the statement with the password wait. A role that may not set
    log_error_verbosity (the documented grants) logs that wait (log_lock_waits) with a CONTEXT line
    quoting the statement: it must not wait there, but wait again with the placeholder."""
    from airflow_provider_fdw import secrets

    role, local_password = f"race_etl_{uuid.uuid4().hex[:6]}", "Etl-Race-Pw-1"
    for statement in (
        "CREATE EXTENSION IF NOT EXISTS postgres_fdw",
        "CREATE ROLE {r} LOGIN PASSWORD {p}",
        "GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO {r}",
        "ALTER ROLE {r} SET log_lock_waits = on",
        "ALTER ROLE {r} SET deadlock_timeout = '100ms'",
    ):
        composed = sql.SQL(statement).format(r=ident(role), p=sql.Literal(local_password))
        target.execute(composed, dbname=TARGET_DB)
    monkeypatch.setenv(
        "AIRFLOW_CONN_RACE_LOCAL", postgres_connection(target, TARGET_DB, role, local_password)
    )
    old, new = "Race-Old-Canary\\'Pw-4b1e", "Race-New-Canary\\'Pw-c93d"
    monkeypatch.setenv("AIRFLOW_CONN_FDW_RACE", fdw_connection(pair, password=old))
    blocker = target.connect(TARGET_DB, autocommit=False)  # the DBA's transaction
    try:
        with FdwHook(fdw_conn_id="fdw_race", postgres_conn_id="race_local") as hook:
            hook.ensure_extension()
            hook.create_server(server_name)
            if rotation:
                hook.create_user_mapping(server_name)
        monkeypatch.setenv("AIRFLOW_CONN_FDW_RACE", fdw_connection(pair, password=new))
        change = "ALTER USER MAPPING FOR {} SERVER {} OPTIONS (SET user 'fdw_reader')"
        if not rotation:
            change = "CREATE USER MAPPING FOR {} SERVER {} OPTIONS (user 'someone_else')"
        original, started = secrets.rehearse, []

        def rehearse_then_dba_starts(*args: Any, **kwargs: Any) -> None:
            original(*args, **kwargs)
            if not started:  # the DBA's change starts now, and ends 1.5 s later
                started.append(True)
                blocker.cursor().execute(sql.SQL(change).format(ident(role), ident(server_name)))
                threading.Timer(1.5, blocker.rollback).start()

        monkeypatch.setattr(secrets, "rehearse", rehearse_then_dba_starts)
        log = Path(target.logfile)
        offset = log.stat().st_size
        with FdwHook(fdw_conn_id="fdw_race", postgres_conn_id="race_local") as hook:
            assert hook.create_user_mapping(server_name) is True
        server_log = log.read_bytes()[offset:].decode(errors="replace")
        options = target.execute(
            "SELECT umoptions FROM pg_user_mappings WHERE srvname = %s", (server_name,), dbname=TARGET_DB
        )
    finally:
        time.sleep(1.6)
        blocker.close()
        target.execute(
            sql.SQL("DROP SERVER IF EXISTS {} CASCADE").format(ident(server_name)), dbname=TARGET_DB
        )
        target.execute(sql.SQL("DROP OWNED BY {r}; DROP ROLE {r}").format(r=ident(role)), dbname=TARGET_DB)
    assert "still waiting for ShareLock" in server_log  # the wait was logged ...
    quoting = [line for line in server_log.splitlines() if "Canary" in line]
    assert leaked(server_log, new) == [] and leaked(server_log, old) == [], quoting  # ... without a password
    assert options == [([f"user={READER}", f"password={new}"],)]  # and the mapping was set after the wait


def passfile_fds(pid: int | str = "self") -> list[str]:
    """The passfiles a process holds open (by their unlinked names)."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with_name = ""
        try:
            with_name = os.readlink(fd)
        except OSError:
            continue
        if ".pgpass" in with_name:
            found.append(with_name)
    return found


@pytest.fixture
def relay_role(target):
    roles = []

    def make(password: str) -> dict:
        role = f"relay_{uuid.uuid4().hex[:6]}"
        target.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident(role), sql.Literal(password)))
        roles.append(role)
        return target.conninfo(TARGET_DB, role, password)

    yield make
    for role in roles:
        target.execute(sql.SQL("DROP ROLE {}").format(ident(role)))


@pytest.mark.parametrize("setpriv", [True, False], ids=["setpriv", "preexec"])
@pytest.mark.parametrize("proc_fds", [True, False], ids=["proc fd", "file"])
@pytest.mark.parametrize(
    "password",
    [" Lead:Back\\slash*Star:* ", "*:*:*:*:" + "Long-" * 600, "#Hash\\:\\\\"],
    ids=["colon backslash star spaces", "very long", "hash"],
)
def test_psql_relay_passes_hostile_passwords_through_its_passfile(
    relay_role, password, setpriv, proc_fds, monkeypatch
):
    from airflow_provider_fdw.bulkcopy import relay as relay_module

    if not setpriv:
        monkeypatch.setattr(relay_module, "SETPRIV", None)
    if not proc_fds:
        monkeypatch.setattr(relay_module, "PROC_FDS", "/nonexistent/fd")
    params = relay_role(password)
    psql = shutil.which("psql")
    assert psql is not None
    before = passfile_fds()
    rows = PsqlRelay(psql, params, params).copy(
        "COPY (SELECT g FROM generate_series(1, 7) g) TO STDOUT",
        ["CREATE TEMPORARY TABLE relayed (g integer)", "COPY relayed FROM STDIN"],
    )
    assert rows == 7
    assert passfile_fds() == before  # no descriptor left open in the worker


@pytest.mark.parametrize("setpriv", [True, False], ids=["setpriv", "preexec"])
def test_parallel_psql_children_each_hold_only_their_own_passfile(relay_role, setpriv, monkeypatch):
    from airflow_provider_fdw.bulkcopy import relay as relay_module

    if not setpriv:
        monkeypatch.setattr(relay_module, "SETPRIV", None)
    psql = shutil.which("psql")
    assert psql is not None
    tag = uuid.uuid4().hex[:8]
    ranges = 6
    params = [relay_role(f"Parallel-{i}-Pw-{tag}") for i in range(ranges)]
    results: dict[int, Any] = {}

    def copy(i: int) -> None:
        try:
            slow = f"SELECT g FROM generate_series(1, {i + 1}) g, pg_sleep(1.5) WHERE '{tag}' <> ''"
            results[i] = PsqlRelay(psql, params[i], params[i]).copy(
                f"COPY ({slow}) TO STDOUT",
                ["CREATE TEMPORARY TABLE relayed (g integer)", "COPY relayed FROM STDIN"],
            )
        except BaseException as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=copy, args=(i,)) for i in range(ranges)]
    for t in threads:
        t.start()
    held: dict[int, list[str]] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(held) < 2 * ranges and any(t.is_alive() for t in threads):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in held:
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"psql" in cmdline and (tag.encode() in cmdline or b"relayed" in cmdline):
                try:
                    exe = os.readlink(entry / "exe")
                except OSError:
                    continue
                if exe.endswith("psql"):  # past setpriv's exec
                    held[int(entry.name)] = passfile_fds(entry.name)
        time.sleep(0.02)
    for t in threads:
        t.join(30)
    assert results == {i: i + 1 for i in range(ranges)}
    assert len(held) == 2 * ranges
    assert all(len(files) == 1 for files in held.values()), held
    assert passfile_fds() == []


@pytest.mark.parametrize("setpriv", [True, False], ids=["setpriv", "preexec"])
def test_a_psql_that_cannot_start_leaves_no_passfile_descriptor_open(relay_role, setpriv, monkeypatch):
    from airflow_provider_fdw.bulkcopy import relay as relay_module

    if not setpriv:
        monkeypatch.setattr(relay_module, "SETPRIV", None)
    params = relay_role("Missing-Psql-Pw-1")
    before = passfile_fds()
    with pytest.raises((FdwError, OSError)):
        PsqlRelay("/nonexistent/bin/psql", params, params).copy(
            "COPY (SELECT 1) TO STDOUT",
            ["CREATE TEMPORARY TABLE relayed (g integer)", "COPY relayed FROM STDIN"],
        )
    assert passfile_fds() == before


def test_an_assertion_failing_in_a_ddl_trigger_leaves_no_password_in_the_server_log(
    pair, target, server_name, monkeypatch
):
    """A DBA's password policy (an event trigger that ASSERTs the length of a mapping's password)
    passes the rehearsal (the placeholder is long) and fails the statement with the password: an
    ASSERT's assert_failure is not caught by WHEN OTHERS, and its CONTEXT quotes the statement."""
    password = "Short\\'Canary-7d"
    monkeypatch.setenv("AIRFLOW_CONN_FDW_POLICY", fdw_connection(pair, password=password))
    trigger = f"pw_policy_{uuid.uuid4().hex[:6]}"
    target.execute(
        sql.SQL(
            "CREATE FUNCTION {}() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER AS $$ "
            "BEGIN ASSERT NOT EXISTS (SELECT FROM pg_catalog.pg_event_trigger_ddl_commands() c "
            "  JOIN pg_catalog.pg_user_mapping m ON m.oid = c.objid, pg_catalog.unnest(m.umoptions) o "
            "  WHERE o LIKE 'password=%' AND pg_catalog.length(o) < 9 + 40), "
            "'mapping passwords have 40 characters at least'; END $$"
        ).format(ident("public", trigger)),
        dbname=TARGET_DB,
    )
    target.execute(
        sql.SQL(
            "CREATE EVENT TRIGGER {} ON ddl_command_end WHEN TAG IN ('CREATE USER MAPPING', "
            "'ALTER USER MAPPING') EXECUTE FUNCTION {}()"
        ).format(ident(trigger), ident("public", trigger)),
        dbname=TARGET_DB,
    )
    log = Path(target.logfile)
    offset = log.stat().st_size
    try:
        with FdwHook(fdw_conn_id="fdw_policy") as hook:
            hook.ensure_extension()
            hook.create_server(server_name)
            with pytest.raises(FdwError, match="40 characters at least") as raised:
                hook.create_user_mapping(server_name)
    finally:
        target.execute(sql.SQL("DROP EVENT TRIGGER {}").format(ident(trigger)), dbname=TARGET_DB)
        target.execute(sql.SQL("DROP FUNCTION {}()").format(ident("public", trigger)), dbname=TARGET_DB)
    server_log = log.read_bytes()[offset:].decode(errors="replace")
    assert "40 characters at least" in server_log  # the failure was logged ...
    quoting = [line for line in server_log.splitlines() if "Canary" in line]
    assert leaked(server_log, password) == [], quoting  # ... without the password
    assert leaked(str(raised.value), password) == []


CLOSED_STD_FD_WORKER = """
import json, shutil, sys, traceback
from airflow_provider_fdw.bulkcopy import PsqlRelay
params, report = json.loads(sys.argv[1]), sys.argv[2]
try:
    rows = PsqlRelay(shutil.which("psql"), params, params).copy(
        "COPY (SELECT g FROM generate_series(1, 3) g) TO STDOUT",
        ["CREATE TEMPORARY TABLE relayed (g integer)", "COPY relayed FROM STDIN"],
    )
    outcome = f"rows={rows}"
except BaseException:
    outcome = traceback.format_exc()
with open(report, "w") as f:
    f.write(outcome)
"""


@pytest.mark.parametrize("closed", [0, 1, 2], ids=["stdin", "stdout", "stderr"])
def test_a_worker_without_a_standard_descriptor_still_hands_psql_its_passfile(relay_role, closed, tmp_path):
    """A worker started with a standard descriptor closed (a daemon) gets a passfile there: the
    child's own stdin/stdout/stderr replace it before psql reads PGPASSFILE=/proc/self/fd/N."""
    from conftest import REPO

    params = relay_role("Closed-Std-Fd-Pw-1")
    report = tmp_path / "report"
    subprocess.run(
        [sys.executable, "-c", CLOSED_STD_FD_WORKER, json.dumps(params), str(report)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=lambda: os.close(closed),
        timeout=60,
        check=False,
    )
    assert report.read_text() == "rows=3"


@pytest.mark.parametrize("interruption", ["statement_timeout", "on_kill cancel"])
def test_a_cancel_while_the_statement_with_the_password_runs_logs_no_password_verbosely(
    pair, target, server_name, monkeypatch, local_role, interruption
):
    """A DDL trigger that is slow only in the statement with the password (the rehearsal is quick):
    the cancel lands there, with log_error_verbosity = verbose for the role."""
    local_conn_id, role = local_role
    password = "Verbose-Cancel-Canary\\'Pw-1e0f"
    monkeypatch.setenv("AIRFLOW_CONN_FDW_SLOWDDL", fdw_connection(pair, password=password))
    trigger = f"slow_ddl_{uuid.uuid4().hex[:6]}"
    target.execute(
        sql.SQL(
            "CREATE FUNCTION {}() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF pg_catalog.current_query() LIKE '%fdw_run_with_secret%' THEN PERFORM pg_catalog.pg_sleep(5); "
            "END IF; END $$"
        ).format(ident("public", trigger)),
        dbname=TARGET_DB,
    )
    target.execute(
        sql.SQL(
            "CREATE EVENT TRIGGER {} ON ddl_command_end WHEN TAG IN ('CREATE USER MAPPING') "
            "EXECUTE FUNCTION {}()"
        ).format(ident(trigger), ident("public", trigger)),
        dbname=TARGET_DB,
    )
    target.execute(sql.SQL("ALTER ROLE {} SET log_error_verbosity = verbose").format(ident(role)))
    log = Path(target.logfile)
    offset = log.stat().st_size
    try:
        with FdwHook(fdw_conn_id="fdw_slowddl", postgres_conn_id=local_conn_id) as hook:
            hook.ensure_extension()
            hook.create_server(server_name)
            pid = hook.session.fetchvalue("backend", sql.SQL("SELECT pg_backend_pid()"))
            if interruption == "statement_timeout":
                hook.session.execute("settings", sql.SQL("SET statement_timeout = '1500ms'"))

            def interrupt() -> None:
                wait_until(
                    lambda: (
                        target.execute(
                            "SELECT wait_event = 'PgSleep' FROM pg_stat_activity WHERE pid = %s", (pid,)
                        )
                        == [(True,)]
                    ),
                    30,
                )
                if interruption == "on_kill cancel":
                    hook.cancel()

            interrupter = threading.Thread(target=interrupt)
            interrupter.start()
            with pytest.raises(FdwError, match="canceling statement") as raised:
                hook.create_user_mapping(server_name)
            interrupter.join(30)
    finally:
        target.execute(sql.SQL("ALTER ROLE {} RESET log_error_verbosity").format(ident(role)))
        target.execute(sql.SQL("DROP EVENT TRIGGER {}").format(ident(trigger)), dbname=TARGET_DB)
        target.execute(sql.SQL("DROP FUNCTION {}()").format(ident("public", trigger)), dbname=TARGET_DB)
    server_log = log.read_bytes()[offset:].decode(errors="replace")
    assert "canceling statement" in server_log
    quoting = [line for line in server_log.splitlines() if "Canary" in line]
    assert leaked(server_log, password) == [], quoting
    assert leaked(str(raised.value), password) == []


def test_the_runners_settings_do_not_outlive_it_in_the_callers_transaction(pair, server_name, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_FDW_SETTINGS", fdw_connection(pair, password="Settings-Pw-1"))
    names = ("log_error_verbosity", "lock_timeout", "search_path")
    with FdwHook(fdw_conn_id="fdw_settings") as hook:
        hook.ensure_extension()
        hook.create_server(server_name)
        s = hook.session
        show = sql.SQL("SELECT pg_catalog.current_setting(%s)")
        with s.transaction():
            before = [s.fetchvalue("show", show, (name,)) for name in names]
            assert hook.create_user_mapping(server_name) is True
            assert [s.fetchvalue("show", show, (name,)) for name in names] == before
