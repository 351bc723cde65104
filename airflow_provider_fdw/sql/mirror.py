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
from airflow_provider_fdw.sql.verify import send_form

# Per column: is its type built in, its name, its fixed length (-1: variable), its binary send function
# ('-' for none), whether that is immutable, its type modifier (-1: none), whether its collation (if
# any) is deterministic. With %(domains)s a domain column is described by its base type (a domain's
# values are stored, sent and hashed as its base type's, with the domain's modifier), else as the
# domain itself (not built in).
HASH_KINDS_QUERY = sql.SQL(
    "WITH RECURSIVE col AS ("
    "  SELECT a.attname, a.atttypid AS typid, a.atttypmod AS typmod, a.attcollation "
    "  FROM pg_catalog.pg_attribute a "
    "  WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped "
    "  UNION ALL SELECT col.attname, t.typbasetype, "
    "    CASE WHEN col.typmod >= 0 THEN col.typmod ELSE t.typtypmod END, col.attcollation FROM col "
    "  JOIN pg_catalog.pg_type t ON t.oid = col.typid WHERE t.typtype = 'd' AND %(domains)s) "
    "SELECT col.attname, col.typid < 10000, t.typname, t.typlen, t.typsend::regproc::text, "
    "  p.provolatile = 'i', col.typmod, coalesce(c.collisdeterministic, true) "
    "FROM col JOIN pg_catalog.pg_type t ON t.oid = col.typid "
    "LEFT JOIN pg_catalog.pg_proc p ON p.oid = t.typsend "
    "LEFT JOIN pg_catalog.pg_collation c ON c.oid = col.attcollation "
    "WHERE t.typtype <> 'd' OR NOT %(domains)s"
)
ROW_ESTIMATE_QUERY = sql.SQL(
    "SELECT CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples END FROM pg_class c WHERE c.oid = %s"
)


# Apart from each other by more than the seeds one value's hash uses (``seed`` and ``seed + 1``): a
# column never shares a seed with another column, whose hashes would then cancel out in the row
# hash's XOR for equal values.
SEED_STRIDE = 64
KEY_SEED = 1_000_000  # the key hash's seeds: not those of the row hash
KEY_KINDS = {"bpchar": "text"}  # a key's bucket follows its "=", which ignores bpchar's trailing blanks


