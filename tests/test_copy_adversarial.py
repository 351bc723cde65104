"""Adversarial review of the copy guarantees (issue 10): target shapes, names and values users really have.

Each test reproduces a defect found by trying to break a guarantee docs/bulk-copy.md states, against
the real source/target pair, and proves the fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
from conftest import SOURCE_DB, TARGET_DB, RemoteTable, fdw_sandbox, ident, local

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.bulkcopy.apply import marker
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.names import parse_qualified_name

SERVER = "adversarial_src"


@pytest.fixture(scope="module")
def adv(airflow_connections):
    """A server to the source; ``adv`` on the source, ``proxy_adv`` (foreign tables) on the target."""
    return fdw_sandbox(airflow_connections, "adv", SERVER)


class Source(RemoteTable):
    """A remote table ``adv.<name>`` with ``columns`` (plain column definitions) plus ``constraints``
    (remote only), and its foreign table."""

    def __init__(self, pair, columns: str, constraints: str = "") -> None:
        super().__init__(pair, "adv", SERVER, columns, remote_columns=columns + constraints, prefix="a")


def copy(source: Source, target: str, **kwargs):
    plan = plan_copy(source.foreign, target, **kwargs)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan)


def new_target(prefix: str = "adv") -> str:
    return f"public.{prefix}_{uuid.uuid4().hex[:8]}"


# -- replace in place: a child referencing a UNIQUE column that is not the diff key ----------------


@pytest.mark.parametrize("on_delete", ["CASCADE", "SET NULL"])
def test_in_place_replace_never_deletes_a_row_a_child_references_by_another_unique_column(adv, on_delete):
    src, t = Source(adv, "id bigint, code text, score int", ", PRIMARY KEY (id), UNIQUE (code)"), new_target()
    src.remote("INSERT INTO {t} SELECT g, 'c' || g, g FROM generate_series(1, 10) g")
    copy(src, t)
    local(adv, "ALTER TABLE {t} ADD UNIQUE (code)", t=t)
    child = f"{t}_child"
    local(
        adv,
        "CREATE TABLE {c} (n int PRIMARY KEY, code text REFERENCES {t} (code) ON DELETE " + on_delete + ")",
        c=child,
        t=t,
    )
    local(adv, "INSERT INTO {c} SELECT g, 'c' || g FROM generate_series(1, 10) g", c=child)
    children = local(adv, "SELECT n, code FROM {c} ORDER BY n", c=child)
    target_before = local(adv, "SELECT id, code, score FROM {t} ORDER BY id", t=t)
    # The upstream rebuilt row 'c1' under a new id: the in-place diff deletes id 1 and inserts id 11,
    # and deleting id 1 would cascade to the child rows referencing 'c1'.
    src.remote("UPDATE {t} SET id = 11 WHERE id = 1")
    with pytest.raises(FdwError, match=r"foreign key \S+ \(code\) = 'c1'.*Nothing was changed"):
        copy(src, t)
    assert local(adv, "SELECT id, code, score FROM {t} ORDER BY id", t=t) == target_before
    assert local(adv, "SELECT n, code FROM {c} ORDER BY n", c=child) == children
    # Matched on the referenced column, the re-keyed row is an update: the children keep their rows.
    result = copy(src, t, key_columns=["code"])
    assert (result["swap"], result["updated"], result["deleted"]) == ("in-place", 1, 0)
    assert local(adv, "SELECT n, code FROM {c} ORDER BY n", c=child) == children


def test_in_place_replace_never_cascades_an_update_of_a_referenced_unique_column(adv):
    src, t = Source(adv, "id bigint, code text, score int", ", PRIMARY KEY (id), UNIQUE (code)"), new_target()
    src.remote("INSERT INTO {t} SELECT g, 'c' || g, g FROM generate_series(1, 10) g")
    copy(src, t)
    local(adv, "ALTER TABLE {t} ADD UNIQUE (code)", t=t)
    child = f"{t}_child"
    local(
        adv,
        "CREATE TABLE {c} (n int PRIMARY KEY, code text REFERENCES {t} (code) ON UPDATE CASCADE)",
        c=child,
        t=t,
    )
    local(adv, "INSERT INTO {c} VALUES (1, 'c1'), (5, 'c5')", c=child)
    children = local(adv, "SELECT n, code FROM {c} ORDER BY n", c=child)
    # 'c1' moves to id 2 and id 1 gets 'c0': updating id 1 would cascade 'c1' -> 'c0' into the child.
    src.remote("UPDATE {t} SET code = 'x' WHERE id = 2")
    src.remote("UPDATE {t} SET code = 'c0' WHERE id = 1")
    src.remote("UPDATE {t} SET code = 'c1' WHERE id = 2")
    with pytest.raises(FdwError, match=r"foreign key \S+ \(code\) = 'c1'.*Nothing was changed"):
        copy(src, t)
    assert local(adv, "SELECT n, code FROM {c} ORDER BY n", c=child) == children


# -- upsert: values with no equality operator, and changes that equality hides ---------------------


def test_upsert_copies_rows_with_json_and_changes_that_equality_hides(adv):
    columns = "id bigint, version int, doc json, amount numeric, f8 float8, p point"
    src, t = Source(adv, columns, ", PRIMARY KEY (id)"), new_target()
    src.remote(
        "INSERT INTO {t} SELECT g, 1, '{{\"a\": 1}}', 1.0, 0, point(g, g) FROM generate_series(1, 10) g"
    )
    args = {"mode": "upsert", "key_columns": ["id"], "watermark_column": "version"}
    copy(src, t, **args)
    # upsert re-reads the rows at the watermark itself (>= max): these changes leave version alone
    src.remote("UPDATE {t} SET doc = '{{\"a\":1}}' WHERE id = 1")  # json keeps its text: a change
    src.remote("UPDATE {t} SET amount = 1.00 WHERE id = 2")  # 1.0 = 1.00, yet it prints differently
    src.remote("UPDATE {t} SET f8 = '-0' WHERE id = 3")  # 0 = -0
    result = copy(src, t, **args)
    assert (result["inserted"], result["updated"], result["unchanged"]) == (0, 3, 7)
    text = "SELECT id, version, doc::text, amount::text, f8::text, p::text FROM {t} ORDER BY id"
    assert local(adv, text, t=t) == src.remote(text)


# -- replace by rename: what holds on to the target besides views and foreign keys -----------------


@pytest.mark.parametrize(
    "holder",
    [
        "CREATE FUNCTION {h}(r {t}) RETURNS bigint LANGUAGE sql AS 'SELECT r.id'",
        "CREATE TABLE {h} (snapshot {t})",
        "CREATE TABLE {h} (snapshots {t}[])",
        "CREATE TABLE {h} (n int); ALTER TABLE {h} ENABLE ROW LEVEL SECURITY; "
        "CREATE POLICY p ON {h} USING (EXISTS (SELECT FROM {t} WHERE id = n))",
    ],
    ids=[
        "function-of-its-row-type",
        "column-of-its-row-type",
        "column-of-its-array-type",
        "policy-elsewhere",
    ],
)
def test_replace_works_when_other_objects_use_the_target_or_its_row_type(adv, holder):
    src, t = Source(adv, "id bigint, name text", ", PRIMARY KEY (id)"), new_target()
    src.remote("INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, 10) g")
    copy(src, t)
    h = f"{t}_holder"
    for statement in holder.split("; "):
        local(adv, statement, t=t, h=h)
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 1")
    result = copy(src, t)
    assert result["swap"] == "in-place"
    assert local(adv, "SELECT name FROM {t} WHERE id = 1", t=t) == [("changed",)]


# -- parallel ranges over a numeric split column with NaN / Infinity -------------------------------


def test_parallel_copy_splits_a_numeric_column_holding_nan_and_infinity(adv):
    src, t = Source(adv, "k numeric, name text"), new_target()
    src.remote("INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, 100) g")
    src.remote(
        "INSERT INTO {t} VALUES ('NaN', 'nan'), ('Infinity', 'inf'), ('-Infinity', '-inf'), (NULL, '')"
    )
    result = copy(src, t, parallelism=3, split_column="k")
    assert result["rows"] == 104
    text = "SELECT k::text, name FROM {t} ORDER BY k NULLS FIRST"
    assert local(adv, text, t=t) == src.remote(text)


# -- hostile names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ['Q"uo te', "Ü" * 31 + "x", "a" * 63, "Mixed Case.dot"],
    ids=["quote-and-space", "63-bytes-unicode", "63-bytes-ascii", "uppercase-and-dot"],
)
def test_copies_into_targets_with_hostile_names(adv, name):
    src = Source(adv, "id bigint, name text", ", PRIMARY KEY (id)")
    src.remote("INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, 10) g")
    schema = f"Adv Schema {uuid.uuid4().hex[:4]}"
    local(adv, "CREATE SCHEMA {s}", s=ident(schema))
    quoted = sql.Identifier(schema, name)
    target = f'"{schema}"."{name.replace(chr(34), chr(34) * 2)}"'
    assert copy(src, target)["swap"] == "created"
    assert copy(src, target)["swap"] == "renamed"
    local(adv, "CREATE VIEW {s}.v AS SELECT * FROM {t}", s=ident(schema), t=quoted)
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 1")
    assert copy(src, target)["swap"] == "in-place"
    result = copy(src, target, mode="append", watermark_column="id")
    assert result["rows"] == 0
    assert local(adv, "SELECT count(*), max(name) FROM {t}", t=quoted) == [(10, "n9")]
    assert local(adv, "SELECT name FROM {t} WHERE id = 1", t=quoted) == [("changed",)]
    left = local(
        adv,
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1",
        (schema,),
    )
    assert sorted(left) == sorted([(name,), ("fdw_copy_state",)])  # + the append's recorded watermark


# -- where: text that reads differently with standard_conforming_strings = off ---------------------

WHERE_FLOW = textwrap.dedent(
    """
    import json, sys
    if sys.argv[1] == "psycopg2":
        sys.modules["psycopg"] = None  # as on an install without psycopg 3: PostgresHook uses psycopg2
    from airflow_provider_fdw.compat import USE_PSYCOPG3
    from airflow_provider_fdw.exceptions import FdwConfigError
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.hooks.fdw import FdwHook
    try:
        plan = plan_copy(sys.argv[2], sys.argv[3], where=sys.argv[4])
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            hook.bulk_copy(plan)
        outcome = "copied"
    except FdwConfigError as exc:
        outcome = "refused: " + str(exc)
    print(json.dumps({"psycopg3": USE_PSYCOPG3, "outcome": outcome}))
    """
)


SMUGGLERS = {
    # Read with backslash escapes (standard_conforming_strings=off), the first literal swallows
    # "' AND name <> '" and a DROP follows.
    "backslash-in-a-string": ("off", "name <> 'x\\' AND name <> '); DROP TABLE {c}; SELECT ('x\\'y'"),
    # '€$a$' is ONE identifier to the server (every non-ASCII character continues it), not '€' and a
    # dollar quote hiding the DROP.
    "dollar-after-a-non-ascii-letter": (
        "on",
        "EXISTS (SELECT 1 AS €$a$)); DROP TABLE {c}; SELECT ((SELECT 1 AS €$a$)",
    ),
}


@pytest.mark.parametrize("case", sorted(SMUGGLERS))
@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_where_cannot_add_a_statement_the_text_check_does_not_see(adv, driver, case):
    src, t = Source(adv, "id bigint, name text"), new_target()
    src.remote("INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, 10) g")
    canary = new_target("canary")
    local(adv, "CREATE TABLE {c} (x int)", c=canary)
    conforming, template = SMUGGLERS[case]
    where = template.replace("{c}", canary)
    local(adv, "ALTER DATABASE {d} SET standard_conforming_strings = " + conforming, d=ident(TARGET_DB))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", WHERE_FLOW, driver, src.foreign, t, where],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
            timeout=120,
            check=False,
        )
    finally:
        local(adv, "ALTER DATABASE {d} RESET standard_conforming_strings", d=ident(TARGET_DB))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["psycopg3"] is (driver == "psycopg")
    assert local(adv, "SELECT to_regclass(%s) IS NOT NULL", (canary,)) == [(True,)]
    assert result["outcome"].startswith("refused: where")


# -- a target with a generated (STORED) column -------------------------------------------------------


@pytest.mark.parametrize("swap", ["rename", "in_place"])
def test_replace_fills_a_target_with_a_generated_column_which_it_recomputes(adv, swap):
    src, t = Source(adv, "id bigint, a int, g int", ", PRIMARY KEY (id)"), new_target()
    src.remote("INSERT INTO {t} SELECT x, x, 0 FROM generate_series(1, 10) x")
    local(
        adv, "CREATE TABLE {t} (id bigint PRIMARY KEY, a int, g int GENERATED ALWAYS AS (a * 2) STORED)", t=t
    )
    with pytest.raises(FdwConfigError, match="g is a generated column of the target"):
        copy(src, t, swap=swap)  # the source's g would be written into it: refused before anything runs
    result = copy(src, t, swap=swap, columns=["id", "a"])
    assert result["swap"] == ("renamed" if swap == "rename" else "in-place")
    src.remote("UPDATE {t} SET a = 100 WHERE id = 1")
    copy(src, t, swap=swap, columns=["id", "a"])
    assert local(adv, "SELECT id, a, g FROM {t} WHERE id <= 2 ORDER BY id", t=t) == [(1, 100, 200), (2, 2, 4)]


# -- keys that are equal but not identical ------------------------------------------------------------


def test_in_place_replace_copies_keys_that_are_equal_but_print_differently(adv):
    src, t = Source(adv, "k numeric, f float8, name text", ", PRIMARY KEY (k)"), new_target()
    src.remote("INSERT INTO {t} VALUES (1.0, 0, 'one'), (2, 0, 'two')")
    copy(src, t)
    local(adv, "CREATE VIEW {v} AS SELECT * FROM {t}", v=f"{t}_v", t=t)  # in place from now on
    src.remote("UPDATE {t} SET k = 1.00 WHERE k = 1")  # 1.0 = 1.00: the same key, printed differently
    result = copy(src, t)
    assert (result["swap"], result["inserted"], result["deleted"]) == ("in-place", 0, 0)
    text = "SELECT k::text, f::text, name FROM {t} ORDER BY k"
    assert local(adv, text, t=t) == src.remote(text)


def test_in_place_replace_copies_keys_that_differ_only_under_a_case_insensitive_collation(adv):
    collation = 'public."adv_ci"'
    for run in (adv.source.execute, adv.target.execute):
        db = SOURCE_DB if run == adv.source.execute else TARGET_DB
        run(
            "DO $$ BEGIN CREATE COLLATION public.adv_ci (provider = icu, locale = 'und-u-ks-level2', "
            "deterministic = false); EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            dbname=db,
        )
    src, t = Source(adv, f"code text COLLATE {collation}, name text", ", PRIMARY KEY (code)"), new_target()
    src.remote("INSERT INTO {t} VALUES ('abc', 'x'), ('def', 'y')")
    copy(src, t)
    local(adv, "CREATE VIEW {v} AS SELECT * FROM {t}", v=f"{t}_v", t=t)
    src.remote("UPDATE {t} SET code = 'ABC' WHERE code = 'abc'")
    result = copy(src, t)
    assert (result["swap"], result["inserted"], result["deleted"]) == ("in-place", 0, 0)
    text = 'SELECT code COLLATE "C", name FROM {t} ORDER BY 1'
    assert local(adv, text, t=t) == src.remote(text)


# -- replace by rename: properties LIKE does not copy ---------------------------------------------


def test_replace_by_rename_keeps_an_unlogged_target_unlogged(adv):
    src, t = Source(adv, "id bigint, name text", ", PRIMARY KEY (id)"), new_target()
    src.remote("INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, 10) g")
    copy(src, t)
    local(adv, "ALTER TABLE {t} SET UNLOGGED", t=t)
    assert copy(src, t)["swap"] == "renamed"
    assert local(adv, "SELECT relpersistence FROM pg_class WHERE oid = %s::regclass", (t,)) == [("u",)]


# -- a failure at COMMIT of the apply (a deferred constraint trigger) --------------------------------


def test_an_apply_that_fails_at_commit_leaves_the_target_and_no_work_table_and_a_retry_converges(adv):
    src, t = Source(adv, "id bigint, name text", ", PRIMARY KEY (id)"), new_target()
    src.remote("INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, 10) g")
    copy(src, t)
    local(
        adv,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.name = 'boom' THEN RAISE EXCEPTION 'boom refused'; END IF; RETURN NULL; END $$",
        f=f"{t}_guard",
    )
    local(
        adv,
        "CREATE CONSTRAINT TRIGGER guard AFTER INSERT OR UPDATE ON {t} DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION {f}()",
        t=t,
        f=f"{t}_guard",
    )
    before = local(adv, "SELECT id, name FROM {t} ORDER BY id", t=t)
    src.remote("UPDATE {t} SET name = 'boom' WHERE id = 1")
    src.remote("UPDATE {t} SET name = 'fine' WHERE id = 2")
    with pytest.raises(FdwError, match="boom refused"):
        copy(src, t)
    assert local(adv, "SELECT id, name FROM {t} ORDER BY id", t=t) == before
    work_tables = local(
        adv,
        "SELECT count(*) FROM pg_class WHERE obj_description(oid, 'pg_class') = %s",
        (marker(parse_qualified_name(t, "target_table")),),
    )
    assert work_tables == [(0,)]
    src.remote("UPDATE {t} SET name = 'calm' WHERE id = 1")
    result = copy(src, t)
    assert (result["swap"], result["updated"]) == ("in-place", 2)
    assert local(adv, "SELECT id, name FROM {t} ORDER BY id", t=t) == src.remote(
        "SELECT id, name FROM {t} ORDER BY id"
    )


# -- upsert on a nullable unique key -----------------------------------------------------------------


def test_upsert_refuses_null_keys_instead_of_inserting_them_again_on_every_run(adv):
    src, t = Source(adv, "code text, version int, name text"), new_target()
    src.remote("INSERT INTO {t} VALUES ('a', 1, 'x'), ('b', 1, 'y')")
    local(adv, "CREATE TABLE {t} (code text UNIQUE, version int, name text)", t=t)
    args = {"mode": "upsert", "key_columns": ["code"], "watermark_column": "version"}
    copy(src, t, **args)
    src.remote("INSERT INTO {t} VALUES (NULL, 2, 'no key')")
    before = local(adv, "SELECT code, version, name FROM {t} ORDER BY code", t=t)
    for _ in range(2):  # a UNIQUE index lets NULLs through and ON CONFLICT never matches them
        with pytest.raises(FdwError, match=r"1 rows to upsert .* have a NULL in the key \(code\)"):
            copy(src, t, **args)
        assert local(adv, "SELECT code, version, name FROM {t} ORDER BY code", t=t) == before
    result = copy(src, t, where="code IS NOT NULL", **args)
    assert result["rows"] == 2


def test_in_place_replace_refuses_null_keys_instead_of_rewriting_them_on_every_run(adv):
    src, t = Source(adv, "code text, name text"), new_target()
    src.remote("INSERT INTO {t} VALUES ('a', 'x'), ('b', 'y'), (NULL, 'no key')")
    local(adv, "CREATE TABLE {t} (code text, name text)", t=t)
    args = {"swap": "in_place", "key_columns": ["code"]}
    with pytest.raises(FdwError, match=r"1 rows of the new data .* have a NULL in the key \(code\)"):
        copy(src, t, **args)  # NULL never equals NULL: the row would be deleted and inserted each run
    assert local(adv, "SELECT count(*) FROM {t}", t=t) == [(0,)]
    result = copy(src, t, where="code IS NOT NULL", **args)
    assert (result["inserted"], result["deleted"]) == (2, 0)
    again = copy(src, t, where="code IS NOT NULL", **args)
    assert (again["inserted"], again["updated"], again["deleted"]) == (0, 0, 0)


@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_a_watermark_at_infinity_is_refused_before_anything_changes(adv, mode):
    src, t = Source(adv, "id int, ts timestamp", ", PRIMARY KEY (id)"), new_target()
    src.remote("INSERT INTO {t} VALUES (1, '2024-01-01')")
    args = {"mode": mode, "key_columns": ["id"], "watermark_column": "ts"}
    copy(src, t, **args)
    src.remote("INSERT INTO {t} VALUES (2, 'infinity'), (3, '2024-06-01')")
    # A bound at infinity would let no later row through: every following run would copy nothing.
    with pytest.raises(FdwError, match=r"ts = 'infinity'"):
        copy(src, t, **args)
    assert local(adv, "SELECT id FROM {t} ORDER BY id", t=t) == [(1,)]
    local(adv, "INSERT INTO {t} VALUES (9, 'infinity')", t=t)  # put there by someone else
    # The bound is the recorded watermark (bulk-copy.md): the row put there by hand does not move it.
    assert copy(src, t, where="ts < 'infinity'", **args)["inserted"] == 1
    assert local(adv, "SELECT id FROM {t} ORDER BY id", t=t) == [(1,), (3,), (9,)]
    # Without a record the bound is max() of the target: at infinity, refused before anything changes.
    local(adv, "DELETE FROM public.fdw_copy_state WHERE target_table = %s", (t.split(".")[1],))
    src.remote("INSERT INTO {t} VALUES (4, '2024-07-01')")
    with pytest.raises(FdwError, match=r"ts = 'infinity'"):
        copy(src, t, where="ts < 'infinity'", **args)
    assert local(adv, "SELECT id FROM {t} ORDER BY id", t=t) == [(1,), (3,), (9,)]
