"""Mirror mode: make the target equal to the source, writing and moving only the rows that differ.

How a mirror runs, all in ONE local transaction (so every read of the source goes through the same
postgres_fdw remote transaction, REPEATABLE READ: one source snapshot for the whole run):

1. Read the source, the target and the key (``key_columns``, else the target's primary key, else a
   unique index over NOT NULL columns; refused without one). Lock the target ``EXCLUSIVE``: readers
   go on reading, writers wait.
2. Compare per-bucket checksums. Every row falls into a bucket by a hash of its key; per bucket both
   sides compute ``count(*)`` and ``sum(row hash)``. The source's aggregate runs ON THE REMOTE
   (postgres_fdw aggregate pushdown, checked with ``EXPLAIN VERBOSE`` before anything runs), so only
   one row per bucket crosses the network. The hashes are built from immutable built-ins over each
   value's binary send form (or its bytes, for integers and text), so they are equal on both sides for
   equal values whatever DateStyle, TimeZone, IntervalStyle or extra_float_digits say.
3. Bisect: buckets that differ are split (more bits of the same key hash) and compared again, only
   within themselves, until a bucket holds a handful of rows.
4. Fetch the source rows of the differing leaf buckets into a temporary table, then delete the target
   rows of those buckets whose key vanished, update the rows whose values differ and insert the new
   keys (as the replace's in-place apply: deferrable constraints deferred, GENERATED ALWAYS identities
   kept, owned sequences caught up; a row of another table referencing a row the mirror would delete
   or re-key fails the run before any change, naming the foreign key).
5. Recompute the changed buckets on the target and compare them with the source's: a mismatch rolls
   everything back. Commit.

A failure anywhere leaves the target exactly as it was; a retry starts over and converges.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_provider_fdw import locks
from airflow_provider_fdw import sql as q
from airflow_provider_fdw._driver import sql
from airflow_provider_fdw.bulkcopy.apply import (
    catch_up_sequences,
    check_no_null_key,
    check_unique,
    choose_key,
)
from airflow_provider_fdw.catalog import read_columns
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.locks import acquire_run_lock, release_run_lock
from airflow_provider_fdw.names import QualifiedName, check_identifiers, parse_qualified_name
from airflow_provider_fdw.refresh import lock_timeout_setting
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.sql import mirror as mq
from airflow_provider_fdw.timeouts import (
    DEFAULT_LOCK_RETRIES,
    DEFAULT_SWAP_LOCK_TIMEOUT,
    DEFAULT_TARGET_LOCK_WAIT,
    with_lock_retries,
)

LEAF_ROWS = 16  # bisect until a bucket holds about this many rows, then fetch its rows
FIRST_LEVEL_ROWS = 64  # rows per bucket of the first comparison (one pass over each side)
SPLIT_BITS = 4  # each bisection step splits a differing bucket 16 ways
MAX_BITS = 40
MAX_RANGES = 64  # up to this many key ranges are read through the index, more by one filtered pass


@dataclass(frozen=True)
class MirrorPlan:
    """Validated arguments of a mirror run."""

    source: QualifiedName
    target: QualifiedName
    key_columns: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    lock_timeout: str | None = None


def plan_mirror(
    source_table: str,
    target_table: str,
    key_columns: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    lock_timeout: float | str | None = None,
) -> MirrorPlan:
    """Check every argument before anything runs; raise :class:`FdwConfigError` with a clear message."""
    source = parse_qualified_name(source_table, "source_table")
    target = parse_qualified_name(target_table, "target_table")
    if source == target:
        raise FdwConfigError("source_table and target_table are the same table.")
    keys = check_identifiers(key_columns, "key_columns")
    cols = check_identifiers(columns, "columns")
    if cols is not None and keys and [k for k in keys if k not in cols]:
        raise FdwConfigError(
            f"columns must include the key columns; missing {[k for k in keys if k not in cols]}."
        )
    return MirrorPlan(
        source,
        target,
        tuple(keys) if keys else None,
        tuple(cols) if cols else None,
        lock_timeout_setting(lock_timeout if lock_timeout is not None else DEFAULT_SWAP_LOCK_TIMEOUT),
    )


def mirror_plan(plan: Any) -> MirrorPlan:
    """The mirror's part of a ``CopyPlan`` with ``mode="mirror"`` (already validated by ``plan_copy``)."""
    return MirrorPlan(plan.source, plan.target, plan.key_columns, plan.columns, plan.lock_timeout)


