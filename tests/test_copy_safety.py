"""Replace never changes other tables' rows; staging names never collide; readers at the swap; verify.

Each target shape users really have (children with foreign keys, owned sequences, identity columns,
row triggers, RLS policies, publications, dependent views) against the real pair.
"""

from __future__ import annotations

import uuid

import pytest
from conftest import READER, SOURCE_DB, TARGET_DB, ident

from airflow_provider_fdw._driver import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.bulkcopy import plan_copy
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "safety_src"
ROWS = 100


@pytest.fixture(scope="module")
def safety(airflow_connections):
    """A server to the source and two schemas: ``safety`` on the source, ``proxy_safety`` on the target."""
    pair = airflow_connections
    pair.source.execute("CREATE SCHEMA IF NOT EXISTS safety", dbname=SOURCE_DB)
    pair.source.execute(sql.SQL("GRANT USAGE ON SCHEMA safety TO {}").format(ident(READER)), dbname=SOURCE_DB)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.ensure_extension()
        hook.create_server(SERVER)
        hook.create_user_mapping(SERVER)
    pair.target.execute("CREATE SCHEMA IF NOT EXISTS proxy_safety", dbname=TARGET_DB)
    return pair


class Source:
    """One remote table ``safety.<name>`` (id bigint PK, name text, score int) and its foreign table."""

    def __init__(self, pair, rows: int = ROWS) -> None:
        self.pair = pair
        self.name = f"s_{uuid.uuid4().hex[:8]}"
        self.foreign = f"proxy_safety.{self.name}"
        self.remote(
            "CREATE TABLE {t} (id bigint PRIMARY KEY, name text NOT NULL, score int)",
        )
        self.remote("INSERT INTO {t} SELECT g, 'name ' || g, g %% 7 FROM generate_series(1, %s) g", (rows,))
        pair.source.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(ident("safety", self.name), ident(READER)),
            dbname=SOURCE_DB,
        )
        pair.target.execute(
            sql.SQL(
                "CREATE FOREIGN TABLE {} (id bigint, name text, score int) SERVER {} "
                "OPTIONS (schema_name 'safety', table_name {})"
            ).format(ident("proxy_safety", self.name), ident(SERVER), sql.Literal(self.name)),
            dbname=TARGET_DB,
        )

    def remote(self, statement: str, params=None):
        return self.pair.source.execute(
            sql.SQL(statement).format(t=ident("safety", self.name)), params, dbname=SOURCE_DB
        )

    def rows(self):
        return self.remote("SELECT id, name, score FROM {t} ORDER BY id")


def local(pair, statement: str, params=None, **names):
    """Run ``statement`` on the target database; ``{x}`` placeholders: identifiers (dotted = qualified)
    for strings, else composables (literals)."""
    idents = {k: ident(*v.split(".")) if isinstance(v, str) else v for k, v in names.items()}
    return pair.target.execute(sql.SQL(statement).format(**idents), params, dbname=TARGET_DB)


def copy(source: Source, target: str, **kwargs):
    plan = plan_copy(source.foreign, target, **kwargs)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan)


def new_target(prefix: str = "t") -> str:
    return f"public.{prefix}_{uuid.uuid4().hex[:8]}"


def target_rows(pair, target: str):
    return local(pair, "SELECT id, name, score FROM {t} ORDER BY id", t=target)


# -- item 1: replace never changes a row of another table ------------------------------------------


