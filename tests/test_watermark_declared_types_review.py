"""The watermark-type check's own review: watermark columns of every common type, imported by IMPORT
FOREIGN SCHEMA (postgres_fdw and mysql_fdw) or declared by hand, still copy each row once (an interval
with fields and a precision, its domain, a view joining another table with a column of the same name
were refused); a numeric declared over a remote real is refused (the newest row was copied again on
every run); a remote the check cannot read (a materialized view, no privilege) is logged."""

from __future__ import annotations

import logging
import uuid

import pytest
from conftest import READER, SOURCE_DB, RemoteTable, fdw_sandbox, ident, local
from test_wrapper_copy import copy as copy_from
from test_wrapper_copy import import_mysql_table

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.hooks.fdw import FdwHook

SCHEMA, SERVER = "rvw", "rvw_src"


@pytest.fixture(scope="module")
def rvw(airflow_connections):
    return fdw_sandbox(airflow_connections, SCHEMA, SERVER)


def copy(source: str, target: str, **kwargs) -> dict:
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(source, target, **kwargs))


def new_target() -> str:
    return f"public.w_{uuid.uuid4().hex[:8]}"


def remote(pair, statement: str, params=None):
    return pair.source.execute(statement, params, dbname=SOURCE_DB)


DOMAINS = (
    "DO $$ BEGIN CREATE DOMAIN public.rvw_tz AS timestamptz; "
    "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    "DO $$ BEGIN CREATE DOMAIN public.rvw_ts3 AS timestamp(3); "
    "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    "DO $$ BEGIN CREATE DOMAIN public.rvw_iv AS interval day to second(3); "
    "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
)


def make_domains(pair) -> None:
    """The DOMAINS on both servers (a domain column is declared with the same domain locally)."""
    for statement in DOMAINS:
        local(pair, statement)
        remote(pair, statement)


# remote column definitions of one table, every common watermark type
IMPORTED_COLUMNS = [
    ("c_tstz", "timestamptz", "'2024-01-01 10:00:00+00'::timestamptz + n * interval '1.5 s'"),
    ("c_ts3", "timestamp(3)", "'2024-01-01 10:00:00'::timestamp + n * interval '1.5 s'"),
    ("c_ts0", "timestamp(0)", "'2024-01-01 10:00:00'::timestamp + n * interval '1 s'"),
    ("c_big", "bigint", "n"),
    ("c_int", "integer", "n"),
    ("c_num", "numeric(20,0)", "n"),
    ("c_num2", "numeric(12,2)", "n + 0.25"),
    ("c_date", "date", "'2024-01-01'::date + n"),
    ("c_serial", "serial", None),
    ("c_ident", "bigint GENERATED ALWAYS AS IDENTITY", None),
    ("c_domtz", "public.rvw_tz", "'2024-01-01 10:00:00+00'::timestamptz + n * interval '1.5 s'"),
    ("c_dom3", "public.rvw_ts3", "'2024-01-01 10:00:00'::timestamp + n * interval '1.5 s'"),
    ("c_domiv", "public.rvw_iv", "n * interval '1.5 s'"),
    ("c_iv", "interval day to second(3)", "n * interval '1.5 s'"),
    ("c_ivplain", "interval", "n * interval '1.5 s'"),
    ("c_time", "time(3)", "'10:00'::time + n * interval '1.5 s'"),
    ("c_timetz", "timetz", "'10:00+00'::timetz + n * interval '1.5 s'"),
]


@pytest.fixture(scope="module")
def imported(rvw):
    """A remote table with every common watermark type, imported with IMPORT FOREIGN SCHEMA."""
    make_domains(rvw)
    name = f"imp_{uuid.uuid4().hex[:8]}"
    cols = ", ".join(f"{c} {t}" for c, t, _ in IMPORTED_COLUMNS)
    remote(rvw, f"CREATE TABLE {SCHEMA}.{name} (id bigint PRIMARY KEY, {cols})")
    remote(rvw, f"GRANT SELECT ON {SCHEMA}.{name} TO {READER}")
    filled = [(c, e) for c, _, e in IMPORTED_COLUMNS if e]
    remote(
        rvw,
        f"INSERT INTO {SCHEMA}.{name} (id, {', '.join(c for c, _ in filled)}) "
        f"SELECT n, {', '.join(e for _, e in filled)} FROM generate_series(1, 5) n",
    )
    local_schema = f"proxy_{SCHEMA}_imp"
    local(rvw, "CREATE SCHEMA IF NOT EXISTS {s}", s=local_schema)
    local(
        rvw,
        "IMPORT FOREIGN SCHEMA {r} LIMIT TO ({t}) FROM SERVER {s} INTO {l}",
        r=SCHEMA,
        t=name,
        s=SERVER,
        l=local_schema,
    )
    return name, f"{local_schema}.{name}"


