"""A watermark column declared narrower than the remote column it reads (review round 4).

Through the FDW path the values arrive converted to the declared type while ``column > bound`` is
evaluated by the remote on its own values: a remote ``timestamp`` declared ``timestamp(0)`` arrives
rounded, the bound recorded is the rounded ``max()``, and rounded down the newest row was appended
again on every run, rounded up a newer row (10:00:05.7 after 10:00:05.6 was copied as 10:00:06)
was never copied, both silently. Such a declaration is now refused before anything changes; the
remote's own type, a wider one, and a timestamp declared timestamptz keep working.
"""

from __future__ import annotations

import uuid

import pytest
from conftest import SOURCE_DB, RemoteTable, fdw_sandbox, local
from test_wrapper_copy import copy as copy_from
from test_wrapper_copy import import_mysql_table

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.hooks.fdw import FdwHook
from fdw_testing.mariadb import MariaDB
from fdw_testing.pgcluster import Pair

SERVER = "rv4_src"


@pytest.fixture(scope="module")
def rv4(airflow_connections):
    return fdw_sandbox(airflow_connections, "rv4", SERVER)


def copy(src: RemoteTable | str, target: str, **kwargs) -> dict:
    source = src.foreign if isinstance(src, RemoteTable) else src
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(source, target, **kwargs))


def new_target() -> str:
    return f"public.w_{uuid.uuid4().hex[:8]}"


def untouched(pair: Pair, target: str) -> bool:
    """No record of ``target`` in the state table."""
    if not exists(pair, "public.fdw_copy_state"):
        return True
    return not local(
        pair, "SELECT 1 FROM public.fdw_copy_state WHERE target_table = %s", (target.split(".")[1],)
    )


