"""Mirror mode's statements: row and key hashes that postgres_fdw ships, per-bucket checksums, the
partial apply (only the rows of the compared buckets).

Hashes use only immutable built-ins and no constant whose text form depends on settings, so they are
equal on both sides for equal values and postgres_fdw computes them on the remote. Imported as a
module (``from airflow_provider_fdw.sql import mirror as mq``): its names belong to mirror mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.sql.diff import key_match
from airflow_provider_fdw.sql.tables import column_list, table_ref

# Per column: is its type built in, its name, its fixed length (-1: variable), its binary send function.
HASH_KINDS_QUERY = sql.SQL(
    "SELECT a.attname, a.atttypid < 10000, t.typname, t.typlen, t.typsend::regproc::text, "
    "  p.provolatile = 'i' "
    "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_proc p ON p.oid = t.typsend "
    "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped"
)
ROW_ESTIMATE_QUERY = sql.SQL(
    "SELECT CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples END FROM pg_class c WHERE c.oid = %s"
)


# Apart from each other by more than a value's 8-byte chunks (BYTES_MAX / 8 of them, each seeded
# ``seed + offset``): a chunk of one column never shares a seed with another column, whose hashes
# would then cancel out in the row hash's XOR for equal chunk values.
SEED_STRIDE = 64
KEY_SEED = 1_000_000  # the key hash's seeds: not those of the row hash


def value_hash(column: str, kind: str, seed: int) -> sql.Composable:
    """The hash of one non-NULL value, equal for identical values whatever the session settings.

    Only functions postgres_fdw ships (immutable built-ins, collations derived from the column) and
    no constants of types whose text form depends on settings (postgres_fdw deparses those with the
    local DateStyle).
    Numeric adds its scale (1.5 and 1.50 are equal but print differently); fixed-length types hash
    the bytes of their binary send form (so -0 and 0, or two equal intervals, differ as they print).
    """
    col, s = sql.Identifier(column), sql.Literal(seed)
    if kind == "int":
        return sql.SQL("pg_catalog.hashint8extended({}::int8, {})").format(col, s)
    if kind == "text":
        return sql.SQL("pg_catalog.hashtextextended({}, {})").format(col, s)
    if kind == "bool":
        return sql.SQL("pg_catalog.hashint8extended({}::int4, {})").format(col, s)
    if kind == "uuid":
        return sql.SQL("pg_catalog.uuid_hash_extended({}, {})").format(col, s)
    if kind == "exact":  # the type's own hash (of a one-element array: the function postgres_fdw ships)
        return sql.SQL("pg_catalog.hash_array_extended(ARRAY[{}], {})").format(col, s)
    if kind == "numeric":
        return sql.SQL(
            "(pg_catalog.hash_numeric_extended({0}, {1}) # pg_catalog.hashint8extended("
            "CASE WHEN pg_catalog.scale({0}) IS NULL THEN -1 ELSE pg_catalog.scale({0}) END, {1}))"
        ).format(col, s)
    _, length, send = kind.split(":")
    value = sql.SQL("{}({})").format(sql.Identifier("pg_catalog", send), col)
    chunks = []
    for start in range(0, int(length), 8):
        parts = [
            sql.SQL("(pg_catalog.get_byte({}, {})::int8 << {})").format(
                value, sql.Literal(i), sql.Literal(8 * (i - start))
            )
            for i in range(start, min(start + 8, int(length)))
        ]
        chunks.append(
            sql.SQL("pg_catalog.hashint8extended({}, {})").format(
                sql.SQL(" | ").join(parts), sql.Literal(seed + start)
            )
        )
    return sql.SQL("({})").format(sql.SQL(" # ").join(chunks))


def row_hash_expr(
    columns: Sequence[str], kinds: dict[str, str], names: Mapping[str, str] | None = None
) -> sql.Composable:
    """A 64-bit hash of the row: the XOR of each column's hash, seeded by its position (so swapped
    values differ); NULL hashes to a constant of its position (CASE, not coalesce: CASE is shipped).
    ``names``: what the table read calls each column (a foreign table's remote names), when not its own."""
    named = names or {}
    return sql.SQL("({})").format(
        sql.SQL(" # ").join(
            sql.SQL("CASE WHEN {} IS NULL THEN {} ELSE {} END").format(
                sql.Identifier(named.get(c, c)),
                sql.Literal(-1 - i),
                value_hash(named.get(c, c), kinds[c], (i + 1) * SEED_STRIDE),
            )
            for i, c in enumerate(columns)
        )
    )


def key_hash_expr(
    key: Sequence[str], kinds: Mapping[str, str], names: Mapping[str, str] | None = None
) -> sql.Composable:
    """The bucket a row falls in comes from its key alone (an update stays in its bucket).
    ``names``: as in :func:`row_hash_expr`."""
    named = names or {}
    return sql.SQL("({})").format(
        sql.SQL(" # ").join(
            sql.SQL("CASE WHEN {} IS NULL THEN 0 ELSE {} END").format(
                sql.Identifier(named.get(k, k)),
                value_hash(named.get(k, k), kinds[k], KEY_SEED + i * SEED_STRIDE),
            )
            for i, k in enumerate(key)
        )
    )


def key_range(table: QualifiedName, column: str, only: bool) -> sql.Composed:
    return sql.SQL("SELECT min({0}), max({0}) FROM {1}").format(
        sql.Identifier(column), table_ref(table, only)
    )


def range_bucket(column: str, level: int) -> sql.Composed:
    """The range of 2^level key values a row falls in."""
    return sql.SQL("({}::int8 >> {})").format(sql.Identifier(column), sql.Literal(level))


def rows_in_ranges(
    table: QualifiedName, only: bool, key: str, level: int, row_hash: sql.Composable, alias: str
) -> sql.Composed:
    """Keys and row hashes (two arrays: one row, cheap to read) of every row in the ranges of 2^level
    key values numbered by the ``%s`` array, each range read through the key's index (``alias``
    names no column the row hash reads)."""
    low = sql.SQL("({} << {})").format(sql.Identifier(alias, alias), sql.Literal(level))
    return sql.SQL(
        "SELECT pg_catalog.array_agg(t.{key}::int8), pg_catalog.array_agg({hash}) "
        "FROM pg_catalog.unnest(%s::int8[]) AS {a}({a}) JOIN {table} AS t "
        "ON t.{key} BETWEEN {low} AND ({low} | {mask})"
    ).format(
        key=sql.Identifier(key),
        hash=row_hash,
        a=sql.Identifier(alias),
        table=table_ref(table, only),
        low=low,
        mask=sql.Literal((1 << level) - 1),
    )


def key_in(key: str) -> sql.Composed:
    """The rows whose single integer key is in the ``%s`` array (through the key's index)."""
    return sql.SQL("{} = ANY(%s::int8[])").format(sql.Identifier(key))


def rows_by_key(table: QualifiedName, only: bool, key: str, row_hash: sql.Composable) -> sql.Composed:
    return sql.SQL("SELECT {}, {} FROM {} WHERE {}").format(
        sql.Identifier(key), row_hash, table_ref(table, only), key_in(key)
    )


def int8_array(values: Sequence[int]) -> sql.Composed:
    """An ``int8[]`` literal (COPY takes no parameters): integers only, so nothing to escape."""
    return sql.SQL("{}::int8[]").format(sql.Literal("{" + ",".join(str(int(v)) for v in values) + "}"))


def copy_rows_by_key(
    table: QualifiedName, columns: Sequence[str], key: str, keys: Sequence[int]
) -> sql.Composed:
    """``COPY … TO STDOUT`` (binary) of the rows with these integer keys."""
    return sql.SQL("COPY (SELECT {} FROM {} WHERE {} = ANY({})) TO STDOUT (FORMAT binary)").format(
        column_list(columns), sql.Identifier(*table), sql.Identifier(key), int8_array(keys)
    )


def copy_rows_where(table: QualifiedName, columns: Sequence[str], condition: sql.Composable) -> sql.Composed:
    """``COPY … TO STDOUT`` (binary) of the rows for which ``condition`` (without parameters) holds."""
    return sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT (FORMAT binary)").format(
        column_list(columns), sql.Identifier(*table), condition
    )