@pytest.mark.parametrize("on_delete", ["CASCADE", "SET NULL", "NO ACTION"])
def test_replace_leaves_rows_of_a_referencing_child_table_unchanged(safety, on_delete):
    src, t = Source(safety), new_target()
    copy(src, t)
    child = f"{t}_notes"
    local(
        safety,
        "CREATE TABLE {c} (id serial PRIMARY KEY, user_id bigint REFERENCES {t} ON DELETE " + on_delete + ")",
        c=child,
        t=t,
    )
    local(safety, "INSERT INTO {c} (user_id) SELECT g FROM generate_series(1, %s) g", (ROWS,), c=child)
    children = local(safety, "SELECT id, user_id FROM {c} ORDER BY id", c=child)
    assert len(children) == ROWS
    unchanged = copy(src, t)  # nothing changed on the source
    assert unchanged["swap"] == "in-place"
    assert (unchanged["inserted"], unchanged["updated"], unchanged["deleted"]) == (0, 0, 0)
    assert unchanged["unchanged"] == ROWS
    assert local(safety, "SELECT id, user_id FROM {c} ORDER BY id", c=child) == children
    src.remote("UPDATE {t} SET name = name || ' (renamed)', score = score + 1 WHERE id % 10 = 0")
    src.remote("INSERT INTO {t} VALUES (1000, 'new', 1)")
    changed = copy(src, t)
    assert (changed["inserted"], changed["updated"], changed["deleted"]) == (1, ROWS // 10, 0)
    assert local(safety, "SELECT id, user_id FROM {c} ORDER BY id", c=child) == children
    assert target_rows(safety, t) == src.rows()


def test_replace_that_would_orphan_a_child_row_fails_before_any_change_naming_the_constraint(safety):
    src, t = Source(safety), new_target()
    copy(src, t)
    child = f"{t}_orders"
    local(
        safety,
        "CREATE TABLE {c} (id int PRIMARY KEY, user_id bigint CONSTRAINT orders_user_fk "
        "REFERENCES {t} ON DELETE CASCADE)",
        c=child,
        t=t,
    )
    local(safety, "INSERT INTO {c} VALUES (1, 5), (2, 6), (3, NULL)", c=child)
    src.remote("DELETE FROM {t} WHERE id IN (5, 7)")  # 5 is referenced, 7 is not
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 1")
    before = target_rows(safety, t)
    with pytest.raises(FdwError, match=r"orders_user_fk.*\b5\b") as info:
        copy(src, t)
    assert "user_id" in str(info.value)
    assert target_rows(safety, t) == before
    assert local(safety, "SELECT id, user_id FROM {c} ORDER BY id", c=child) == [(1, 5), (2, 6), (3, None)]
    assert leftover_tables(safety, t) == []
    local(safety, "DELETE FROM {c} WHERE user_id = 5", c=child)
    result = copy(src, t)  # nothing references the vanished key any more: it goes
    assert result["deleted"] == 2 and result["updated"] == 1
    assert target_rows(safety, t) == src.rows()


@pytest.mark.parametrize(
    "id_column",
    [
        "id bigserial PRIMARY KEY",
        "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ],
    ids=["bigserial", "identity-always", "identity-by-default"],
)
def test_replace_keeps_the_owned_sequence_and_never_moves_it_backwards(safety, id_column):
    src, t = Source(safety), new_target()
    local(safety, "CREATE TABLE {t} (" + id_column + ", name text NOT NULL, score int)", t=t)
    seq = local(safety, "SELECT pg_get_serial_sequence(%s, 'id')", (t,))[0][0]
    assert seq is not None
    first = copy(src, t)
    assert first["swap"] == "in-place" and target_rows(safety, t) == src.rows()
    # Behind max(id) after the first load: moved up to max(id), so the next default id is new.
    last_value = "SELECT pg_sequence_last_value(%s::regclass)"  # NULL until nextval/setval ran
    assert local(safety, last_value, (seq,)) == [(ROWS,)]
    local(safety, "SELECT setval(%s, 5000)", (seq,))
    second = copy(src, t)
    assert second["inserted"] == second["updated"] == second["deleted"] == 0
    assert local(safety, last_value, (seq,)) == [(5000,)]  # never backwards
    assert local(safety, "SELECT pg_get_serial_sequence(%s, 'id')", (t,))[0][0] == seq
    default_id = local(safety, "INSERT INTO {t} (name) VALUES ('local') RETURNING id", t=t)[0][0]
    assert default_id == 5001


def test_replace_fires_row_triggers_only_for_rows_that_changed(safety):
    src, t = Source(safety), new_target()
    copy(src, t)
    log = f"{t}_audit"
    local(safety, "CREATE TABLE {log} (op text, id bigint)", log=log)
    local(
        safety,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO {log} VALUES (TG_OP, "
        "CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END); RETURN NULL; END $$",
        f=f"{t}_audit_fn",
        log=log,
    )
    local(
        safety,
        "CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()",
        t=t,
        f=f"{t}_audit_fn",
    )
    copy(src, t)
    assert local(safety, "SELECT * FROM {log}", log=log) == []  # nothing changed: nothing fired
    src.remote("UPDATE {t} SET score = -1 WHERE id IN (3, 4)")
    src.remote("DELETE FROM {t} WHERE id = 9")
    src.remote("INSERT INTO {t} VALUES (500, 'x', 0)")
    copy(src, t)
    assert local(safety, "SELECT op, id FROM {log} ORDER BY op, id", log=log) == [
        ("DELETE", 9),
        ("INSERT", 500),
        ("UPDATE", 3),
        ("UPDATE", 4),
    ]
    assert target_rows(safety, t) == src.rows()


def test_replace_keeps_rls_policies_publications_and_dependent_views_working(safety):
    src, t = Source(safety), new_target()
    copy(src, t)
    name = t.split(".")[1]
    local(safety, "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY", t=t)
    local(safety, "CREATE POLICY low_scores ON {t} USING (score < 3)", t=t)
    local(safety, "CREATE PUBLICATION {p} FOR TABLE {t}", p=f"{name}_pub", t=t)
    local(safety, "CREATE VIEW {v} AS SELECT id, name FROM {t} WHERE score = 0", v=f"{t}_v", t=t)
    src.remote("UPDATE {t} SET score = 0 WHERE id = 1")
    result = copy(src, t)
    assert result["swap"] == "in-place" and result["updated"] == 1
    assert target_rows(safety, t) == src.rows()
    assert local(safety, "SELECT count(*) FROM {v}", v=f"{t}_v") == [(ROWS // 7 + 1,)]
    assert local(safety, "SELECT polname FROM pg_policy WHERE polrelid = %s::regclass", (t,)) == [
        ("low_scores",)
    ]
    assert local(safety, "SELECT relrowsecurity FROM pg_class WHERE oid = %s::regclass", (t,)) == [(True,)]
    assert local(
        safety,
        "SELECT count(*) FROM pg_publication_tables WHERE pubname = %s AND tablename = %s",
        (f"{name}_pub", name),
    ) == [(1,)]


def test_replace_of_an_inheritance_parent_leaves_the_children_rows_alone(safety):
    src, t = Source(safety), new_target()
    copy(src, t)
    local(safety, "CREATE TABLE {c} () INHERITS ({t})", c=f"{t}_2023", t=t)
    local(safety, "INSERT INTO {c} VALUES (100000, 'archived', 1)", c=f"{t}_2023")
    result = copy(src, t)
    assert result["swap"] == "in-place"
    assert local(safety, "SELECT id FROM {c}", c=f"{t}_2023") == [(100000,)]
    assert local(safety, "SELECT id, name, score FROM ONLY {t} ORDER BY id", t=t) == src.rows()


def test_replace_without_a_key_goes_in_place_as_a_multiset_diff(safety):
    src, t = Source(safety), new_target()
    local(safety, "CREATE TABLE {t} (id bigint, name text, score int)", t=t)  # no key at all
    local(safety, "CREATE VIEW {v} AS SELECT * FROM {t}", v=f"{t}_v", t=t)
    local(safety, "INSERT INTO {t} VALUES (1, 'name 1', 1), (1, 'name 1', 1), (-1, 'gone', 0)", t=t)
    result = copy(src, t)
    assert result["swap"] == "in-place"
    assert (result["inserted"], result["deleted"], result["unchanged"]) == (ROWS - 1, 2, 1)
    assert target_rows(safety, t) == src.rows()
    again = copy(src, t)
    assert (again["inserted"], again["deleted"], again["unchanged"]) == (0, 0, ROWS)


def leftover_tables(pair, target: str):
    return local(
        pair,
        "SELECT relname FROM pg_class WHERE relname LIKE %s AND relkind = 'r'",
        (target.split(".")[1] + "_fdw%",),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"swap": "fast"}, "swap must be one of"),
        ({"swap": "rename", "mode": "append"}, "swap applies to mode='replace' only"),
    ],
)
def test_bad_swap_arguments_are_refused_before_anything_runs(kwargs, message):
    with pytest.raises(FdwConfigError, match=message):
        plan_copy("proxy_safety.x", "public.y", **kwargs)


def test_append_and_upsert_summaries_count_inserted_updated_and_unchanged_rows(safety):
    src, t, u = Source(safety), new_target(), new_target()
    src.remote("ALTER TABLE {t} ADD COLUMN updated_at timestamptz NOT NULL DEFAULT '2024-01-01'")
    local(safety, "ALTER FOREIGN TABLE {f} ADD COLUMN updated_at timestamptz", f=src.foreign)
    first = copy(src, t, mode="append", watermark_column="updated_at")
    assert (first["inserted"], first["updated"], first["deleted"]) == (ROWS, 0, 0)
    assert first["previous_watermark"] is None and first["watermark"] is not None
    full = copy(src, u, mode="upsert", key_columns=["id"], watermark_column="updated_at")
    assert (full["inserted"], full["updated"]) == (ROWS, 0)
    src.remote("UPDATE {t} SET score = 99, updated_at = '2024-01-02' WHERE id IN (1, 2)")
    src.remote("INSERT INTO {t} VALUES (1000, 'new', 1, '2024-01-02')")
    delta = copy(src, u, mode="upsert", key_columns=["id"], watermark_column="updated_at", overlap="1 day")
    # the overlap re-reads every row (all at 2024-01-01): 2 changed, 1 new, the rest already equal
    assert (delta["inserted"], delta["updated"], delta["deleted"]) == (1, 2, 0)
    assert delta["unchanged"] == ROWS - 2
    assert delta["previous_watermark"].startswith("2023-12-31")  # max(updated_at) - overlap


# -- item 3: staging and retired tables never collide with user objects --------------------------


def test_a_users_tables_with_staging_like_names_survive_replaces(safety):
    src, t = Source(safety), "public.orders"
    lookalikes = [
        f"{t}_fdw_staging",
        f"{t}_fdw_retired",
        f"{t}_fdw_staging_0badc0de",
        "public.orders_staging",
    ]
    for name in lookalikes:
        local(safety, "CREATE TABLE {n} (mine text)", n=name)
        local(safety, "INSERT INTO {n} VALUES ('keep me')", n=name)
    copy(src, t)  # created
    copy(src, t, swap="rename")
    copy(src, t, swap="in_place")
    for name in lookalikes:
        assert local(safety, "SELECT mine FROM {n}", n=name) == [("keep me",)]
    assert target_rows(safety, t) == src.rows()


def test_a_retry_drops_only_the_work_tables_marked_for_its_target(safety):
    from airflow_provider_fdw.hooks.apply import marker
    from airflow_provider_fdw.names import QualifiedName

    src, t, other = Source(safety), new_target(), new_target()
    copy(src, t)
    left = f"{t}_fdw_staging_deadbeef"  # what a killed run leaves behind: marked for its target
    foreign_left = f"{other}_fdw_staging_deadbeef"  # marked for another target
    for name, owner in ((left, t), (foreign_left, other)):
        local(safety, "CREATE TABLE {n} (id bigint)", n=name)
        mark_text = marker(QualifiedName(*owner.split(".")))
        local(safety, "COMMENT ON TABLE {n} IS {m}", n=name, m=sql.Literal(mark_text))
    copy(src, t)
    names = [n for (n,) in local(safety, "SELECT relname FROM pg_class WHERE relname LIKE '%%deadbeef'")]
    assert left.split(".")[1] not in names and foreign_left.split(".")[1] in names
    assert leftover_tables(safety, t) == []  # and the run's own work tables are gone
    assert local(safety, "SELECT obj_description(%s::regclass, 'pg_class')", (t,)) == [(None,)]


# -- item 8: readers at the swap ------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"])
@pytest.mark.parametrize("swap", ["rename", "in_place"])
def test_what_a_reader_whose_snapshot_predates_the_replace_sees(safety, swap, isolation):
    src, t = Source(safety), new_target()
    copy(src, t)
    src.remote("INSERT INTO {t} SELECT g, 'late ' || g, 0 FROM generate_series(1001, 1010) g")
    reader = safety.target.connect(TARGET_DB, autocommit=False)
    try:
        cur = reader.cursor()
        cur.execute(sql.SQL("SET TRANSACTION ISOLATION LEVEL {}").format(sql.SQL(isolation)))
        cur.execute("SELECT 1")  # REPEATABLE READ / SERIALIZABLE: the snapshot is taken here
        result = copy(src, t, swap=swap, lock_timeout="5s")
        assert result["swap"] == ("renamed" if swap == "rename" else "in-place")
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(*t.split("."))))
        seen = cur.fetchone()[0]
    finally:
        reader.rollback()
        reader.close()
    if isolation == "READ COMMITTED":
        assert seen == ROWS + 10  # each statement sees what committed before it: the new rows
    elif swap == "in_place":
        assert seen == ROWS  # the old rows, consistent with everything else in its snapshot
    else:
        assert seen == 0  # a renamed-in table's rows were written after the snapshot: none visible


