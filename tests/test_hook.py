"""FdwHook against the real source/target pair: every method, twice, and after remote changes."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from conftest import READER, READER_PASSWORD, SOURCE_DB, TARGET_DB, fdw_connection, ident

from airflow_provider_fdw.catalog import parse_options
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.hooks.postgres_fdw import PostgresFdwHook
from airflow_provider_fdw.timeouts import FdwTimeoutError, network_defaults
from fdw_testing.pgcluster import free_port


@pytest.fixture
def hook(target):
    with FdwHook(fdw_conn_id="fdw_source") as h:
        yield h


def ready_server(hook: FdwHook, server_name: str) -> None:
    hook.ensure_extension()
    hook.create_server(server_name)
    hook.create_user_mapping(server_name)


def first(hook: FdwHook, statement):
    """First row of a composed statement, run (and committed) in the hook's own local session."""
    with hook.session.transaction() as s:
        return s.fetchone("test query", statement)


def server_options(target, server_name):
    rows = target.execute(
        "SELECT srvoptions FROM pg_foreign_server WHERE srvname = %s", (server_name,), dbname=TARGET_DB
    )
    return parse_options(rows[0][0]) if rows else None


def mapping_options(target, server_name, role="postgres"):
    rows = target.execute(
        "SELECT umoptions FROM pg_user_mappings WHERE srvname = %s AND usename = %s",
        (server_name, role),
        dbname=TARGET_DB,
    )
    return parse_options(rows[0][0]) if rows else None


def test_ensure_extension_creates_once_then_reports_no_change(hook):
    hook.ensure_extension()  # may or may not exist yet, depending on test order
    assert hook.ensure_extension() is False
    assert hook.get_first("SELECT extname FROM pg_extension WHERE extname = 'postgres_fdw'")


def test_ensure_extension_explains_missing_privilege(target, monkeypatch):
    db = "analytics_noext"
    target.execute(sql.SQL("CREATE DATABASE {}").format(ident(db)))
    target.execute(sql.SQL("CREATE ROLE etl_noext LOGIN PASSWORD 'etl-pw-12345'"))
    target.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO etl_noext").format(ident(db)))
    monkeypatch.setenv(
        "AIRFLOW_CONN_LOCAL_NOEXT", f"postgres://etl_noext:etl-pw-12345@{target.host}:{target.port}/{db}"
    )
    with (
        FdwHook(fdw_conn_id="fdw_source", postgres_conn_id="local_noext") as h,
        pytest.raises(FdwError, match="Ask a superuser to run CREATE EXTENSION postgres_fdw") as info,
    ):
        h.ensure_extension()
    assert info.value.sqlstate == "42501"


def test_create_server_then_converge_options(hook, pair, target, server_name, monkeypatch):
    hook.ensure_extension()
    assert hook.create_server(server_name) is True
    assert server_options(target, server_name) == {
        "host": hook.remote.server_options["host"],
        "port": hook.remote.server_options["port"],
        "dbname": SOURCE_DB,
        "fetch_size": "10000",
        **network_defaults(),  # every server is bounded (timeouts.py) unless the connection says otherwise
    }
    assert hook.create_server(server_name) is False  # second run: nothing to do

    # The connection changes: fetch_size dropped, sslmode and a free option added, one option overridden.
    monkeypatch.setenv(
        "AIRFLOW_CONN_FDW_SOURCE",
        fdw_connection(pair, extra={"sslmode": "disable", "server_options": {"connect_timeout": 7}}),
    )
    with FdwHook(fdw_conn_id="fdw_source") as h2:
        assert h2.create_server(server_name, options={"use_remote_estimate": True}) is True
        opts = server_options(target, server_name)
        assert "fetch_size" not in opts
        assert opts["sslmode"] == "disable"
        assert opts["connect_timeout"] == "7"
        assert opts["use_remote_estimate"] == "true"
        assert h2.create_server(server_name, options={"use_remote_estimate": True}) is False