def copy_rows_in_ranges(
    table: QualifiedName, columns: Sequence[str], key: str, level: int, buckets: Sequence[int]
) -> sql.Composed:
    """``COPY … TO STDOUT`` (binary) of every row in these ranges of 2^level key values (each read
    through the key's index)."""
    low = sql.SQL("(r.r << {})").format(sql.Literal(level))
    return sql.SQL(
        "COPY (SELECT {cols} FROM pg_catalog.unnest({buckets}) AS r(r) JOIN {table} AS t "
        "ON t.{key} BETWEEN {low} AND ({low} | {mask})) TO STDOUT (FORMAT binary)"
    ).format(
        cols=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns),
        buckets=int8_array(buckets),
        table=sql.Identifier(*table),
        key=sql.Identifier(key),
        low=low,
        mask=sql.Literal((1 << level) - 1),
    )


# Rows this transaction added to the table minus those it removed (its leaf partitions, when
# partitioned), counting what triggers and foreign key actions wrote; exact only with track_counts on.
def bucket_checksum_arrays(
    table: QualifiedName, only: bool, bucket: sql.Composable, row_hash: sql.Composable
) -> sql.Composed:
    """:func:`bucket_checksums` as three arrays (buckets, rows, sums as text) and the sum of all the
    sums: one row, read by the driver at once instead of a row per bucket."""
    return sql.SQL(
        "SELECT pg_catalog.array_agg(b), pg_catalog.array_agg(n), pg_catalog.array_agg(c::text), "
        "sum(c)::text FROM ({}) AS s(b, n, c)"
    ).format(bucket_checksums(table, only, bucket, row_hash))


