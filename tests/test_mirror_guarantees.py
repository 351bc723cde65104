"""Mirror mode's promise under hostile targets and sources: after a reported success the target equals
the source; otherwise a clear refusal and an unchanged target. Each case once ended in a success with
the target different from the source (an adversarial review, 2026-12-07)."""

from __future__ import annotations

import uuid

import pytest
from conftest import READER, SOURCE_DB, TARGET_DB, RemoteTable, after_trigger, fdw_sandbox, ident, local
from test_mirror import COLUMNS, REMOTE_COLUMNS, SERVER, TRANSPORTS, Source, mirror, new_target, target_rows

from airflow_provider_fdw.bulkcopy import mirror as m
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.sql import mirror as mq


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "mirror", SERVER)


class Named:
    """What ``mirror()`` reads of a source: its foreign table's name."""

    def __init__(self, foreign: str) -> None:
        self.foreign = foreign


def seeded_target(sandbox, src: RemoteTable, create: str, **names: str) -> str:
    """A new target table made by ``create`` (``{t}``: its name; ``names``: other identifiers) and
    filled with the source's rows."""
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(sandbox, create, t=target, **names)
    local(sandbox, "INSERT INTO {t} SELECT * FROM {s}", t=target, s=src.foreign)
    return target


def keyless_source(sandbox, rows: int = 500) -> tuple[RemoteTable, str]:
    """A remote table without a primary key (the mirror is told the key) and a target equal to it."""
    src = RemoteTable(sandbox, "mirror", SERVER, "id bigint, name text")
    src.remote("INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, %s) g", (rows,))
    target = seeded_target(sandbox, src, "CREATE TABLE {t} (id bigint PRIMARY KEY, name text)")
    return src, target


def refused_unchanged(
    sandbox, src: RemoteTable, target: str, error: type[Exception], match: str, rows: str = "", **kwargs
) -> None:
    """The mirror of ``src`` into ``target`` fails with ``error`` (``match``) and the target keeps its
    rows (``rows``: the query that reads them, every column by default)."""
    rows = rows or "SELECT * FROM {t} ORDER BY id"
    before = local(sandbox, rows, t=target)
    with pytest.raises(error, match=match):
        mirror(Named(src.foreign), target, **kwargs)
    assert local(sandbox, rows, t=target) == before


@TRANSPORTS
@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param(
            "IF NEW.id <> 1 THEN UPDATE {t} SET tags = 'bumped by trigger' WHERE id = 1; END IF;",
            r"chose to insert 0, update 1 and delete 0 rows .* but 0 were inserted, 2 updated",
            id="updates-another-row",
        ),
        pytest.param(  # a delete and an insert keep the row total
            "DELETE FROM {t} WHERE id = 2; INSERT INTO {t} (id, name) VALUES (999999, 'by trigger');",
            r"but 1 were inserted, 1 updated and 1 deleted: a trigger, rule or foreign key action",
            id="swaps-a-row-for-another",
        ),
    ],
)
def test_a_trigger_that_writes_rows_the_mirror_did_not_choose_fails_the_run(sandbox, transport, body, error):
    """The verify re-reads only the rows the mirror chose; the transaction's own counts of what it
    wrote show the trigger's other writes."""
    src = Source(sandbox, rows=500)
    target = new_target(sandbox, src)
    after_trigger(sandbox, target, "UPDATE", body)
    before = target_rows(sandbox, target)
    src.remote("UPDATE {t} SET tags = 'changed' WHERE id = 400")
    with pytest.raises(FdwError, match=error):
        mirror(src, target, transport=transport)
    assert target_rows(sandbox, target) == before


@TRANSPORTS
def test_rows_moving_between_partitions_are_not_taken_for_a_triggers_writes(sandbox, transport):
    """An update that moves a row to another partition counts as a delete and an insert there."""
    src = Source(sandbox, rows=400)
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(
        sandbox,
        "CREATE TABLE {t} (id bigint, name text, score numeric, seen timestamptz, tags text, flag boolean, "
        "PRIMARY KEY (id, flag)) PARTITION BY LIST (flag)",
        t=target,
    )
    for value in ("true", "false"):
        part = f"{target}_{value}"
        local(sandbox, f"CREATE TABLE {{p}} PARTITION OF {{t}} FOR VALUES IN ({value})", p=part, t=target)
    local(sandbox, "INSERT INTO {t} SELECT * FROM {s}", t=target, s=src.foreign)
    src.remote("UPDATE {t} SET flag = NOT flag WHERE id IN (3, 4, 5)")
    src.remote("UPDATE {t} SET tags = 'changed' WHERE id = 300")
    result = mirror(src, target, transport=transport, key_columns=["id"])
    assert (result["inserted"], result["updated"], result["deleted"]) == (0, 4, 0)
    assert target_rows(sandbox, target) == src.rows()


