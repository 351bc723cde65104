"""mysql_fdw against a real MariaDB server started by the harness (fdw_testing/mariadb.py)."""

from __future__ import annotations

import uuid

import pytest
from conftest import TARGET_DB, ident, local, mysql_server_by_hand

from airflow_provider_fdw.compat import sql
from fdw_testing.mariadb import MariaDB, quote_name, quote_string
from fdw_testing.pgcluster import Pair


def test_mysql_fdw_by_hand_server_mapping_import_and_select(pair: Pair, mariadb: MariaDB) -> None:
    """The SQL a user types today: server with host/port, user mapping, IMPORT FOREIGN SCHEMA, SELECT."""
    table = f"t_{uuid.uuid4().hex[:8]}"
    server, schema = f"my_{uuid.uuid4().hex[:8]}", f"proxy_{uuid.uuid4().hex[:8]}"
    mariadb.execute(
        f"CREATE TABLE {quote_name(table)} (id int PRIMARY KEY, name varchar(20)); "
        f"INSERT INTO {quote_name(table)} VALUES (1, 'one'), (2, NULL), (3, 'drei')",
        database=mariadb.database,
    )
    local(pair, "CREATE EXTENSION IF NOT EXISTS mysql_fdw")
    mysql_server_by_hand(pair, mariadb, server)
    local(pair, "CREATE SCHEMA {x}", x=schema)
    local(
        pair,
        "IMPORT FOREIGN SCHEMA {db} LIMIT TO ({t}) FROM SERVER {s} INTO {x}",
        db=ident(mariadb.database),
        t=ident(table),
        s=server,
        x=schema,
    )
    rows = local(pair, "SELECT id, name FROM {t} ORDER BY id", t=f"{schema}.{table}")
    assert rows == [(1, "one"), (2, None), (3, "drei")]
    (options,) = local(
        pair,
        "SELECT ftoptions FROM pg_foreign_table WHERE ftrelid = {r}::regclass",
        r=sql.Literal(f"{schema}.{table}"),
    )[0]
    assert sorted(options) == sorted([f"dbname={mariadb.database}", f"table_name={table}"])
    # The harness database is the one the tests' local database is: the extension is really mysql_fdw.
    assert pair.target.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'mysql_fdw'", dbname=TARGET_DB
    )


# -- the provider's operators with a mysql_fdw connection -------------------------------------------


def _mysql_connection(monkeypatch, mariadb: MariaDB, conn_id: str, password: str, **extra) -> None:
    import json

    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps(
            {
                "conn_type": "mysql_fdw",
                "host": mariadb.host,
                "port": mariadb.port,
                "schema": mariadb.database,
                "login": mariadb.user,
                "password": password,
                "extra": extra,
            }
        ),
    )


def _set_mysql_password(mariadb: MariaDB, password: str) -> None:
    mariadb.execute(f"ALTER USER {quote_string(mariadb.user)}@'%' IDENTIFIED BY {quote_string(password)}")


def test_mysql_server_mapping_and_check_follow_a_password_rotation_without_logging_it(
    pair: Pair, mariadb: MariaDB, monkeypatch, caplog
) -> None:
    from airflow_provider_fdw.operators.server import CreateForeignServerOperator

    server = f"my_{uuid.uuid4().hex[:8]}"
    _mysql_connection(monkeypatch, mariadb, "mysql_rot", mariadb.password, fetch_size=500)
    op = CreateForeignServerOperator(task_id="s", server_name=server, fdw_conn_id="mysql_rot")
    first = op.execute({})
    assert first["changed"] is True and first["remote_version"].startswith("MySQL: ")
    options = dict(
        o.split("=", 1)
        for o in local(pair, "SELECT srvoptions FROM pg_foreign_server WHERE srvname = %s", (server,))[0][0]
    )
    assert options == {
        "host": mariadb.host,
        "port": str(mariadb.port),
        "fetch_size": "500",
        "character_set": "utf8mb4",
        "init_command": "SET time_zone = '+00:00', lock_wait_timeout = 300",
    }
    assert op.execute({})["changed"] is False  # a re-run converges

    rotated = "Rotated-Maria-77aa"
    _set_mysql_password(mariadb, rotated)
    try:
        # Airflow still has the old password: the check fails and the server is left as it was.
        with pytest.raises(Exception, match="Access denied"):
            op.execute({})
        _mysql_connection(monkeypatch, mariadb, "mysql_rot", rotated, fetch_size=500)
        second = CreateForeignServerOperator(
            task_id="s", server_name=server, fdw_conn_id="mysql_rot"
        ).execute({})
    finally:
        _set_mysql_password(mariadb, mariadb.password)
    assert second["user_mappings"] == [{"local_user": "CURRENT_USER", "changed": True}]
    logged = caplog.text + pair.target.log_tail(2000)
    assert rotated not in logged and mariadb.password not in logged