def test_an_in_place_replace_does_not_wait_for_readers_of_the_target(safety):
    src, t = Source(safety), new_target()
    copy(src, t)
    src.remote("DELETE FROM {t} WHERE id <= 10")
    reader = safety.target.connect(TARGET_DB, autocommit=False)
    try:
        cur = reader.cursor()
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        count = sql.SQL("SELECT count(*) FROM {}").format(ident(*t.split(".")))
        cur.execute(count)
        assert cur.fetchone()[0] == ROWS
        # The reader holds its lock on the target until it ends: in place, the copy does not wait.
        result = copy(src, t, swap="in_place", lock_timeout="2s")
        assert result["deleted"] == 10
        cur.execute(count)
        assert cur.fetchone()[0] == ROWS  # still its own snapshot
    finally:
        reader.rollback()
        reader.close()
    assert target_rows(safety, t) == src.rows()


# -- item 9: verify -------------------------------------------------------------------------------


class TypedSource:
    """A remote table with one column of many built-in types (and an array), imported as is."""

    def __init__(self, pair) -> None:
        self.pair = pair
        self.name = f"v_{uuid.uuid4().hex[:8]}"
        self.foreign = f"proxy_safety.{self.name}"
        remote = ident("safety", self.name)
        pair.source.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, amount numeric, at timestamptz, day date, "
                "span interval, f8 float8, doc jsonb, raw json, note text, code varchar(8), blob bytea, "
                "uid uuid, flag boolean, tags text[])"
            ).format(remote),
            dbname=SOURCE_DB,
        )
        pair.source.execute(
            sql.SQL(
                "INSERT INTO {} SELECT g, g * 1.005, "
                "'2024-03-10 01:30+00'::timestamptz + g * interval '1 hour', '2024-01-02'::date + g, "
                "make_interval(secs => g * 1.5), "
                "CASE g % 50 WHEN 1 THEN 'NaN'::float8 WHEN 2 THEN '-Infinity' WHEN 3 THEN -0.0 "
                "ELSE g / 3.0 END, "
                "jsonb_build_object('g', g), "
                "'{{ \"spaced\" :  1 }}', CASE WHEN g % 9 = 0 THEN NULL ELSE 'ñ ' || g END, 'c' || g % 10, "
                "decode(md5(g::text), 'hex'), md5(g::text)::uuid, g % 2 = 0, ARRAY['a', NULL] "
                "FROM generate_series(1, 500) g"
            ).format(remote),
            dbname=SOURCE_DB,
        )
        pair.source.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(remote, ident(READER)), dbname=SOURCE_DB
        )
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            hook.import_foreign_schema(SERVER, "safety", "proxy_safety", limit_to=[self.name])