@TRANSPORTS
def test_values_whose_chunk_hashes_used_to_cancel_out_are_mirrored(sandbox, transport):
    """A 16-byte value's second 8-byte chunk was seeded like the column 8 places later: the row hash
    (an XOR) stayed the same when both changed together."""
    columns = "id bigint, iv interval, " + ", ".join(f"c{i} text" for i in range(2, 9)) + ", n bigint"
    keyed = columns.replace("id bigint", "id bigint PRIMARY KEY")
    src = RemoteTable(sandbox, "mirror", SERVER, columns, remote_columns=keyed)
    src.remote(
        "INSERT INTO {t} SELECT g, interval '1 day', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 0 "
        "FROM generate_series(1, 100) g"
    )
    target = seeded_target(sandbox, src, "CREATE TABLE {t} (" + keyed + ")")
    src.remote("UPDATE {t} SET iv = interval '0', n = 16777216 WHERE id = 42")  # day 1: byte 11
    result = mirror(Named(src.foreign), target, transport=transport)
    assert result["updated"] == 1
    assert local(sandbox, "SELECT iv::text, n FROM {t} WHERE id = 42", t=target) == [("00:00:00", 16777216)]


def one_column_table(sandbox, column: str, value: str, rows: int = 2000) -> tuple[RemoteTable, str]:
    """A remote table (``id``, then ``column`` = ``value`` in every row) and a target equal to it."""
    columns = f"id bigint, {column}"
    keyed = columns.replace("id bigint", "id bigint PRIMARY KEY")
    src = RemoteTable(sandbox, "mirror", SERVER, columns, remote_columns=keyed)
    src.remote(f"INSERT INTO {{t}} SELECT g, {value} FROM generate_series(1, {rows}) g")
    target = seeded_target(sandbox, src, "CREATE TABLE {t} (" + keyed + ")")
    return src, target


@TRANSPORTS
@pytest.mark.parametrize(
    ("column", "value", "change"),
    [
        pytest.param("v interval", "interval '1 day'", "interval '1 mon'", id="interval-day-to-month"),
        pytest.param("v interval", "interval '1 mon 1 day'", "interval '0'", id="interval-to-zero"),
        pytest.param("v bigint", "1", "4294967296", id="bigint"),
        pytest.param("v float8", "1.0", "1.0000009536743166", id="float8"),  # 0x3ff0000100000001
        pytest.param(
            "v timestamp", "'2024-01-01 00:00:00'", "v - interval '4294967295 microseconds'", id="timestamp"
        ),
        pytest.param("v time", "'00:00:00'", "'01:11:34.967297'", id="time"),  # 2^32 + 1 microseconds
    ],
)
def test_changes_in_the_high_half_of_an_8_byte_value_are_mirrored(sandbox, transport, column, value, change):
    """hashint8extended folds its 8-byte argument to 32 bits (high half XOR low half, to hash as
    int4 does), and bigint, time and the timestamps were hashed by it, and other fixed-length types
    by 8-byte chunks of their send form: values whose halves XOR alike (an interval's day and
    month) ended in "nothing changed"."""
    src, target = one_column_table(sandbox, column, value)
    src.remote(f"UPDATE {{t}} SET v = {change} WHERE id = 1000")
    result = mirror(Named(src.foreign), target, transport=transport)
    assert result["updated"] == 1
    rows = "SELECT id, v::text FROM {t} ORDER BY id"
    assert local(sandbox, rows, t=target) == src.remote(rows)


@TRANSPORTS
def test_a_nan_whose_bits_differ_from_the_targets_is_equal(sandbox, transport):
    """'Infinity' - 'Infinity' is a NaN with the sign bit set; through postgres_fdw (text) the target
    gets the usual NaN. Equal by "=" and text form, yet its send form differs: every run failed its
    check after an update that changed nothing."""
    src, target = one_column_table(sandbox, "v float8", "g")
    src.remote("UPDATE {t} SET v = 'Infinity'::float8 - 'Infinity'::float8 WHERE id IN (7, 1000)")
    local(sandbox, "UPDATE {t} SET v = 'NaN' WHERE id = 7", t=target)  # id 1000: a change, 1000 -> NaN
    assert mirror(Named(src.foreign), target, transport=transport)["updated"] == 1
    again = mirror(Named(src.foreign), target, transport=transport)
    assert (again["updated"], again["rows_fetched"]) == (0, 0)
    rows = "SELECT id, v::text FROM {t} ORDER BY id"
    assert local(sandbox, rows, t=target) == src.remote(rows)