@pytest.mark.parametrize("column", [c for c, _, _ in IMPORTED_COLUMNS])
@pytest.mark.parametrize("how", ["foreign", "view", "partitioned"])
def test_imported_watermark_types_still_copy(rvw, imported, column, how):
    """IMPORT FOREIGN SCHEMA'd tables (declared = remote): append twice, second run copies nothing."""
    _name, foreign = imported
    source = foreign
    kwargs = {}
    if how == "view":
        source = f"public.v_{uuid.uuid4().hex[:8]}"
        local(rvw, "CREATE VIEW {v} AS SELECT * FROM {f}", v=source, f=foreign)
    elif how == "partitioned":
        source = f"public.p_{uuid.uuid4().hex[:8]}"
        local(rvw, "CREATE TABLE {p} (LIKE {f}) PARTITION BY RANGE (id)", p=source, f=foreign)
        local(rvw, "ALTER TABLE {p} ATTACH PARTITION {f} FOR VALUES FROM (1) TO (100)", p=source, f=foreign)
    elif how == "auto":
        kwargs = {"transport": "auto"}
    t = new_target()
    try:
        first = copy(source, t, mode="append", watermark_column=column, **kwargs)
        assert first["rows"] == 5
        assert copy(source, t, mode="append", watermark_column=column, **kwargs)["rows"] == 0
    finally:
        if how == "partitioned":
            local(rvw, "ALTER TABLE {p} DETACH PARTITION {f}", p=source, f=foreign)


# -- mysql_fdw: IMPORT FOREIGN SCHEMA'd MariaDB tables ---------------------------------------------

MYSQL_COLUMNS = [
    ("c_ts", "timestamp NULL", "'2024-01-01 10:00:00' + INTERVAL seq SECOND"),
    ("c_ts3", "timestamp(3) NULL", "'2024-01-01 10:00:00.000' + INTERVAL seq * 1500000 MICROSECOND"),
    ("c_dt", "datetime", "'2024-01-01 10:00:00' + INTERVAL seq SECOND"),
    ("c_dt3", "datetime(3)", "'2024-01-01 10:00:00.000' + INTERVAL seq * 1500000 MICROSECOND"),
    ("c_dt6", "datetime(6)", "'2024-01-01 10:00:00.000000' + INTERVAL seq * 1500001 MICROSECOND"),
    ("c_int", "int", "seq"),
    ("c_intu", "int unsigned", "seq"),
    ("c_bigu", "bigint unsigned", "seq"),
    ("c_big", "bigint", "seq"),
    ("c_tiny", "tinyint", "seq"),
    ("c_medium", "mediumint", "seq"),
    ("c_smallu", "smallint unsigned", "seq"),
    ("c_dec", "decimal(12,2)", "seq + 0.25"),
    ("c_dec0", "decimal(20,0)", "seq"),
    ("c_date", "date", "'2024-01-01' + INTERVAL seq DAY"),
    ("c_time3", "time(3)", "ADDTIME(TIME'10:00:00.000', SEC_TO_TIME(seq * 1.5))"),
    ("c_double", "double", "seq + 0.5"),
]


@pytest.fixture
def mysql_all(pair, mariadb, monkeypatch):
    cols = ", ".join(f"{c} {t}" for c, t, _ in MYSQL_COLUMNS)
    rows = "SELECT seq, " + ", ".join(e for _, _, e in MYSQL_COLUMNS) + " FROM seq_1_to_5"
    return import_mysql_table(mariadb, monkeypatch, "all", f"id bigint PRIMARY KEY, {cols}", rows)


