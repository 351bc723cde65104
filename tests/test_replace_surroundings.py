"""mode="replace" and what is attached to its target (an adversarial review).

After a reported success the target must hold the source's rows AND keep everything attached to it
(grants, tablespace, settings, comments, schema changes made meanwhile …), or the run must fail
before any change. Each test here failed on the code it was written against.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
import uuid

import pytest
from conftest import TARGET_DB, RemoteTable, fdw_sandbox, local, small_source
from conftest import copy_table as copy
from conftest import first_value as one
from conftest import table_rows as rows

from airflow_provider_fdw.bulkcopy import engine
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwError

SERVER = "swap_keeps_src"
TRANSPORTS = pytest.mark.parametrize("transport", ["fdw", "copy"])


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "swap_keeps", SERVER)


def source(sandbox, rows: int = 20) -> RemoteTable:
    return small_source(sandbox, "swap_keeps", SERVER, rows)


def source_rows(src: RemoteTable) -> list[tuple]:
    return src.remote("SELECT id, name, v FROM {t} ORDER BY id")


def new_target() -> str:
    return f"public.r_{uuid.uuid4().hex[:8]}"


# -- 2. rename swap: schema changes made to the target during the load are reverted -----------------
# The staging table is ``LIKE target`` as the target was when staging began. Under the swap's lock the
# run re-reads what makes it go in place (views, triggers …) but not the target's own definition:
# a column (with its data), an index, a constraint, NOT NULL or a comment added meanwhile vanish.

DDL_DURING_LOAD = {
    "column with data": (
        "ALTER TABLE {t} ADD COLUMN note text DEFAULT 'local data'",
        "SELECT count(*) FROM pg_attribute WHERE attrelid = {l}::regclass AND attname = 'note' "
        "AND NOT attisdropped",
    ),
    "index": (
        "CREATE INDEX {n} ON {t} (name)",
        "SELECT count(*) FROM pg_index WHERE indrelid = {l}::regclass AND NOT indisprimary",
    ),
    "check constraint": (
        "ALTER TABLE {t} ADD CONSTRAINT {n} CHECK (v >= 0)",
        "SELECT count(*) FROM pg_constraint WHERE conrelid = {l}::regclass AND contype = 'c'",
    ),
    "not null": (
        "ALTER TABLE {t} ALTER COLUMN name SET NOT NULL",
        "SELECT count(*) FROM pg_attribute WHERE attrelid = {l}::regclass AND attname = 'name' "
        "AND attnotnull",
    ),
    "column comment": (
        "COMMENT ON COLUMN {t}.name IS 'described'",
        "SELECT count(*) FROM pg_description WHERE objoid = {l}::regclass AND objsubid = 2",
    ),
}


@TRANSPORTS
@pytest.mark.parametrize("ddl", list(DDL_DURING_LOAD))
def test_rename_swap_keeps_what_was_added_to_the_target_during_the_load(sandbox, monkeypatch, ddl, transport):
    src, target = source(sandbox), new_target()
    copy(src, target, transport=transport)
    statement, probe = DDL_DURING_LOAD[ddl]
    real_load = engine.load

    def load_then_alter(*args, **kwargs):  # a migration runs while the rows flow
        done = real_load(*args, **kwargs)
        local(sandbox, statement, t=target, n=f"{target.split('.')[1]}_extra")
        return done

    monkeypatch.setattr(engine, "load", load_then_alter)
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 2")
    with contextlib.suppress(FdwError):  # a refusal is fine, as long as the change survives
        copy(src, target, transport=transport)
    assert one(sandbox, probe, l=sql.Literal(target)) == 1, f"the {ddl} added during the load is gone"


def test_a_definition_changed_during_the_load_is_refused_and_the_next_run_renames(sandbox, monkeypatch):
    src, target = source(sandbox), new_target()
    copy(src, target)
    real_load = engine.load

    def load_then_alter(*args, **kwargs):
        done = real_load(*args, **kwargs)
        local(sandbox, "CREATE INDEX {n} ON {t} (name)", t=target, n=f"{target.split('.')[1]}_name")
        return done

    monkeypatch.setattr(engine, "load", load_then_alter)
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 2")
    before = rows(sandbox, target)
    with pytest.raises(FdwError, match="changed while the new rows were loaded"):
        copy(src, target)
    assert rows(sandbox, target) == before
    monkeypatch.setattr(engine, "load", real_load)
    assert copy(src, target)["swap"] == "renamed"
    assert rows(sandbox, target) == source_rows(src)
    index = "SELECT count(*) FROM pg_index WHERE indrelid = {l}::regclass AND NOT indisprimary"
    assert one(sandbox, index, l=sql.Literal(target)) == 1


# -- 3. rename swap: privileges -----------------------------------------------------------------


def acl(sandbox, table: str):
    return one(sandbox, "SELECT relacl::text FROM pg_class WHERE oid = {l}::regclass", l=sql.Literal(table))


@TRANSPORTS
def test_rename_swap_does_not_grant_what_the_target_did_not(sandbox, transport):
    """The copying role's ALTER DEFAULT PRIVILEGES (readers get SELECT on new tables) apply to the
    staging table; the swap adds the target's grants to them instead of replacing them, so a role the
    target never granted (or had revoked) can read it after the replace."""
    src, target = source(sandbox), new_target()
    reader = f"reader_{uuid.uuid4().hex[:6]}"
    local(sandbox, "CREATE ROLE {r}", r=reader)
    copy(src, target, transport=transport)
    local(sandbox, "GRANT SELECT ON {t} TO PUBLIC", t=target)  # an explicit ACL on the target
    me = one(sandbox, "SELECT current_user")
    local(
        sandbox,
        "ALTER DEFAULT PRIVILEGES FOR ROLE {me} IN SCHEMA public GRANT SELECT, DELETE ON TABLES TO {r}",
        me=me,
        r=reader,
    )
    try:
        before = acl(sandbox, target)
        result = copy(src, target, transport=transport)
        assert result["swap"] == "renamed"
        assert not one(
            sandbox,
            "SELECT has_table_privilege({r}, {t}, 'DELETE')",
            r=sql.Literal(reader),
            t=sql.Literal(target),
        ), "the replace granted DELETE on the target to a role it never granted"
        assert acl(sandbox, target) == before
    finally:
        local(
            sandbox,
            "ALTER DEFAULT PRIVILEGES FOR ROLE {me} IN SCHEMA public "
            "REVOKE SELECT, DELETE ON TABLES FROM {r}",
            me=me,
            r=reader,
        )


def test_rename_swap_of_a_target_without_grants_leaves_no_acl(sandbox):
    src, target = source(sandbox), new_target()
    copy(src, target)
    assert copy(src, target)["swap"] == "renamed"
    assert acl(sandbox, target) is None


def test_rename_swap_keeps_who_granted_a_privilege(sandbox):
    """A grant made by a role holding GRANT OPTION is re-made by the copying role: after the swap
    ``REVOKE … FROM <that role> CASCADE`` no longer takes the privilege away from the grantee."""
    src, target = source(sandbox), new_target()
    copy(src, target)
    a, b = f"ga_{uuid.uuid4().hex[:6]}", f"gb_{uuid.uuid4().hex[:6]}"
    local(sandbox, "CREATE ROLE {a}", a=a)
    local(sandbox, "CREATE ROLE {b}", b=b)
    local(sandbox, "GRANT SELECT ON {t} TO {a} WITH GRANT OPTION", t=target, a=a)
    conn = sandbox.target.connect(TARGET_DB)
    try:
        conn.cursor().execute(sql.SQL("SET ROLE {}").format(sql.Identifier(a)))
        conn.cursor().execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(*target.split(".")), sql.Identifier(b))
        )
    finally:
        conn.close()
    before = acl(sandbox, target)
    # the copying role cannot re-make a grant as another grantor: the replace goes in place
    assert copy(src, target)["swap"] == "in-place"
    assert acl(sandbox, target) == before
    local(sandbox, "REVOKE SELECT ON {t} FROM {a} CASCADE", t=target, a=a)
    assert not one(
        sandbox, "SELECT has_table_privilege({b}, {t}, 'SELECT')", b=sql.Literal(b), t=sql.Literal(target)
    ), f"b keeps SELECT after the revoke cascade (ACL before the swap {before}, after {acl(sandbox, target)})"


# -- 4. rename swap: where the table lives, and its settings -----------------------------------------


@pytest.fixture
def tablespace(sandbox):
    if sandbox.target.datadir is None:
        # the Docker backend's server runs in a container: no directory of the host is one it can own
        # (CI runs the local backend, where this never skips)
        pytest.skip("needs a local cluster (a directory the server owns)")
    path = tempfile.mkdtemp(prefix="fdw-ts-")
    os.chmod(path, 0o700)
    if sandbox.target.run_as:
        user = pwd.getpwnam(sandbox.target.run_as)
        os.chown(path, user.pw_uid, user.pw_gid)
    name = f"ts_{uuid.uuid4().hex[:6]}"
    local(sandbox, "CREATE TABLESPACE {n} LOCATION {p}", n=name, p=sql.Literal(path))
    try:
        yield name
    finally:
        # Emptied and dropped before its directory goes: a later checkpoint (CREATE DATABASE forces one)
        # failed writing a dirty block of a table still there ("could not open file pg_tblspc/…").
        for kind in ("TABLE", "INDEX", "MATERIALIZED VIEW"):
            local(sandbox, f"ALTER {kind} ALL IN TABLESPACE {{n}} SET TABLESPACE pg_default", n=name)
        local(sandbox, "DROP TABLESPACE {n}", n=name)
        shutil.rmtree(path, ignore_errors=True)


@TRANSPORTS
def test_rename_swap_keeps_the_target_and_its_indexes_in_their_tablespace(sandbox, tablespace, transport):
    src, target = source(sandbox), new_target()
    copy(src, target, transport=transport)
    local(sandbox, "ALTER TABLE {t} SET TABLESPACE {s}", t=target, s=tablespace)
    local(sandbox, "ALTER INDEX {i} SET TABLESPACE {s}", i=f"{target}_pkey", s=tablespace)
    probe = (
        "SELECT array_agg(coalesce(s.spcname, 'default') ORDER BY c.relkind) FROM pg_class c "
        "LEFT JOIN pg_tablespace s ON s.oid = c.reltablespace WHERE c.oid IN ({t}::regclass, {i}::regclass)"
    )
    names = {"t": sql.Literal(target), "i": sql.Literal(f"{target}_pkey")}
    assert one(sandbox, probe, **names) == [tablespace, tablespace]
    result = copy(src, target, transport=transport)
    assert one(sandbox, probe, **names) == [tablespace, tablespace], f"moved by the {result['swap']} replace"


# (statement that sets it, query reading it back); {t} the target, {n} its bare name, {l} its name as text
SETTINGS = {
    "column statistics target": (
        "ALTER TABLE {t} ALTER COLUMN name SET STATISTICS 1234",
        "SELECT attstattarget FROM pg_attribute WHERE attrelid = {l}::regclass AND attname = 'name'",
    ),
    "column n_distinct": (
        "ALTER TABLE {t} ALTER COLUMN v SET (n_distinct = -0.5)",
        "SELECT option_value FROM pg_attribute, pg_options_to_table(attoptions) "
        "WHERE attrelid = {l}::regclass AND attname = 'v' AND option_name = 'n_distinct'",
    ),
    "toast storage option": (
        "ALTER TABLE {t} SET (toast.autovacuum_enabled = false)",
        "SELECT t.reloptions::text FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid "
        "WHERE c.oid = {l}::regclass",
    ),
    "index comment": (
        "CREATE INDEX {n}_name ON {t} (name); COMMENT ON INDEX {n}_name IS 'by name'",
        "SELECT obj_description(indexrelid, 'pg_class') FROM pg_index WHERE indrelid = {l}::regclass "
        "AND NOT indisprimary",
    ),
    "primary key comment": (
        "COMMENT ON CONSTRAINT {n}_pkey ON {t} IS 'the id'",
        "SELECT obj_description(oid, 'pg_constraint') FROM pg_constraint WHERE conrelid = {l}::regclass "
        "AND contype = 'p'",
    ),
    "CLUSTER ON index": (
        "ALTER TABLE {t} CLUSTER ON {n}_pkey",
        "SELECT indisclustered FROM pg_index WHERE indrelid = {l}::regclass AND indisprimary",
    ),
    "extended statistics name": (
        "CREATE STATISTICS {n}_deps ON name, v FROM {t}",
        "SELECT stxname::text FROM pg_statistic_ext WHERE stxrelid = {l}::regclass",
    ),
    "FORCE ROW LEVEL SECURITY": (
        "ALTER TABLE {t} FORCE ROW LEVEL SECURITY",
        "SELECT relforcerowsecurity FROM pg_class WHERE oid = {l}::regclass",
    ),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_rename_swap_keeps_the_targets_settings(sandbox, setting):
    src, target = source(sandbox), new_target()
    copy(src, target)
    statement, probe = SETTINGS[setting]
    bare = target.split(".")[1]
    local(sandbox, statement.replace("{n}", bare), t=target)
    before = one(sandbox, probe, l=sql.Literal(target))
    assert before not in (None, -1, False)
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 2")
    result = copy(src, target)
    assert rows(sandbox, target) == source_rows(src)
    assert one(sandbox, probe, l=sql.Literal(target)) == before, (
        f"{setting} lost by the {result['swap']} replace"
    )


def test_rename_swap_keeps_a_typed_table_typed(sandbox):
    """``CREATE TABLE … OF type``: the swapped-in table is no longer of the type."""
    src, target = source(sandbox), new_target()
    kind = f"public.ty_{uuid.uuid4().hex[:6]}"
    local(sandbox, "CREATE TYPE {k} AS (id bigint, name text, v bigint)", k=kind)
    local(sandbox, "CREATE TABLE {t} OF {k} (PRIMARY KEY (id))", t=target, k=kind)
    copy(src, target)
    assert one(
        sandbox, "SELECT reloftype <> 0 FROM pg_class WHERE oid = {l}::regclass", l=sql.Literal(target)
    )


# -- 5. sequences the target's defaults use ---------------------------------------------------------


@pytest.mark.parametrize("swap", ["rename", "in_place"])
def test_replace_catches_up_the_sequence_of_the_targets_default(sandbox, swap):
    """``id bigint DEFAULT nextval('s')`` with ``s`` not OWNED BY the column (a shared sequence, or a
    hand-written schema): after the replace the next local insert takes an id the copy just wrote."""
    src, target = source(sandbox), new_target()
    sequence = f"public.sq_{uuid.uuid4().hex[:6]}"
    local(sandbox, "CREATE SEQUENCE {s}", s=sequence)
    local(
        sandbox,
        "CREATE TABLE {t} (id bigint PRIMARY KEY DEFAULT nextval({l}), name text, v bigint)",
        t=target,
        l=sql.Literal(sequence),
    )
    copy(src, target, swap=swap)
    local(sandbox, "INSERT INTO {t} (name, v) VALUES ('local', 0)", t=target)  # was: duplicate key (id)=(1)
    assert one(sandbox, "SELECT id FROM {t} WHERE name = 'local'", t=target) == 21  # after the 20 copied


def test_a_shared_sequence_never_moves_down_and_an_expression_default_is_left_alone(sandbox):
    """Another table took values further up the shared sequence: it must not go back to max(id) of
    the target. A text default around nextval says nothing about the column's max: not touched."""
    src, target = source(sandbox), new_target()
    sequence = f"public.sq_{uuid.uuid4().hex[:6]}"
    local(sandbox, "CREATE SEQUENCE {s}", s=sequence)
    local(sandbox, "SELECT setval({l}, 1000)", l=sql.Literal(sequence))
    local(
        sandbox,
        "CREATE TABLE {t} (id bigint PRIMARY KEY DEFAULT nextval({l}), name text "
        "DEFAULT 'n' || nextval({l}), v bigint)",
        t=target,
        l=sql.Literal(sequence),
    )
    assert copy(src, target)["swap"] == "renamed"
    assert one(sandbox, "SELECT last_value FROM {s}", s=sequence) == 1000
    local(sandbox, "INSERT INTO {t} (v) VALUES (0)", t=target)


