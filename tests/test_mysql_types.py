"""MySQL/MariaDB types through mysql_fdw: what IMPORT FOREIGN SCHEMA declares and whether values survive.

One MySQL table per type (so one type that cannot be imported does not hide the others), values at
the type's edges plus a NULL, imported with IMPORT FOREIGN SCHEMA and read back. The expectations
are the table in docs/wrappers.md ("MySQL types"): a change in mysql_fdw's behaviour fails here.
"""

from __future__ import annotations

import uuid

import pytest
from conftest import local, mysql_server_by_hand

from airflow_provider_fdw.compat import sql
from fdw_testing.mariadb import MariaDB
from fdw_testing.pgcluster import Pair

EQUAL = "equal"

# (MySQL type, values as MySQL literals, imported PostgreSQL type, outcome, how values compare).
# Outcome EQUAL: every value (and NULL) reads back equal; otherwise the start of the error PostgreSQL
# raises on SELECT. ``hex``: compare binary values as hex on both sides.
CASES = [
    ("tinyint", ["-128", "127"], "smallint", EQUAL, "text"),
    ("tinyint unsigned", ["0", "255"], "smallint", EQUAL, "text"),
    ("smallint", ["-32768", "32767"], "smallint", EQUAL, "text"),
    ("smallint unsigned", ["0", "65535"], "smallint", 'value "65535" is out of range for type smallint', ""),
    ("mediumint", ["-8388608", "8388607"], "integer", EQUAL, "text"),
    ("mediumint unsigned", ["0", "16777215"], "integer", EQUAL, "text"),
    ("int", ["-2147483648", "2147483647"], "integer", EQUAL, "text"),
    (
        "int unsigned",
        ["0", "4294967295"],
        "integer",
        'value "4294967295" is out of range for type integer',
        "",
    ),
    ("bigint", ["-9223372036854775808", "9223372036854775807"], "bigint", EQUAL, "text"),
    (
        "bigint unsigned",
        ["0", "18446744073709551615"],
        "bigint",
        'value "18446744073709551615" is out of range for type bigint',
        "",
    ),
    ("decimal(20,6)", ["-99999999999999.999999", "12345.678900"], "numeric", EQUAL, "text"),
    ("float", ["-1.5", "3.4e38"], "real", EQUAL, "float"),
    ("double", ["-2.25e300", "1.7976931348623157e308"], "double precision", EQUAL, "float"),
    ("date", ["'1000-01-01'", "'9999-12-31'"], "date", EQUAL, "text"),
    (
        "datetime(6)",
        ["'1000-01-01 00:00:00.000001'", "'9999-12-31 23:59:59.999999'"],
        "timestamp without time zone",
        EQUAL,
        "timestamp",
    ),
    (
        "timestamp(6) NULL",
        ["'1970-01-01 00:00:01'", "'2038-01-19 03:14:07.999999'"],
        "timestamp without time zone",
        EQUAL,
        "timestamp",
    ),
    ("time(6)", ["'00:00:00'", "'23:59:59.5'"], "time without time zone", EQUAL, "time"),
    (
        "time",
        ["'-01:00:00'"],
        "time without time zone",
        'invalid input syntax for type time: "-01:00:00"',
        "",
    ),
    ("time", ["'25:00:00'"], "time without time zone", 'date/time field value out of range: "25:00:00"', ""),
    ("char(5)", ["'ab'", "'abcde'"], "character(5)", EQUAL, "text"),
    ("varchar(20)", ["'héllo wörld'", "''"], "character varying(20)", EQUAL, "text"),
    ("text", ["'ünïcode text 😀'", "''"], "text", EQUAL, "text"),
    ("blob", ["x'00ff10'", "x''"], "bytea", EQUAL, "hex"),
    ("binary(4)", ["x'01020304'", "x'01'"], "bytea", EQUAL, "hex"),
    ("varbinary(8)", ["x''", "x'ffffffffffffffff'"], "bytea", EQUAL, "hex"),
    ("json", ['\'{"a": [1, 2, null], "b": "x"}\'', "'[]'"], "text", EQUAL, "text"),
    ("enum('small','large')", ["'small'", "'large'"], "text", EQUAL, "text"),
    ("boolean", ["true", "false"], "smallint", EQUAL, "text"),
]