@pytest.mark.parametrize("column", [c for c, _, _ in MYSQL_COLUMNS])
def test_mysql_imported_watermark_types_still_copy(pair, mariadb, mysql_all, column):
    _, foreign = mysql_all
    declared = local(
        pair,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = {f}::regclass "
        "AND attname = %s",
        (column,),
        f=sql.Literal(foreign),
    )
    print("declared", column, declared)
    t = new_target()
    assert (
        copy_from("mysql_copy", foreign, t, mode="append", watermark_column=column, columns=["id", column])[
            "rows"
        ]
        == 5
    )
    assert (
        copy_from("mysql_copy", foreign, t, mode="append", watermark_column=column, columns=["id", column])[
            "rows"
        ]
        == 0
    )


@pytest.mark.parametrize(
    ("column", "declared"),
    [
        ("c_intu", "bigint"),
        ("c_bigu", "numeric(20,0)"),
        ("c_ts", "timestamptz"),
        ("c_ts", "timestamp(0)"),
        ("c_dec", "numeric(12,2)"),
        ("c_dec0", "bigint"),
        ("c_dt", "timestamp(0)"),
        ("c_dt3", "timestamp(3)"),
        ("c_date", "timestamp"),
        ("c_time3", "time(3)"),
        ("c_tiny", "integer"),
    ],
)
def test_mysql_hand_declared_types_still_copy(pair, mariadb, mysql_all, column, declared):
    _, foreign = mysql_all
    local(pair, f"ALTER FOREIGN TABLE {{f}} ALTER COLUMN {{c}} TYPE {declared}", f=foreign, c=column)
    t = new_target()
    kw = {"mode": "append", "watermark_column": column, "columns": ["id", column]}
    assert copy_from("mysql_copy", foreign, t, **kw)["rows"] == 5
    assert copy_from("mysql_copy", foreign, t, **kw)["rows"] == 0


@pytest.mark.parametrize("declared", ["smallint", "integer"])
def test_mysql_year_declared_by_hand_still_copies(pair, mariadb, mysql_all, declared):
    """mysql_fdw cannot import a YEAR (type "year" does not exist): declared by hand."""
    table, foreign = mysql_all
    mariadb.execute(
        f"ALTER TABLE {table} ADD COLUMN c_year year; UPDATE {table} SET c_year = 2000 + id",
        database=mariadb.database,
    )
    local(pair, f"ALTER FOREIGN TABLE {{f}} ADD COLUMN c_year {declared}", f=foreign)
    t = new_target()
    kw = {"mode": "append", "watermark_column": "c_year", "columns": ["id", "c_year"]}
    assert copy_from("mysql_copy", foreign, t, **kw)["rows"] == 5
    assert copy_from("mysql_copy", foreign, t, **kw)["rows"] == 0


# -- postgres_fdw, declared by hand -----------------------------------------------------------------


def test_view_joining_another_foreign_table_with_a_same_named_column_is_not_refused(rvw):
    """orders.updated_at is the watermark; customers (joined for a name) also has an updated_at,
    declared date by hand. The bound never reaches customers, yet the copy is refused."""
    orders = RemoteTable(rvw, SCHEMA, SERVER, "id bigint, cid bigint, updated_at timestamp")
    customers = RemoteTable(
        rvw,
        SCHEMA,
        SERVER,
        "id bigint, name text, updated_at date",
        "id bigint, name text, updated_at timestamp",
    )
    orders.remote(
        "INSERT INTO {t} SELECT n, n, '2024-01-01 10:00'::timestamp + n * interval '1.5 s' "
        "FROM generate_series(1, 5) n"
    )
    customers.remote("INSERT INTO {t} SELECT n, 'c' || n, now() FROM generate_series(1, 5) n")
    view = f"public.vj_{uuid.uuid4().hex[:8]}"
    local(
        rvw,
        "CREATE VIEW {v} AS SELECT o.id, o.updated_at, c.name FROM {o} o JOIN {c} c ON c.id = o.cid",
        v=view,
        o=orders.foreign,
        c=customers.foreign,
    )
    t = new_target()
    assert copy(view, t, mode="append", watermark_column="updated_at")["rows"] == 5
    assert copy(view, t, mode="append", watermark_column="updated_at")["rows"] == 0