@pytest.mark.parametrize("parallelism", [1, 3])
def test_verify_checksum_matches_the_source_snapshot_for_every_apply(safety, parallelism):
    src, t = TypedSource(safety), new_target()
    created = copy(src, t, verify="checksum", key_columns=["id"], parallelism=parallelism)
    assert created["swap"] == "created"
    check = created["verify"]
    assert check["mode"] == "checksum" and check["result"] == "match" and check["rows"] == 500
    assert check["not_checksummed"] == ["tags"] and check["checksum"] is not None
    renamed = copy(src, t, verify="checksum", swap="rename", key_columns=["id"], parallelism=parallelism)
    in_place = copy(src, t, verify="checksum", swap="in_place", key_columns=["id"], parallelism=parallelism)
    assert renamed["verify"] == in_place["verify"] == check
    counted = copy(src, t, verify="count", parallelism=parallelism, key_columns=["id"])
    assert counted["verify"] == {
        "mode": "count",
        "result": "match",
        "rows": 500,
        "checksum": None,
        "not_checksummed": [],
    }
    assert copy(src, t)["verify"] is None  # off by default


def test_verify_checksum_catches_values_the_foreign_table_changes_and_leaves_the_target_as_it_was(safety):
    src, t = Source(safety), new_target()
    src.remote("ALTER TABLE {t} ADD COLUMN amount numeric")
    src.remote("UPDATE {t} SET amount = id + 0.005")
    # The foreign table rounds what it reads: numeric(10,2) over the remote's unconstrained numeric.
    local(safety, "ALTER FOREIGN TABLE {f} ADD COLUMN amount numeric(10,2)", f=src.foreign)
    copy(src, t)
    before = local(safety, "SELECT * FROM {t} ORDER BY id", t=t)
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 1")
    assert copy(src, t, verify="count", swap="in_place")["verify"]["result"] == "match"  # counts agree
    local(safety, "UPDATE {t} SET name = 'name 1' WHERE id = 1", t=t)
    for swap in ("in_place", "rename"):
        with pytest.raises(
            FdwError, match=r"Verification failed: .* 100 rows \(checksum -?\d+\), the source"
        ):
            copy(src, t, verify="checksum", swap=swap)
        assert local(safety, "SELECT * FROM {t} ORDER BY id", t=t) == before
        assert leftover_tables(safety, t) == []