def test_user_mapping_create_update_and_password_rotation(
    hook, pair, target, source, server_name, monkeypatch
):
    ready_server(hook, server_name)
    assert mapping_options(target, server_name) == {"user": READER, "password": READER_PASSWORD}
    assert hook.create_user_mapping(server_name) is False
    hook.check_remote(server_name)

    # Rotate: the DBA changes the remote password, and the Airflow connection gets the new one.
    new_password = "Rotated-Secret-42x"
    source.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident(READER), sql.Literal(new_password)))
    try:
        with pytest.raises(FdwError, match="password authentication failed"):
            hook.check_remote(server_name)
        monkeypatch.setenv("AIRFLOW_CONN_FDW_SOURCE", fdw_connection(pair, password=new_password))
        with FdwHook(fdw_conn_id="fdw_source") as rotated:
            assert rotated.create_user_mapping(server_name) is True
            assert rotated.check_remote(server_name)["remote_version_num"] >= 130000
        assert mapping_options(target, server_name)["password"] == new_password
    finally:
        source.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident(READER), sql.Literal(READER_PASSWORD))
        )


def test_user_mapping_keeps_options_a_dba_added(hook, target, server_name):
    ready_server(hook, server_name)
    target.execute(
        sql.SQL("ALTER USER MAPPING FOR postgres SERVER {} OPTIONS (ADD password_required 'false')").format(
            ident(server_name)
        ),
        dbname=TARGET_DB,
    )
    assert hook.create_user_mapping(server_name) is False
    assert mapping_options(target, server_name)["password_required"] == "false"


def test_user_mapping_for_public_and_for_a_named_role(hook, target, server_name):
    ready_server(hook, server_name)
    target.execute(sql.SQL('CREATE ROLE "Report Reader"'))
    try:
        assert hook.create_user_mapping(server_name, "public") is True
        assert hook.create_user_mapping(server_name, "PUBLIC") is False
        assert hook.create_user_mapping(server_name, "Report Reader") is True
        assert hook.create_user_mapping(server_name, "Report Reader") is False
        assert mapping_options(target, server_name, "public")["user"] == READER
        assert mapping_options(target, server_name, "Report Reader")["user"] == READER
    finally:
        hook.drop_server(server_name, cascade=True)
        target.execute(sql.SQL('DROP ROLE "Report Reader"'))


def test_import_all_limit_to_and_except(hook, server_name, local_schema):
    ready_server(hook, server_name)
    assert hook.import_foreign_schema(server_name, "app", local_schema) == ["events", "orders", "users"]
    assert first(hook, sql.SQL("SELECT count(*) FROM {}").format(ident(local_schema, "users"))) == (1000,)

    only = local_schema + "_only"
    assert hook.import_foreign_schema(server_name, "app", only, limit_to=["users", "orders"]) == [
        "orders",
        "users",
    ]
    assert hook.import_foreign_schema(server_name, "app", only, limit_to=["users", "orders"]) == [
        "orders",
        "users",
    ]

    rest = local_schema + "_rest"
    assert hook.import_foreign_schema(server_name, "app", rest, exclude=["events"]) == ["orders", "users"]
    assert [t["table"] for t in hook.list_foreign_tables(rest)] == ["orders", "users"]
    assert hook.list_foreign_tables(rest)[0] == {
        "table": "orders",
        "server": server_name,
        "remote_schema": "app",
        "remote_table": "orders",
    }


def test_reimport_picks_up_new_column_new_table_and_dropped_table(hook, source, server_name, local_schema):
    ready_server(hook, server_name)
    source.execute("CREATE TABLE app.scratch (id int)", dbname=SOURCE_DB)
    source.execute(sql.SQL("GRANT SELECT ON app.scratch TO {}").format(ident(READER)), dbname=SOURCE_DB)
    assert "scratch" in hook.import_foreign_schema(server_name, "app", local_schema)
    try:
        source.execute("ALTER TABLE app.users ADD COLUMN nickname text DEFAULT 'n'", dbname=SOURCE_DB)
        source.execute("DROP TABLE app.scratch", dbname=SOURCE_DB)
        source.execute("CREATE TABLE app.fresh (id int)", dbname=SOURCE_DB)
        assert hook.import_foreign_schema(server_name, "app", local_schema) == [
            "events",
            "fresh",
            "orders",
            "users",
        ]
        assert first(
            hook, sql.SQL("SELECT nickname FROM {} LIMIT 1").format(ident(local_schema, "users"))
        ) == ("n",)
    finally:
        source.execute("ALTER TABLE app.users DROP COLUMN IF EXISTS nickname", dbname=SOURCE_DB)
        source.execute("DROP TABLE IF EXISTS app.fresh, app.scratch", dbname=SOURCE_DB)