@pytest.mark.parametrize(
    "declared", ["interval day to second", "interval second", "interval minute to second"]
)
def test_interval_ranges_that_keep_every_value_are_not_refused(rvw, declared):
    """AdjustIntervalForTypmod leaves DAY TO SECOND, HOUR TO SECOND, MINUTE TO SECOND and SECOND
    values unchanged (only the fractional digits): nothing is rounded."""
    src = RemoteTable(rvw, SCHEMA, SERVER, f"id bigint, wm {declared}", "id bigint, wm interval")
    src.remote("INSERT INTO {t} SELECT n, n * interval '1 mon 1 day 1.5 s' FROM generate_series(1, 5) n")
    t = new_target()
    assert copy(src.foreign, t, mode="append", watermark_column="wm")["rows"] == 5
    assert copy(src.foreign, t, mode="append", watermark_column="wm")["rows"] == 0


def test_numeric_declared_over_a_remote_real_is_refused_before_anything_changes(rvw):
    """A remote real arrives as its shortest text (1.1), the bound numeric 1.1; the remote compares
    its real 1.1 (1.10000002384…) with it: the newest row was copied again on every run. Declared as
    the remote's real it copies each row once."""
    src = RemoteTable(rvw, SCHEMA, SERVER, "id bigint, wm numeric", "id bigint, wm real")
    src.remote("INSERT INTO {t} VALUES (1, 1.0), (2, 1.1)")
    t = new_target()
    with pytest.raises(FdwConfigError, match="a real arrives as its shortest text"):
        copy(src.foreign, t, mode="append", watermark_column="wm")
    assert local(rvw, "SELECT to_regclass({t})", t=sql.Literal(t)) == [(None,)]
    local(rvw, "ALTER FOREIGN TABLE {f} ALTER COLUMN wm TYPE real", f=src.foreign)
    assert copy(src.foreign, t, mode="append", watermark_column="wm")["rows"] == 2
    assert copy(src.foreign, t, mode="append", watermark_column="wm")["rows"] == 0


def logged_copy(source: str, target: str, **kwargs) -> dict:
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook._log = logging.getLogger("test_review_wm")  # a stdlib logger: caplog sees it
        return hook.bulk_copy(plan_copy(source, target, **kwargs))


def test_a_remote_matview_whose_domain_column_is_declared_narrower_is_logged_as_not_compared(rvw, caplog):
    """information_schema.columns has no materialized views: the remote type of the domain column is
    unknown, so the check says it was skipped ("When the remote cannot say, the check is logged and
    skipped")."""
    caplog.set_level(logging.INFO)
    make_domains(rvw)
    base = RemoteTable(rvw, SCHEMA, SERVER, "id bigint, wm timestamp")
    base.remote("INSERT INTO {t} VALUES (1, '2024-01-01 10:00:00'), (2, '2024-01-01 10:00:05.4')")
    mv = f"mv_{uuid.uuid4().hex[:8]}"
    remote(
        rvw,
        f"CREATE MATERIALIZED VIEW {SCHEMA}.{mv} AS SELECT id, wm::public.rvw_ts3 AS wm "
        f"FROM {SCHEMA}.{base.name}",
    )
    remote(rvw, f"GRANT SELECT ON {SCHEMA}.{mv} TO {READER}")
    foreign = f"proxy_{SCHEMA}.{mv}"
    local(
        rvw,
        "CREATE FOREIGN TABLE {f} (id bigint, wm timestamp(0)) SERVER {s} "
        "OPTIONS (schema_name {r}, table_name {m})",
        f=foreign,
        s=SERVER,
        r=sql.Literal(SCHEMA),
        m=sql.Literal(mv),
    )
    logged_copy(foreign, new_target(), mode="append", watermark_column="wm")
    assert f"The remote does not describe {SCHEMA}.{mv}.wm" in caplog.text, caplog.text[-3000:]


