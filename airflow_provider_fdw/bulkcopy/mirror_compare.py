"""Mirror mode's comparison: per-bucket checksums of both sides, bisected until the differing rows are few.

Every row falls into a bucket (:class:`RangeBuckets` for a single integer key, :class:`HashBuckets` for
any other); per bucket both sides compute ``count(*)`` and ``sum(row hash)`` (:func:`checksums`), the
source's on the remote (:func:`check_pushdown`). Each column's hash is chosen by :func:`hash_kinds`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.catalog import Table
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.sql import mirror as mq
from airflow_provider_fdw.wrappers import reads_postgres

LEAF_ROWS = 16  # bisect until a bucket holds about this many rows, then fetch its rows
FIRST_LEVEL_ROWS = 64  # rows per bucket of the first comparison (one pass over each side)
SPLIT_BITS = 4  # each bisection step splits a differing bucket 16 ways
MAX_BITS = 40
MAX_RANGES = 64  # up to this many key ranges are read through the index, more by one filtered pass
# ... or, for more ranges holding this many key values in all, by the list of those values (an index
# lookup each: 100,000 keys of a 10M-row table in 0.5-0.7 s against 1.5-3 s for the filtered pass).
MAX_KEYS = 200_000
INT8_MAX = (1 << 63) - 1
OID_LEVEL = 32  # ranges of an oid key: at most 2^32 values, the whole of the oid type

Buckets = dict[int, tuple[int, Any]]  # bucket -> (rows, sum of row hashes)


# -- checksums: one level of the comparison ------------------------------------------------------------


def checksums(
    s: LocalSession,
    buckets: Bucketing,
    table: QualifiedName,
    only: bool,
    row_hash: sql.Composable,
    level: int | None,
    parents: list[int] | None,
    parent_level: int,
    side: str,
) -> Buckets:
    """Rows and summed row hashes per bucket of ``level`` (within the ``parents`` buckets when given);
    ``level`` None: the whole table, bucket 0."""
    within, params = (None, None) if parents is None else buckets.within(parents, parent_level)
    bucket = None if level is None else buckets.bucket(level)
    return read_buckets(s, mq.bucket_checksums(table, only, bucket, row_hash, within), params, side)


# The bucket of the rows whose integer key is NULL (beyond every int8 bucket): see refuse_null_keys.
NULL_BUCKET = 1 << 64


def bucket_number(value: Any) -> int:
    return NULL_BUCKET if value is None else int(value)


def read_buckets(s: LocalSession, statement: sql.Composable, params: Any, side: str) -> Buckets:
    rows = s.fetchall(f"checksum {side} buckets", statement, params)
    return {bucket_number(b): (int(n), None if c is None else int(c)) for b, n, c in rows}


def refuse_null_keys(buckets: Buckets, table: QualifiedName, key: Sequence[str]) -> None:
    """A row whose integer key is NULL falls in no key range: it could never be compared or matched."""
    if NULL_BUCKET in buckets:
        raise FdwError(
            f"mode='mirror' cannot mirror {table}: {buckets[NULL_BUCKET][0]} of its rows have a NULL "
            f"{', '.join(key)}, and a mirror matches rows by key. Nothing was changed; give those rows a "
            "key, or copy the table with mode='replace'.",
            step="compare",
        )


# Memory for a per-bucket aggregate: expecting one group per key, the planner prepares to spill and a
# bucket takes 100-400 bytes, so 64 MB (x hash_mem_multiplier) holds the ~160,000 buckets of 10M rows;
# more buckets spill to disk, still unsorted.
HASH_WORK_MEM = "64MB"


def hash_aggregate(s: LocalSession) -> None:
    """In ``s``'s transaction: group buckets in a hash table, never by sorting.

    The planner estimates one group per key for ``GROUP BY key >> n`` and so sorts every row (an
    external sort of the whole table) to build a few buckets per thousand rows. A source read through
    postgres_fdw is planned by the remote with its own settings; the direct path sets them.
    """
    s.execute("hash the buckets", q.set_local("enable_sort", "off"), quiet=True)
    s.execute("hash the buckets", q.set_local("work_mem", HASH_WORK_MEM), quiet=True)


def check_pushdown(
    s: LocalSession, buckets: Bucketing, source: QualifiedName, row_hash: sql.Composable
) -> None:
    """Before anything changes: postgres_fdw must run the per-bucket aggregate on the remote."""
    statement = mq.bucket_checksums(source, False, buckets.bucket(buckets.first), row_hash)
    plan = [r[0] for r in s.fetchall("explain mirror checksums", q.explain_verbose(statement))]
    if not (plan[0].lstrip().startswith("Foreign Scan") and any("Aggregate on" in line for line in plan)):
        raise FdwConfigError(
            f"mode='mirror': postgres_fdw would not compute the per-bucket checksums of {source} on the "
            "remote (a column type or the server's settings prevent aggregate pushdown); mirroring it "
            "would read every row through the network on every run."
        )


# -- buckets: which rows are compared together ---------------------------------------------------------


class Bucketing:
    """How rows are grouped at each bisection level (``level`` is the class's own parameter)."""

    first: int

    def step(self, level: int) -> int | None:
        """The next, finer level; ``None`` at the leaves (then the rows are fetched)."""
        raise NotImplementedError

    def bucket(self, level: int) -> sql.Composable:
        raise NotImplementedError

    def within(self, buckets: list[int], level: int) -> tuple[sql.Composable, list[Any] | None]:
        """A condition (and its parameters) true for the rows of ``buckets`` only."""
        raise NotImplementedError

    def describe(self, level: int) -> str:
        raise NotImplementedError

    def renamed(self, names: Mapping[str, str]) -> Bucketing:
        """The same buckets, with the key columns read by ``names`` (the remote's, read directly)."""
        raise NotImplementedError

    def copy_rows(
        self, table: QualifiedName, columns: Sequence[str], buckets: Sequence[int], level: int
    ) -> sql.Composed:
        """``COPY … TO STDOUT`` (binary) of every row of ``buckets`` (COPY takes no parameters)."""
        raise NotImplementedError


class RangeBuckets(Bucketing):
    """A single integer key: a bucket is a range of 2^shift key values (``key >> shift``). Neighbouring
    keys share a bucket (cheap to group), and a finer level reads its ranges through the key's index."""

    def __init__(
        self,
        column: str,
        low: int | None,
        high: int | None,
        rows: float,
        listable: bool = False,
        max_level: int = 62,
    ) -> None:
        self.column = column
        # An oid key (0 … 2^32 - 1): a range of more than 2^32 values reaches past the largest oid,
        # and the bound of such a range, compared with the key, is cast to oid ("OID out of range").
        self.max_level = max_level
        # The key is int2/int4/int8 (an int8[] of its values is compared through its index; not oid).
        self.listable = listable
        span = (high - low + 1) if low is not None and high is not None else 0
        self.density = rows / span if span else 0.0  # rows per key value
        self.first = self.first_for(FIRST_LEVEL_ROWS)
        self.leaf = min(self.first, self.first_for(LEAF_ROWS))

    def first_for(self, per_bucket: int) -> int:
        """The level whose ranges of key values hold about ``per_bucket`` rows."""
        if self.density <= 0:
            return self.max_level  # an empty target: one bucket, fetched whole
        return max(0, min(self.max_level, round(math.log2(max(per_bucket / self.density, 1)))))

    def step(self, level: int) -> int | None:
        return None if level <= self.leaf else max(self.leaf, level - SPLIT_BITS)

    def bucket(self, level: int) -> sql.Composable:
        return mq.range_bucket(self.column, level)

    def within(self, buckets: list[int], level: int) -> tuple[sql.Composable, list[Any] | None]:
        ranges: list[list[int]] = []
        for b in sorted(buckets):
            if ranges and ranges[-1][1] == b - 1:
                ranges[-1][1] = b
            else:
                ranges.append([b, b])
        if (
            len(ranges) > MAX_RANGES
            and self.listable
            and sum(hi - lo + 1 for lo, hi in ranges) << level <= MAX_KEYS
        ):
            # every key value of the ranges (all within int8: they come from existing keys)
            keys = [k for lo, hi in ranges for k in range(lo << level, min((hi + 1) << level, INT8_MAX + 1))]
            return mq.key_in(self.column), [keys]
        if len(ranges) > MAX_RANGES:  # many scattered ranges: one pass with a hashed lookup per row
            return sql.SQL("({}::int8 >> {}) = ANY(%s::int8[])").format(
                sql.Identifier(self.column), sql.Literal(level)
            ), [buckets]
        spans = (
            self.span(max(lo << level, -INT8_MAX - 1), min(((hi + 1) << level) - 1, INT8_MAX))
            for lo, hi in ranges
        )
        return sql.SQL("({})").format(sql.SQL(" OR ").join(spans)), None

    def span(self, low: int, high: int) -> sql.Composed:
        """The rows whose key is from ``low`` to ``high`` (a range the key's index serves)."""
        col = sql.Identifier(self.column)
        return sql.SQL("({} >= {} AND {} <= {})").format(col, sql.Literal(low), col, sql.Literal(high))

    def describe(self, level: int) -> str:
        return f"ranges of 2^{level} {self.column} values"

    def renamed(self, names: Mapping[str, str]) -> RangeBuckets:
        same = copy.copy(self)
        same.column = names.get(self.column, self.column)
        return same

    def copy_rows(
        self, table: QualifiedName, columns: Sequence[str], buckets: Sequence[int], level: int
    ) -> sql.Composed:
        return mq.copy_rows_in_ranges(table, columns, self.column, level, buckets)  # through the index


class HashBuckets(Bucketing):
    """Any key: a bucket is the low ``bits`` of a hash of the key (no locality, read by a full scan)."""

    def __init__(
        self,
        key: Sequence[str],
        kinds: Mapping[str, str],
        rows: float,
        names: Mapping[str, str] | None = None,
    ) -> None:
        self.key, self.kinds, self.rows = tuple(key), kinds, rows
        self.key_hash = mq.key_hash_expr(key, kinds, names)
        self.first = bits_for(rows, FIRST_LEVEL_ROWS)
        self.leaf = max(self.first, bits_for(rows, LEAF_ROWS))

    def step(self, level: int) -> int | None:
        return None if level >= self.leaf else min(self.leaf, level + SPLIT_BITS)

    def bucket(self, level: int) -> sql.Composable:
        return sql.SQL("({} & {})").format(self.key_hash, sql.Literal((1 << level) - 1))

    def within(self, buckets: list[int], level: int) -> tuple[sql.Composable, list[Any] | None]:
        # The hash names the key columns unqualified: used where only the hashed table is in scope.
        return sql.SQL("({} & {}) = ANY(%s::int8[])").format(self.key_hash, sql.Literal((1 << level) - 1)), [
            buckets
        ]

    def describe(self, level: int) -> str:
        return f"{level} key-hash bits"

    def renamed(self, names: Mapping[str, str]) -> HashBuckets:
        return HashBuckets(self.key, self.kinds, self.rows, names)

    def copy_rows(
        self, table: QualifiedName, columns: Sequence[str], buckets: Sequence[int], level: int
    ) -> sql.Composed:
        condition = sql.SQL("({} & {}) = ANY({})").format(
            self.key_hash, sql.Literal((1 << level) - 1), mq.int8_array(buckets)
        )
        return mq.copy_rows_where(table, columns, condition)  # one filtered pass: no index serves it


# -- hashing: which hash each column gets ---------------------------------------------------------------

INTEGERS = ("int2", "int4", "int8", "oid")
TEXTS = ("text", "varchar")  # bpchar is hashed with its length: its text drops trailing blanks
# Types whose "=" means identical bytes and whose own hash reads every byte: their extended hash
# (through a one-element array, which postgres_fdw ships) is exact. Not time and the timestamps: their
# hash is hashint8extended's, which folds 64 bits to 32 (hashed from their send form instead).
EXACT = ("date",)
BYTES_MAX = 16  # fixed-length types up to this size are hashed from the bytes of their send form


def remote_nondeterministic(s: LocalSession, source: Table | None, log: Any) -> frozenset[str]:
    """The columns of a postgres_fdw source whose remote column has a nondeterministic collation:
    the hash pushed down runs under the remote column's collation, whatever the foreign table
    declares (made by hand, or imported with import_collate 'false'). Empty when the remote cannot
    say (before PostgreSQL 12 no collation is nondeterministic)."""
    return remote_columns(
        s,
        source,
        log,
        "read the remote columns' collations",
        q.COLLATION_PROBES,
        q.remote_nondeterministic_query(through_fdw=True),
    )


def remote_bpchar(s: LocalSession, source: Table | None, log: Any) -> frozenset[str]:
    """The columns of a postgres_fdw source whose remote column is bpchar (or a domain over it),
    whatever the foreign table declares. Empty when the remote cannot say."""
    return remote_columns(
        s, source, log, "read the remote columns' types", q.BPCHAR_PROBES, q.remote_bpchar_query()
    )


def remote_columns(
    s: LocalSession,
    source: Table | None,
    log: Any,
    step: str,
    probes: Sequence[tuple[str, str, str]],
    query: sql.Composable,
) -> frozenset[str]:
    """The local names of the columns ``query`` (over ``probes`` of the remote catalogs) names."""
    if source is None or not source.is_foreign or source.remote is None or source.server_name is None:
        return frozenset()
    if not reads_postgres(source.relation.wrapper):
        return frozenset()
    with s.undone(step):
        try:
            for statement in q.create_pk_probes(source.server_name, probes):
                s.execute(step, statement, quiet=True)
            rows = s.fetchall(step, query, source.remote)
        except FdwError as exc:
            log.debug("%s of %s failed: %s", step, source.remote, exc)
            return frozenset()
    remote_to_local = {col.remote_name: name for name, col in source.columns.items()}
    return frozenset(remote_to_local[r] for (r,) in rows if r in remote_to_local)


def refuse_nondeterministic(
    columns: Sequence[str], loose: frozenset[str] | set[str], source: QualifiedName
) -> None:
    """Refuse mirrored columns compared under a nondeterministic collation, before anything changes."""
    named = [name for name in columns if name in loose]
    if named:  # hashed on the remote by their sort key, as the foreign table declares (IMPORT's collate)
        raise FdwConfigError(
            f"mode='mirror' cannot compare columns {named} of {source}: their collation is "
            "nondeterministic, under which text is hashed by its sort key (equal for values that differ, "
            "and never as the target hashes it), so every run would fail its check. Leave them out with "
            "columns=, or use mode='replace'."
        )


def refuse_remote_bpchar(
    kinds: Mapping[str, str | None], remote_bpchar: frozenset[str], source: QualifiedName
) -> None:
    """Refuse a column declared text or varchar over a remote bpchar, before anything changes: the
    remote hashes its text, which drops the trailing blanks the target keeps (a change of them
    would go unseen, and a key with them never match)."""
    named = [name for name, kind in kinds.items() if kind == "text" and name in remote_bpchar]
    if named:
        raise FdwConfigError(
            f"mode='mirror' cannot compare columns {named} of {source}: the foreign table declares them "
            "text or varchar, but on the remote they are character (bpchar), whose text drops trailing "
            "blanks where the hash runs, so a change of trailing blanks would go unseen. Declare them "
            "character in the foreign table (as IMPORT FOREIGN SCHEMA does) and in the target, leave "
            "them out with columns=, or use mode='replace'."
        )


def hash_kinds(
    s: LocalSession,
    source_oid: int,
    columns: Sequence[str],
    source: QualifiedName,
    remote_loose: frozenset[str] = frozenset(),
    remote_bpchar: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Per column, how it is hashed (see :func:`.sql.mirror.value_hash`); a column none of the ways
    fit is refused, before anything changes (its hash could not run on the remote), and so is one
    declared text over a remote bpchar (:func:`refuse_remote_bpchar`)."""
    kinds = kinds_of(s, source_oid, columns)
    refuse_nondeterministic(columns, kinds.nondeterministic | remote_loose, source)
    refuse_remote_bpchar(kinds, remote_bpchar, source)
    refused = [name for name, kind in kinds.items() if kind is None]
    if refused:
        raise FdwConfigError(
            f"mode='mirror' cannot checksum columns {refused} of {source} on the remote: it hashes "
            "integers, text, boolean, numeric, uuid and fixed-length built-in types (timestamps, dates, "
            "floats, intervals …); leave the others out with columns=, or use mode='replace'."
        )
    return {name: kind for name, kind in kinds.items() if kind is not None}


def check_target_kinds(
    s: LocalSession,
    source_oid: int,
    target_oid: int,
    kinds: dict[str, str],
    types: tuple[dict[str, Any], dict[str, Any]],
    tables: tuple[QualifiedName, QualifiedName],
) -> None:
    """Refuse, before anything changes, a column hashed another way on the target than on the source:
    a value is hashed as its type stores it (a timestamp and a timestamptz, a numeric and an integer,
    a real and a double differ), so such a column would differ on every run, or its hash not run;
    and a target whose type modifier stores values otherwise (``numeric`` into ``numeric(10,2)``:
    every run would write the rounded value and fail its check). ``types``: the source's and the
    target's columns (:func:`read_columns`); ``tables``: their names."""
    target_kinds = kinds_of(s, target_oid, list(kinds), domains=True)
    loose = [name for name in kinds if name in target_kinds.nondeterministic]
    if loose:
        raise FdwConfigError(
            f"mode='mirror' cannot compare columns {loose} of {tables[1]}: their collation is "
            "nondeterministic, under which text is hashed by its sort key (equal for values that differ, "
            "and never as the source hashes it), so every run would fail its check. Give them a "
            "deterministic collation, leave them out with columns=, or use mode='replace'."
        )
    differing = [name for name, kind in kinds.items() if target_kinds[name] != kind]
    source_mods = kinds_of(s, source_oid, list(kinds)).typmods
    differing += [  # the same kind of type, whose modifier on the target changes values
        name
        for name in kinds
        if name not in differing
        and not holds_every_value(
            target_kinds.typmods[name][0], source_mods[name][1], target_kinds.typmods[name][1]
        )
    ]
    if differing:
        (source_types, target_types), (source, target) = types, tables
        described = ", ".join(
            f"{name} ({source_types[name].type_sql} there, {target_types[name].type_sql} here)"
            for name in differing
        )
        raise FdwConfigError(
            f"mode='mirror' compares {source} and {target} value by value as each type stores it, so a "
            f"column must have the same kind of type on both: {described}; and a target's type modifier "
            "must keep every source value as it is (numeric's scale and a time's precision round, "
            "character's length pads, varchar's cuts trailing blanks). Give the target the source's "
            "types (ALTER TABLE … ALTER COLUMN … TYPE), leave these columns out with columns=, or use "
            "mode='replace'."
        )


class Kinds(dict[str, str | None]):
    """How each column is hashed (None where no way fits), and which have a nondeterministic collation."""

    nondeterministic: frozenset[str] = frozenset()
    typmods: dict[str, tuple[str, int]]  # per column: its (base) type's name and its modifier


def kinds_of(s: LocalSession, oid: int, columns: Sequence[str], domains: bool = False) -> Kinds:
    """How each column of the relation ``oid`` is hashed; None where no way fits. ``domains``: a
    domain column is hashed as its base type (on the target: the expression hashes the value the
    domain stores), else it fits no way."""
    params = {"oid": oid, "domains": domains}
    info = {row[0]: row[1:] for row in s.fetchall("read column types", mq.HASH_KINDS_QUERY, params)}
    kinds = Kinds()
    for name in columns:
        builtin, typname, typlen, send, immutable, _, _ = info[name]
        if builtin and typname in INTEGERS:
            kinds[name] = "oid" if typname == "oid" else "int"
        elif builtin and typname in TEXTS:
            kinds[name] = "text"
        elif builtin and typname in EXACT:
            kinds[name] = "exact"
        elif builtin and typname in ("bool", "numeric", "uuid", "bpchar"):
            kinds[name] = typname
        elif builtin and immutable and 0 < typlen <= BYTES_MAX and typname not in q.OBJECT_REFERENCE_TYPES:
            kinds[name] = f"bytes:{typlen}:{send}"
        else:
            kinds[name] = None
    kinds.nondeterministic = frozenset(name for name in columns if not info[name][-1])
    kinds.typmods = {name: (info[name][1], info[name][5]) for name in columns}
    return kinds


def holds_every_value(typname: str, source_typmod: int, target_typmod: int) -> bool:
    """Whether a target column of ``typname`` with ``target_typmod`` stores every value of one with
    ``source_typmod`` unchanged (-1: none). A modifier rounds (numeric's scale, the precision of
    times and intervals), pads (bpchar's length) or truncates trailing blanks (varchar's length)."""
    if target_typmod < 0 or target_typmod == source_typmod:
        return True
    if typname in ("time", "timetz", "timestamp", "timestamptz"):  # fractional digits, none: 6
        return target_typmod >= (6 if source_typmod < 0 else source_typmod)
    if source_typmod < 0:
        return False  # unconstrained, the source holds values the target's modifier changes
    if typname == "numeric":  # (precision << 16 | scale) + 4; the scale 11 bits, signed
        (p1, s1), (p2, s2) = (
            ((m - 4) >> 16 & 0xFFFF, (((m - 4) & 0x7FF) ^ 1024) - 1024)
            for m in (source_typmod, target_typmod)
        )
        return s1 == s2 and p2 - s2 >= p1 - s1
    if typname == "varchar":  # the length + 4: a longer one holds every value
        return target_typmod >= source_typmod
    return False  # bpchar pads to its length; an interval's modifier also drops fields


def bits_for(rows: float, per_bucket: int) -> int:
    return max(0, min(MAX_BITS, math.ceil(math.log2(max(rows, 1) / per_bucket)) if rows > per_bucket else 0))