def test_reimport_keeps_dependent_views_working_and_explains_what_blocks_it(
    hook, source, target, server_name, local_schema
):
    ready_server(hook, server_name)
    source.execute("CREATE TABLE app.doomed (id int, note text)", dbname=SOURCE_DB)
    source.execute(sql.SQL("GRANT SELECT ON app.doomed TO {}").format(ident(READER)), dbname=SOURCE_DB)
    try:
        hook.import_foreign_schema(server_name, "app", local_schema)
        view = sql.SQL("CREATE VIEW {} AS SELECT id FROM {}")
        target.execute(
            view.format(ident(local_schema, "user_ids"), ident(local_schema, "users")), dbname=TARGET_DB
        )
        target.execute(
            view.format(ident(local_schema, "doomed_ids"), ident(local_schema, "doomed")), dbname=TARGET_DB
        )
        users_oid = target.execute("SELECT %s::regclass::oid", (f"{local_schema}.users",), dbname=TARGET_DB)

        # An added column and a retyped unused column are applied in place: the dependent view survives.
        source.execute("ALTER TABLE app.doomed ALTER COLUMN note TYPE varchar(20)", dbname=SOURCE_DB)
        source.execute("ALTER TABLE app.users ADD COLUMN score int", dbname=SOURCE_DB)
        hook.import_foreign_schema(server_name, "app", local_schema)
        assert (
            target.execute("SELECT %s::regclass::oid", (f"{local_schema}.users",), dbname=TARGET_DB)
            == users_oid
        )
        columns = target.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE "
            "table_schema = %s AND table_name IN ('users', 'doomed') ORDER BY table_name, "
            "ordinal_position",
            (local_schema,),
            dbname=TARGET_DB,
        )
        assert ("score", "integer") in columns and ("note", "character varying") in columns
        assert target.execute(
            sql.SQL("SELECT count(*) FROM {}").format(ident(local_schema, "user_ids")), dbname=TARGET_DB
        ) == [(1000,)]

        # A vanished table that a local view still reads: a clear error, and nothing changed.
        source.execute("DROP TABLE app.doomed", dbname=SOURCE_DB)
        with pytest.raises(FdwError, match=r"no longer exists, but local objects depend on it.*doomed_ids"):
            hook.import_foreign_schema(server_name, "app", local_schema)
        assert "doomed" in [t["table"] for t in hook.list_foreign_tables(local_schema)]
        target.execute(sql.SQL("DROP VIEW {}").format(ident(local_schema, "doomed_ids")), dbname=TARGET_DB)
        assert hook.import_foreign_schema(server_name, "app", local_schema) == ["events", "orders", "users"]
    finally:
        source.execute("ALTER TABLE app.users DROP COLUMN IF EXISTS score", dbname=SOURCE_DB)
        source.execute("DROP TABLE IF EXISTS app.doomed", dbname=SOURCE_DB)


def hand_made_foreign_table(target, server_name, local_schema, name, remote_table):
    """A foreign table a DBA wrote by hand over ``app.<remote_table>``, under its own local name."""
    target.execute(
        sql.SQL(
            "CREATE FOREIGN TABLE {} (id bigint) SERVER {} OPTIONS (schema_name 'app', table_name {})"
        ).format(ident(local_schema, name), ident(server_name), sql.Literal(remote_table)),
        dbname=TARGET_DB,
    )
    return target.execute("SELECT %s::regclass::oid", (f"{local_schema}.{name}",), dbname=TARGET_DB)