@pytest.fixture(scope="module")
def mysql_proxy(airflow_connections: Pair, mariadb: MariaDB) -> tuple[Pair, str]:
    """A mysql_fdw server (character_set utf8mb4, as the provider sets it) and a schema to import into."""
    pair = airflow_connections
    name = f"mtypes_{uuid.uuid4().hex[:6]}"
    local(pair, "CREATE EXTENSION IF NOT EXISTS mysql_fdw")
    mysql_server_by_hand(pair, mariadb, name, character_set="utf8mb4")
    local(pair, "CREATE SCHEMA {x}", x=name)
    return pair, name


def _mysql_table(mariadb: MariaDB, mysql_type: str, values: list[str], sql_mode: str | None = None) -> str:
    table = f"t_{uuid.uuid4().hex[:8]}"
    rows = ", ".join(f"({i}, {v})" for i, v in enumerate([*values, "NULL"]))
    mariadb.execute(
        f"CREATE TABLE {table} (id int PRIMARY KEY, v {mysql_type}); INSERT INTO {table} VALUES {rows}",
        database=mariadb.database,
        sql_mode=sql_mode,
    )
    return table


def _import(pair: Pair, server: str, table: str, **options: str) -> None:
    from airflow_provider_fdw import sql as q

    local(
        pair,
        "IMPORT FOREIGN SCHEMA shop LIMIT TO ({t}) FROM SERVER {s} INTO {x}{o}",
        t=sql.Identifier(table),
        s=server,
        x=server,
        o=q.options_clause(options),
    )


def _imported_type(pair: Pair, schema: str, table: str) -> str | None:
    rows = local(
        pair,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass({t}) AND attname = 'v'",
        t=sql.Literal(f"{schema}.{table}"),
    )
    return rows[0][0] if rows else None


