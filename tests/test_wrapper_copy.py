"""BulkCopy (FDW path) from sources of other wrappers: a MariaDB table through mysql_fdw, a CSV file
through file_fdw; replace, append and upsert against the real servers."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import local

from airflow_provider_fdw.bulkcopy import partitions as parts
from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.operators.files import CreateFileForeignTableOperator
from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
from airflow_provider_fdw.operators.server import CreateForeignServerOperator
from fdw_testing.mariadb import MariaDB
from fdw_testing.pgcluster import Pair


def copy(fdw_conn_id: str, source: str, target: str, **kwargs) -> dict:
    with FdwHook(fdw_conn_id=fdw_conn_id) as hook:
        return hook.bulk_copy(plan_copy(source, target, **kwargs))


@pytest.fixture
def mysql_orders(pair: Pair, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A MariaDB table ``orders_<random>`` (ids 1..300) imported as ``proxy_<random>.orders_<random>``."""
    return import_mysql_table(
        mariadb,
        monkeypatch,
        "orders",
        "id bigint PRIMARY KEY, customer varchar(40) NOT NULL, amount decimal(12,2), note text, "
        "updated_at datetime(6) NOT NULL",
        "SELECT seq, concat('cüstomer ', seq), seq * 1.25, IF(seq % 7 = 0, NULL, 'n'), "
        "'2024-01-01' + INTERVAL seq MINUTE FROM seq_1_to_300",
    )


def import_mysql_table(
    mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch, prefix: str, columns: str, rows: str
) -> tuple[str, str]:
    """A new MariaDB table (``columns``, filled by the SELECT ``rows``) on a new server, imported:
    (its name, its foreign table)."""
    table, schema, server = (f"{p}_{uuid.uuid4().hex[:8]}" for p in (prefix, "proxy", "my"))
    mariadb.execute(
        f"CREATE TABLE {table} ({columns}); INSERT INTO {table} {rows}", database=mariadb.database
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_MYSQL_COPY",
        json.dumps(
            {
                "conn_type": "mysql_fdw",
                "host": mariadb.host,
                "port": mariadb.port,
                "login": mariadb.user,
                "password": mariadb.password,
            }
        ),
    )
    CreateForeignServerOperator(task_id="s", server_name=server, fdw_conn_id="mysql_copy").execute({})
    ImportForeignSchemaOperator(
        task_id="i", server_name=server, remote_schema=mariadb.database, local_schema=schema, limit_to=[table]
    ).execute({})
    return table, f"{schema}.{table}"


def _mysql_rows(mariadb: MariaDB, table: str) -> list[tuple]:
    rows = mariadb.execute(
        "SELECT id, customer, amount, note, date_format(updated_at, '%Y-%m-%d %H:%i:%s') "
        f"FROM {table} ORDER BY id",
        database=mariadb.database,
    )
    return [(int(i), c, Decimal(a), n, u) for i, c, a, n, u in rows]


def _local_rows(pair: Pair, table: str) -> list[tuple]:
    return local(
        pair,
        "SELECT id, customer, amount, note, to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS') "
        "FROM {t} ORDER BY id",
        t=table,
    )


def append_two_orders(pair: Pair, mariadb: MariaDB, table: str, foreign: str, target: str, day: str) -> None:
    """Orders 301 and 302 (on ``day`` and the day after) added in MariaDB, then appended: exactly them."""
    mariadb.execute(
        f"INSERT INTO {table} VALUES (301, 'new', 1.00, NULL, '{day}'), "
        f"(302, 'newer', 2.00, 'x', '{day}' + INTERVAL 1 DAY)",
        database=mariadb.database,
    )
    appended = copy("mysql_copy", foreign, target, mode="append", watermark_column="updated_at")
    assert appended["rows"] == 2
    assert _local_rows(pair, target) == _mysql_rows(mariadb, table)


def test_mysql_replace_append_and_upsert_through_the_fdw_path(
    pair: Pair, mariadb: MariaDB, mysql_orders: tuple[str, str]
) -> None:
    table, foreign = mysql_orders
    target = f"public.my_{uuid.uuid4().hex[:8]}"
    first = copy("mysql_copy", foreign, target, mode="replace", key_columns=["id"], verify="count")
    assert first["rows"] == 300 and first["path"] == "fdw"
    assert _local_rows(pair, target) == _mysql_rows(mariadb, table)

    append_two_orders(pair, mariadb, table, foreign, target, "2030-01-01")

    mariadb.execute(
        f"UPDATE {table} SET amount = 0, updated_at = '2031-01-01' WHERE id = 5; "
        f"INSERT INTO {table} VALUES (303, 'upserted', 3.00, NULL, '2031-01-02')",
        database=mariadb.database,
    )
    upserted = copy(
        "mysql_copy", foreign, target, mode="upsert", key_columns=["id"], watermark_column="updated_at"
    )
    assert (upserted["inserted"], upserted["updated"]) == (1, 1)
    assert _local_rows(pair, target) == _mysql_rows(mariadb, table)