@dataclass
class MirrorResult:
    """What a mirror run compared and wrote (a small, JSON-safe summary)."""

    source: str
    target: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    rows_fetched: int = 0
    buckets_compared: int = 0
    levels: int = 0
    key: list[str] = field(default_factory=list)
    checksum: str | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"mode": "mirror", **asdict(self), "seconds": round(self.seconds, 3)}


Buckets = dict[int, tuple[int, Any]]  # bucket -> (rows, sum of row hashes)


class Mirror:
    """One mirror run of ``plan.source`` (a foreign table) into ``plan.target`` (an existing table).

    :param lock_retries: attempts to take the target's lock, each bounded by the plan's ``lock_timeout``.
    :param new_session: when given, a function returning another LOCAL session: the target's
        checksums are then computed in it while the remote computes the source's (same rows: the
        run's transaction holds the target's EXCLUSIVE lock and has not written yet).
    """

    def __init__(
        self,
        plan: MirrorPlan,
        log: Any,
        target_lock_wait: float = DEFAULT_TARGET_LOCK_WAIT,
        new_session: Callable[[], LocalSession] | None = None,
        lock_retries: int = DEFAULT_LOCK_RETRIES,
    ) -> None:
        self.plan = plan
        self.log = log
        self.target_lock_wait = target_lock_wait
        self.new_session = new_session
        self.lock_retries = lock_retries
        self.helper: LocalSession | None = None
        self._self_referencing = False
        self.result = MirrorResult(str(plan.source), str(plan.target))

    def run(self, session: LocalSession) -> MirrorResult:
        started = time.monotonic()
        lock_key = locks.lock_key(
            "copy", str(self.plan.target)
        )  # a copy and a mirror of one target take turns
        acquire_run_lock(session, lock_key, self.target_lock_wait, self.log)
        try:
            # Autovacuum or a reader's brief lock may hold the target: each attempt is bounded by
            # lock_timeout and starts over (nothing was written).
            with_lock_retries(
                lambda: self._attempt(session), self.lock_retries, f"mirror {self.plan.target}", self.log
            )
        finally:
            if self.helper is not None:
                self.helper.close()
            release_run_lock(session, lock_key, self.log)
        self.result.seconds = time.monotonic() - started
        r = self.result
        self.log.info(
            "Mirrored %s to %s in %.2fs: %d source rows, %d buckets compared in %d levels, %d rows fetched; "
            "inserted %d, updated %d, deleted %d",
            r.source,
            r.target,
            r.seconds,
            r.rows,
            r.buckets_compared,
            r.levels,
            r.rows_fetched,
            r.inserted,
            r.updated,
            r.deleted,
        )
        return r

    # -- the whole run, in one transaction ----------------------------------------------------

    def _attempt(self, session: LocalSession) -> None:
        self.result = MirrorResult(str(self.plan.source), str(self.plan.target))
        self._self_referencing = False
        with session.transaction():
            self._run(session)

    def _run(self, s: LocalSession) -> None:
        p = self.plan
        if p.lock_timeout:
            s.execute("set lock_timeout", q.set_local("lock_timeout", p.lock_timeout), quiet=True)
        source_row = s.fetchone("read source_table", q.RELATION_QUERY, p.source)
        if source_row is None:
            raise FdwConfigError(
                f"source_table {p.source} does not exist in the local database "
                "(import it with ImportForeignSchemaOperator first)."
            )
        target_row = s.fetchone("read target_table", q.RELATION_QUERY, p.target)
        if target_row is None:
            raise FdwConfigError(
                f"target_table {p.target} does not exist: create it with a first copy (mode='replace'), "
                "then mirror it."
            )
        if target_row[1] not in ("r", "p"):
            raise FdwConfigError(f"target_table {p.target} exists but is not a table.")
        oid, relkind = target_row[0], target_row[1]
        only = relkind == "r"  # inheritance children of a plain table are not the target's rows
        source_columns = read_columns(s, p.source)
        target_columns = read_columns(s, p.target)
        generated = {c for (c,) in s.fetchall("read generated columns", q.GENERATED_COLUMNS_QUERY, (oid,))}
        columns = list(p.columns or [c for c in source_columns if c not in generated])
        missing = [c for c in columns if c not in source_columns]
        if missing:
            raise FdwConfigError(f"columns {missing} do not exist in {p.source}.")
        missing = [c for c in columns if c not in target_columns or c in generated]
        if missing:
            raise FdwConfigError(f"columns {missing} of {p.source} are not writable columns of {p.target}.")
        key, key_is_unique = choose_key(s, oid, p.key_columns)
        if not key:
            raise FdwConfigError(
                f"mode='mirror' needs a key to match rows: {p.target} has no primary key or unique index "
                "over NOT NULL columns; pass key_columns."
            )
        missing = [k for k in key if k not in columns]
        if missing:
            raise FdwConfigError(
                f"the key {list(key)} is not among the mirrored columns (missing {missing})."
            )
        self.result.key = list(key)
        kinds = hash_kinds(s, source_row[0], columns, p.source)
        row_hash = mq.row_hash_expr(columns, kinds)

        s.execute(f"lock {p.target}", q.lock_table_in(p.target, "EXCLUSIVE"))
        estimate = self._estimate_rows(s, oid)
        if len(key) == 1 and kinds[key[0]] == "int":
            low, high = s.fetchone("read the key's range", mq.key_range(p.target, key[0], only))
            self.buckets: Bucketing = RangeBuckets(key[0], low, high, estimate)
        else:
            self.buckets = HashBuckets(mq.key_hash_expr(key, kinds), estimate)
        if source_row[4] is not None:  # a foreign table: its aggregate must run on the remote
            self._check_pushdown(s, p.source, row_hash)

        level = self.buckets.first
        parents: list[int] | None = None
        parent_level = level
        while True:
            self.result.levels += 1
            src, tgt = self._both_checksums(s, only, row_hash, level, parents, parent_level)
            if parents is None:
                self.result.rows = sum(n for n, _ in src.values())
                self.result.checksum = str(sum(int(c) for _, c in src.values() if c is not None))
            compared = set(src) | set(tgt)
            self.result.buckets_compared += len(compared)
            differing = sorted(b for b in compared if src.get(b) != tgt.get(b))
            self.log.info(
                "Level %d: %d buckets (%s), %d differ",
                self.result.levels,
                len(compared),
                self.buckets.describe(level),
                len(differing),
            )
            if not differing:
                self.result.unchanged = self.result.rows
                return
            following = self.buckets.step(level)
            if following is None:
                leaves = {b: src.get(b, (0, None)) for b in differing}
                break
            parents, parent_level, level = differing, level, following
        self._apply(s, oid, only, key, key_is_unique, columns, row_hash, level, leaves)

    def _apply(
        self,
        s: LocalSession,
        oid: int,
        only: bool,
        key: tuple[str, ...],
        key_is_unique: bool,
        columns: list[str],
        row_hash: sql.Composable,
        level: int,
        leaves: Buckets,
    ) -> None:
        p = self.plan
        buckets = sorted(leaves)
        within, params = self.buckets.within(buckets, level)
        staging = QualifiedName("pg_temp", f"fdw_mirror_{uuid.uuid4().hex[:12]}")
        s.execute(
            "create mirror staging table", mq.create_staging(staging, p.target, columns, only), quiet=True
        )
        fetched = s.execute(
            f"fetch the differing rows of {p.source}",
            mq.fetch_rows(staging, p.source, columns, within),
            params,
        ).rowcount
        self.result.rows_fetched = fetched
        # The apply joins each side to the other by key: both through an index, never a full scan.
        s.execute(
            "index mirror staging table", q.create_index(staging, f"{staging.name}_key", key), quiet=True
        )
        s.execute("analyze mirror staging table", q.analyze(staging), quiet=True)
        # DEFERRABLE unique keys / foreign keys are checked at commit, on the final rows.
        s.execute("defer deferrable constraints", q.DEFER_CONSTRAINTS, quiet=True)
        check_no_null_key(s, staging, key, f"source rows of {p.source}", "the mirror never matches")
        check_unique(s, staging, key, str(p.source))
        if not key_is_unique:
            check_unique(s, p.target, key, str(p.target), only)
        self._check_children(s, oid, only, key, staging, within, params)
        always = {c for (c,) in s.fetchall("read identity columns", q.ALWAYS_IDENTITY_QUERY, (oid,))}
        image_equal = [c for (c,) in s.fetchall("read column types", q.IMAGE_EQUAL_COLUMNS_QUERY, (oid,))]
        joins = self._prefer_index_lookups(s) if key_is_unique else {}
        # With a self-reference, rows re-pointed away from a deleted row are updated first, so its
        # ON DELETE action finds no row to act on; otherwise deletes first free unique values.
        update_first = self._self_referencing
        if update_first:
            self._update(s, staging, key, columns, only, image_equal)
        self.result.deleted = s.execute(
            f"delete vanished rows of {p.target}",
            mq.delete_vanished(p.target, staging, key, within, only),
            params,
        ).rowcount
        if not update_first:
            self._update(s, staging, key, columns, only, image_equal)
        self.result.inserted = s.execute(
            f"insert new rows of {p.target}",
            q.diff_insert(p.target, staging, key, columns, only, bool(always & set(columns))),
        ).rowcount
        for setting, value in joins.items():
            s.execute("restore planner setting", q.set_local(setting, value), quiet=True)
        self.result.unchanged = self.result.rows - self.result.inserted - self.result.updated
        catch_up_sequences(s, p.target, oid, only)
        after = self._checksums(s, p.target, only, row_hash, level, buckets, level, "target")
        wrong = [b for b in buckets if after.get(b, (0, None)) != leaves[b]]
        (total,) = s.fetchone(
            "count target rows", q.count_rows(p.target) if not only else mq.count_only(p.target)
        )
        if total != self.result.rows:  # a foreign key action reached rows outside the changed buckets
            raise FdwError(
                f"Mirror check failed: after the apply {p.target} has {total} rows, the source snapshot "
                f"{self.result.rows} (a foreign key action on the target changed rows the mirror did not "
                "write). Nothing was committed to the target.",
                step="verify",
            )
        if wrong:
            raise FdwError(
                f"Mirror check failed: after the apply, {len(wrong)} key buckets of {p.target} still "
                f"differ from the source snapshot (first: bucket {wrong[0]}, target {after.get(wrong[0])}, "
                f"source {leaves[wrong[0]]}); values whose equality is not identity (a non-deterministic "
                "collation) cannot be mirrored. Nothing was committed to the target.",
                step="verify",
            )
        s.execute("drop mirror staging table", q.drop_table(staging), quiet=True)

    # -- steps ----------------------------------------------------------------------------------

    def _check_pushdown(self, s: LocalSession, source: QualifiedName, row_hash: sql.Composable) -> None:
        """Before anything changes: postgres_fdw must run the per-bucket aggregate on the remote."""
        statement = mq.bucket_checksums(source, False, self.buckets.bucket(self.buckets.first), row_hash)
        plan = [r[0] for r in s.fetchall("explain mirror checksums", q.explain_verbose(statement))]
        if not (plan[0].lstrip().startswith("Foreign Scan") and any("Aggregate on" in line for line in plan)):
            raise FdwConfigError(
                f"mode='mirror': postgres_fdw would not compute the per-bucket checksums of {source} on the "
                "remote (a column type or the server's settings prevent aggregate pushdown); mirroring it "
                "would read every row through the network on every run."
            )

    def _update(
        self,
        s: LocalSession,
        staging: QualifiedName,
        key: tuple[str, ...],
        columns: list[str],
        only: bool,
        image_equal: list[str],
    ) -> None:
        if any(c not in key or c not in image_equal for c in columns):
            self.result.updated = s.execute(
                f"update changed rows of {self.plan.target}",
                q.diff_update(self.plan.target, staging, key, columns, only, image_equal),
            ).rowcount

    def _prefer_index_lookups(self, s: LocalSession) -> dict[str, str]:
        """The few changed rows find their target rows through the key's unique index, not by a hash
        join over the whole target (the planner cannot know that the staged keys are a small sample)."""
        saved = {}
        for setting in ("enable_hashjoin", "enable_mergejoin"):
            (saved[setting],) = s.fetchone("read planner setting", mq.CURRENT_SETTING_QUERY, (setting,))
            s.execute("prefer index lookups", q.set_local(setting, "off"), quiet=True)
        return saved

    def _estimate_rows(self, s: LocalSession, oid: int) -> float:
        (estimate,) = s.fetchone("estimate target rows", mq.ROW_ESTIMATE_QUERY, (oid,))
        if estimate is None or estimate < 0:  # never analyzed: count (an index-only scan when vacuumed)
            (estimate,) = s.fetchone("count target rows", q.count_rows(self.plan.target))
        return float(estimate)

    def _both_checksums(
        self,
        s: LocalSession,
        only: bool,
        row_hash: sql.Composable,
        level: int,
        parents: list[int] | None,
        parent_level: int,
    ) -> tuple[Buckets, Buckets]:
        """The source's and the target's checksums of one level (side by side with ``new_session``)."""
        p = self.plan
        if self.new_session is None:
            src = self._checksums(s, p.source, False, row_hash, level, parents, parent_level, "source")
            return src, self._checksums(s, p.target, only, row_hash, level, parents, parent_level, "target")
        if self.helper is None:
            self.helper = self.new_session()
        helper = self.helper
        with ThreadPoolExecutor(1, thread_name_prefix="fdw-mirror-target") as pool:

            def target_side() -> Buckets:
                with helper.transaction():
                    return self._checksums(
                        helper, p.target, only, row_hash, level, parents, parent_level, "target"
                    )

            pending = pool.submit(target_side)
            try:
                src = self._checksums(s, p.source, False, row_hash, level, parents, parent_level, "source")
            finally:
                tgt = pending.result()
        return src, tgt

    def _checksums(
        self,
        s: LocalSession,
        table: QualifiedName,
        only: bool,
        row_hash: sql.Composable,
        level: int,
        parents: list[int] | None,
        parent_level: int,
        side: str,
    ) -> Buckets:
        within, params = (None, None) if parents is None else self.buckets.within(parents, parent_level)
        statement = mq.bucket_checksums(table, only, self.buckets.bucket(level), row_hash, within)
        rows = s.fetchall(f"checksum {side} buckets", statement, params)
        return {int(b): (int(n), None if c is None else int(c)) for b, n, c in rows}

    def _check_children(
        self,
        s: LocalSession,
        oid: int,
        only: bool,
        key: tuple[str, ...],
        staging: QualifiedName,
        within: sql.Composable,
        params: list[Any] | None,
    ) -> None:
        """Fail, naming the constraint, when a row referencing the target would see its parent row
        deleted or its referenced values changed (its ON DELETE/UPDATE action would fire)."""
        for conname, schema, table, child_columns, parent_columns in s.fetchall(
            "read foreign keys pointing at the target", q.REFERENCING_KEYS_QUERY, (oid,)
        ):
            child = QualifiedName(schema, table)
            self._self_referencing = self._self_referencing or child == self.plan.target
            probe = mq.mirror_orphan_probe(
                child, child_columns, self.plan.target, parent_columns, staging, key, within, only
            )
            twice = None if params is None else params * 2  # a self-reference filters the child rows too
            orphan = s.fetchone(
                f"check rows referencing {self.plan.target} through {conname}",
                probe,
                twice if child == self.plan.target else params,
            )
            if orphan is not None:
                shown = repr(orphan[0]) if len(orphan) == 1 else repr(tuple(orphan))
                raise FdwError(
                    f"Mirroring {self.plan.target} would delete or change the row that rows of {child} "
                    f"reference through foreign key {conname} ({', '.join(child_columns)}) = {shown}: the "
                    "source no longer has it. Nothing was changed; delete or re-point those rows first.",
                    step="check referencing rows",
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


class RangeBuckets(Bucketing):
    """A single integer key: a bucket is a range of 2^shift key values (``key >> shift``). Neighbouring
    keys share a bucket (cheap to group), and a finer level reads its ranges through the key's index."""

    def __init__(self, column: str, low: int | None, high: int | None, rows: float) -> None:
        self.column = column
        span = (high - low + 1) if low is not None and high is not None else 0
        density = rows / span if span else 0.0  # rows per key value

        def shift(per_bucket: int) -> int:
            if density <= 0:
                return 62  # an empty target: one bucket, fetched whole
            return max(0, min(62, int(math.log2(max(per_bucket / density, 1)))))

        self.first = shift(FIRST_LEVEL_ROWS)
        self.leaf = min(self.first, shift(LEAF_ROWS))

    def step(self, level: int) -> int | None:
        return None if level <= self.leaf else max(self.leaf, level - SPLIT_BITS)

    def bucket(self, level: int) -> sql.Composable:
        return sql.SQL("({}::int8 >> {})").format(sql.Identifier(self.column), sql.Literal(level))

    def within(self, buckets: list[int], level: int) -> tuple[sql.Composable, list[Any] | None]:
        ranges: list[list[int]] = []
        for b in sorted(buckets):
            if ranges and ranges[-1][1] == b - 1:
                ranges[-1][1] = b
            else:
                ranges.append([b, b])
        if len(ranges) > MAX_RANGES:  # many scattered ranges: one pass with a hashed lookup per row
            return sql.SQL("({}::int8 >> {}) = ANY(%s::int8[])").format(
                sql.Identifier(self.column), sql.Literal(level)
            ), [buckets]
        col = sql.Identifier(self.column)
        top = (1 << 63) - 1
        return (
            sql.SQL("({})").format(
                sql.SQL(" OR ").join(
                    sql.SQL("({} >= {} AND {} <= {})").format(
                        col,
                        sql.Literal(max(lo << level, -top - 1)),
                        col,
                        sql.Literal(min(((hi + 1) << level) - 1, top)),
                    )
                    for lo, hi in ranges
                )
            ),
            None,
        )

    def describe(self, level: int) -> str:
        return f"ranges of 2^{level} {self.column} values"


class HashBuckets(Bucketing):
    """Any key: a bucket is the low ``bits`` of a hash of the key (no locality, read by a full scan)."""

    def __init__(self, key_hash: sql.Composable, rows: float) -> None:
        self.key_hash = key_hash
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


# -- hashing: which hash each column gets ---------------------------------------------------------------

INTEGERS = ("int2", "int4", "int8", "oid")
TEXTS = ("text", "varchar", "bpchar")
BYTES_MAX = 16  # fixed-length types up to this size are hashed from the bytes of their send form


def hash_kinds(
    s: LocalSession, source_oid: int, columns: Sequence[str], source: QualifiedName
) -> dict[str, str]:
    """Per column, how it is hashed (see :func:`_value_hash`); a column none of the ways fit is
    refused, before anything changes (its hash could not run on the remote)."""
    info = {row[0]: row[1:] for row in s.fetchall("read column types", mq.HASH_KINDS_QUERY, (source_oid,))}
    kinds: dict[str, str] = {}
    refused: list[str] = []
    for name in columns:
        builtin, typname, typlen, send, immutable = info[name]
        if builtin and typname in INTEGERS:
            kinds[name] = "int"
        elif builtin and typname in TEXTS:
            kinds[name] = "text"
        elif builtin and typname in ("bool", "numeric", "uuid"):
            kinds[name] = typname
        elif builtin and immutable and 0 < typlen <= BYTES_MAX:
            kinds[name] = f"bytes:{typlen}:{send}"
        else:
            refused.append(name)
    if refused:
        raise FdwConfigError(
            f"mode='mirror' cannot checksum columns {refused} of {source} on the remote: it hashes "
            "integers, text, boolean, numeric, uuid and fixed-length built-in types (timestamps, dates, "
            "floats, intervals …); leave the others out with columns=, or use mode='replace'."
        )
    return kinds


def bits_for(rows: float, per_bucket: int) -> int:
    return max(0, min(MAX_BITS, math.ceil(math.log2(max(rows, 1) / per_bucket)) if rows > per_bucket else 0))