def test_reimport_leaves_a_hand_made_foreign_table_over_the_same_remote_schema_alone(
    hook, source, target, server_name, local_schema
):
    ready_server(hook, server_name)
    source.execute("CREATE TABLE app.renamed_soon (id int)", dbname=SOURCE_DB)
    source.execute(sql.SQL("GRANT SELECT ON app.renamed_soon TO {}").format(ident(READER)), dbname=SOURCE_DB)
    try:
        hook.import_foreign_schema(server_name, "app", local_schema)
        emails = hand_made_foreign_table(target, server_name, local_schema, "user_emails", "users")
        legacy = hand_made_foreign_table(target, server_name, local_schema, "legacy", "renamed_soon")
        # The remote table behind "legacy" is renamed: the import's own table of that name goes with it.
        source.execute("ALTER TABLE app.renamed_soon RENAME TO renamed_now", dbname=SOURCE_DB)
        assert hook.import_foreign_schema(server_name, "app", local_schema) == [
            "events",
            "orders",
            "renamed_now",
            "users",
        ]
        for name, oid in (("user_emails", emails), ("legacy", legacy)):
            assert (
                target.execute("SELECT %s::regclass::oid", (f"{local_schema}.{name}",), dbname=TARGET_DB)
                == oid
            )
        assert "renamed_soon" not in [t["table"] for t in hook.list_foreign_tables(local_schema)]
    finally:
        source.execute("DROP TABLE IF EXISTS app.renamed_soon, app.renamed_now", dbname=SOURCE_DB)


def test_reimport_with_except_ignores_a_view_on_a_hand_made_foreign_table(
    hook, target, server_name, local_schema
):
    ready_server(hook, server_name)
    hook.import_foreign_schema(server_name, "app", local_schema, exclude=["events"])
    hand_made_foreign_table(target, server_name, local_schema, "user_emails", "users")
    target.execute(
        sql.SQL("CREATE VIEW {} AS SELECT id FROM {}").format(
            ident(local_schema, "v_emails"), ident(local_schema, "user_emails")
        ),
        dbname=TARGET_DB,
    )
    # Before: taken for an imported table gone on the remote, and refused because the view reads it.
    assert hook.import_foreign_schema(server_name, "app", local_schema, exclude=["events"]) == [
        "orders",
        "users",
    ]
    assert "user_emails" in [t["table"] for t in hook.list_foreign_tables(local_schema)]


@pytest.fixture
def remote_one_table(source):
    """A fresh remote schema with tables ``t`` and ``u`` (``id int``) the reader can read; dropped after."""
    schema = f"reimp_{uuid.uuid4().hex[:8]}"
    for statement in (
        "CREATE SCHEMA {s}",
        "GRANT USAGE ON SCHEMA {s} TO {r}",
        "CREATE TABLE {s}.t (id int)",
        "INSERT INTO {s}.t VALUES (1)",
        "CREATE TABLE {s}.u (id int)",
        "GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r}",
    ):
        source.execute(sql.SQL(statement).format(s=ident(schema), r=ident(READER)), dbname=SOURCE_DB)
    yield schema
    source.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident(schema)), dbname=SOURCE_DB)


def long_reader_of(target, table):
    """An open transaction that has read ``table`` (so holds its lock until it ends)."""
    conn = target.connect(TARGET_DB, autocommit=False)
    conn.cursor().execute(sql.SQL("SELECT * FROM {} WHERE false").format(table))
    return conn


def columns_of(target, local_schema, table):
    return [
        name
        for (name,) in target.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND "
            "table_name = %s ORDER BY ordinal_position",
            (local_schema, table),
            dbname=TARGET_DB,
        )
    ]