def value_hash(column: str, kind: str, seed: int) -> sql.Composable:
    """The hash of one non-NULL value, equal for identical values whatever the session settings.

    Only functions postgres_fdw ships (immutable built-ins, collations derived from the column) and
    no constants of types whose text form depends on settings (postgres_fdw deparses those with the
    local DateStyle).
    Numeric adds its sign and scale (1.5 and 1.50 are equal but print differently), bpchar its
    length in bytes (its text form drops trailing blanks: 'a' and 'a  ' are equal); fixed-length
    types hash the bytes of their binary send form (so -0 and 0, or two equal intervals, differ as
    they print). Every hash takes all 64 bits of a value: hashint8extended alone folds them to 32.
    """
    col, s = sql.Identifier(column), sql.Literal(seed)
    # No explicit cast of an integer or boolean column: postgres_fdw ships one as written, and the
    # remote column may not be the type the foreign table declares (widened to numeric there since):
    # numeric::int8 rounds, so 7.4 would hash as 7. Without one the remote casts only implicitly
    # (int2/int4 to int8, which hashint8extended hashes as the same value) or refuses the call.
    if kind == "int":  # its low and high halves: hashint8extended alone hashes 1 as 2^32 (see below)
        return sql.SQL(
            "(pg_catalog.hashint8extended({0}, {1}) # "
            "pg_catalog.hashint8extended(pg_catalog.int8shr({0}, 32), {2}))"
        ).format(col, s, sql.Literal(seed + 1))
    if kind == "oid":  # 4 bytes, but no implicit cast to int8 (the explicit one is lossless for an oid)
        return sql.SQL("pg_catalog.hashint8extended({}::int8, {})").format(col, s)
    if kind == "text":
        return sql.SQL("pg_catalog.hashtextextended({}, {})").format(col, s)
    if kind == "bpchar":  # its cast to text drops trailing blanks, which octet_length counts
        return sql.SQL(
            "(pg_catalog.hashtextextended({0}, {1}) # "
            "pg_catalog.hashint8extended(pg_catalog.octet_length({0}), {2}))"
        ).format(col, s, sql.Literal(seed + 1))
    if kind == "bool":
        return sql.SQL("pg_catalog.hashint8extended(CASE WHEN {} THEN 1 ELSE 0 END, {})").format(col, s)
    if kind == "uuid":
        return sql.SQL("pg_catalog.uuid_hash_extended({}, {})").format(col, s)
    if kind == "exact":  # the type's own hash (of a one-element array: the function postgres_fdw ships);
        # only for types of at most 4 bytes, which it hashes without folding (see below)
        return sql.SQL("pg_catalog.hash_array_extended(ARRAY[{}], {})").format(col, s)
    if kind == "numeric":
        # hash_numeric hashes the digits and weight only: 5 and -5 hash alike, and NaN, Infinity and
        # -Infinity all hash to the seed. The second hash tells them apart: the scale (>= 0) of a
        # value >= 0, -4 - scale of a negative one, and -1 (NaN), -2 (Infinity), -3 (-Infinity), which
        # have no scale. NaN is neither < 0 nor has sign 1 (its sign is NaN).
        return sql.SQL(
            "(pg_catalog.hash_numeric_extended({0}, {1}) # pg_catalog.hashint8extended("
            "CASE WHEN pg_catalog.scale({0}) IS NULL THEN "
            "CASE WHEN {0} < 0 THEN -3 WHEN pg_catalog.sign({0}) = 1 THEN -2 ELSE -1 END "
            "WHEN {0} < 0 THEN -4 - pg_catalog.scale({0}) ELSE pg_catalog.scale({0}) END, {1}))"
        ).format(col, s)
    # The bytes of the binary send form, hashed whole (bytea's own hash, through a one-element
    # array). Not as 8-byte integers: hashint8extended folds its argument to 32 bits (high half XOR
    # low half, to hash as int4 does), so an interval's day and month (one 8-byte chunk of its send
    # form) cancelled out, '1 day' hashing as '1 mon'. A float's NaN is hashed as one value: its
    # bits vary ('Infinity' - 'Infinity' sets the sign bit), the text form and "=" do not.
    _, _, send = kind.split(":")
    return sql.SQL("pg_catalog.hash_array_extended(ARRAY[{}], {})").format(send_form(col, send), s)


def row_hash_expr(
    columns: Sequence[str], kinds: dict[str, str], names: Mapping[str, str] | None = None
) -> sql.Composable:
    """A 64-bit hash of the row: the XOR of each column's hash, seeded by its position (so swapped
    values differ), mixed; NULL hashes to a constant of its position (CASE, not coalesce: CASE is
    shipped). ``names``: what the table read calls each column (a foreign table's remote names), when
    not its own.

    The XOR is mixed (it is the seed of a hash, which takes all its 64 bits) because a bucket's
    checksum is the sum of its rows' hashes: with unmixed XORs, two rows swapping the value of a
    column, (k1, a), (k2, b) -> (k1, b), (k2, a), kept the sum whenever the hashes of a and b agree
    on the bits where those of k1 and k2 differ, one swap in 2^27 (about (3/4)^64)."""
    named = names or {}
    return sql.SQL("pg_catalog.hashint8extended(0, {})").format(
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
    """The bucket a row falls in comes from its key alone (an update stays in its bucket), hashed as
    its "=" compares it: a ``bpchar`` key without its trailing blanks ('k' and 'k  ' are one key,
    whose row hashes differ). ``names``: as in :func:`row_hash_expr`."""
    named = names or {}
    return sql.SQL("({})").format(
        sql.SQL(" # ").join(
            sql.SQL("CASE WHEN {} IS NULL THEN 0 ELSE {} END").format(
                sql.Identifier(named.get(k, k)),
                value_hash(named.get(k, k), KEY_KINDS.get(kinds[k], kinds[k]), KEY_SEED + i * SEED_STRIDE),
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