def swap_collision(sandbox, candidates: int = 300_000) -> list[str] | None:
    """Two values a, b of a text column v such that rows (1, a), (2, b) and (1, b), (2, a) of
    (id bigint, v text) have the same sum of row hashes, if any among ``candidates`` values: the
    sums are equal when r(1, a) - r(2, a) = r(1, b) - r(2, b), found by grouping by that difference."""
    row_hash = mq.row_hash_expr(["id", "v"], {"id": "int", "v": "text"})
    statement = sql.SQL(
        "WITH c AS (SELECT 'p' || g AS v FROM generate_series(1, {n}) AS g), "
        "r AS (SELECT c.v, (SELECT {h} FROM (SELECT 1::bigint, c.v) AS t(id, v))::numeric "
        "  - (SELECT {h} FROM (SELECT 2::bigint, c.v) AS t(id, v))::numeric AS d FROM c) "
        "SELECT pg_catalog.array_agg(v) FROM r GROUP BY d HAVING count(*) > 1 LIMIT 1"
    ).format(n=sql.Literal(candidates), h=row_hash)
    found = sandbox.target.execute(statement, dbname=TARGET_DB)
    return found[0][0][:2] if found else None


@TRANSPORTS
def test_two_rows_swapping_the_value_of_a_column_are_mirrored(sandbox, transport):
    """The row hash was the XOR of its columns' hashes and a bucket's checksum (and the whole
    table's) the sum of its rows': two rows swapping a column's values, (1, a), (2, b) -> (1, b),
    (2, a), kept the sum whenever the hashes of a and b agreed on the bits where those of 1 and 2
    differ: one swap in 2^27, and such pairs among 300,000 values in a second. The row hash now
    mixes the XOR: no such pair is found, and a swap of two values is mirrored."""
    pair = swap_collision(sandbox)
    a, b = pair or ("p1", "p2")
    src, target = one_column_table(sandbox, "v text", "'x'")
    src.remote("UPDATE {t} SET v = CASE id WHEN 1 THEN %s ELSE %s END WHERE id IN (1, 2)", (a, b))
    local(
        sandbox, "UPDATE {t} SET v = CASE id WHEN 1 THEN %s ELSE %s END WHERE id IN (1, 2)", (b, a), t=target
    )
    result = mirror(Named(src.foreign), target, transport=transport)
    assert result["updated"] == 2
    rows = "SELECT id, v FROM {t} ORDER BY id"
    assert local(sandbox, rows, t=target) == src.remote(rows)
    assert pair is None


@TRANSPORTS
def test_a_duplicate_key_in_the_source_is_refused(sandbox, transport):
    src, target = keyless_source(sandbox)
    src.remote("INSERT INTO {t} SELECT * FROM {t} WHERE id = 250")
    refused_unchanged(
        sandbox,
        src,
        target,
        FdwError,
        r"several rows with key \(id\) = 250: .* Nothing was changed",
        transport=transport,
        key_columns=["id"],
    )


@TRANSPORTS
def test_a_null_key_in_the_source_is_refused_clearly(sandbox, transport):
    src, target = keyless_source(sandbox)
    src.remote("INSERT INTO {t} VALUES (NULL, 'no key')")
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 7")  # and a bucket that differs besides
    refused_unchanged(
        sandbox,
        src,
        target,
        FdwError,
        r"1 of its rows have a NULL id.*Nothing was changed",
        transport=transport,
        key_columns=["id"],
    )


@pytest.mark.parametrize("side_by_side", [True, False])
@TRANSPORTS
def test_a_repeatable_read_default_does_not_hide_a_row_committed_before_the_lock(
    sandbox, monkeypatch, transport, side_by_side
):
    """The task role's transactions default to REPEATABLE READ (ALTER ROLE … SET): the provider's
    sessions run READ COMMITTED, so the mirror sees, after its lock, a row committed between its
    first catalog read and the lock, and deletes it."""
    src = Source(sandbox, rows=300)
    target = new_target(sandbox, src)
    login = local(sandbox, "SELECT current_user")[0][0]
    original = m.check_policies_do_not_apply

    def another_session_commits(*args, **kwargs):  # after the first catalog reads, before the lock
        local(sandbox, "INSERT INTO {t} (id, name) VALUES (999999, 'written meanwhile')", t=target)
        return original(*args, **kwargs)

    monkeypatch.setattr(m, "check_policies_do_not_apply", another_session_commits)

    def role_default(change: str) -> None:
        statement = sql.SQL("ALTER ROLE {} IN DATABASE {} ").format(ident(login), ident(TARGET_DB))
        sandbox.target.execute(statement + sql.SQL(change))

    role_default("SET default_transaction_isolation = 'repeatable read'")
    try:
        result = mirror(src, target, side_by_side=side_by_side, transport=transport)
    finally:
        role_default("RESET default_transaction_isolation")
    assert result["deleted"] == 1
    assert target_rows(sandbox, target) == src.rows()