def exists(pair: Pair, table: str) -> bool:
    return local(pair, "SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0]


# (declared, remote, values: the second one rounds away from what the remote holds)
NARROWER = [
    ("timestamp(0)", "timestamp", ("2024-01-01 10:00:00", "2024-01-01 10:00:05.4")),
    ("timestamp(0)", "timestamp", ("2024-01-01 10:00:00", "2024-01-01 10:00:05.6")),
    ("numeric(10,2)", "numeric", ("1.00", "2.004")),
    ("timestamptz(3)", "timestamp(6)", ("2024-01-01 10:00:00", "2024-01-01 10:00:05.1234")),
    ("date", "timestamp", ("2024-01-01 10:00:00", "2024-01-02 10:00:00")),
    ("bigint", "numeric(12,3)", ("1", "2.5")),
    ("double precision", "numeric", ("1", "2.5")),
    ("double precision", "real", ("1.0", "1.1")),
    ("text", "integer", ("9", "10")),
]
NARROWER_IDS = [
    "timestamp0_down",
    "timestamp0_up",
    "numeric2",
    "timestamptz3",
    "date",
    "bigint_over_numeric",
    "float_over_numeric",
    "double_over_real",
    "text_over_integer",
]


@pytest.mark.parametrize(("declared", "remote", "values"), NARROWER, ids=NARROWER_IDS)
def test_an_append_over_a_watermark_declared_narrower_than_the_remote_is_refused(
    rv4, declared, remote, values
):
    """The reviewer's case: the second append copied the newest row again (rounded down), or a row
    written later was never copied (rounded up). Refused before anything changes: no target, no
    record; the message names the column, both types and what to declare."""
    src = RemoteTable(rv4, "rv4", SERVER, f"id bigint, wm {declared}", f"id bigint PRIMARY KEY, wm {remote}")
    src.remote("INSERT INTO {t} VALUES (1, %s), (2, %s)", values)
    t = new_target()
    with pytest.raises(
        FdwConfigError, match=r"watermark_column wm of .* is declared .* on the remote"
    ) as err:
        copy(src, t, mode="append", watermark_column="wm")
    message = str(err.value)
    assert "Nothing was changed" in message and "IMPORT FOREIGN SCHEMA" in message, message
    assert f"rv4.{src.name}.wm" in message, message
    assert not exists(rv4, t) and untouched(rv4, t)


def test_the_reviewers_case_refused_with_the_target_there_leaves_it_as_it_was(rv4):
    """A target filled by a replace (no watermark: allowed), then an upsert and an append with the
    narrower watermark: refused, the target's rows and its (absent) record unchanged."""
    src = RemoteTable(rv4, "rv4", SERVER, "id bigint, wm timestamp(0)", "id bigint PRIMARY KEY, wm timestamp")
    src.remote("INSERT INTO {t} VALUES (1, '2024-01-01 10:00:00'), (2, '2024-01-01 10:00:05.6')")
    t = new_target()
    assert copy(src, t, mode="replace")["rows"] == 2
    src.remote("INSERT INTO {t} VALUES (3, '2024-01-01 10:00:05.7')")
    for kwargs in ({"mode": "append"}, {"mode": "upsert", "key_columns": ["id"]}):
        with pytest.raises(FdwConfigError, match=r"timestamp\(0\) without time zone but is timestamp\(6\)"):
            copy(src, t, watermark_column="wm", transport="fdw", **kwargs)
    assert local(rv4, "SELECT id FROM {t} ORDER BY id", t=t) == [(1,), (2,)]
    assert untouched(rv4, t)


@pytest.mark.parametrize("how", ["view", "partitioned"])
def test_a_view_or_partitioned_table_over_a_narrower_declaration_is_refused(rv4, how):
    """The bound is passed on to the foreign tables a view or a partitioned table reads: their
    declared types are compared with the remote's too."""
    src = RemoteTable(
        rv4, "rv4", SERVER, "id bigint NOT NULL, wm numeric(10,2)", "id bigint PRIMARY KEY, wm numeric"
    )
    src.remote("INSERT INTO {t} VALUES (1, 1.00), (2, 2.004)")
    name = f"public.r_{uuid.uuid4().hex[:8]}"
    if how == "view":
        local(rv4, "CREATE VIEW {v} AS SELECT id, wm FROM {f}", v=name, f=src.foreign)
    else:
        local(rv4, "CREATE TABLE {p} (id bigint NOT NULL, wm numeric(10,2)) PARTITION BY RANGE (id)", p=name)
        local(rv4, "ALTER TABLE {p} ATTACH PARTITION {f} FOR VALUES FROM (1) TO (100)", p=name, f=src.foreign)
    t = new_target()
    with pytest.raises(FdwConfigError, match=r"read from the foreign table .* is declared numeric\(10,2\)"):
        copy(name, t, mode="append", watermark_column="wm")
    assert not exists(rv4, t) and untouched(rv4, t)


DOMAIN = (
    "DO $$ BEGIN CREATE DOMAIN public.rv4_ts AS timestamp(0); "
    "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
)


@pytest.mark.parametrize(
    ("declared", "remote", "message"),
    [
        ("timestamp", "public.rv4_ts", None),  # a remote domain: read from information_schema
        ("timestamp(0)", "public.rv4_ts", None),
        ("date", "public.rv4_ts", r"is declared date but is timestamp\(0\) without time zone on the remote"),
        ("public.rv4_ts", "timestamp", r"is declared rv4_ts but is timestamp\(6\) without time zone"),
        ("public.rv4_ts", "public.rv4_ts", None),
    ],
    ids=[
        "timestamp_over_domain",
        "timestamp0_over_domain",
        "date_over_domain",
        "domain_over_timestamp",
        "domain_both",
    ],
)
def test_domains_are_compared_as_their_base_types(rv4, declared, remote, message):
    """A domain's base type and modifier are what the values are converted to, on either side (a
    remote domain is read from the remote's information_schema, which resolves it)."""
    local(rv4, DOMAIN)
    rv4.source.execute(DOMAIN, dbname=SOURCE_DB)
    src = RemoteTable(rv4, "rv4", SERVER, f"id bigint, wm {declared}", f"id bigint PRIMARY KEY, wm {remote}")
    src.remote("INSERT INTO {t} VALUES (1, '2024-01-01 10:00:00'), (2, '2024-01-01 10:00:05.6')")
    t = new_target()
    if message is not None:
        with pytest.raises(FdwConfigError, match=message):
            copy(src, t, mode="append", watermark_column="wm")
        assert not exists(rv4, t) and untouched(rv4, t)
        return
    assert copy(src, t, mode="append", watermark_column="wm")["rows"] == 2
    assert copy(src, t, mode="append", watermark_column="wm")["rows"] == 0


ALLOWED = [
    ("timestamp", "timestamp", ("2024-01-01 10:00:00", "2024-01-01 10:00:05.4"), "2024-01-01 10:00:05.7"),
    ("timestamp(0)", "timestamp(0)", ("2024-01-01 10:00:00", "2024-01-01 10:00:05"), "2024-01-01 10:00:06"),
    ("timestamp", "timestamp(0)", ("2024-01-01 10:00:00", "2024-01-01 10:00:05"), "2024-01-01 10:00:06"),
    ("numeric", "numeric(10,2)", ("1.00", "2.01"), "2.02"),
    ("numeric(10,2)", "numeric(10,2)", ("1.00", "2.01"), "2.02"),
    ("timestamptz", "timestamp", ("2024-01-01 10:00:00", "2024-01-01 10:00:05.4"), "2024-01-01 10:00:05.7"),
    (
        "timestamp",
        "timestamptz",
        ("2024-01-01 10:00:00+00", "2024-01-01 10:00:05.4+00"),
        "2024-01-01 10:00:05.7+00",
    ),
    ("bigint", "integer", ("1", "2"), "3"),
    ("numeric", "double precision", ("0.1", "0.30000000000000004"), "0.4"),
    ("timestamp", "date", ("2024-01-01", "2024-01-02"), "2024-01-03"),
]
ALLOWED_IDS = [
    "timestamp",
    "timestamp0_both",
    "timestamp_over_timestamp0",
    "numeric_over_numeric2",
    "numeric2_both",
    "timestamptz_over_timestamp",
    "timestamp_over_timestamptz",
    "bigint_over_integer",
    "numeric_over_double",
    "timestamp_over_date",
]


@pytest.mark.parametrize("mode", ["append", "upsert"])
@pytest.mark.parametrize(("declared", "remote", "values", "newer"), ALLOWED, ids=ALLOWED_IDS)
def test_the_remotes_type_or_a_wider_one_still_copies_each_row_once(
    rv4, declared, remote, values, newer, mode
):
    """Same type, a wider declared type, timestamptz over timestamp (the copy pins the zone): a second
    run copies nothing, a newer row is copied once."""
    src = RemoteTable(rv4, "rv4", SERVER, f"id bigint, wm {declared}", f"id bigint PRIMARY KEY, wm {remote}")
    src.remote("INSERT INTO {t} VALUES (1, %s), (2, %s)", values)
    t = new_target()
    kwargs = {"mode": mode, "watermark_column": "wm"} | ({"key_columns": ["id"]} if mode == "upsert" else {})
    assert copy(src, t, **kwargs)["rows"] == 2
    again = copy(src, t, **kwargs)
    assert local(rv4, "SELECT count(*) FROM {t}", t=t)[0][0] == 2
    if mode == "append":
        assert again["rows"] == 0
    src.remote("INSERT INTO {t} VALUES (3, %s)", (newer,))
    copy(src, t, **kwargs)
    assert local(rv4, "SELECT id FROM {t} ORDER BY id", t=t) == [(1,), (2,), (3,)]


# -- mysql_fdw -----------------------------------------------------------------------------------


@pytest.fixture
def mysql_events(pair: Pair, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A MariaDB table (id, a DATETIME(6) ``wm``, a DECIMAL(12,4) ``amount``) imported: (its name,
    its foreign table)."""
    return import_mysql_table(
        mariadb,
        monkeypatch,
        "events",
        "id bigint PRIMARY KEY, wm datetime(6) NOT NULL, amount decimal(12,4) NOT NULL",
        "SELECT 1, '2024-01-01 10:00:00', 1.0000 UNION ALL SELECT 2, '2024-01-01 10:00:05.400000', 2.0040",
    )


@pytest.mark.parametrize(
    ("column", "declared", "message"),
    [
        (
            "wm",
            "timestamp(0)",
            r"is declared timestamp\(0\) without time zone but is DATETIME \(timestamp\(6\)",
        ),
        ("amount", "numeric(12,2)", r"is declared numeric\(12,2\) but is DECIMAL \(numeric with scale 4\)"),
    ],
    ids=["datetime6_as_timestamp0", "decimal4_as_numeric2"],
)
def test_a_mysql_column_declared_narrower_is_refused(pair, mariadb, mysql_events, column, declared, message):
    """The MySQL column's type (DATETIME_PRECISION, NUMERIC_SCALE) is read through mysql_fdw."""
    _, foreign = mysql_events
    local(pair, f"ALTER FOREIGN TABLE {{f}} ALTER COLUMN {{c}} TYPE {declared}", f=foreign, c=column)
    target = new_target()
    with pytest.raises(FdwConfigError, match=message):
        copy_from("mysql_copy", foreign, target, mode="append", watermark_column=column)
    assert not exists(pair, target) and untouched(pair, target)


def test_a_mysql_datetime6_declared_timestamp_copies_each_row_once(pair, mariadb, mysql_events):
    """As imported (DATETIME(6) -> timestamp): each row once, a newer one copied."""
    table, foreign = mysql_events
    target = new_target()
    assert copy_from("mysql_copy", foreign, target, mode="append", watermark_column="wm")["rows"] == 2
    assert copy_from("mysql_copy", foreign, target, mode="append", watermark_column="wm")["rows"] == 0
    mariadb.execute(
        f"INSERT INTO {table} VALUES (3, '2024-01-01 10:00:05.700000', 3)", database=mariadb.database
    )
    assert copy_from("mysql_copy", foreign, target, mode="append", watermark_column="wm")["rows"] == 1
    assert local(pair, "SELECT id FROM {t} ORDER BY id", t=target) == [(1,), (2,), (3,)]
