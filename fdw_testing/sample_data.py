"""Sample data and Airflow connections for a source/target pair (shared by tests, demo and benchmarks)."""

from __future__ import annotations

import json
import os

from airflow_provider_fdw.compat import sql
from fdw_testing.mariadb import MariaDB
from fdw_testing.pgcluster import Cluster, Pair

SOURCE_DB = "production"
TARGET_DB = "analytics"
READER = "fdw_reader"
READER_PASSWORD = "Reader-Secret-7f3a9"

SOURCE_SCHEMA = [
    "CREATE SCHEMA app",
    "CREATE TABLE app.users (id bigint PRIMARY KEY, email text NOT NULL, created_at timestamptz "
    "NOT NULL DEFAULT now())",
    "INSERT INTO app.users SELECT g, 'user' || g || '@example.com', "
    "'2024-01-01'::timestamptz + g * interval '1 hour' FROM generate_series(1, 1000) g",
    "CREATE TABLE app.orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, amount numeric(12,2))",
    "INSERT INTO app.orders SELECT g, 1 + g % 1000, (g % 97) * 1.25 FROM generate_series(1, 5000) g",
    "CREATE TABLE app.events (id bigserial PRIMARY KEY, kind text)",
    "GRANT USAGE ON SCHEMA app TO {reader}",
    "GRANT SELECT ON ALL TABLES IN SCHEMA app TO {reader}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO {reader}",
    # The embedding example: products to embed, and a table the vectors are written back to.
    "CREATE SCHEMA catalog",
    "CREATE TABLE catalog.products (id bigint PRIMARY KEY, name text NOT NULL, description text, "
    "updated_at timestamptz NOT NULL DEFAULT now())",
    "INSERT INTO catalog.products (id, name, description, updated_at) SELECT g, 'product ' || g, "
    "(ARRAY['a warm wool sweater for cold winter days', 'a waterproof jacket for hiking in the rain', "
    "'a stainless steel pan for cooking eggs', 'a cast iron skillet for searing steak', "
    "'a paperback novel about a detective in Paris', 'a hardcover history of the Roman empire'])[1 + g % 6] "
    "|| ' (item ' || g || ')', '2024-01-01'::timestamptz + g * interval '1 minute' "
    "FROM generate_series(1, 240) g",
    "CREATE TABLE catalog.product_embeddings (id bigint PRIMARY KEY, embedding real[] NOT NULL)",
    "GRANT USAGE ON SCHEMA catalog TO {reader}",
    "GRANT SELECT ON catalog.products TO {reader}",
    "GRANT SELECT, INSERT, DELETE ON catalog.product_embeddings TO {reader}",
]


# The fdw_mysql_copy example's MariaDB table: 500 orders (their amounts sum to 156562.50).
MYSQL_ORDERS = (
    "DROP TABLE IF EXISTS orders; "
    "CREATE TABLE orders (id bigint PRIMARY KEY, customer varchar(40) NOT NULL, "
    "amount decimal(12,2), updated_at datetime(6) NOT NULL); "
    "INSERT INTO orders SELECT seq, concat('customer ', seq), seq * 1.25, "
    "'2024-01-01' + INTERVAL seq MINUTE FROM seq_1_to_500"
)


def mysql_connection(mariadb: MariaDB, password: str | None = None) -> dict:
    """The fdw_mysql_copy example's ``mysql_shop`` connection to the harness MariaDB."""
    return {
        "conn_type": "mysql_fdw",
        "host": mariadb.host,
        "port": mariadb.port,
        "schema": mariadb.database,
        "login": mariadb.user,
        "password": password or mariadb.password,
        "extra": {"fetch_size": 1000},
    }


def install_sample_data(pair: Pair) -> None:
    """The reader role and the ``production`` database on the source, ``analytics`` on the target."""
    src, tgt = pair.source, pair.target
    src.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(READER), sql.Literal(READER_PASSWORD)
        )
    )
    src.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SOURCE_DB)))
    tgt.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TARGET_DB)))
    for statement in SOURCE_SCHEMA:
        src.execute(sql.SQL(statement).format(reader=sql.Identifier(READER)), dbname=SOURCE_DB)


def fdw_connection(
    pair: Pair,
    password: str = READER_PASSWORD,
    port: int | None = None,
    extra: dict | None = None,
    login: str = READER,
) -> str:
    """An Airflow connection (JSON form) of type postgres_fdw for the source, as the target sees it."""
    return json.dumps(
        {
            "conn_type": "postgres_fdw",
            "host": pair.source.fdw_host,
            "port": port or pair.source.fdw_port,
            "schema": SOURCE_DB,
            "login": login,
            "password": password,
            "extra": extra if extra is not None else {"fetch_size": 10000},
        }
    )


def postgres_connection(
    cluster: Cluster, dbname: str, user: str | None = None, password: str | None = None
) -> str:
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": cluster.host,
            "port": cluster.port,
            "schema": dbname,
            "login": user or cluster.superuser,
            "password": password or cluster.password,
        }
    )


def set_airflow_connections(pair: Pair) -> None:
    """``postgres_default`` = the target (local) database, ``fdw_source`` = the remote source,
    ``source_db`` = the source database as a plain postgres connection (for sensors and checks)."""
    os.environ["AIRFLOW_CONN_POSTGRES_DEFAULT"] = postgres_connection(pair.target, TARGET_DB)
    os.environ["AIRFLOW_CONN_FDW_SOURCE"] = fdw_connection(pair)
    os.environ["AIRFLOW_CONN_SOURCE_DB"] = postgres_connection(pair.source, SOURCE_DB)