@pytest.mark.parametrize("declared", ["integer", "smallint", "boolean"])
def test_a_remote_column_since_widened_to_numeric_is_not_rounded_into_an_unchanged_row(sandbox, declared):
    """The foreign table still declares the column's old type; the remote made it numeric since. The
    row hash cast the column explicitly (``::int8``, ``::int4``), which postgres_fdw ships as written
    and the remote rounds: 1 -> 1.4 ended in "nothing changed". Reading the foreign table fails on
    1.4 (not an integer), and so does the mirror's checksum of it, before any change."""
    src = RemoteTable(
        sandbox,
        "mirror",
        SERVER,
        f"id bigint, n {declared}",
        remote_columns="id bigint PRIMARY KEY, n numeric",
    )
    src.remote("INSERT INTO {t} SELECT g, g % 2 FROM generate_series(1, 50) g")
    target = seeded_target(sandbox, src, f"CREATE TABLE {{t}} (id bigint PRIMARY KEY, n {declared})")
    src.remote("UPDATE {t} SET n = 1.4 WHERE id = 7")
    refused_unchanged(sandbox, src, target, FdwError, "checksum source buckets failed")


@TRANSPORTS
@pytest.mark.parametrize(
    ("source_type", "target_type", "value"),
    [
        pytest.param(
            "timestamp with time zone",
            "timestamp without time zone",
            "'2024-05-06 07:08:09+00'",
            id="timestamptz-to-timestamp",
        ),
        pytest.param("integer", "numeric", "7", id="integer-to-numeric"),
        pytest.param("double precision", "real", "0.5", id="double-to-real"),
    ],
)
def test_a_column_of_another_kind_of_type_on_the_target_is_refused_before_anything_changes(
    sandbox, transport, source_type, target_type, value
):
    """Each side hashes a value as its type stores it: a target column of another kind of type hashed
    differently on every run (the check after the apply failed each time) or not at all (no integer
    hash of a numeric). Refused by name before any change; an int4 / int8 pair still mirrors."""
    src = RemoteTable(
        sandbox,
        "mirror",
        SERVER,
        f"id bigint, v {source_type}, n integer",
        remote_columns=(f"id bigint PRIMARY KEY, v {source_type}, n integer"),
    )
    src.remote(f"INSERT INTO {{t}} SELECT g, {value}, g FROM generate_series(1, 50) g")
    target = seeded_target(
        sandbox, src, f"CREATE TABLE {{t}} (id bigint PRIMARY KEY, v {target_type}, n bigint)"
    )
    src.remote("UPDATE {t} SET n = -1 WHERE id = 7")
    refused_unchanged(
        sandbox,
        src,
        target,
        FdwConfigError,
        rf"same kind of type on both: v \({source_type} there, {target_type} here\)",
        transport=transport,
    )
    result = mirror(Named(src.foreign), target, transport=transport, columns=["id", "n"])  # integer / bigint
    assert result["updated"] == 1
    assert local(sandbox, "SELECT n FROM {t} WHERE id = 7", t=target) == [(-1,)]


def test_a_column_of_a_type_without_a_binary_send_function_is_refused_by_name(sandbox):
    """aclitem has no send function: the catalog read of the columns' hash kinds dropped the column
    and the run ended in a KeyError instead of naming it."""
    src = RemoteTable(
        sandbox, "mirror", SERVER, "id bigint, a aclitem", remote_columns="id bigint PRIMARY KEY, a aclitem"
    )
    src.remote("INSERT INTO {t} SELECT g, makeaclitem(10, 10, 'SELECT', false) FROM generate_series(1, 5) g")
    target = seeded_target(sandbox, src, "CREATE TABLE {t} (id bigint PRIMARY KEY, a aclitem)")
    with pytest.raises(FdwConfigError, match=r"cannot checksum columns \['a'\]"):
        mirror(Named(src.foreign), target)
    assert mirror(Named(src.foreign), target, columns=["id"])["unchanged"] == 5


def test_a_source_that_is_not_a_foreign_table_is_refused(sandbox):
    """A local table would be read at a new snapshot by each pass of the comparison."""
    source = f"public.ls_{uuid.uuid4().hex[:8]}"
    target = f"public.lt_{uuid.uuid4().hex[:8]}"
    for table in (source, target):
        local(sandbox, "CREATE TABLE {t} (id bigint PRIMARY KEY, tags text)", t=table)
        local(sandbox, "INSERT INTO {t} SELECT g, 'v' FROM generate_series(1, 50) g", t=table)
    local(sandbox, "UPDATE {t} SET tags = 'changed' WHERE id = 5", t=source)
    with pytest.raises(FdwConfigError, match=r"several passes of one snapshot.*is not a foreign table"):
        mirror(Named(source), target)
    assert local(sandbox, "SELECT tags FROM {t} WHERE id = 5", t=target) == [("v",)]