def test_bad_mysql_option_is_refused_before_any_change(pair: Pair, mariadb: MariaDB, monkeypatch) -> None:
    from airflow_provider_fdw.exceptions import FdwConfigError
    from airflow_provider_fdw.operators.server import CreateForeignServerOperator

    server = f"my_{uuid.uuid4().hex[:8]}"
    _mysql_connection(monkeypatch, mariadb, "mysql_bad", mariadb.password, fetch_size=0)
    with pytest.raises(FdwConfigError, match=r"Connection 'mysql_bad'.*fetch_size must be an integer from 1"):
        CreateForeignServerOperator(task_id="s", server_name=server, fdw_conn_id="mysql_bad").execute({})
    _mysql_connection(monkeypatch, mariadb, "mysql_bad", mariadb.password)
    # A postgres_fdw option passes the DAG-parse check; the mysql_fdw connection refuses it at run time.
    with pytest.raises(FdwConfigError, match="'sslmode' is not a mysql_fdw server option"):
        CreateForeignServerOperator(
            task_id="s", server_name=server, fdw_conn_id="mysql_bad", options={"sslmode": "require"}
        ).execute({})
    assert local(pair, "SELECT 1 FROM pg_foreign_server WHERE srvname = %s", (server,)) == []


def test_import_foreign_schema_from_mysql_reads_utf8_text_and_converges_on_re_run(
    pair: Pair, mariadb: MariaDB, monkeypatch
) -> None:
    from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
    from airflow_provider_fdw.operators.server import CreateForeignServerOperator

    server, schema = f"my_{uuid.uuid4().hex[:8]}", f"proxy_{uuid.uuid4().hex[:8]}"
    table = f"t_{uuid.uuid4().hex[:8]}"
    mariadb.execute(
        f"CREATE TABLE {quote_name(table)} (id int PRIMARY KEY, name varchar(20)); "
        f"INSERT INTO {quote_name(table)} VALUES (1, 'één'), (2, NULL)",
        database=mariadb.database,
    )
    _mysql_connection(monkeypatch, mariadb, "mysql_imp", mariadb.password)
    CreateForeignServerOperator(task_id="s", server_name=server, fdw_conn_id="mysql_imp").execute({})
    imp = ImportForeignSchemaOperator(
        task_id="i",
        server_name=server,
        remote_schema=mariadb.database,
        local_schema=schema,
        limit_to=[table],
        import_options={"import_enum_as_text": True},
    )
    imp.execute({})
    imp.execute({})  # the previous import is recognised (dbname is mysql_fdw's remote schema)
    assert local(pair, "SELECT id, name FROM {t} ORDER BY id", t=f"{schema}.{table}") == [
        (1, "één"),
        (2, None),
    ]


def test_direct_copy_path_is_refused_for_a_mysql_table_before_anything_changes(
    pair: Pair, mariadb: MariaDB, monkeypatch
) -> None:
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.exceptions import FdwConfigError
    from airflow_provider_fdw.hooks.fdw import FdwHook
    from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
    from airflow_provider_fdw.operators.server import CreateForeignServerOperator

    server, schema = f"my_{uuid.uuid4().hex[:8]}", f"proxy_{uuid.uuid4().hex[:8]}"
    table = f"t_{uuid.uuid4().hex[:8]}"
    mariadb.execute(f"CREATE TABLE {quote_name(table)} (id int PRIMARY KEY)", database=mariadb.database)
    _mysql_connection(monkeypatch, mariadb, "mysql_direct", mariadb.password)
    CreateForeignServerOperator(task_id="s", server_name=server, fdw_conn_id="mysql_direct").execute({})
    ImportForeignSchemaOperator(
        task_id="i", server_name=server, remote_schema=mariadb.database, local_schema=schema, limit_to=[table]
    ).execute({})
    target = f"public.mysql_copy_{uuid.uuid4().hex[:8]}"
    with (
        FdwHook(fdw_conn_id="mysql_direct") as hook,
        pytest.raises(
            FdwConfigError,
            match=r"transport='copy' .* needs a PostgreSQL remote; .* is a mysql_fdw foreign table",
        ),
    ):
        hook.bulk_copy(plan_copy(f"{schema}.{table}", target, transport="copy"))
    assert local(pair, "SELECT to_regclass(%s)", (target,)) == [(None,)]