def test_verify_checksum_refuses_a_condition_the_remote_cannot_evaluate_before_any_change(safety):
    src, t = Source(safety), new_target()
    copy(src, t)
    before = target_rows(safety, t)
    src.remote("DELETE FROM {t} WHERE id = 1")
    with pytest.raises(FdwConfigError, match="would not compute the source's count/checksum on the remote"):
        copy(src, t, verify="checksum", where="random() >= 0")  # volatile: evaluated locally
    assert target_rows(safety, t) == before and leftover_tables(safety, t) == []
    counted = copy(src, t, verify="count", where="random() >= 0")  # counted locally, same snapshot
    assert counted["verify"]["rows"] == ROWS - 1


@pytest.mark.parametrize("relay", ["psql", "python"])
@pytest.mark.parametrize("verify", ["count", "checksum"])
def test_verify_on_the_direct_path_matches_the_fdw_path(safety, verify, relay):
    src, t = Source(safety), new_target()
    reference = copy(src, new_target(), verify=verify)["verify"]
    plan = plan_copy(src.foreign, t, verify=verify)
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        direct = hook.bulk_copy(plan, direct=True, relay=relay)
    assert direct["path"] == "direct" and direct["verify"] == reference
    assert reference["result"] == "match" and reference["rows"] == ROWS
    assert target_rows(safety, t) == src.rows()