def test_rename_swap_keeps_the_targets_table_access_method(sandbox):
    """``LIKE … INCLUDING ALL`` does not copy the access method: a table of another access method
    (here one on heap's handler, as a columnar one would be) became a heap table."""
    am = f"am_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE ACCESS METHOD {a} TYPE TABLE HANDLER heap_tableam_handler", a=am)
    src, target = source(sandbox), new_target()
    local(sandbox, "CREATE TABLE {t} (id bigint PRIMARY KEY, name text, v bigint) USING {a}", t=target, a=am)
    result = copy(src, target)
    assert rows(sandbox, target) == source_rows(src)
    probe = "SELECT a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.oid = {l}::regclass"
    assert one(sandbox, probe, l=sql.Literal(target)) == am, f"changed by the {result['swap']} replace"


def test_a_default_tablespace_of_the_role_does_not_move_the_target(sandbox, tablespace):
    """A ``default_tablespace`` of the copying role's (ALTER ROLE … SET) made the new table and its
    indexes in that tablespace: the swap moved a target kept in the database's default one."""
    src, target = source(sandbox), new_target()
    copy(src, target)
    role = sql.SQL("ALTER ROLE CURRENT_USER IN DATABASE {} ").format(sql.Identifier(TARGET_DB))
    sandbox.target.execute(role + sql.SQL("SET default_tablespace = {}").format(sql.Identifier(tablespace)))
    try:
        result = copy(src, target)
    finally:
        sandbox.target.execute(role + sql.SQL("RESET default_tablespace"))
    probe = "SELECT array_agg(c.reltablespace) FROM pg_class c WHERE c.oid IN ({t}::regclass, {i}::regclass)"
    placed = one(sandbox, probe, t=sql.Literal(target), i=sql.Literal(f"{target}_pkey"))
    assert placed == [0, 0], f"moved by the {result['swap']} replace"


