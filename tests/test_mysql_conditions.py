"""What a copy from a mysql_fdw table filters and reads must mean what it means in PostgreSQL.

mysql_fdw 2.8 sends a condition's built-in functions and operators to MySQL by name and drops its
casts, so MySQL evaluates them with its own meaning (``||`` is OR, ``/`` divides as decimal,
``length`` counts bytes, ``log`` is natural). And MySQL's date-time text is wall-clock time in the
zone its session reads in (UTC, the server's ``init_command``), which a column declared
``timestamptz``, and a ``timestamptz`` bound printed for MySQL, must be read and printed in.
"""

from __future__ import annotations

import uuid

import pytest
from conftest import local
from test_wrapper_copy import copy, import_mysql_table

from airflow_provider_fdw.compat import sql
from fdw_testing.mariadb import MariaDB
from fdw_testing.pgcluster import Pair


@pytest.fixture
def mysql_people(pair: Pair, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """ids 1..10, a non-ASCII name, an amount with halves, a datetime during the day, a code in a
    binary (case-sensitive) collation."""
    return import_mysql_table(
        mariadb,
        monkeypatch,
        "people",
        "id int PRIMARY KEY, name varchar(40) NOT NULL, amount decimal(10,2) NOT NULL, "
        "seen_at datetime(6) NOT NULL, code varchar(10) COLLATE utf8mb4_bin NOT NULL",
        "SELECT seq, IF(seq % 2 = 0, concat('jürgen', seq), concat('jurgen', seq)), seq + 0.5, "
        "'2024-01-01 10:00:00' + INTERVAL seq HOUR, IF(seq % 2 = 0, 'Jx', 'jx') FROM seq_1_to_10",
    )


def ids(pair: Pair, target: str) -> list[int]:
    return [r[0] for r in local(pair, "SELECT id FROM {t} ORDER BY id", t=target)]


def selected_locally(pair: Pair, foreign: str, where: str) -> list[int]:
    """The ids PostgreSQL's semantics select: the condition evaluated over a local copy of every row."""
    scratch = f"public.all_{uuid.uuid4().hex[:8]}"
    copy("mysql_copy", foreign, scratch, mode="replace")
    return [r[0] for r in local(pair, "SELECT id FROM {t} WHERE " + where + " ORDER BY id", t=scratch)]


@pytest.mark.parametrize(
    "where",
    [
        "seen_at::date = '2024-01-01'",  # the cast dropped: MySQL compares seen_at = '2024-01-01'
        "amount::int = 3",  # the cast dropped: 2.5 = 3 in MySQL, round(2.5) = 3 in PostgreSQL
        "id / 2 = 1",  # integer division in PostgreSQL, decimal in MySQL
        "length(name) = 7",  # characters in PostgreSQL, bytes in MySQL
        "log(id) >= 0.5",  # base 10 in PostgreSQL, natural logarithm in MySQL
        "name || 'x' = 'jurgen1x'",  # concatenation in PostgreSQL, OR in MySQL
        "id ^ 2 = 9",  # power in PostgreSQL, bitwise XOR in MySQL
        "code ILIKE 'j%'",  # sent as LIKE: case-sensitive in a _bin collation
    ],
)
def test_a_where_on_a_mysql_table_selects_the_rows_postgresql_selects(
    pair: Pair, mysql_people: tuple[str, str], where: str
) -> None:
    _table, foreign = mysql_people
    expected = selected_locally(pair, foreign, where)
    target = f"public.w_{uuid.uuid4().hex[:8]}"
    result = copy("mysql_copy", foreign, target, mode="replace", where=where, verify="count")
    assert (ids(pair, target), result["rows"]) == (expected, len(expected))


def test_an_append_from_a_view_casting_a_mysql_column_copies_only_the_new_rows(
    pair: Pair, mariadb: MariaDB, mysql_people: tuple[str, str]
) -> None:
    """A view ``SELECT id, seen_at::date AS day``: the bound ``day > '2024-01-01'`` would reach MySQL
    as ``seen_at > '2024-01-01'`` (the cast dropped) and copy that day's rows again on every run."""
    table, foreign = mysql_people
    view = f"public.v_{uuid.uuid4().hex[:8]}"
    local(pair, "CREATE VIEW {v} AS SELECT id, seen_at::date AS day FROM {t}", v=view, t=foreign)
    target = f"public.a_{uuid.uuid4().hex[:8]}"
    assert copy("mysql_copy", view, target, mode="append", watermark_column="day")["rows"] == 10
    mariadb.execute(
        f"INSERT INTO {table} VALUES (11, 'new', 1, '2024-01-02 09:00:00', 'x')", database=mariadb.database
    )
    second = copy("mysql_copy", view, target, mode="append", watermark_column="day")
    assert (second["rows"], ids(pair, target)) == (1, list(range(1, 12)))


@pytest.fixture
def role_time_zone(pair: Pair):
    """Set the copying role's TimeZone in the local database (reset afterwards)."""
    (role,) = local(pair, "SELECT current_user")[0]
    setting = "ALTER ROLE {r} IN DATABASE analytics "

    def set_zone(zone: str) -> None:
        local(pair, setting + "SET TimeZone = {z}", r=role, z=sql.Literal(zone))

    yield set_zone
    local(pair, setting + "RESET TimeZone", r=role)


def test_a_mysql_timestamp_declared_timestamptz_is_read_as_the_utc_instant_whatever_the_role_time_zone(
    pair: Pair, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch, role_time_zone
) -> None:
    """MySQL sends TIMESTAMP as UTC wall-clock text (the server's init_command): a column declared
    timestamptz must read it as that instant, not in the role's TimeZone (5 hours late in New York)."""
    _table, foreign = import_mysql_table(
        mariadb,
        monkeypatch,
        "ts",
        "id int PRIMARY KEY, ts timestamp NULL",
        "SELECT seq, FROM_UNIXTIME(1704103200 + seq * 3600) FROM seq_1_to_3",  # 2024-01-01 10:00 UTC + n h
    )
    local(pair, "ALTER FOREIGN TABLE {t} ALTER COLUMN ts TYPE timestamptz", t=foreign)
    role_time_zone("America/New_York")
    target = f"public.ts_{uuid.uuid4().hex[:8]}"
    copy("mysql_copy", foreign, target, mode="replace")
    epochs = local(pair, "SELECT id, extract(epoch FROM ts)::bigint FROM {t} ORDER BY id", t=target)
    assert epochs == [(n, 1704103200 + n * 3600) for n in (1, 2, 3)]


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/New_York"])
def test_an_append_on_a_timestamptz_watermark_over_mysql_copies_each_row_once_whatever_the_role_time_zone(
    pair: Pair, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch, role_time_zone, zone: str
) -> None:
    """The bound is printed for MySQL as this session prints a timestamptz; MySQL drops the offset:
    east of UTC the bound lands hours late (rows skipped for good), west of it early (copied again)."""
    table, foreign = import_mysql_table(
        mariadb,
        monkeypatch,
        "tw",
        "id int PRIMARY KEY, ts timestamp NULL",
        "SELECT seq, FROM_UNIXTIME(1704103200 + seq * 3600) FROM seq_1_to_3",
    )
    local(pair, "ALTER FOREIGN TABLE {t} ALTER COLUMN ts TYPE timestamptz", t=foreign)
    role_time_zone(zone)
    target = f"public.tw_{uuid.uuid4().hex[:8]}"
    assert copy("mysql_copy", foreign, target, mode="append", watermark_column="ts")["rows"] == 3
    mariadb.execute(  # one and two hours after the last row
        f"INSERT INTO {table} SELECT seq, FROM_UNIXTIME(1704103200 + seq * 3600) FROM seq_4_to_5",
        database=mariadb.database,
    )
    second = copy("mysql_copy", foreign, target, mode="append", watermark_column="ts")
    assert (second["rows"], ids(pair, target)) == (2, [1, 2, 3, 4, 5])