def test_replace_of_a_partitioned_table_without_a_key_changes_only_the_changed_rows(safety):
    src, t = Source(safety), new_target()
    local(safety, "CREATE TABLE {t} (id bigint, name text, score int) PARTITION BY RANGE (id)", t=t)
    local(safety, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (MINVALUE) TO (51)", p=f"{t}_low", t=t)
    local(safety, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (51) TO (MAXVALUE)", p=f"{t}_high", t=t)
    first = copy(src, t)
    assert first["swap"] == "in-place" and target_rows(safety, t) == src.rows()
    # Row 60 sits at the same ctid in its partition as row 10 in the other one.
    src.remote("UPDATE {t} SET name = 'moved on' WHERE id = 60")
    second = copy(src, t)
    assert (second["inserted"], second["deleted"], second["unchanged"]) == (1, 1, ROWS - 1)
    assert target_rows(safety, t) == src.rows()


def test_swap_rename_is_refused_before_any_change_when_something_holds_the_target(safety):
    src, t = Source(safety), new_target()
    copy(src, t)
    local(safety, "CREATE VIEW {v} AS SELECT id FROM {t}", v=f"{t}_v", t=t)
    src.remote("DELETE FROM {t} WHERE id = 1")
    with pytest.raises(FdwConfigError, match=r"swap='rename' would break .*view"):
        copy(src, t, swap="rename")
    assert len(target_rows(safety, t)) == ROWS and leftover_tables(safety, t) == []


@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_append_and_upsert_catch_up_the_targets_sequence(safety, mode):
    src, t = Source(safety), new_target()
    local(safety, "CREATE TABLE {t} (id bigserial PRIMARY KEY, name text NOT NULL, score int)", t=t)
    copy(src, t, mode=mode, key_columns=["id"], watermark_column="id")
    assert local(safety, "INSERT INTO {t} (name) VALUES ('local') RETURNING id", t=t) == [(ROWS + 1,)]


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"])
@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_what_a_reader_sees_across_an_append_or_upsert(safety, mode, isolation):
    src, t = Source(safety), new_target()
    copy(src, t, mode=mode, key_columns=["id"], watermark_column="id")
    src.remote("INSERT INTO {t} SELECT g, 'late ' || g, 0 FROM generate_series(1001, 1010) g")
    reader = safety.target.connect(TARGET_DB, autocommit=False)
    try:
        cur = reader.cursor()
        cur.execute(sql.SQL("SET TRANSACTION ISOLATION LEVEL {}").format(sql.SQL(isolation)))
        count = sql.SQL("SELECT count(*) FROM {}").format(ident(*t.split(".")))
        cur.execute(count)
        assert cur.fetchone()[0] == ROWS
        result = copy(src, t, mode=mode, key_columns=["id"], watermark_column="id", lock_timeout="2s")
        assert result["inserted"] == 10  # and the reader did not make the copy wait
        cur.execute(count)
        seen = cur.fetchone()[0]
    finally:
        reader.rollback()
        reader.close()
    assert seen == (ROWS + 10 if isolation == "READ COMMITTED" else ROWS)


def test_in_place_replace_sees_changes_that_equality_hides(safety):
    src, t = Source(safety), new_target()
    src.remote("ALTER TABLE {t} ADD COLUMN amount numeric, ADD COLUMN f8 float8, ADD COLUMN doc json")
    src.remote("UPDATE {t} SET amount = 1.0, f8 = 0, doc = '{{\"a\": 1}}'")
    local(
        safety,
        "ALTER FOREIGN TABLE {f} ADD COLUMN amount numeric, ADD COLUMN f8 float8, ADD COLUMN doc json",
        f=src.foreign,
    )
    copy(src, t, swap="in_place")
    # 1.0 = 1.00, 0 = -0 and json has no equality at all: each is still a change to copy.
    src.remote("UPDATE {t} SET amount = 1.00 WHERE id = 1")
    src.remote("UPDATE {t} SET f8 = '-0' WHERE id = 2")
    src.remote("UPDATE {t} SET doc = '{{\"a\":1}}' WHERE id = 3")
    src.remote("UPDATE {t} SET score = score + 1 WHERE id = 4")
    result = copy(src, t, swap="in_place")
    assert (result["updated"], result["unchanged"]) == (4, ROWS - 4)
    text = "SELECT id, amount::text, f8::text, doc::text FROM {t} WHERE id <= 3 ORDER BY id"
    assert local(safety, text, t=t) == src.remote(text)


def test_in_place_replace_of_a_self_referencing_table_checks_the_new_rows_against_themselves(safety):
    src, t = Source(safety), new_target()
    src.remote("ALTER TABLE {t} ADD COLUMN parent bigint")
    src.remote("UPDATE {t} SET parent = 1 WHERE id = 2")
    local(safety, "ALTER FOREIGN TABLE {f} ADD COLUMN parent bigint", f=src.foreign)
    copy(src, t)
    local(
        safety,
        "ALTER TABLE {t} ADD CONSTRAINT tree FOREIGN KEY (parent) REFERENCES {t} DEFERRABLE",
        t=t,
    )
    src.remote("DELETE FROM {t} WHERE id = 1")  # row 2 still points at it in the new data
    with pytest.raises(FdwError, match=r"foreign key tree \(parent\) references 1\b"):
        copy(src, t, swap="in_place")
    src.remote("UPDATE {t} SET parent = 3 WHERE id = 2")  # re-pointed: consistent as a whole
    result = copy(src, t, swap="in_place")
    assert (result["swap"], result["deleted"], result["updated"]) == ("in-place", 1, 1)
    assert local(safety, "SELECT parent FROM {t} WHERE id = 2", t=t) == [(3,)]


@pytest.mark.parametrize("mode", ["replace", "upsert"])
def test_verify_catches_a_target_trigger_that_rewrites_the_copied_rows_and_commits_nothing(safety, mode):
    src, t = Source(safety), new_target()
    args = {"key_columns": ["id"]}
    if mode == "upsert":
        src.remote("ALTER TABLE {t} ADD COLUMN version bigint NOT NULL DEFAULT 1")
        local(safety, "ALTER FOREIGN TABLE {f} ADD COLUMN version bigint", f=src.foreign)
        args.update(mode="upsert", watermark_column="version")
    first = copy(src, t, verify="checksum", **args)
    assert first["verify"]["result"] == "match"
    local(
        safety,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "NEW.name := upper(NEW.name); RETURN NEW; END $$",
        f=f"{t}_shout",
    )
    local(
        safety,
        "CREATE TRIGGER shout BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()",
        t=t,
        f=f"{t}_shout",
    )
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 1")
    if mode == "upsert":
        src.remote("UPDATE {t} SET version = 2 WHERE id = 1")
    before = local(safety, "SELECT * FROM {t} ORDER BY id", t=t)
    with pytest.raises(FdwError, match=r"Verification failed: .* after the apply"):
        copy(src, t, verify="checksum", **args)
    assert local(safety, "SELECT * FROM {t} ORDER BY id", t=t) == before
    assert leftover_tables(safety, t) == []


# -- rendered SQL of the new builders -------------------------------------------------------------


def test_diff_update_compares_image_equal_columns_typed_and_the_others_by_text(safety):
    from airflow_provider_fdw import sql as q
    from airflow_provider_fdw.names import QualifiedName

    statement = q.diff_update(
        QualifiedName("public", "t"),
        QualifiedName("public", "s"),
        ["id"],
        ["id", "a", "b", "j"],
        True,
        ["a", "b"],
    )
    conn = safety.target.connect(TARGET_DB)
    try:
        text = statement.as_string(conn)
    finally:
        conn.close()
    # Keys match by equality; a key not compared byte-exactly (id is not in the image-equal list
    # here) is also rewritten when its text form differs (1.0 vs 1.00, 'a' vs 'A' under ICU).
    assert text == (
        'UPDATE ONLY "public"."t" AS t SET "a" = s."a", "b" = s."b", "j" = s."j", "id" = s."id" '
        'FROM "public"."s" AS s WHERE "s"."id" = "t"."id" AND ((t."a", t."b") IS DISTINCT FROM '
        '(s."a", s."b") OR ROW("t"."j", "t"."id")::text IS DISTINCT FROM ROW("s"."j", "s"."id")::text)'
    )


def test_bulk_copy_operator_passes_swap_and_verify_and_returns_the_new_summary_in_xcom(airflow_db, safety):
    from airflow.sdk import DAG

    from airflow_provider_fdw.operators.copy import BulkCopyOperator
    from airflow_provider_fdw.testing.dagrun import run_dag

    src, t = Source(safety), new_target()
    copy(src, t)
    src.remote("UPDATE {t} SET score = -5 WHERE id <= 3")
    with DAG(f"copy_safety_{uuid.uuid4().hex[:6]}", schedule=None) as dag:
        BulkCopyOperator(
            task_id="copy", source_table=src.foreign, target_table=t, swap="in_place", verify="checksum"
        )
    result = run_dag(dag)
    assert result.state == "success", result.task_states
    summary = result.xcom["copy"]
    assert summary["swap"] == "in-place" and (summary["updated"], summary["unchanged"]) == (3, ROWS - 3)
    assert summary["verify"]["result"] == "match" and summary["verify"]["rows"] == ROWS
    assert target_rows(safety, t) == src.rows()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"swap": "copy"}, "swap must be one of"), ({"verify": "md5"}, "verify must be one of")],
)
def test_bulk_copy_operator_refuses_bad_swap_and_verify_when_the_dag_is_parsed(kwargs, message):
    from airflow_provider_fdw.operators.copy import BulkCopyOperator

    with pytest.raises(FdwConfigError, match=message):
        BulkCopyOperator(task_id="t", source_table="proxy_safety.x", target_table="public.y", **kwargs)