# -- in place: children's rows the replace does not touch ----------------------------------------


def test_in_place_replace_is_not_refused_for_an_orphan_a_not_valid_foreign_key_already_had(sandbox):
    """A child's foreign key added NOT VALID over old rows whose parent never existed: the run refuses
    every replace, saying the new data 'no longer has' a key the target never had."""
    src, target = source(sandbox), new_target()
    copy(src, target)
    child = f"{target}_c"
    local(sandbox, "CREATE TABLE {c} (id int PRIMARY KEY, pid bigint)", c=child)
    local(sandbox, "INSERT INTO {c} VALUES (1, 999), (2, 3)", c=child)
    local(
        sandbox,
        "ALTER TABLE {c} ADD CONSTRAINT cfk FOREIGN KEY (pid) REFERENCES {t} NOT VALID",
        c=child,
        t=target,
    )
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 4")
    result = copy(src, target)
    assert result["swap"] == "in-place" and result["updated"] == 1
    assert rows(sandbox, target) == source_rows(src)


def test_in_place_replace_ignores_rows_of_inheritance_children_of_a_referencing_table(sandbox):
    """Foreign keys are not inherited: rows of a child table's own inheritance children reference
    nothing, but the orphan check reads them (no ONLY) and refuses the replace."""
    src, target = source(sandbox), new_target()
    copy(src, target)
    child = f"{target}_c"
    local(sandbox, "CREATE TABLE {c} (id int PRIMARY KEY, pid bigint REFERENCES {t})", c=child, t=target)
    local(sandbox, "CREATE TABLE {d} () INHERITS ({c})", c=child, d=f"{child}_d")
    local(sandbox, "INSERT INTO {d} VALUES (1, 999)", d=f"{child}_d")
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 4")
    result = copy(src, target)
    assert result["swap"] == "in-place" and result["updated"] == 1
    assert rows(sandbox, target) == source_rows(src)
