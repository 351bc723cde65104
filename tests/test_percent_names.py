"""Names holding ``%``: PostgreSQL allows them, and psycopg (2 and 3) reads every ``%`` of a statement
run with parameters as a placeholder, inside a quoted identifier or literal too. A copy whose schema,
table, key or watermark column is named ``wm%b`` once failed ("only '%s', '%b', '%t' are allowed as
placeholders"), and a name holding ``%s`` could have taken a parameter's place (a review, 2026-12-07).
"""

from __future__ import annotations

import json
import textwrap
import uuid

import pytest
from conftest import TARGET_DB, RemoteTable, copy_table, fdw_sandbox, ident, local, python_json

from airflow_provider_fdw.compat import sql

# Every spelling psycopg could take for a placeholder or an escape, in each kind of name.
REMOTE_SCHEMA = "pct%s %b"
SERVER = "pct%(x)s_src%%"
TARGET_SCHEMA = "tgt%(x)s %b %s%%"
KEY, WATERMARK = "id%s", "wm%b"
COLUMNS = '"id%s" bigint, "wm%b" bigint, "n%(x)s %%" text'


@pytest.fixture(scope="module")
def pct(airflow_connections):
    """A server named with ``%``, a remote schema and its proxy schema named with ``%``, and a target
    schema named with ``%``."""
    pair = fdw_sandbox(airflow_connections, REMOTE_SCHEMA, SERVER)
    local(pair, "CREATE SCHEMA IF NOT EXISTS {s}", s=ident(TARGET_SCHEMA))
    return pair