@pytest.mark.parametrize(
    ("mysql_type", "values", "pg_type", "outcome", "compare"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_mysql_type_round_trip(
    mysql_proxy: tuple[Pair, str],
    mariadb: MariaDB,
    mysql_type: str,
    values: list[str],
    pg_type: str,
    outcome: str,
    compare: str,
) -> None:
    pair, schema = mysql_proxy
    table = _mysql_table(mariadb, mysql_type, values)
    _import(pair, schema, table, import_enum_as_text="true")
    assert _imported_type(pair, schema, table) == pg_type
    if outcome != EQUAL:
        with pytest.raises(Exception, match=outcome.replace("(", r"\(").replace(")", r"\)")):
            local(pair, "SELECT v FROM {t}", t=f"{schema}.{table}")
        return
    mysql_expr, pg_expr = {
        "text": ("v", "v::text"),
        "hex": ("lower(hex(v))", "encode(v, 'hex')"),
        # Each side's own shortest round-trip spelling differs (3.4e38 / 3.4e+38): compare numbers.
        "float": ("v", "v"),
        "timestamp": ("date_format(v, '%Y-%m-%d %H:%i:%s.%f')", "to_char(v, 'YYYY-MM-DD HH24:MI:SS.US')"),
        "time": ("time_format(v, '%H:%i:%s.%f')", "to_char(v, 'HH24:MI:SS.US')"),
    }[compare]
    expected = [
        r[0] for r in mariadb.execute(f"SELECT {mysql_expr} FROM {table} ORDER BY id", database="shop")
    ]
    got = [r[0] for r in local(pair, "SELECT " + pg_expr + " FROM {t} ORDER BY id", t=f"{schema}.{table}")]
    if compare == "float":
        expected = [float(v) if v is not None else None for v in expected]
    if compare == "text" and pg_type == "character(5)":
        got = [v.rstrip() if v is not None else None for v in got]  # bpchar pads; MySQL CHAR strips
    assert got == expected
    assert got[-1] is None  # the NULL row


def test_mysql_set_columns_are_skipped_by_import_with_a_warning(
    mysql_proxy: tuple[Pair, str], mariadb: MariaDB
) -> None:
    pair, schema = mysql_proxy
    table = _mysql_table(mariadb, "set('red','green','blue')", ["'red,blue'", "''"])
    _import(pair, schema, table)
    assert _imported_type(pair, schema, table) is None


def test_mysql_year_columns_make_the_import_fail(mysql_proxy: tuple[Pair, str], mariadb: MariaDB) -> None:
    pair, schema = mysql_proxy
    table = _mysql_table(mariadb, "year", ["1901", "2155"])
    with pytest.raises(Exception, match='type "year" does not exist'):
        _import(pair, schema, table)


def test_mysql_zero_dates_fail_on_select_unless_declared_as_text(
    mysql_proxy: tuple[Pair, str], mariadb: MariaDB
) -> None:
    """'0000-00-00' (stored with a sql_mode that allows zero dates) has no PostgreSQL date: the
    imported date/datetime columns fail on SELECT; a foreign table declaring the column ``text``
    reads the MySQL spelling."""
    pair, schema = mysql_proxy
    for mysql_type, zero in (("date", "'0000-00-00'"), ("datetime", "'0000-00-00 00:00:00'")):
        table = _mysql_table(mariadb, mysql_type, [zero], sql_mode="")
        _import(pair, schema, table)
        with pytest.raises(Exception, match="date/time field value out of range"):
            local(pair, "SELECT v FROM {t}", t=f"{schema}.{table}")
        local(pair, "ALTER FOREIGN TABLE {t} ALTER COLUMN v TYPE text", t=f"{schema}.{table}")
        got = local(pair, "SELECT v FROM {t} ORDER BY id", t=f"{schema}.{table}")
        assert got == [(zero.strip("'"),), (None,)]


def test_mysql_fdw_default_character_set_garbles_non_ascii_under_the_c_locale(
    mysql_proxy: tuple[Pair, str], mariadb: MariaDB
) -> None:
    """Why the mysql_fdw connection type sets character_set utf8mb4: with mysql_fdw's default ('auto',
    from the PostgreSQL server's C locale) 'héllo' arrives as Latin-1 bytes in the UTF-8 database."""
    pair, schema = mysql_proxy
    table = _mysql_table(mariadb, "varchar(20)", ["'héllo'"])
    server = f"auto_{uuid.uuid4().hex[:6]}"
    mysql_server_by_hand(pair, mariadb, server)
    local(
        pair,
        "CREATE FOREIGN TABLE {x}.{t} (id int, v text) SERVER {s} OPTIONS (dbname 'shop', table_name {n})",
        x=sql.Identifier(schema),
        t=sql.Identifier(f"auto_{table}"),
        s=server,
        n=sql.Literal(table),
    )
    garbled = local(pair, "SELECT encode(v::bytea, 'hex') FROM {t} WHERE id = 0", t=f"{schema}.auto_{table}")
    assert garbled == [("68e96c6c6f",)]  # h, é as the single byte E9, llo: not UTF-8
    _import(pair, schema, table)  # through the utf8mb4 server: the two UTF-8 bytes of é
    assert local(pair, "SELECT encode(v::bytea, 'hex') FROM {t} WHERE id = 0", t=f"{schema}.{table}") == [
        ("68c3a96c6c6f",)
    ]


def test_mysql_float_arrives_with_6_significant_digits_and_a_double_cast_keeps_it(
    mysql_proxy: tuple[Pair, str], mariadb: MariaDB
) -> None:
    """MySQL sends FLOAT as text rounded to 6 significant digits (docs/wrappers.md): 16777217 is
    stored as 16777216 and arrives as 16777200. A MySQL view casting it to DOUBLE keeps its value."""
    pair, schema = mysql_proxy
    table = _mysql_table(mariadb, "float", ["16777217", "1234.5678"])
    mariadb.execute(
        f"CREATE VIEW {table}_d AS SELECT id, CAST(v AS DOUBLE) AS v FROM {table}", database=mariadb.database
    )
    _import(pair, schema, table)
    _import(pair, schema, f"{table}_d")

    def read(name: str) -> list:
        return [r[0] for r in local(pair, "SELECT v::float8 FROM {t} ORDER BY id", t=f"{schema}.{name}")]

    assert read(table) == [16777200.0, 1234.5699462890625, None]  # the real nearest 1234.57
    assert read(f"{table}_d") == [16777216.0, 1234.5677490234375, None]