@pytest.mark.parametrize("transport", ["fdw", "copy"])
@pytest.mark.parametrize("key", ["int", "composite"])
def test_hostile_identifiers(sandbox, transport, key):
    """Quotes, spaces, capitals and keywords in the schema, table and key columns, and columns named
    like the mirror's own aliases."""
    from conftest import READER, SOURCE_DB

    name = f'Ta"ble {uuid.uuid4().hex[:6]}'
    columns = '"select" bigint, "Key Col" text, "t" text, "s" int, "r" int, "fdw_range" text'
    primary = '"select"' if key == "int" else '"Key Col", "select"'
    remote = ident("mirror", name)
    for statement in (
        sql.SQL("CREATE TABLE {} (" + columns + ", PRIMARY KEY (" + primary + "))").format(remote),
        sql.SQL("GRANT SELECT ON {} TO {}").format(remote, ident(READER)),
        sql.SQL(
            "INSERT INTO {} SELECT g, 'k' || (g % 7), 'x' || g, g, g, 'y' FROM generate_series(1, 300) g"
        ).format(remote),
    ):
        sandbox.source.execute(statement, dbname=SOURCE_DB)
    schema = 'Mirror "Sch"'
    local(sandbox, "CREATE SCHEMA IF NOT EXISTS {s}", s=sql.Identifier(schema))
    foreign = sql.Identifier("proxy_mirror", name)
    local(
        sandbox,
        "CREATE FOREIGN TABLE {f} (" + columns + ") SERVER {server} "
        "OPTIONS (schema_name 'mirror', table_name {n})",
        f=foreign,
        server=sql.Identifier(SERVER),
        n=sql.Literal(name),
    )
    target = sql.Identifier(schema, name)
    local(sandbox, "CREATE TABLE {t} (" + columns + ", PRIMARY KEY (" + primary + "))", t=target)
    local(sandbox, "INSERT INTO {t} SELECT * FROM {f}", t=target, f=foreign)
    sandbox.source.execute(
        sql.SQL(
            'UPDATE {0} SET "t" = \'changed\' WHERE "select" IN (5, 150); '
            'DELETE FROM {0} WHERE "select" = 77; '
            "INSERT INTO {0} VALUES (1000, 'new', 'n', 1, 1, 'z')"
        ).format(remote),
        dbname=SOURCE_DB,
    )

    def quoted(*parts: str) -> str:
        return ".".join('"' + p.replace('"', '""') + '"' for p in parts)

    result = mirror(Named(quoted("proxy_mirror", name)), quoted(schema, name), transport=transport)
    select = "SELECT * FROM {t} ORDER BY 1, 2"
    assert local(sandbox, select, t=target) == local(sandbox, select, t=foreign)
    assert (result["inserted"], result["updated"], result["deleted"]) == (1, 2, 1)


@pytest.mark.parametrize("deferrable", [True, False])
@TRANSPORTS
def test_values_swapped_in_a_second_unique_column(sandbox, transport, deferrable):
    """One UPDATE meets a non-deferrable unique index midway when two rows swap their values: the
    run fails, nothing written, and says to declare it DEFERRABLE, which the mirror checks at commit."""
    columns = "id bigint PRIMARY KEY, code text UNIQUE" + (" DEFERRABLE" if deferrable else "")
    keyed = "id bigint PRIMARY KEY, code text"
    src = RemoteTable(sandbox, "mirror", SERVER, "id bigint, code text", remote_columns=keyed)
    src.remote("INSERT INTO {t} SELECT g, 'c' || g FROM generate_series(1, 100) g")
    target = seeded_target(sandbox, src, "CREATE TABLE {t} (" + columns + ")")
    src.remote("UPDATE {t} SET code = CASE id WHEN 3 THEN 'c4' ELSE 'c3' END WHERE id IN (3, 4)")
    swapped = "SELECT id, code FROM {t} WHERE id IN (3, 4) ORDER BY id"
    if deferrable:
        assert mirror(Named(src.foreign), target, transport=transport)["updated"] == 2
        assert local(sandbox, swapped, t=target) == [(3, "c4"), (4, "c3")]
        return
    with pytest.raises(FdwError, match="Declare that unique constraint DEFERRABLE"):
        mirror(Named(src.foreign), target, transport=transport)
    assert local(sandbox, swapped, t=target) == [(3, "c3"), (4, "c4")]


