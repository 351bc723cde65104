"""Row-level security on the TARGET, for a role the policies apply to: refused before any change.

A copy run by a role that the target's policies filter (a non-owner without BYPASSRLS, or the
owner under FORCE ROW LEVEL SECURITY) sees only the rows its SELECT policies let it see, and can
update or delete only the rows its UPDATE / DELETE policies let it touch. Every apply that reads
the target to decide what to write (the in-place replace's diff, the multiset diff, the mirror's
checksums, ``max(watermark)`` of append/upsert) then computes it against part of the table, and the
statements skip the rows the policies protect without an error. The shapes below commit a target
that is not the source (rows kept that the source deleted, rows kept at old values, rows inserted a
second time) and report success.

Expected: such a run fails before anything changes, with an FdwError naming row-level security,
the table and the role, and what to do (run as the owner or a role with BYPASSRLS, or change the
policies for this role). Runs by a role the policies do not apply to (the owner without FORCE, a
BYPASSRLS role) are unaffected (last test).
"""

from __future__ import annotations

import collections
import re
import uuid

import pytest
from conftest import TARGET_DB, RemoteTable, fdw_sandbox, local, map_role_to_reader

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook
from fdw_testing.sample_data import postgres_connection

SERVER = "rls_src"
SANDBOX = "rls"
ROLE = "rls_etl"
PASSWORD = "Rls-Etl-Secret-42"
BYPASS_ROLE = "rls_bypass"
SCHEMA = "rls_data"
ROWS = 69  # score = id % 7; "score < 3" hides 40 rows, among them the highest ids 66..69

PK_COLUMNS = "id bigint PRIMARY KEY, name text NOT NULL, score int"
PLAIN_COLUMNS = "id bigint, name text, score int"

# SELECT hides rows (score >= 3); writes are allowed on every row the role can see.
SELECT_HIDES = [
    "FOR SELECT USING (score < 3)",
    "FOR INSERT WITH CHECK (true)",
    "FOR UPDATE USING (true)",
    "FOR DELETE USING (true)",
]
# One policy for every command.
FOR_ALL = ["FOR ALL USING (score < 3)"]
# Every row is visible, but only rows with score < 3 may be updated or deleted.
WRITES_LIMITED = [
    "FOR SELECT USING (true)",
    "FOR INSERT WITH CHECK (true)",
    "FOR UPDATE USING (score < 3)",
    "FOR DELETE USING (score < 3)",
]


@pytest.fixture(scope="module")
def rls(airflow_connections):
    """The sandbox (server ``rls_src`` to the source), and a local role ``rls_etl`` that owns nothing:
    USAGE on the server and its own user mapping, USAGE on the foreign tables' schema, USAGE and
    CREATE on ``rls_data`` (where targets live), reached through the connection ``rls_local``."""
    pair = fdw_sandbox(airflow_connections, SANDBOX, SERVER)
    local(pair, "CREATE ROLE {r} LOGIN PASSWORD {p}", r=ROLE, p=sql.Literal(PASSWORD))
    local(pair, "CREATE ROLE {r} LOGIN BYPASSRLS PASSWORD {p}", r=BYPASS_ROLE, p=sql.Literal(PASSWORD))
    local(pair, "CREATE SCHEMA {s}", s=SCHEMA)
    for role in (ROLE, BYPASS_ROLE):
        map_role_to_reader(pair, role, SERVER)
        local(pair, "GRANT USAGE ON SCHEMA {s} TO {r}", s=f"proxy_{SANDBOX}", r=role)
        local(pair, "GRANT USAGE, CREATE ON SCHEMA {s} TO {r}", s=SCHEMA, r=role)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_RLS_LOCAL", postgres_connection(pair.target, TARGET_DB, ROLE, PASSWORD))
        mp.setenv(
            "AIRFLOW_CONN_RLS_BYPASS", postgres_connection(pair.target, TARGET_DB, BYPASS_ROLE, PASSWORD)
        )
        yield pair