def quoted(*parts: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def source(pair, rows: int = 20, key: str = '"id%s"') -> RemoteTable:
    src = RemoteTable(
        pair,
        REMOTE_SCHEMA,
        SERVER,
        COLUMNS,
        remote_columns=COLUMNS + f", PRIMARY KEY ({key})",
        prefix="s%(x)s%b%%",
    )
    src.remote(f"INSERT INTO {{t}} SELECT g, g, 'n%s' || g FROM generate_series(1, {rows}) g")
    return src


def rows(pair, table) -> list[tuple]:
    return local(pair, 'SELECT "id%s", "wm%b", "n%(x)s %%" FROM {t} ORDER BY 1', t=table)


@pytest.mark.parametrize("transport", ["fdw", "copy"])
def test_replace_append_and_upsert_of_names_holding_percent(pct, transport):
    src = source(pct)
    name = f"t%s%b%%%(x)s {uuid.uuid4().hex[:6]}"
    table = ident(TARGET_SCHEMA, name)
    target = quoted(TARGET_SCHEMA, name)
    foreign = ident(f"proxy_{REMOTE_SCHEMA}", src.name)
    kwargs = {"transport": transport}

    assert copy_table(src, target, **kwargs)["swap"] == "created"
    assert rows(pct, table) == rows(pct, foreign)

    # append: the first run reads max() of the target and records it, the second reads the record
    for first, last in ((21, 25), (26, 30)):
        src.remote(f"INSERT INTO {{t}} SELECT g, g, 'a%b' || g FROM generate_series({first}, {last}) g")
        result = copy_table(src, target, mode="append", watermark_column=WATERMARK, **kwargs)
        assert result["rows"] == 5
        assert rows(pct, table) == rows(pct, foreign)
    state = "SELECT watermark FROM {s} WHERE target_table = {n}"
    assert local(pct, state, s=ident(TARGET_SCHEMA, "fdw_copy_state"), n=sql.Literal(name)) == [("30",)]

    # upsert by the key named with %, from the recorded watermark (upsert reads it again: >=)
    src.remote("""UPDATE {t} SET "wm%b" = 100 + "id%s", "n%(x)s %%" = 'u%s' WHERE "id%s" IN (3, 28)""")
    src.remote("INSERT INTO {t} VALUES (31, 131, '%(x)s')")
    result = copy_table(src, target, mode="upsert", key_columns=[KEY], watermark_column=WATERMARK, **kwargs)
    assert result["rows"] == 4
    assert rows(pct, table) == rows(pct, foreign)

    # replace again: in place into the existing target, forgetting the recorded watermark
    src.remote("""UPDATE {t} SET "n%(x)s %%" = '%%' WHERE "id%s" = 1""")
    assert copy_table(src, target, **kwargs)["swap"] in ("in-place", "renamed")
    assert rows(pct, table) == rows(pct, foreign)


@pytest.mark.parametrize("key", ['"id%s"', '"id%s", "wm%b"'], ids=["int", "composite"])
@pytest.mark.parametrize("transport", ["fdw", "copy"])
def test_mirror_of_names_holding_percent(pct, transport, key):
    """Updates, deletes and inserts matched by the key named with ``%`` (the buckets and keys the
    comparison goes down to are parameters: key-hash buckets, or the direct path's key lists)."""
    src = source(pct, rows=3000, key=key)
    name = f"m%s%b%%%(x)s {uuid.uuid4().hex[:6]}"
    table = ident(TARGET_SCHEMA, name)
    foreign = ident(f"proxy_{REMOTE_SCHEMA}", src.name)
    assert copy_table(src, quoted(TARGET_SCHEMA, name))["swap"] == "created"
    # 81 scattered rows: more key ranges than are read one by one, so the keys are a parameter
    src.remote("""UPDATE {t} SET "n%(x)s %%" = 'm%b' WHERE "id%s" % 37 = 0""")
    src.remote("""DELETE FROM {t} WHERE "id%s" = 9""")
    src.remote("INSERT INTO {t} VALUES (5000, 5000, '%s%s')")
    result = copy_table(src, quoted(TARGET_SCHEMA, name), mode="mirror", transport=transport)
    assert (result["inserted"], result["updated"], result["deleted"]) == (1, 81, 1)
    assert rows(pct, table) == rows(pct, foreign)


def test_a_watermark_of_a_type_named_with_percent(pct):
    """The recorded watermark is cast to the column's type as format_type() spells it (SQL text, not
    an identifier): the ``%`` of a domain's name are characters too."""
    domain = ident(TARGET_SCHEMA, "wm%s %(x)s%%")
    local(pct, "CREATE DOMAIN {d} AS bigint", d=domain)
    src = RemoteTable(pct, REMOTE_SCHEMA, SERVER, "id bigint, wm bigint", "id bigint PRIMARY KEY, wm bigint")
    src.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 10) g")
    foreign = ident(f"proxy_{REMOTE_SCHEMA}", src.name)
    local(pct, "ALTER FOREIGN TABLE {f} ALTER COLUMN wm TYPE {d}", f=foreign, d=domain)
    name = f"d{uuid.uuid4().hex[:6]}"
    table = ident(TARGET_SCHEMA, name)
    local(pct, "CREATE TABLE {t} (id bigint PRIMARY KEY, wm {d})", t=table, d=domain)
    target = quoted(TARGET_SCHEMA, name)
    for copied in (10, 0):  # the first run reads max() and records it, the second reads the record
        assert copy_table(src, target, mode="append", watermark_column="wm")["rows"] == copied
    src.remote("INSERT INTO {t} SELECT g, g FROM generate_series(11, 13) g")
    assert copy_table(src, target, mode="upsert", key_columns=["id"], watermark_column="wm")["rows"] == 4
    select = "SELECT id, wm FROM {t} ORDER BY 1"
    assert local(pct, select, t=table) == local(pct, select, t=foreign)


# -- psycopg2: the same names through the whole hook --------------------------------------------------