@TRANSPORTS
def test_a_deferred_constraint_trigger_writing_another_row_fails_the_run(sandbox, transport):
    """The mirror defers deferrable constraints while it writes, then fires them before it checks what
    was written: a constraint trigger's write counts too."""
    src = Source(sandbox, rows=300)
    target = new_target(sandbox, src)
    function = f"{target}_late"
    body = "UPDATE {t} SET tags = 'written at commit' WHERE id = 1; RETURN NULL;"
    local(
        sandbox,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN " + body + " END $$",
        f=function,
        t=target,
    )
    local(
        sandbox,
        "CREATE CONSTRAINT TRIGGER late AFTER UPDATE ON {t} DEFERRABLE INITIALLY IMMEDIATE "
        "FOR EACH ROW WHEN (NEW.id <> 1) EXECUTE FUNCTION {f}()",
        t=target,
        f=function,
    )
    before = target_rows(sandbox, target)
    src.remote("UPDATE {t} SET tags = 'changed' WHERE id = 200")
    with pytest.raises(FdwError, match="did not choose"):
        mirror(src, target, transport=transport)
    assert target_rows(sandbox, target) == before


@TRANSPORTS
@pytest.mark.parametrize(
    ("event", "body"),
    [
        pytest.param(  # an AFTER trigger stamping a column the mirror does not copy, on its own row
            "INSERT OR UPDATE OF name, score, seen, tags, flag",
            "IF pg_trigger_depth() = 1 THEN UPDATE {t} SET synced_at = now() WHERE id = NEW.id; END IF;",
            id="stamps-the-row-it-fired-for",
        ),
        pytest.param(  # "make sure the parent exists": an insert undone in a subtransaction still counts
            "INSERT",
            "BEGIN INSERT INTO {t} (id, name) VALUES (1, 'parent'); "
            "EXCEPTION WHEN unique_violation THEN NULL; END;",
            id="undoes-its-insert",
        ),
    ],
)
def test_a_trigger_whose_writes_leave_the_table_equal_to_the_source_is_not_refused(
    sandbox, transport, event, body
):
    """The counts do not add up, so the whole table is compared with the source: equal, the run goes on."""
    src = Source(sandbox, rows=300)
    target = new_target(sandbox, src)
    local(sandbox, "ALTER TABLE {t} ADD COLUMN synced_at timestamptz", t=target)
    after_trigger(sandbox, target, event, body)
    src.remote("UPDATE {t} SET tags = 'changed' WHERE id = 200")
    src.remote("INSERT INTO {t} (id, name) VALUES (9000, 'new')")
    result = mirror(src, target, transport=transport)
    assert (result["inserted"], result["updated"]) == (1, 1)
    assert target_rows(sandbox, target) == src.rows()


@TRANSPORTS
def test_a_partitioned_target_with_a_foreign_partition_is_mirrored(sandbox, transport):
    """Rows routed to a postgres_fdw partition never show in the counts: the whole table decides."""
    src = Source(sandbox, rows=300)
    archive = RemoteTable(sandbox, "mirror", SERVER, COLUMNS, remote_columns=REMOTE_COLUMNS)
    archive.remote("GRANT ALL ON {t} TO " + READER)
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {t} (" + COLUMNS + ") PARTITION BY RANGE (id)", t=target)
    local(
        sandbox,
        "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (MINVALUE) TO (1000)",
        p=f"{target}_hot",
        t=target,
    )
    local(
        sandbox,
        "ALTER TABLE {t} ATTACH PARTITION {f} FOR VALUES FROM (1000) TO (MAXVALUE)",
        t=target,
        f=archive.foreign,
    )
    local(sandbox, "INSERT INTO {t} SELECT * FROM {s}", t=target, s=src.foreign)
    src.remote("INSERT INTO {t} (id, name) VALUES (5000, 'archived')")
    result = mirror(src, target, transport=transport, key_columns=["id"])
    assert result["inserted"] == 1
    assert target_rows(sandbox, target) == src.rows()


@TRANSPORTS
@pytest.mark.parametrize(
    ("source_type", "domain", "value", "change"),
    [
        pytest.param("bigint", "bigint CHECK (VALUE > 0)", "g", "v + 4294967296", id="bigint"),
        pytest.param(
            "timestamptz",
            "timestamptz",
            "'2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute'",
            "v + interval '1 second'",
            id="timestamptz",
        ),
        pytest.param("text", "text CHECK (VALUE <> '')", "'t' || g", "v || '!'", id="text"),
    ],
)
def test_a_target_column_of_a_domain_over_the_sources_type_is_mirrored(
    sandbox, transport, source_type, domain, value, change
):
    """A domain over the source column's type stores and hashes its values as that type: the target
    check refused it as a column "of another kind of type" (a domain is no built-in type), though it
    was mirrored before the check existed."""
    name = f"d_{uuid.uuid4().hex[:8]}"
    local(sandbox, f"CREATE DOMAIN {{d}} AS {domain}", d=name)
    columns = f"id bigint, v {source_type}"
    keyed = columns.replace("id bigint", "id bigint PRIMARY KEY")
    src = RemoteTable(sandbox, "mirror", SERVER, columns, remote_columns=keyed)
    src.remote(f"INSERT INTO {{t}} SELECT g, {value} FROM generate_series(1, 500) g")
    target = seeded_target(sandbox, src, "CREATE TABLE {t} (id bigint PRIMARY KEY, v {d})", d=name)
    src.remote(f"UPDATE {{t}} SET v = {change} WHERE id = 250")
    result = mirror(Named(src.foreign), target, transport=transport)
    assert result["updated"] == 1
    rows = "SELECT id, v::text FROM {t} ORDER BY id"
    assert local(sandbox, rows, t=target) == src.remote(rows)