class Source(RemoteTable):
    """``rls.<name>`` on the source: ids 1..69, ``score = id % 7``; its foreign table is readable by
    the local roles."""

    def __init__(self, pair) -> None:
        super().__init__(pair, SANDBOX, SERVER, PLAIN_COLUMNS, remote_columns=PK_COLUMNS)
        self.remote("INSERT INTO {t} SELECT g, 'name ' || g, g %% 7 FROM generate_series(1, %s) g", (ROWS,))
        for role in (ROLE, BYPASS_ROLE):
            local(pair, "GRANT SELECT ON {f} TO {r}", f=self.foreign, r=role)

    def rows(self):
        return sorted(self.remote("SELECT id, name, score FROM {t}"))


def rls_target(pair, src: Source, policies, keyed: bool = True, who: str = "non-owner") -> str:
    """A target holding the source's rows (written by the superuser), RLS enabled with ``policies``.

    ``who``: ``non-owner`` (owned by the superuser; rls_etl gets SELECT, INSERT, UPDATE, DELETE),
    ``owner+force`` (owned by rls_etl, FORCE ROW LEVEL SECURITY), ``owner`` (owned by rls_etl)."""
    target = f"{SCHEMA}.t_{uuid.uuid4().hex[:8]}"
    local(pair, "CREATE TABLE {t} (" + (PK_COLUMNS if keyed else PLAIN_COLUMNS) + ")", t=target)
    local(pair, "INSERT INTO {t} SELECT id, name, score FROM {f}", t=target, f=src.foreign)
    for role in (ROLE, BYPASS_ROLE):
        local(pair, "GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO {r}", t=target, r=role)
    local(pair, "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY", t=target)
    for number, policy in enumerate(policies):
        local(pair, "CREATE POLICY {n} ON {t} " + policy, n=f"p{number}", t=target)
    if who in ("owner", "owner+force"):
        local(pair, "ALTER TABLE {t} OWNER TO {r}", t=target, r=ROLE)
    if who == "owner+force":
        local(pair, "ALTER TABLE {t} FORCE ROW LEVEL SECURITY", t=target)
    return target


def copy(src: Source, target: str, conn: str = "rls_local", **kwargs):
    plan = plan_copy(src.foreign, target, **kwargs)
    with FdwHook(postgres_conn_id=conn, fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan)


def rows_of(pair, target: str):
    """The target's rows as the superuser sees them (every row)."""
    return sorted(local(pair, "SELECT id, name, score FROM {t}", t=target))


def work_tables(pair, target: str):
    """Tables named after the target (a staging table left behind), the target itself left out."""
    name = target.split(".")[1]
    return local(
        pair,
        "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p', 'u') AND relname LIKE %s AND relname <> %s",
        (f"{name}%", name),
    )


def refused_before_any_change(pair, src: Source, target: str, **kwargs) -> None:
    """The copy must fail naming row-level security, the table and the role, and leave the target
    (as the superuser sees it) and the schema as they were."""
    before = rows_of(pair, target)
    outcome = "no error"
    with pytest.raises(FdwError) as err:
        try:
            summary = copy(src, target, **kwargs)
        finally:
            after = rows_of(pair, target)
            if after != before:  # say what the silent run did, for the failure message
                gone = collections.Counter(before) - collections.Counter(after)
                new = collections.Counter(after) - collections.Counter(before)
                outcome = f"rows removed {sorted(gone.elements())[:5]}, added {sorted(new.elements())[:5]}"
        pytest.fail(  # reached only when the copy succeeded
            f"copy committed under row-level security: {summary}; target vs source: "
            f"{diff_against(src.rows(), after)}; change to the target: {outcome}"
        )
    message = str(err.value)
    assert re.search(r"row[- ]level security", message, re.IGNORECASE), message
    assert target in message, message
    assert ROLE in message, message
    assert "BYPASSRLS" in message, message
    assert rows_of(pair, target) == before
    assert work_tables(pair, target) == []