PSYCOPG2_COPIES = textwrap.dedent(
    """
    import json, sys
    sys.modules["psycopg"] = None  # as on an install without psycopg 3: PostgresHook uses psycopg2
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.compat import USE_PSYCOPG3
    from airflow_provider_fdw.hooks.fdw import FdwHook
    source, target, key, watermark, transport = sys.argv[1:]
    out = {"psycopg3": USE_PSYCOPG3, "rows": []}
    for mode in ("replace", "append", "append", "upsert", "mirror"):
        incremental = {"watermark_column": watermark} if mode in ("append", "upsert") else {}
        keys = {"key_columns": [key]} if mode == "upsert" else {}
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            result = hook.bulk_copy(
                plan_copy(source, target, mode=mode, transport=transport, **incremental, **keys)
            )
        out["rows"].append(result["rows"])
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("transport", ["fdw", "copy"])
def test_copies_of_names_holding_percent_on_psycopg2(pct, transport):
    src = source(pct)
    name = f"p%s%b%%%(x)s {uuid.uuid4().hex[:6]}"
    args = [
        quoted(f"proxy_{REMOTE_SCHEMA}", src.name),
        quoted(TARGET_SCHEMA, name),
        KEY,
        WATERMARK,
        transport,
    ]
    out = python_json(PSYCOPG2_COPIES, *args, timeout=300)
    assert out["psycopg3"] is False
    # replace 20; append: 0 (max() read and recorded), 0 (the record read); upsert from >= 20: 1;
    # then the mirror
    assert out["rows"][:4] == [20, 0, 0, 1]
    table, foreign = ident(TARGET_SCHEMA, name), ident(f"proxy_{REMOTE_SCHEMA}", src.name)
    assert rows(pct, table) == rows(pct, foreign)


# -- the rendering itself, on both drivers -----------------------------------------------------------

RENDER_FLOW = textwrap.dedent(
    """
    import json, sys
    if sys.argv[1] == "psycopg2":
        sys.modules["psycopg"] = None  # as on an install without psycopg 3: PostgresHook uses psycopg2
    from airflow_provider_fdw import compat
    from airflow_provider_fdw.compat import sql, with_params
    from fdw_testing.pgcluster import connect

    conn = connect(json.loads(sys.argv[2]), autocommit=True)
    cur = conn.cursor()
    out = {"psycopg3": compat.USE_PSYCOPG3}
    names = ["a%s", "%b", "%%", "%(x)s", "100%", "%"]
    positional = sql.SQL("SELECT {}, %s, {} AS {}, {}::text").format(
        sql.Literal("%s%b"), sql.Literal("lit%(x)s%%"), sql.Identifier("%b"), compat.Fragment("'%s'")
    )
    cur.execute(with_params(positional, ("p1",), cur), ("p1",))
    out["positional"] = list(cur.fetchone()) + [cur.description[2][0]]
    named = sql.SQL("SELECT %(x)s, {}, t.{} FROM (SELECT 1 AS {}, 2 AS {}) AS t WHERE t.{} = 2").format(
        sql.Placeholder("x"), *(sql.Identifier(n) for n in (names[2], names[2], names[3], names[3]))
    )
    cur.execute(with_params(named, {"x": "p2"}, cur), {"x": "p2"})
    out["named"] = list(cur.fetchone())
    idents = sql.SQL(", ").join(sql.SQL("{} AS {}").format(sql.Literal(n), sql.Identifier(n)) for n in names)
    cur.execute(with_params(sql.SQL("SELECT {}, %s").format(idents), ["last"], cur), ["last"])
    out["all"] = list(cur.fetchone())
    out["all_names"] = [d[0] for d in cur.description]
    # Without parameters nothing is parsed: the statement is run as composed, % untouched.
    plain = sql.SQL("SELECT {} AS {}").format(sql.Literal("%%"), sql.Identifier("%s"))
    out["unchanged"] = with_params(plain, None, cur) is plain
    cur.execute(with_params(plain, None, cur))
    out["plain"] = [cur.fetchone()[0], cur.description[0][0]]
    out["text"] = with_params("SELECT %s", ("x",), cur)
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg3"])
def test_with_params_keeps_percent_in_names_and_literals_on_both_drivers(target, driver):
    out = python_json(RENDER_FLOW, driver, json.dumps(target.conninfo(TARGET_DB)))
    assert out["psycopg3"] is (driver == "psycopg3")
    assert out["positional"] == ["%s%b", "p1", "lit%(x)s%%", "%s", "%b"]
    assert out["named"] == ["p2", "p2", 1]
    names = ["a%s", "%b", "%%", "%(x)s", "100%", "%"]
    assert out["all"] == [*names, "last"]
    assert out["all_names"][:-1] == names
    assert out["unchanged"] is True
    assert out["plain"] == ["%%", "%s"]
    assert out["text"] == "SELECT %s"
