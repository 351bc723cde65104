"""mysql_fdw against a real MariaDB server started by the harness (fdw_testing/mariadb.py)."""

from __future__ import annotations

import uuid

from conftest import TARGET_DB, ident, local

from airflow_provider_fdw._driver import sql
from fdw_testing.mariadb import MariaDB, quote_name
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
    local(
        pair,
        "CREATE SERVER {s} FOREIGN DATA WRAPPER mysql_fdw OPTIONS (host {h}, port {p})",
        s=server,
        h=sql.Literal(mariadb.host),
        p=sql.Literal(str(mariadb.port)),
    )
    local(
        pair,
        "CREATE USER MAPPING FOR CURRENT_USER SERVER {s} OPTIONS (username {u}, password {pw})",
        s=server,
        u=sql.Literal(mariadb.user),
        pw=sql.Literal(mariadb.password),
    )
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