def diff_against(expected, actual) -> str:
    e, a = collections.Counter(expected), collections.Counter(actual)
    missing, extra = sorted((e - a).elements()), sorted((a - e).elements())
    if not missing and not extra:
        return "equal"
    return f"{len(missing)} missing {missing[:4]}, {len(extra)} extra {extra[:4]}"


TRANSPORTS = pytest.mark.parametrize("transport", ["fdw", "copy"])
SUBJECT_ROLES = pytest.mark.parametrize("who", ["non-owner", "owner+force"])


# -- replace, in place (RLS makes "auto" go in place) ------------------------------------------------


@TRANSPORTS
@SUBJECT_ROLES
@pytest.mark.parametrize("policies", [SELECT_HIDES, FOR_ALL], ids=["select-hides", "for-all"])
def test_in_place_replace_keeps_rows_the_source_deleted_when_a_policy_hides_them(
    rls, transport, who, policies
):
    """Today: success, ``deleted: 0``, and the 40 rows the source no longer has stay in the target."""
    src = Source(rls)
    target = rls_target(rls, src, policies, who=who)
    src.remote("DELETE FROM {t} WHERE score >= 3")
    refused_before_any_change(rls, src, target, transport=transport)


@TRANSPORTS
@SUBJECT_ROLES
@pytest.mark.parametrize("key_columns", [None, ["id"]], ids=["multiset", "key_columns-without-index"])
def test_in_place_replace_without_a_unique_key_inserts_hidden_rows_again(rls, transport, who, key_columns):
    """Today: with nothing changed on the source, every run inserts the 40 hidden rows once more
    (``inserted: 40``): duplicates."""
    src = Source(rls)
    target = rls_target(rls, src, SELECT_HIDES, keyed=False, who=who)
    refused_before_any_change(rls, src, target, transport=transport, key_columns=key_columns)


@TRANSPORTS
@SUBJECT_ROLES
@pytest.mark.parametrize(
    ("keyed", "key_columns"),
    [(True, None), (False, None), (False, ["id"])],
    ids=["primary-key", "multiset", "key_columns-without-index"],
)
def test_in_place_replace_leaves_rows_the_update_and_delete_policies_protect(
    rls, transport, who, keyed, key_columns
):
    """Every row visible, but UPDATE/DELETE only where score < 3. Today: success; row 5 keeps its old
    name (with a primary key or key_columns: ``updated: 0``; without a key the new version is added
    beside the old one), row 6, deleted on the source, stays."""
    src = Source(rls)
    target = rls_target(rls, src, WRITES_LIMITED, keyed=keyed, who=who)
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 5")
    src.remote("DELETE FROM {t} WHERE id = 6")
    refused_before_any_change(rls, src, target, transport=transport, key_columns=key_columns)


# -- append -------------------------------------------------------------------------------------------


@TRANSPORTS
@SUBJECT_ROLES
def test_append_reads_the_watermark_from_visible_rows_only_and_appends_rows_again(rls, transport, who):
    """The first incremental run reads ``max(id)`` from the target: 65 (66..69 are hidden) instead of
    69. Today: success, rows 66..69 appended a second time beside the new rows."""
    src = Source(rls)
    target = rls_target(rls, src, SELECT_HIDES, keyed=False, who=who)
    src.remote("INSERT INTO {t} VALUES (1000, 'new', 4), (1001, 'new too', 1)")
    refused_before_any_change(rls, src, target, transport=transport, mode="append", watermark_column="id")


# -- mirror -------------------------------------------------------------------------------------------


@TRANSPORTS
@SUBJECT_ROLES
@pytest.mark.parametrize("policies", [SELECT_HIDES, FOR_ALL], ids=["select-hides", "for-all"])
def test_mirror_keeps_rows_the_source_deleted_when_a_policy_hides_them(rls, transport, who, policies):
    """The target's checksums cover only the visible rows, which equal the source's. Today: success,
    nothing written, the 40 rows the source deleted stay."""
    src = Source(rls)
    target = rls_target(rls, src, policies, who=who)
    src.remote("DELETE FROM {t} WHERE score >= 3")
    refused_before_any_change(rls, src, target, transport=transport, mode="mirror")