@TRANSPORTS
@pytest.mark.parametrize("regtype", ["regclass", "regrole"])
def test_an_object_reference_column_is_refused_before_anything_changes(sandbox, transport, regtype):
    """A regclass (regrole, regtype …) value is the name of an object, copied by name; its send form
    is the object's OID, which differs between the two servers for an object made on each. Hashed
    from the send form, every row differed, the apply found no row to change (same names) and the
    check after it failed: every run failed. Refused by name before anything changes; left out with
    columns= the table mirrors."""
    name = f"ref_{uuid.uuid4().hex[:8]}"
    if regtype == "regclass":  # a table of that name on both sides (different OIDs)
        sandbox.source.execute(sql.SQL("CREATE TABLE public.{} ()").format(ident(name)), dbname=SOURCE_DB)
        local(sandbox, "CREATE TABLE public.{n} ()", n=name)
        value = f"'public.{name}'"
    else:  # a role: the two clusters have their own
        for cluster in (sandbox.source, sandbox.target):
            cluster.execute(sql.SQL("CREATE ROLE {}").format(ident(name)))
        value = f"'{name}'"
    src, target = one_column_table(sandbox, f"v {regtype}", value, rows=200)
    src.remote("UPDATE {t} SET v = NULL WHERE id = 7")
    refused_unchanged(
        sandbox,
        src,
        target,
        FdwConfigError,
        r"cannot checksum columns \['v'\]",
        transport=transport,
        rows="SELECT id, v::text FROM {t} ORDER BY id",
    )
    assert mirror(Named(src.foreign), target, transport=transport, columns=["id"])["updated"] == 0


def case_insensitive_collation(sandbox, on_source: bool, on_target: bool) -> str:
    """A new nondeterministic (case-insensitive ICU) collation ``public.<name>`` on either side; its name."""
    collation = f"ci_{uuid.uuid4().hex[:8]}"
    create = sql.SQL(
        "CREATE COLLATION public.{} (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
    ).format(ident(collation))
    if on_source:
        sandbox.source.execute(create, dbname=SOURCE_DB)
    if on_target:
        sandbox.target.execute(create, dbname=TARGET_DB)
    return collation


def names_with_a_case_change(
    sandbox, declared: str, remote: str, target_column: str, **names: str
) -> tuple[RemoteTable, str]:
    """A remote table of 300 names (its ``v`` column: ``remote``) under a foreign table declaring
    ``declared``, a target (``v``: ``target_column``) equal to it; then row 7's name changes its case
    only (equal under a case-insensitive collation)."""
    src = RemoteTable(
        sandbox, "mirror", SERVER, f"id bigint, {declared}", remote_columns=f"id bigint PRIMARY KEY, {remote}"
    )
    src.remote("INSERT INTO {t} SELECT g, 'Name ' || g FROM generate_series(1, 300) g")
    target = seeded_target(
        sandbox, src, f"CREATE TABLE {{t}} (id bigint PRIMARY KEY, {target_column})", **names
    )
    src.remote("UPDATE {t} SET v = 'NAME 7' WHERE id = 7")
    return src, target


@TRANSPORTS
def test_a_source_column_declared_with_a_nondeterministic_collation_is_refused_before_anything_changes(
    sandbox, transport
):
    """The refusal looked at the target's collations only: a foreign table declaring the remote
    column's nondeterministic collation (as IMPORT FOREIGN SCHEMA does, import_collate) has the
    remote hash the sort key. Every run compared the whole table, applied, and failed its check
    (review round 3, 2026-12-07)."""
    collation = case_insensitive_collation(sandbox, on_source=True, on_target=True)
    column = f'v text COLLATE public."{collation}"'
    src, target = names_with_a_case_change(sandbox, column, column, "v text")
    refused_unchanged(
        sandbox,
        src,
        target,
        FdwConfigError,
        r"cannot compare columns \[.v.\] of .*: their collation is nondeterministic",
        transport=transport,
        rows="SELECT id, v FROM {t} ORDER BY id",
    )
    assert mirror(Named(src.foreign), target, transport=transport, columns=["id"])["updated"] == 0


