"""Regressions of an adversarial review of mysql_fdw support (tests/test_wrapper_review.py there): a copy
or an import that reported success with a target that differed from MySQL."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator

import pytest
from conftest import local, mysql_server_by_hand
from test_wrapper_copy import copy

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.character_sets import check_character_set
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
from airflow_provider_fdw.operators.server import CreateForeignServerOperator
from airflow_provider_fdw.wrappers import MYSQL_FDW
from fdw_testing.mariadb import MariaDB
from fdw_testing.pgcluster import Pair
from fdw_testing.sample_data import postgres_connection


def _mysql_conn(mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch, conn_id: str, **extra: str) -> None:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps(
            {
                "conn_type": "mysql_fdw",
                "host": mariadb.host,
                "port": mariadb.port,
                "login": mariadb.user,
                "password": mariadb.password,
                "extra": extra,
            }
        ),
    )


def _names_table(mariadb: MariaDB, charset: str = "utf8mb4") -> str:
    table = f"names_{uuid.uuid4().hex[:8]}"
    mariadb.execute(
        f"CREATE TABLE {table} (id int PRIMARY KEY, name varchar(20) CHARACTER SET {charset}) "
        f"CHARACTER SET {charset}; INSERT INTO {table} VALUES (1, 'café'), (2, 'Zoë'), (3, 'plain')",
        database=mariadb.database,
    )
    return table


def _import_into(pg_conn: str, fdw_conn: str, mariadb: MariaDB, table: str) -> str:
    schema, server = f"proxy_{uuid.uuid4().hex[:8]}", f"my_{uuid.uuid4().hex[:8]}"
    CreateForeignServerOperator(
        task_id="s", server_name=server, fdw_conn_id=fdw_conn, postgres_conn_id=pg_conn
    ).execute({})
    ImportForeignSchemaOperator(
        task_id="i",
        server_name=server,
        remote_schema=mariadb.database,
        local_schema=schema,
        limit_to=[table],
        postgres_conn_id=pg_conn,
    ).execute({})
    return f"{schema}.{table}"


@pytest.fixture
def latin1_database(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local database in LATIN1 (ENCODING 'LATIN1', C locale) and an Airflow connection to it."""
    name = f"latin_{uuid.uuid4().hex[:6]}"
    pair.target.execute(
        sql.SQL("CREATE DATABASE {} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0").format(
            sql.Identifier(name)
        )
    )
    monkeypatch.setenv("AIRFLOW_CONN_LATIN_DB", postgres_connection(pair.target, name))
    yield name
    pair.target.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


# -- character sets: mysql_fdw hands MySQL's bytes to PostgreSQL without converting them ---------------


def test_a_copy_into_a_latin1_database_keeps_non_ascii_text(
    pair: Pair, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch, latin1_database: str
) -> None:
    """The connection type's default character_set utf8mb4 made MySQL send UTF-8 whatever the local
    database's encoding; mysql_fdw stores the bytes as they are: in a LATIN1 database 'café' became
    'cafÃ©' (every byte a valid LATIN1 character), reported as a success. (MySQL's latin1 is cp1252,
    not ISO-8859-1: no MySQL character set has LATIN1's bytes, so the server itself is refused.)"""
    _mysql_conn(mariadb, monkeypatch, "mysql_latin")
    table = _names_table(mariadb)
    target = f"public.names_{uuid.uuid4().hex[:8]}"
    try:
        foreign = _import_into("latin_db", "mysql_latin", mariadb, table)
        with FdwHook(fdw_conn_id="mysql_latin", postgres_conn_id="latin_db") as hook:
            hook.bulk_copy(plan_copy(foreign, target, mode="replace"))
            rows = hook.get_records(f"SELECT id, name FROM {target} ORDER BY id")
    except FdwError as exc:  # refused: acceptable, when it says why
        assert "LATIN1" in str(exc) and "character set" in str(exc)
        return
    assert [tuple(r) for r in rows] == [(1, "café"), (2, "Zoë"), (3, "plain")]


