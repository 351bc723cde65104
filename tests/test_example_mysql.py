"""The fdw_mysql_copy example DAG, end to end against the harness MariaDB and the local database."""

from __future__ import annotations

import json

import pytest
from conftest import TARGET_DB

from fdw_testing.mariadb import MariaDB, quote_string
from fdw_testing.pgcluster import Pair
from fdw_testing.sample_data import MYSQL_ORDERS, mysql_connection


@pytest.fixture
def mysql_shop(airflow_db: Pair, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch) -> MariaDB:
    mariadb.execute(MYSQL_ORDERS, database=mariadb.database)
    _connection(monkeypatch, mariadb, mariadb.password)
    return mariadb


def _connection(monkeypatch: pytest.MonkeyPatch, mariadb: MariaDB, password: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MYSQL_SHOP", json.dumps(mysql_connection(mariadb, password)))


def _local(pair: Pair, statement: str) -> list[tuple]:
    return pair.target.execute(statement, dbname=TARGET_DB)


def test_fdw_mysql_copy_copies_then_upserts_changes_after_a_password_rotation(
    airflow_db: Pair, mysql_shop: MariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_example_dags import load_example

    from fdw_testing.dagrun import run_dag

    pair = airflow_db
    dag = load_example("fdw_mysql_copy")
    first = run_dag(dag)
    assert first.state == "success", first.task_states
    assert first.xcom["copy_orders"]["rows"] == 500
    assert _local(pair, "SELECT count(*), sum(amount) FROM public.mysql_orders") == [(500, 156562.50)]

    # A changed row, a new row, and a rotated password: the next run applies all three.
    new_password = "Rotated-Maria-9d1"
    mysql_shop.execute(
        "UPDATE orders SET amount = 0, updated_at = '2030-01-01' WHERE id = 7; "
        "INSERT INTO orders VALUES (501, 'late customer', 9.99, '2030-01-02'); "
        f"ALTER USER {quote_string(mysql_shop.user)}@'%' IDENTIFIED BY {quote_string(new_password)}",
        database=mysql_shop.database,
    )
    _connection(monkeypatch, mysql_shop, new_password)
    try:
        second = run_dag(dag)
    finally:
        user, password = quote_string(mysql_shop.user), quote_string(mysql_shop.password)
        mysql_shop.execute(f"ALTER USER {user}@'%' IDENTIFIED BY {password}")
    assert second.state == "success", second.task_states
    assert second.xcom["mysql_server"]["user_mappings"][0]["changed"] is True
    assert second.xcom["copy_orders"]["inserted"] == 1 and second.xcom["copy_orders"]["updated"] == 1
    assert _local(pair, "SELECT amount FROM public.mysql_orders WHERE id = 7") == [(0,)]
    assert _local(pair, "SELECT count(*) FROM public.mysql_orders") == [(501,)]