@TRANSPORTS
def test_a_remote_column_with_a_nondeterministic_collation_undeclared_locally_is_refused(sandbox, transport):
    """The source refusal (review round 3) reads the foreign table's declared collation only: a
    foreign table made by hand, or imported with import_collate 'false', declares the default one
    while the remote column's is nondeterministic; the hash pushed to the remote is evaluated under
    the remote column's collation (its sort key), so the run applied and failed its check on every
    run, as before that fix (review round 4, 2026-12-07)."""
    collation = case_insensitive_collation(sandbox, on_source=True, on_target=False)
    column = f'v text COLLATE public."{collation}"'
    src, target = names_with_a_case_change(sandbox, "v text", column, "v text")
    refused_unchanged(
        sandbox,
        src,
        target,
        FdwConfigError,
        r"\[.v.\].*nondeterministic",
        transport=transport,
        rows="SELECT id, v FROM {t} ORDER BY id",
    )
    assert mirror(Named(src.foreign), target, transport=transport, columns=["id"])["updated"] == 0
    # a deterministic collation other than the default is hashed as the target hashes it: mirrored
    src.remote('ALTER TABLE {t} ALTER COLUMN v TYPE text COLLATE "C"')
    assert mirror(Named(src.foreign), target, transport=transport)["updated"] == 1
    assert local(sandbox, "SELECT v FROM {t} WHERE id = 7", t=target) == [("NAME 7",)]


@TRANSPORTS
def test_a_target_column_with_a_nondeterministic_collation_is_refused_before_anything_changes(
    sandbox, transport
):
    """A text column's hash is hashtextextended in the column's collation: under a nondeterministic
    one (case-insensitive ICU) it hashes the sort key, never the source's bytes. Every row differed,
    the apply changed none (equal text) and the check after it failed: every run failed, even with
    nothing changed. Refused by name before anything changes."""
    collation = case_insensitive_collation(sandbox, on_source=False, on_target=True)
    column = f'v text COLLATE public."{collation}"'
    src, target = names_with_a_case_change(sandbox, "v text", "v text", column)
    refused_unchanged(
        sandbox,
        src,
        target,
        FdwConfigError,
        r"cannot compare columns \[.v.\] of .*: their collation is nondeterministic",
        transport=transport,
        rows="SELECT id, v FROM {t} ORDER BY id",
    )


@TRANSPORTS
@pytest.mark.parametrize("empty", [True, False], ids=["empty-target", "sparse-keys"])
def test_an_oid_key_near_the_top_of_its_range_is_mirrored(sandbox, transport, empty):
    """An oid key is bucketed by ranges of key values like an integer one; an empty target (or one of
    a few keys far apart) made the ranges wider than the oid type (up to 2^62 values), and the bound
    of such a range, compared with the key, is cast to oid: "OID out of range" on every run, the
    first one included."""
    src = RemoteTable(
        sandbox, "mirror", SERVER, "id oid, v text", remote_columns="id oid PRIMARY KEY, v text"
    )
    step = 1 if empty else 10_000_000
    src.remote(
        "INSERT INTO {t} SELECT (4294967295 - g::int8 * %s)::oid, 'v' || g FROM generate_series(0, 300) g",
        (step,),
    )
    target = f"public.m_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {t} (id oid PRIMARY KEY, v text)", t=target)
    if not empty:  # two keys, 3 * 10^9 apart
        local(sandbox, "INSERT INTO {t} SELECT * FROM {s} WHERE v IN ('v0', 'v300')", t=target, s=src.foreign)
        src.remote("UPDATE {t} SET v = 'changed' WHERE v = 'v300'")
    result = mirror(Named(src.foreign), target, transport=transport)
    assert result["inserted"] == (301 if empty else 299)
    rows = "SELECT id::text, v FROM {t} ORDER BY id"
    assert local(sandbox, rows, t=target) == src.remote(rows)


@TRANSPORTS
def test_a_point_with_a_nan_whose_bits_differ_from_the_targets_is_equal(sandbox, transport):
    """A point's coordinates are float8, hashed by the point's send form: a NaN made by 'Infinity' -
    'Infinity' (sign bit set) reaches the target as the usual NaN (text, '(NaN,0)'), equal in text,
    yet the send forms differ: every run failed its check, as the floats' NaN did."""
    src, target = one_column_table(sandbox, "v point", "point(g, 0)")
    src.remote("UPDATE {t} SET v = point('Infinity'::float8 - 'Infinity'::float8, 0) WHERE id IN (7, 1000)")
    local(sandbox, "UPDATE {t} SET v = point('NaN', 0) WHERE id = 7", t=target)  # 1000: a change
    assert mirror(Named(src.foreign), target, transport=transport)["updated"] == 1
    again = mirror(Named(src.foreign), target, transport=transport)
    assert (again["updated"], again["rows_fetched"]) == (0, 0)
    rows = "SELECT id, v::text FROM {t} ORDER BY id"
    assert local(sandbox, rows, t=target) == src.remote(rows)