def test_a_connection_with_another_character_set_keeps_non_ascii_text(
    pair: Pair, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mysql_fdw connection whose character_set is not the local database's encoding (latin1, the
    MySQL table's own) was accepted: MySQL sent LATIN1 bytes that mysql_fdw stored unchecked in a
    UTF8 database (invalid text), and the copy reported success."""
    _mysql_conn(mariadb, monkeypatch, "mysql_l1", character_set="latin1")
    table = _names_table(mariadb, "latin1")
    target = f"public.names_{uuid.uuid4().hex[:8]}"
    try:
        foreign = _import_into("postgres_default", "mysql_l1", mariadb, table)
        copy("mysql_l1", foreign, target, mode="replace")
    except FdwError as exc:  # refused: acceptable, when it names the character set and the encoding
        assert "'latin1'" in str(exc) and "UTF8" in str(exc)
        return
    assert local(pair, "SELECT id, convert_to(name, 'UTF8') FROM {t} ORDER BY id", t=target) == [
        (1, "café".encode()),
        (2, "Zoë".encode()),
        (3, b"plain"),
    ]


@pytest.mark.parametrize(
    ("encoding", "character_set", "refused"),
    [
        ("UTF8", "utf8mb4", None),
        ("UTF8", "UTF8MB4", None),  # MySQL's names are case-insensitive
        ("UTF8", None, "has no character_set"),  # mysql_fdw's 'auto': the server process's locale
        ("UTF8", "auto", "the locale of the PostgreSQL server process"),
        ("UTF8", "utf8", "has character_set 'utf8'"),  # utf8mb3: a 4-byte character arrives as '?'
        ("UTF8", "PGDatabaseEncoding", "the remote's 'utf8'"),  # mysql_fdw's special value
        ("UTF8", "latin1", "encoding is UTF8, whose bytes are character_set 'utf8mb4'"),
        ("LATIN2", "PGDatabaseEncoding", None),
        ("WIN1252", "latin1", None),
        ("LATIN1", "latin1", "MySQL's latin1 is Windows-1252"),
        ("SQL_ASCII", "ascii", "SQL_ASCII (no encoding at all"),
    ],
)
def test_a_mysql_character_set_must_have_the_bytes_of_the_local_database_encoding(
    encoding: str, character_set: str | None, refused: str | None
) -> None:
    if refused is None:
        check_character_set(MYSQL_FDW, "shop", character_set, encoding)
        return
    with pytest.raises(FdwConfigError, match=rf"Server 'shop' \(mysql_fdw\).*{re.escape(refused)}"):
        check_character_set(MYSQL_FDW, "shop", character_set, encoding)


def test_a_server_without_character_set_is_refused_for_copies_and_imports_until_converged(
    pair: Pair, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server made by hand without character_set reads in mysql_fdw's default, 'auto' (the C locale
    here: Latin-1 bytes in a UTF8 database): its copies and imports are refused, naming it, until
    CreateForeignServerOperator converges it to the database's character set."""
    table = _names_table(mariadb)
    server, schema = f"auto_{uuid.uuid4().hex[:6]}", f"proxy_{uuid.uuid4().hex[:8]}"
    local(pair, "CREATE EXTENSION IF NOT EXISTS mysql_fdw")
    mysql_server_by_hand(pair, mariadb, server)
    local(pair, "CREATE SCHEMA {x}", x=schema)
    local(
        pair,
        "CREATE FOREIGN TABLE {x}.{t} (id int, name text) SERVER {s} OPTIONS (dbname {d}, table_name {n})",
        x=schema,
        t=table,
        s=server,
        d=sql.Literal(mariadb.database),
        n=sql.Literal(table),
    )
    _mysql_conn(mariadb, monkeypatch, "mysql_auto")
    target = f"public.names_{uuid.uuid4().hex[:8]}"
    refusal = rf"Server '{server}' \(mysql_fdw\) has no character_set .* encoding is UTF8"
    with pytest.raises(FdwConfigError, match=refusal):
        copy("mysql_auto", f"{schema}.{table}", target, mode="replace")
    with pytest.raises(FdwConfigError, match=refusal):
        ImportForeignSchemaOperator(
            task_id="i", server_name=server, remote_schema=mariadb.database, local_schema=f"{schema}_i"
        ).execute({})
    assert local(pair, "SELECT to_regclass({t})", t=sql.Literal(target)) == [(None,)]
    CreateForeignServerOperator(task_id="s", server_name=server, fdw_conn_id="mysql_auto").execute({})
    options = local(pair, "SELECT srvoptions FROM pg_foreign_server WHERE srvname = %s", (server,))[0][0]
    assert "character_set=utf8mb4" in options
    copy("mysql_auto", f"{schema}.{table}", target, mode="replace")
    assert local(pair, "SELECT id, name FROM {t} ORDER BY id", t=target) == [
        (1, "café"),
        (2, "Zoë"),
        (3, "plain"),
    ]


# -- IMPORT FOREIGN SCHEMA converging a previous import -------------------------------------------------


def test_a_reimport_keeps_a_table_mysql_fdw_skips_for_a_set_column(
    pair: Pair, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mysql_fdw skips a table with a SET column (a WARNING only): a re-run of the import after such a
    column was added took the table for gone on the remote and dropped its foreign table, reported as
    a success, although the MySQL table is still there (the copies reading it then fail)."""
    schema, server = f"proxy_{uuid.uuid4().hex[:8]}", f"my_{uuid.uuid4().hex[:8]}"
    database = f"db_{uuid.uuid4().hex[:8]}"
    mariadb.execute(
        f"CREATE DATABASE {database}; GRANT ALL ON {database}.* TO '{mariadb.user}'@'%'; "
        f"CREATE TABLE {database}.orders (id int PRIMARY KEY, v int); "
        f"CREATE TABLE {database}.other (id int PRIMARY KEY); INSERT INTO {database}.orders VALUES (1, 1)"
    )
    _mysql_conn(mariadb, monkeypatch, "mysql_set")
    CreateForeignServerOperator(task_id="s", server_name=server, fdw_conn_id="mysql_set").execute({})

    def run_import() -> None:
        ImportForeignSchemaOperator(
            task_id="i", server_name=server, remote_schema=database, local_schema=schema
        ).execute({})

    run_import()
    assert local(pair, "SELECT to_regclass({n}) IS NOT NULL", n=sql.Literal(f"{schema}.orders")) == [(True,)]
    mariadb.execute(f"ALTER TABLE {database}.orders ADD COLUMN flags set('a','b')")
    try:
        run_import()
    except FdwError:
        return  # refused: acceptable
    assert local(pair, "SELECT to_regclass({n}) IS NOT NULL", n=sql.Literal(f"{schema}.orders")) == [(True,)]


def test_a_reimport_drops_only_the_tables_gone_from_mysql_and_says_why_it_keeps_the_others(
    pair: Pair,
    mariadb: MariaDB,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """mysql_fdw's import also leaves out, without a word, a view MySQL lists no columns of (its base
    table dropped): kept as well, while a table really dropped in MySQL loses its foreign table. A
    LIMIT TO naming a table the import leaves out fails, saying why."""
    schema, server = f"proxy_{uuid.uuid4().hex[:8]}", f"my_{uuid.uuid4().hex[:8]}"
    database = f"db_{uuid.uuid4().hex[:8]}"
    mariadb.execute(
        f"CREATE DATABASE {database}; GRANT ALL ON {database}.* TO '{mariadb.user}'@'%'; "
        f"CREATE TABLE {database}.orders (id int PRIMARY KEY); CREATE TABLE {database}.gone (id int); "
        f"CREATE TABLE {database}.base (id int); "
        f"CREATE VIEW {database}.recent AS SELECT id FROM {database}.base"
    )
    _mysql_conn(mariadb, monkeypatch, "mysql_skip")
    CreateForeignServerOperator(task_id="s", server_name=server, fdw_conn_id="mysql_skip").execute({})

    def run_import(local_schema: str = schema, **kwargs: list[str]) -> list[str]:
        return ImportForeignSchemaOperator(
            task_id="i", server_name=server, remote_schema=database, local_schema=local_schema, **kwargs
        ).execute({})["tables"]

    assert sorted(run_import()) == ["base", "gone", "orders", "recent"]
    mariadb.execute(
        f"ALTER TABLE {database}.orders ADD COLUMN flags set('a','b'); DROP TABLE {database}.gone; "
        f"DROP TABLE {database}.base"
    )
    caplog.set_level(logging.WARNING)
    caplog.clear()
    capsys.readouterr()
    assert sorted(run_import()) == ["orders", "recent"]
    logged = caplog.text + "".join(capsys.readouterr())
    for table in ("orders", "recent"):
        assert f"{schema}.{table} is kept as it was" in logged
    assert "SET column" in logged and "lists no columns" in logged
    assert local(pair, "SELECT count(*) FROM {t}", t=f"{schema}.orders") == [(0,)]  # still reads MySQL
    with pytest.raises(FdwError, match=r"has 'orders', which the import leaves out. Why: .*SET column"):
        run_import(f"{schema}_new", limit_to=["orders"])


# -- sql_mode: modes that change what a pushed-down constant means --------------------------------------


def test_an_empty_string_in_a_where_matches_the_empty_rows_whatever_the_connections_sql_mode(
    pair: Pair, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_BACKSLASH_ESCAPES is refused because it changes what a pushed-down string constant means;
    MariaDB's EMPTY_STRING_IS_NULL does too ('' becomes NULL): where="note = ''" then matched no row
    in MySQL, and the copy (verify count agreeing) reported success with the empty-note rows missing."""
    from test_mysql_session_settings import copy as session_copy
    from test_mysql_session_settings import mysql_table

    target = f"public.e_{uuid.uuid4().hex[:8]}"
    try:
        table, foreign = mysql_table(
            mariadb,
            monkeypatch,
            "id int PRIMARY KEY, note varchar(10)",
            sql_mode="ANSI_QUOTES,EMPTY_STRING_IS_NULL",
        )
        mariadb.execute(
            f"INSERT INTO {table} VALUES (1, ''), (2, 'x'), (3, NULL), (4, '')", database=mariadb.database
        )
        session_copy(foreign, target, mode="replace", where="note = ''", verify="count")
    except Exception as exc:  # refused (like NO_BACKSLASH_ESCAPES): acceptable
        assert "EMPTY_STRING_IS_NULL" in str(exc)
        return
    assert [r[0] for r in local(pair, "SELECT id FROM {t} ORDER BY id", t=target)] == [1, 4]