def test_a_mysql_read_that_ends_early_fails_the_copy_and_changes_nothing(
    pair: Pair, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mysql_fdw ends a read, as if the table ended there, at a binary value over 8 KiB: with binary
    columns the copy of a mysql_fdw source counts the source (verify="count") unless told not to."""
    table, foreign = import_mysql_table(
        mariadb, monkeypatch, "blobs", "id int PRIMARY KEY, v longblob", "SELECT seq, x'01' FROM seq_1_to_100"
    )
    target = f"public.my_{uuid.uuid4().hex[:8]}"
    first = copy("mysql_copy", foreign, target, mode="replace")
    assert first["rows"] == 100 and first["verify"]["mode"] == "count"
    mariadb.execute(f"UPDATE {table} SET v = REPEAT('a', 65535) WHERE id = 50", database=mariadb.database)
    with pytest.raises(FdwError, match=r"the rows loaded .* are 49 rows .* has 100 rows"):
        copy("mysql_copy", foreign, target, mode="replace")
    assert local(pair, "SELECT count(*) FROM {t}", t=target) == [(100,)]
    off = copy("mysql_copy", foreign, f"{target}_off", mode="replace", verify="off")  # as asked
    assert off["verify"] is None and off["rows"] < 100
    # a where MySQL cannot evaluate is counted through mysql_fdw: reading v, it would stop where the
    # load stopped and agree with it
    with pytest.raises(FdwConfigError, match="counting through the wrapper would read v"):
        copy("mysql_copy", foreign, target, mode="replace", where="encode(v, 'hex') <> 'zz'")
    with pytest.raises(FdwError, match=r"are 49 rows .* has 100 rows"):  # (not reading v: counted)
        copy("mysql_copy", foreign, target, mode="replace", where="id::text <> 'x'")
    # ranges cannot count: a partitioned copy is refused unless told to go unverified
    with FdwHook(fdw_conn_id="mysql_copy") as hook:
        plan = plan_copy(foreign, f"{target}_parts", key_columns=["id"])
        with pytest.raises(FdwConfigError, match="A partitioned copy cannot verify"):
            parts.prepare(hook.bulk_copy_engine(plan), hook.session, "dag/run_1", 2)
    assert local(pair, "SELECT count(*) FROM {t}", t=target) == [(100,)]


def test_mysql_bounds_reach_mysql_in_iso_whatever_the_local_datestyle(
    pair: Pair, mariadb: MariaDB, mysql_orders: tuple[str, str]
) -> None:
    """mysql_fdw writes a pushed-down constant as the local session prints it ('05.03.2024 10:50:00'
    under German, which MySQL reads as a zero date, so every row matched): the provider's sessions
    print ISO, as postgres_fdw's remote sessions do."""
    table, foreign = mysql_orders
    target = f"public.my_{uuid.uuid4().hex[:8]}"
    copy("mysql_copy", foreign, target, mode="replace")  # no key: a duplicate would not fail
    (role,) = local(pair, "SELECT current_user")[0]
    setting = "ALTER ROLE {r} IN DATABASE analytics "
    local(pair, setting + "SET DateStyle = 'German, DMY'", r=role)
    try:
        append_two_orders(pair, mariadb, table, foreign, target, "2030-01-05")
        where = copy(
            "mysql_copy", foreign, f"{target}_where", mode="replace", where="updated_at > '2030-01-05 12:00'"
        )
        assert where["rows"] == 1
    finally:
        local(pair, setting + "RESET DateStyle", r=role)


@pytest.fixture
def csv_table(pair: Pair, server_readable_dir: Path) -> tuple[Path, str]:
    path = server_readable_dir / "rates.csv"
    path.write_text("day,currency,rate\n2024-01-01,EUR,1.0\n2024-01-01,USD,1.09\n2024-01-02,EUR,1.0\n")
    path.chmod(0o644)
    table = f"files_{uuid.uuid4().hex[:8]}.rates"
    CreateFileForeignTableOperator(
        task_id="f",
        server_name="files",
        table=table,
        columns={"day": "date", "currency": "text", "rate": "numeric"},
        options={"filename": str(path), "format": "csv", "header": True},
    ).execute({})
    return path, table


def test_a_replace_from_an_empty_file_with_a_header_changes_nothing(
    pair: Pair, csv_table: tuple[Path, str]
) -> None:
    """A file with ``header`` holds at least that line: 0 bytes is an export that failed or is being
    written, not an empty table. A header line alone is an empty table."""
    path, table = csv_table
    target = f"public.rates_{uuid.uuid4().hex[:8]}"
    assert copy("fdw_source", table, target, mode="replace")["rows"] == 3
    path.write_text("")
    with pytest.raises(FdwConfigError, match="0 bytes"):
        copy("fdw_source", table, target, mode="replace")
    assert local(pair, "SELECT count(*) FROM {t}", t=target) == [(3,)]
    path.write_text("day,currency,rate\n")
    assert copy("fdw_source", table, target, mode="replace")["rows"] == 0


def test_csv_file_replace_then_append_through_the_fdw_path(pair: Pair, csv_table: tuple[Path, str]) -> None:
    path, table = csv_table
    target = f"public.rates_{uuid.uuid4().hex[:8]}"
    first = copy("fdw_source", table, target, mode="replace", verify="count")
    assert first["rows"] == 3
    with path.open("a") as fh:
        fh.write("2024-01-03,EUR,1.0\n2024-01-03,USD,1.1\n")
    second = copy("fdw_source", table, target, mode="append", watermark_column="day")
    assert second["rows"] == 2
    assert local(pair, "SELECT day::text, currency, rate::text FROM {t} ORDER BY 1, 2", t=target) == [
        ("2024-01-01", "EUR", "1.0"),
        ("2024-01-01", "USD", "1.09"),
        ("2024-01-02", "EUR", "1.0"),
        ("2024-01-03", "EUR", "1.0"),
        ("2024-01-03", "USD", "1.1"),
    ]
    third = copy("fdw_source", table, target, mode="replace")
    assert third["rows"] == 5 and local(pair, "SELECT count(*) FROM {t}", t=target) == [(5,)]