def test_reimport_takes_a_busy_tables_lock_in_short_attempts_so_new_readers_never_queue_behind_it(
    hook, source, target, server_name, local_schema, remote_one_table
):
    ready_server(hook, server_name)
    remote = remote_one_table
    hook.import_foreign_schema(server_name, remote, local_schema)
    long_reader = long_reader_of(target, ident(local_schema, "t"))
    source.execute(
        sql.SQL("ALTER TABLE {} ADD COLUMN note text").format(ident(remote, "t")), dbname=SOURCE_DB
    )
    outcome: dict = {}

    def reimport():
        try:
            with FdwHook(fdw_conn_id="fdw_source") as h:
                outcome["tables"] = h.import_foreign_schema(server_name, remote, local_schema)
        except Exception as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=reimport)
    worker.start()
    try:
        time.sleep(3)  # the re-import is waiting for t's lock by now
        reader = target.connect(TARGET_DB)
        try:
            cur = reader.cursor()
            cur.execute("SET lock_timeout = '5s'")  # one attempt (1.5 s) is the most it may wait
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(local_schema, "t")))
            assert cur.fetchone() == (1,)
        finally:
            reader.close()
        assert worker.is_alive(), "the re-import gave up while the long reader still held t"
    finally:
        long_reader.rollback()
        long_reader.close()
        worker.join(60)
    assert outcome == {"tables": ["t", "u"]}
    assert columns_of(target, local_schema, "t") == ["id", "note"]


@pytest.mark.parametrize(
    "change", ["ALTER TABLE {} ADD COLUMN note text", "DROP TABLE {}"], ids=["altered", "dropped"]
)
def test_reimport_that_never_gets_a_tables_lock_fails_naming_it_and_its_holder_and_changes_nothing(
    hook, source, target, server_name, local_schema, remote_one_table, change
):
    ready_server(hook, server_name)
    remote = remote_one_table
    hook.import_foreign_schema(server_name, remote, local_schema)
    long_reader = long_reader_of(target, ident(local_schema, "u"))
    holder = long_reader.info.backend_pid
    source.execute(sql.SQL(change).format(ident(remote, "u")), dbname=SOURCE_DB)
    source.execute(sql.SQL("CREATE TABLE {} (id int)").format(ident(remote, "added")), dbname=SOURCE_DB)
    source.execute(
        sql.SQL("GRANT SELECT ON {} TO {}").format(ident(remote, "added"), ident(READER)), dbname=SOURCE_DB
    )
    try:
        with pytest.raises(
            FdwTimeoutError, match=rf"in 2 attempts.*held by pid {holder} .* on {local_schema}\.u"
        ):
            hook.import_foreign_schema(server_name, remote, local_schema, lock_timeout=0.2, lock_retries=2)
    finally:
        long_reader.rollback()
        long_reader.close()
    assert [t["table"] for t in hook.list_foreign_tables(local_schema)] == ["t", "u"]  # no "added"
    assert columns_of(target, local_schema, "u") == ["id"]


def test_import_refuses_to_clobber_a_local_table_of_the_same_name(hook, target, server_name, local_schema):
    ready_server(hook, server_name)
    target.execute(sql.SQL("CREATE SCHEMA {}").format(ident(local_schema)), dbname=TARGET_DB)
    target.execute(sql.SQL("CREATE TABLE {} (x int)").format(ident(local_schema, "orders")), dbname=TARGET_DB)
    with pytest.raises(FdwError, match=r"orders already exists as a table that was not imported"):
        hook.import_foreign_schema(server_name, "app", local_schema)
    assert hook.list_foreign_tables(local_schema) == []


def test_import_without_replace_only_adds_missing_tables(hook, server_name, local_schema):
    ready_server(hook, server_name)
    hook.import_foreign_schema(server_name, "app", local_schema, limit_to=["users"])
    oid_before = hook.get_first("SELECT %s::regclass::oid", parameters=(f"{local_schema}.users",))
    assert hook.import_foreign_schema(server_name, "app", local_schema, replace=False) == [
        "events",
        "orders",
        "users",
    ]
    assert hook.get_first("SELECT %s::regclass::oid", parameters=(f"{local_schema}.users",)) == oid_before
    assert hook.import_foreign_schema(server_name, "app", local_schema, replace=False) == [
        "events",
        "orders",
        "users",
    ]


def test_replace_while_another_session_reads_never_fails_a_query(hook, target, server_name, local_schema):
    ready_server(hook, server_name)
    hook.import_foreign_schema(server_name, "app", local_schema, limit_to=["users"])
    errors: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader():
        nonlocal reads
        conn = target.connect(TARGET_DB)
        try:
            while not stop.is_set():
                try:
                    cur = conn.cursor()
                    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(local_schema, "users")))
                    if cur.fetchone()[0] != 1000:
                        errors.append("wrong count")
                    reads += 1
                except Exception as exc:
                    errors.append(str(exc))
        finally:
            conn.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(15):
            hook.import_foreign_schema(server_name, "app", local_schema, limit_to=["users"])
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(30)
    assert reads > 15
    assert errors == []