def bucket_checksums(
    table: QualifiedName,
    only: bool,
    bucket: sql.Composable | None,
    row_hash: sql.Composable,
    within: sql.Composable | None = None,
) -> sql.Composed:
    """Per bucket: the rows and the sum of their row hashes (only the rows ``within`` when given).

    ``bucket`` None: the whole table as bucket 0, without GROUP BY (which makes a server sort every
    row, whatever the number of buckets: it estimates one group per key).
    """
    where = sql.SQL(" WHERE {}").format(within) if within is not None else sql.SQL("")
    if bucket is None:
        return sql.SQL("SELECT 0, count(*), sum({}) FROM {}{}").format(
            row_hash, table_ref(table, only), where
        )
    return sql.SQL("SELECT {}, count(*), sum({}) FROM {}{} GROUP BY 1").format(
        bucket, row_hash, table_ref(table, only), where
    )


def create_staging(
    staging: QualifiedName, target: QualifiedName, columns: Sequence[str], only: bool
) -> sql.Composed:
    """A session-private table with the target's column types, dropped at the end of the transaction."""
    return sql.SQL("CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
        sql.Identifier(staging.name), column_list(columns), table_ref(target, only)
    )


def fetch_rows(
    staging: QualifiedName, source: QualifiedName, columns: Sequence[str], within: sql.Composable
) -> sql.Composed:
    return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} WHERE {}").format(
        sql.Identifier(*staging),
        column_list(columns),
        column_list(columns),
        sql.Identifier(*source),
        within,
    )


def delete_vanished(
    target: QualifiedName, staging: QualifiedName, key: Sequence[str], within: sql.Composable, only: bool
) -> sql.Composed:
    """Delete the target rows of the compared buckets whose key the source no longer has."""
    return sql.SQL("DELETE FROM {} AS t WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS s WHERE {})").format(
        table_ref(target, only), within, sql.Identifier(*staging), key_match("s", "t", key)
    )


def mirror_orphan_probe(
    child: QualifiedName,
    child_columns: Sequence[str],
    target: QualifiedName,
    parent_columns: Sequence[str],
    staging: QualifiedName,
    key: Sequence[str],
    within: sql.Composable,
    only: bool,
) -> sql.Composed:
    """One child row whose parent row (in a compared bucket) the mirror deletes or whose referenced
    values it changes: no source row has the parent's key with the same referenced values."""
    # A self-reference: the rows the mirror rewrites get the source's (consistent) values.
    child_filter = sql.SQL(" AND NOT ({})").format(within) if child == target else sql.SQL("")
    return sql.SQL(
        "SELECT {c_cols} FROM {child} AS c WHERE EXISTS (SELECT 1 FROM {target} AS t WHERE {link} AND {in_b} "
        "AND NOT EXISTS (SELECT 1 FROM {staging} AS s WHERE {same_key} AND {same_ref})){child_filter} LIMIT 1"
    ).format(
        c_cols=sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(c)) for c in child_columns),
        child=sql.Identifier(*child),
        target=table_ref(target, only),
        link=key_match("c", "t", child_columns, parent_columns),
        in_b=within,
        staging=sql.Identifier(*staging),
        same_key=key_match("s", "t", key),
        same_ref=key_match("s", "t", parent_columns),
        child_filter=child_filter,
    )