# -- not subject to the policies: unaffected (passes today, must keep passing) ------------------------


@TRANSPORTS
@pytest.mark.parametrize("who", ["owner", "bypassrls"])
def test_a_role_the_policies_do_not_apply_to_still_copies_in_place(rls, transport, who):
    src = Source(rls)
    target = rls_target(rls, src, SELECT_HIDES, who="owner" if who == "owner" else "non-owner")
    src.remote("DELETE FROM {t} WHERE score >= 3")
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 1")
    conn = "rls_local" if who == "owner" else "rls_bypass"
    for mode in ("replace", "mirror"):
        result = copy(src, target, conn=conn, transport=transport, mode=mode)
        assert rows_of(rls, target) == src.rows(), (mode, result)


MODES = pytest.mark.parametrize("mode", ["replace", "mirror"])


@TRANSPORTS
@MODES
def test_policies_on_a_table_referencing_the_target_do_not_let_a_copy_cascade_into_rows_it_cannot_see(
    rls, transport, mode
):
    """The target has no RLS (the task's role owns it). A table referencing it (ON DELETE CASCADE)
    has policies that hide its rows from the role, which may read it. Without the policies the run
    is refused before any change ("would leave rows of … without their parent" / "Mirroring … would
    delete or change the row that rows of … reference"). With them the referencing-rows probe sees
    nothing, the run succeeds (``deleted: 1``) and the foreign key's cascade silently deletes the
    child row (1, 5) the role cannot even see. check_policies_do_not_apply looks at the target only.
    """
    src = Source(rls)
    target = rls_target(rls, src, [], who="owner")
    local(rls, "ALTER TABLE {t} DISABLE ROW LEVEL SECURITY", t=target)
    child = f"{SCHEMA}.c_{uuid.uuid4().hex[:8]}"
    local(rls, "CREATE TABLE {c} (id int, parent bigint REFERENCES {t} ON DELETE CASCADE)", c=child, t=target)
    local(rls, "INSERT INTO {c} VALUES (1, 5), (2, 6)", c=child)
    local(rls, "GRANT SELECT ON {c} TO {r}", c=child, r=ROLE)
    local(rls, "ALTER TABLE {c} ENABLE ROW LEVEL SECURITY", c=child)
    local(rls, "CREATE POLICY only_recent ON {c} FOR SELECT USING (id > 100)", c=child)
    src.remote("DELETE FROM {t} WHERE id = 5")
    before = rows_of(rls, target)
    with pytest.raises(FdwError):
        copy(src, target, transport=transport, mode=mode)
    assert local(rls, "SELECT id, parent FROM {c} ORDER BY 1", c=child) == [(1, 5), (2, 6)]
    assert rows_of(rls, target) == before


@TRANSPORTS
@MODES
def test_a_policy_that_lets_the_role_reach_every_row_does_not_refuse_the_copy(rls, transport, mode):
    """A multi-tenant target: a tenant policy for everyone, and a permissive policy giving the ETL
    role every row (permissive policies are OR-ed). row_security_active() is true, so today the run is
    refused ("would see and change only the rows its policies let rls_etl reach, committing a table
    that is not the source"): false, it reaches every row, and yesterday the same run copied
    correctly. The remedy offered (ownership or BYPASSRLS) needs a superuser's grant."""
    src = Source(rls)
    target = rls_target(
        rls,
        src,
        [
            "AS PERMISSIVE FOR ALL USING (score = nullif(current_setting('app.tenant', true), '')::int)",
            f"AS PERMISSIVE FOR ALL TO {ROLE} USING (true) WITH CHECK (true)",
        ],
    )
    src.remote("DELETE FROM {t} WHERE score >= 3")
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 1")
    result = copy(src, target, transport=transport, mode=mode)
    assert rows_of(rls, target) == src.rows(), result