def test_check_remote_success_wrong_password_and_wrong_port(pair, server_name, monkeypatch):
    with FdwHook(fdw_conn_id="fdw_source") as good:
        ready_server(good, server_name)
        result = good.check_remote(server_name)
        assert result["server"] == server_name and result["remote_version"].startswith(
            ("15", "16", "17", "13", "14")
        )

    monkeypatch.setenv("AIRFLOW_CONN_FDW_SOURCE", fdw_connection(pair, password="Wrong-Password-99"))
    with FdwHook(fdw_conn_id="fdw_source") as bad:
        bad.create_user_mapping(server_name)
        with pytest.raises(
            FdwError, match=f"Server '{server_name}' is not reachable.*password authentication failed"
        ):
            bad.check_remote(server_name)

    unused_port = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_FDW_SOURCE", fdw_connection(pair, port=unused_port))
    with FdwHook(fdw_conn_id="fdw_source") as wrong_port:
        wrong_port.create_server(server_name)
        wrong_port.create_user_mapping(server_name)
        with pytest.raises(FdwError, match=r"not reachable.*(refused|could not connect)"):
            wrong_port.check_remote(server_name)


def test_get_connections_and_disconnect(hook, target, server_name, local_schema):
    ready_server(hook, server_name)
    # Reads from another local session do not show up in this hook's session ...
    hook.import_foreign_schema(server_name, "app", local_schema, limit_to=["users"])
    assert hook.disconnect(server_name) is True  # (the import itself used the remote)
    target.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(local_schema, "users")), dbname=TARGET_DB)
    assert hook.get_connections() == []
    # ... its own remote use does, until it disconnects.
    hook.check_remote(server_name)
    assert hook.get_connections() == [{"server_name": server_name, "valid": True}]
    assert hook.disconnect(server_name) is True
    assert hook.get_connections() == []
    assert hook.disconnect(server_name) is False
    hook.check_remote(server_name)
    assert hook.disconnect() is True
    assert hook.get_connections() == []


def test_drop_server_needs_cascade_when_tables_depend_on_it(hook, server_name, local_schema):
    ready_server(hook, server_name)
    hook.import_foreign_schema(server_name, "app", local_schema, limit_to=["users"])
    with pytest.raises(FdwError, match="still has foreign tables; drop them first or pass cascade=True"):
        hook.drop_server(server_name)
    assert hook.drop_server(server_name, cascade=True) is True
    assert hook.list_foreign_tables(local_schema) == []
    assert hook.drop_server(server_name, cascade=True) is False