def test_unreadable_remote_information_schema_is_logged_and_the_copy_goes_on(rvw, caplog):
    caplog.set_level(logging.INFO)
    make_domains(rvw)
    src = RemoteTable(rvw, SCHEMA, SERVER, "id bigint, wm public.rvw_ts3")
    src.remote("INSERT INTO {t} VALUES (1, '2024-01-01 10:00:00'), (2, '2024-01-01 10:00:05.4')")
    view = f"public.vi_{uuid.uuid4().hex[:8]}"
    local(rvw, "CREATE VIEW {v} AS SELECT * FROM {f}", v=view, f=src.foreign)
    remote(rvw, "REVOKE SELECT ON information_schema.columns FROM PUBLIC")
    try:
        for source in (src.foreign, view):
            t = new_target()
            assert logged_copy(source, t, mode="append", watermark_column="wm")["rows"] == 2
            assert logged_copy(source, t, mode="append", watermark_column="wm")["rows"] == 0
    finally:
        remote(rvw, "GRANT SELECT ON information_schema.columns TO PUBLIC")
    assert caplog.text.count("Could not read the type") >= 2, caplog.text[-3000:]


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize(
    ("declared", "remote_type", "values", "newer"),
    [
        (
            "timestamptz",
            "timestamp",
            ("2024-01-01 10:00:00", "2024-01-01 10:00:05.4"),
            "2024-01-01 10:00:05.7",
        ),
        ("timestamptz", "date", ("2024-01-01", "2024-01-02"), "2024-01-03"),
    ],
    ids=["timestamptz_over_timestamp", "timestamptz_over_date"],
)
def test_timestamptz_over_timestamp_in_a_non_utc_local_zone(rvw, zone, declared, remote_type, values, newer):
    """The commit allows timestamptz declared over a remote timestamp ("read in the zone the copy
    pins: bulkcopy/state.py"), but only mysql_fdw has a time_zone: postgres_fdw reads in the local
    session's TimeZone, the remote compares in UTC (postgres_fdw pins the remote session)."""
    from conftest import TARGET_DB

    src = RemoteTable(rvw, SCHEMA, SERVER, f"id bigint, wm {declared}", f"id bigint, wm {remote_type}")
    src.remote("INSERT INTO {t} VALUES (1, %s), (2, %s)", values)
    rvw.target.execute(
        sql.SQL("ALTER DATABASE {} SET TimeZone = {}").format(ident(TARGET_DB), sql.Literal(zone)),
        dbname=TARGET_DB,
    )
    try:
        t = new_target()
        kw = {"mode": "append", "watermark_column": "wm"}
        assert copy(src.foreign, t, **kw)["rows"] == 2
        second = copy(src.foreign, t, **kw)["rows"]
        src.remote("INSERT INTO {t} VALUES (3, %s)", (newer,))
        copy(src.foreign, t, **kw)
        ids = [i for (i,) in local(rvw, "SELECT id FROM {t} ORDER BY id", t=t)]
    finally:
        rvw.target.execute(
            sql.SQL("ALTER DATABASE {} RESET TimeZone").format(ident(TARGET_DB)), dbname=TARGET_DB
        )
    assert (second, ids) == (0, [1, 2, 3])


@pytest.mark.parametrize("kind", ["enum", "union_view"])
def test_other_remote_types_and_shapes_still_copy(rvw, kind):
    if kind == "enum":
        d = (
            "DO $$ BEGIN CREATE TYPE public.rvw_mood AS ENUM ('a', 'b', 'c', 'd'); "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        local(rvw, d)
        remote(rvw, d)
        src = RemoteTable(rvw, SCHEMA, SERVER, "id bigint, wm public.rvw_mood")
        src.remote("INSERT INTO {t} VALUES (1, 'a'), (2, 'b')")
        source = src.foreign
    elif kind == "uuid":
        src = RemoteTable(rvw, SCHEMA, SERVER, "id bigint, wm uuid")
        src.remote(
            "INSERT INTO {t} VALUES (1, '00000000-0000-0000-0000-000000000001'), "
            "(2, '00000000-0000-0000-0000-000000000002')"
        )
        source = src.foreign
    else:
        src = RemoteTable(rvw, SCHEMA, SERVER, "id bigint, wm timestamp(3)")
        src.remote("INSERT INTO {t} VALUES (1, '2024-01-01 10:00:00.5')")
        loc = f"public.l_{uuid.uuid4().hex[:8]}"
        local(rvw, "CREATE TABLE {l} (id bigint, wm timestamp(3))", l=loc)
        local(rvw, "INSERT INTO {l} VALUES (2, '2024-01-01 10:00:01.5')", l=loc)
        source = f"public.u_{uuid.uuid4().hex[:8]}"
        local(
            rvw,
            "CREATE VIEW {v} AS SELECT id, wm FROM {l} UNION ALL SELECT id, wm FROM {f}",
            v=source,
            l=loc,
            f=src.foreign,
        )
    t = new_target()
    assert copy(source, t, mode="append", watermark_column="wm")["rows"] == 2
    assert copy(source, t, mode="append", watermark_column="wm")["rows"] == 0