def test_replace_of_a_table_published_with_its_schema_goes_in_place(safety):
    src, schema = Source(safety), f"pub_{uuid.uuid4().hex[:8]}"
    t = f"{schema}.users"
    local(safety, "CREATE SCHEMA {s}", s=schema)
    copy(src, t)
    # A schema-wide publication would also publish a staging table renamed in (and its inserts).
    local(safety, "CREATE PUBLICATION {p} FOR TABLES IN SCHEMA {s}", p=f"{schema}_pub", s=schema)
    src.remote("UPDATE {t} SET score = 0 WHERE id = 1")
    result = copy(src, t)
    assert (result["swap"], result["updated"]) == ("in-place", 1)
    assert target_rows(safety, t) == src.rows()


def test_a_retry_drops_the_staging_table_a_run_killed_mid_load_left_behind(safety):
    import threading
    import time

    src, t = Source(safety), new_target()
    copy(src, t)
    done = threading.Event()

    def kill_the_copys_main_session():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not done.is_set():
            loading = local(
                safety,
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
                "AND query LIKE %s",
                ("INSERT INTO %_fdw_staging_%",),
            )
            if loading:  # the session that owns the run sits idle meanwhile: it dies, the load goes on
                local(
                    safety,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND state = 'idle' "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                )
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_copys_main_session)
    killer.start()
    try:
        with pytest.raises(FdwError, match="terminating connection"):  # the cause, not a follow-up
            copy(src, t, where="pg_sleep(0.02) IS NOT NULL")
    finally:
        done.set()
        killer.join()
    left = leftover_tables(safety, t)
    assert len(left) == 1 and "_fdw_staging_" in left[0][0]  # it could not drop its own staging table
    assert len(target_rows(safety, t)) == ROWS
    assert copy(src, t)["rows"] == ROWS  # the retry finds it by its marker and drops it
    assert leftover_tables(safety, t) == []