def test_tricky_identifiers_work_everywhere(hook, source):
    server = 'Prod "EU" sërver'
    local = "Proxy Schéma"
    remote_schema = 'Odd "Schema"'
    source.execute(sql.SQL("CREATE SCHEMA {}").format(ident(remote_schema)), dbname=SOURCE_DB)
    source.execute(
        sql.SQL('CREATE TABLE {} ("Id" int, "naïve col" text)').format(ident(remote_schema, "Mixed Case")),
        dbname=SOURCE_DB,
    )
    source.execute(
        sql.SQL("INSERT INTO {} VALUES (1, 'x')").format(ident(remote_schema, "Mixed Case")), dbname=SOURCE_DB
    )
    source.execute(
        sql.SQL("GRANT USAGE ON SCHEMA {0} TO {1}; GRANT SELECT ON ALL TABLES IN SCHEMA {0} TO {1}").format(
            ident(remote_schema), ident(READER)
        ),
        dbname=SOURCE_DB,
    )
    ready_server(hook, server)
    assert hook.create_server(server) is False
    assert hook.import_foreign_schema(server, remote_schema, local, limit_to=["Mixed Case"]) == ["Mixed Case"]
    assert first(hook, sql.SQL('SELECT "naïve col" FROM {}').format(ident(local, "Mixed Case"))) == ("x",)
    assert hook.check_remote(server)["server"] == server
    assert hook.disconnect(server) is True
    assert hook.drop_server(server, cascade=True) is True


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda h: h.create_server(""), "server_name must be a non-empty string"),
        (lambda h: h.create_server("s", options={"bogus": 1}), "'bogus' is not a postgres_fdw server option"),
        (lambda h: h.create_server("s", options={"password": "x"}), "belongs in the user mapping"),
        (lambda h: h.create_user_mapping("s", local_user=""), "local_user must be a non-empty string"),
        (
            lambda h: h.import_foreign_schema("s", "app", "p", limit_to=["a"], exclude=["b"]),
            "either limit_to or exclude",
        ),
        (lambda h: h.import_foreign_schema("s", "app", "p", limit_to="users"), "must be a list of names"),
        (lambda h: h.import_foreign_schema("s", "", "p"), "remote_schema must be a non-empty string"),
        (
            lambda h: h.import_foreign_schema("s", "app", "p", import_options={"import_everything": True}),
            "Unknown import option",
        ),
        (
            lambda h: h.import_foreign_schema("s", "app", "p", lock_retries=0),
            "lock_retries must be a positive integer",
        ),
        (lambda h: h.import_foreign_schema("s", "app", "p", lock_timeout="soon"), "is not a duration"),
        (lambda h: h.drop_server(None), "server_name must be a non-empty string"),
        (lambda h: h.list_foreign_tables("x" * 70), "longer than 63 bytes"),
    ],
)
def test_bad_arguments_fail_before_any_sql(call, message, monkeypatch):
    # The local connection points nowhere: touching the database would fail with a different error.
    monkeypatch.setenv("AIRFLOW_CONN_NOWHERE", "postgres://u:p@127.0.0.1:1/db")
    with FdwHook(fdw_conn_id="fdw_source", postgres_conn_id="nowhere") as h:
        with pytest.raises(FdwConfigError, match=message):
            call(h)
        assert h._session is None


def test_password_never_reaches_logs_or_exceptions(pair, server_name, capfd, monkeypatch):
    secret = "Leak-Canary-Pw-0042'x"
    monkeypatch.setenv("AIRFLOW_CONN_FDW_LEAK", fdw_connection(pair, password=secret))
    messages: list[str] = []
    with FdwHook(fdw_conn_id="fdw_leak") as h:
        ready_server(h, server_name)
        try:
            h.check_remote(server_name)  # wrong password for the reader: fails remotely
        except FdwError as exc:
            messages.append(str(exc))
        # A statement that fails while the password is in scope: mapping for a role that does not exist.
        try:
            h.create_user_mapping(server_name, "no such role")
        except FdwError as exc:
            messages.append(str(exc))
        ok, msg = h.remote_hook.test_connection()  # the connection type's Test button
        messages.append(msg)
        assert ok is False
    out, err = capfd.readouterr()
    logged = out + err + "\n".join(messages)
    assert "statement not logged: it sets a password" in logged  # the step is logged, not the statement
    assert secret not in logged and secret.replace("'", "''") not in logged
    assert len(messages) == 3


def test_test_connection_reports_success_and_bad_fields(pair, monkeypatch):
    assert PostgresFdwHook(fdw_conn_id="fdw_source").test_connection()[0] is (
        pair.source.fdw_host == pair.source.host
    )
    monkeypatch.setenv("AIRFLOW_CONN_FDW_BADFIELD", fdw_connection(pair, extra={"fetch_size": -1}))
    ok, message = PostgresFdwHook(fdw_conn_id="fdw_badfield").test_connection()
    assert not ok and "fetch_size must be at least 1" in message


def test_an_import_inside_a_callers_transaction_gives_its_lock_timeout_back(
    hook, server_name, local_schema, remote_one_table
):
    ready_server(hook, server_name)
    s = hook.session
    with s.transaction():
        (before,) = s.fetchrow("show", sql.SQL("SHOW lock_timeout"))
        hook.import_foreign_schema(server_name, remote_one_table, local_schema)
        (after,) = s.fetchrow("show", sql.SQL("SHOW lock_timeout"))
    assert after == before
