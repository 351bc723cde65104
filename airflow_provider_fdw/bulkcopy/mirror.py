"""Mirror mode: make the target equal to the source, writing and moving only the rows that differ.

How a mirror runs, all in ONE local transaction (so every read of the source goes through the same
postgres_fdw remote transaction, REPEATABLE READ: one source snapshot for the whole run):

1. Read the source, the target and the key (``key_columns``, else the target's primary key, else a
   unique index over NOT NULL columns; refused without one). Lock the target ``EXCLUSIVE``: readers
   go on reading, writers wait.
2. Compare the whole table's ``count(*)`` and ``sum(row hash)`` on both sides: equal ends the run
   (nothing changed: one pass over each side, without the sort a GROUP BY costs). Otherwise compare
   per-bucket checksums. Every row falls into a bucket by a hash of its key; per bucket both
   sides compute ``count(*)`` and ``sum(row hash)``. The source's aggregate runs ON THE REMOTE
   (postgres_fdw aggregate pushdown, checked with ``EXPLAIN VERBOSE`` before anything runs), so only
   one row per bucket crosses the network. The hashes are built from immutable built-ins over each
   value's binary send form (or its bytes, for integers and text), so they are equal on both sides for
   equal values whatever DateStyle, TimeZone, IntervalStyle or extra_float_digits say (dates by their
   type's own hash: their ``=`` is identity), and take every bit of a value (see
   :func:`.sql.mirror.value_hash`).
3. Bisect: buckets that differ are split (more bits of the same key hash) and compared again, only
   within themselves, until a bucket holds a handful of rows.
4. Fetch the source rows of the differing leaf buckets into a temporary table, then delete the target
   rows of those buckets whose key vanished, update the rows whose values differ and insert the new
   keys (as the replace's in-place apply: deferrable constraints deferred, GENERATED ALWAYS identities
   kept, owned sequences caught up; a row of another table referencing a row the mirror would delete
   or re-key fails the run before any change, naming the foreign key).
5. Recompute the changed buckets on the target and compare them with the source's: a mismatch rolls
   everything back. Commit.

With ``transport`` "copy" or "auto", steps 2-3 read the source over the direct connection instead
(:mod:`.mirror_direct`): one level of fine buckets hashed on both sides, then the rows of the
differing buckets (for a single integer key only the rows that differ are fetched); the whole table
first when the source's change counters are those the last run recorded (:mod:`.mirror_state`).

A failure anywhere leaves the target exactly as it was; a retry starts over and converges.

This module reads the run top-down (:class:`Mirror`); steps 2-3 are :mod:`.mirror_compare` (and
:mod:`.mirror_direct`), steps 4-5 :mod:`.mirror_apply`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from airflow_provider_fdw import locks
from airflow_provider_fdw import sql as q
from airflow_provider_fdw.bulkcopy import watermark
from airflow_provider_fdw.bulkcopy.apply import choose_key
from airflow_provider_fdw.bulkcopy.direct import DEFAULT_TRANSPORT, TRANSPORTS
from airflow_provider_fdw.bulkcopy.mirror_apply import Differences, apply_differences, bucket_differences
from airflow_provider_fdw.bulkcopy.mirror_compare import (
    OID_LEVEL,
    Bucketing,
    Buckets,
    HashBuckets,
    RangeBuckets,
    check_pushdown,
    check_target_kinds,
    checksums,
    hash_aggregate,
    hash_kinds,
    read_buckets,
    refuse_nondeterministic,
    refuse_null_keys,
    refuse_remote_bpchar,
    remote_bpchar,
    remote_nondeterministic,
)
from airflow_provider_fdw.bulkcopy.mirror_direct import (
    KEYS_PER_FETCH,
    ROWS_COMPARED_MAX,
    DirectSource,
    batches,
    bucket_arrays,
    numeric_sums,
    open_direct_source,
    row_differences,
    row_hashes,
    unused_alias,
)
from airflow_provider_fdw.bulkcopy.mirror_state import (
    record_fingerprint,
    recorded_fingerprint,
    source_fingerprint,
)
from airflow_provider_fdw.catalog import read_columns, read_table
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.locks import acquire_run_lock, release_run_lock
from airflow_provider_fdw.names import QualifiedName, check_identifiers, parse_qualified_name
from airflow_provider_fdw.privileges import check_policies_do_not_apply, check_readable
from airflow_provider_fdw.refresh import lock_timeout_setting
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.sql import mirror as mq
from airflow_provider_fdw.timeouts import (
    DEFAULT_LOCK_RETRIES,
    DEFAULT_SWAP_LOCK_TIMEOUT,
    DEFAULT_TARGET_LOCK_WAIT,
    with_lock_retries,
)

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class MirrorPlan:
    """Validated arguments of a mirror run."""

    source: QualifiedName
    target: QualifiedName
    key_columns: tuple[str, ...] | None = None
    columns: tuple[str, ...] | None = None
    lock_timeout: str | None = None
    lock_timeout_explicit: bool = False  # as in CopyPlan
    # "copy": read the source directly (refused when it cannot); "auto": when it can; "fdw": never
    transport: str = DEFAULT_TRANSPORT

    # What the direct path's planning (plan_direct) reads of a plan: a mirror has no filter or split.
    where = None
    watermark_column = None
    split_column = None
    parallelism = 1


def plan_mirror(
    source_table: str,
    target_table: str,
    key_columns: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    lock_timeout: float | str | None = None,
    transport: str = DEFAULT_TRANSPORT,
) -> MirrorPlan:
    """Check every argument before anything runs; raise :class:`FdwConfigError` with a clear message."""
    if transport not in TRANSPORTS:
        raise FdwConfigError(f"transport must be one of {', '.join(TRANSPORTS)}; got {transport!r}.")
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
        lock_timeout is not None,
        transport,
    )


def mirror_plan(plan: Any) -> MirrorPlan:
    """The mirror's part of a ``CopyPlan`` with ``mode="mirror"`` (already validated by ``plan_copy``)."""
    return MirrorPlan(
        plan.source,
        plan.target,
        plan.key_columns,
        plan.columns,
        plan.lock_timeout,
        plan.lock_timeout_explicit,
        plan.transport,
    )


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
    path: str = "fdw"  # as a copy's: the source read through postgres_fdw, or "direct"

    def summary(self) -> dict[str, Any]:
        return {"mode": "mirror", **asdict(self), "seconds": round(self.seconds, 3)}


class Mirror:
    """One mirror run of ``plan.source`` (a foreign table) into ``plan.target`` (an existing table).

    :param lock_retries: attempts to take the target's lock, each bounded by the plan's ``lock_timeout``.
    :param new_session: when given, a function returning another LOCAL session: the target's
        checksums are then computed in it while the remote computes the source's (same rows: the
        run's transaction holds the target's EXCLUSIVE lock and has not written yet).
    :param remote_connect: a function returning a new connection to the REMOTE database, and
        ``remote_identity`` its libpq parameters (no password): with ``plan.transport`` "copy" or
        "auto", the source is read over it (:mod:`.mirror_direct`), else through postgres_fdw.
    """

    def __init__(
        self,
        plan: MirrorPlan,
        log: Any,
        target_lock_wait: float = DEFAULT_TARGET_LOCK_WAIT,
        new_session: Callable[[], LocalSession] | None = None,
        lock_retries: int = DEFAULT_LOCK_RETRIES,
        remote_connect: Callable[..., Any] | None = None,
        remote_identity: Mapping[str, Any] | None = None,
    ) -> None:
        self.plan = plan
        self.remote_connect = remote_connect
        self.remote_identity = remote_identity
        self.log = log
        self.target_lock_wait = target_lock_wait
        self.new_session = new_session
        self.lock_retries = lock_retries
        self.lock_timeout = locks.LockTimeout(plan.lock_timeout, plan.lock_timeout_explicit)
        self.helper: LocalSession | None = None
        self.target_rows = 0  # the target's rows at the whole-table comparison
        # the mirror as a feed of the target (watermark.Feed): an incremental copy of the same source
        self.feed = watermark.Feed.of(plan.source, None)
        self.result = MirrorResult(str(plan.source), str(plan.target))

    def run(self, session: LocalSession) -> MirrorResult:
        """Mirror in transactions of its own: ``session`` must be outside a transaction block."""
        locks.refuse_inside_transaction(session, self.plan.target)
        started = time.monotonic()
        lock_key = locks.lock_key(
            "copy", str(self.plan.target)
        )  # a copy and a mirror of one target take turns
        acquire_run_lock(session, lock_key, self.target_lock_wait, self.log)
        try:
            # Autovacuum or a reader's brief lock may hold the target: each attempt is bounded by
            # lock_timeout and starts over (nothing was written).
            with_lock_retries(
                lambda: self._attempt(session),
                self.lock_retries,
                f"mirror {self.plan.target}",
                self.log,
                lambda: locks.autovacuum_holding(session, self.plan.target),
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
        with session.transaction():
            self._run(session)

    def _run(self, s: LocalSession) -> None:
        p = self.plan
        self.lock_timeout.set_local(s, self.log)
        source_row = s.fetchone("read source_table", q.RELATION_QUERY, p.source)
        if source_row is None:
            raise FdwConfigError(
                f"source_table {p.source} does not exist in the local database "
                "(import it with ImportForeignSchemaOperator first)."
            )
        if source_row[6] != "postgres_fdw":
            # Read in several passes, each must see the same rows: postgres_fdw keeps one remote
            # transaction (one snapshot) for the run; a local relation would be read afresh each pass.
            what = "a foreign table of " + source_row[6] if source_row[6] else "not a foreign table"
            raise FdwConfigError(
                f"mode='mirror' reads its source in several passes of one snapshot, which postgres_fdw "
                f"keeps for the run: {p.source} is {what}. Copy it with mode='replace' instead."
            )
        self.feed = watermark.Feed.of(p.source, source_row[4])
        target_row = s.fetchone("read target_table", q.RELATION_QUERY, p.target)
        if target_row is None:
            raise FdwConfigError(
                f"target_table {p.target} does not exist: create it with a first copy (mode='replace'), "
                "then mirror it."
            )
        if target_row[1] not in ("r", "p"):
            raise FdwConfigError(f"target_table {p.target} exists but is not a table.")
        oid, relkind = target_row[0], target_row[1]
        self._refuse_other_feeds(s, oid)
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
        check_readable(s, p.source, source_row[0], columns)
        check_policies_do_not_apply(s, p.target, oid, "a mirror", deletes=True)
        self.result.key = list(key)
        # Through postgres_fdw only when the mirror reads through it: a direct mirror would leave that
        # remote transaction idle until its commit (a remote idle timeout then fails the commit).
        remote_loose, remote_padded = frozenset[str](), frozenset[str]()
        if p.transport == "fdw":
            source_table = read_table(s, p.source, "source_table")
            remote_loose = remote_nondeterministic(s, source_table, self.log)
            remote_padded = remote_bpchar(s, source_table, self.log)
        kinds = hash_kinds(s, source_row[0], columns, p.source, remote_loose, remote_padded)
        check_target_kinds(
            s, source_row[0], oid, kinds, (source_columns, target_columns), (p.source, p.target)
        )
        row_hash = mq.row_hash_expr(columns, kinds)

        s.execute(f"lock {p.target}", q.lock_table_in(p.target, "EXCLUSIVE"))
        estimate = self._estimate_rows(s, oid)
        if len(key) == 1 and kinds[key[0]] in ("int", "oid"):
            low, high = s.fetchrow("read the key's range", mq.key_range(p.target, key[0], only))
            listable = all(
                side[key[0]].type_sql in ("smallint", "integer", "bigint")
                for side in (source_columns, target_columns)
            )
            max_level = OID_LEVEL if kinds[key[0]] == "oid" else 62
            self.buckets: Bucketing = RangeBuckets(key[0], low, high, estimate, listable, max_level)
        else:
            self.buckets = HashBuckets(key, kinds, estimate)
        direct = None
        if p.transport != "fdw":
            source = read_table(s, p.source, "source_table")
            assert source is not None
            direct = open_direct_source(
                s, p, source, columns, self.remote_connect, self.remote_identity, self.log, self.new_session
            )
        if direct is None and p.transport != "fdw":  # "auto" reads through postgres_fdw after all
            source_table = read_table(s, p.source, "source_table")
            refuse_nondeterministic(columns, remote_nondeterministic(s, source_table, self.log), p.source)
            refuse_remote_bpchar(kinds, remote_bpchar(s, source_table, self.log), p.source)
        if direct is not None:
            self.result.path = "direct"
            try:
                refuse_nondeterministic(columns, direct.nondeterministic(), p.source)
                self._run_direct(s, direct, oid, only, key, key_is_unique, columns, kinds, row_hash)
            finally:
                direct.close()
            return
        check_pushdown(s, self.buckets, p.source, row_hash)  # the aggregate must run on the remote

        # First the whole table, one aggregate per side: no GROUP BY, so the remote does not sort every
        # row. Equal means nothing changed, and this one pass is the whole run; otherwise it costs one
        # pass more than bisecting at once.
        if self._whole_tables_equal(s, s, p.source, row_hash, only, row_hash):
            return
        level = self.buckets.first
        parents: list[int] | None = None
        parent_level = level
        while True:
            self.result.levels += 1
            src, tgt = self._both_checksums(s, only, row_hash, level, parents, parent_level)
            refuse_null_keys(src, p.source, key)
            refuse_null_keys(tgt, p.target, key)
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
        differences = bucket_differences(
            s, p, self.buckets, self.result, only, columns, row_hash, level, leaves, self.target_rows
        )
        self._apply(s, oid, only, key, key_is_unique, columns, differences)

    def _run_direct(
        self,
        s: LocalSession,
        src: DirectSource,
        oid: int,
        only: bool,
        key: tuple[str, ...],
        key_is_unique: bool,
        columns: list[str],
        kinds: dict[str, str],
        row_hash: sql.Composable,
    ) -> None:
        """Compare and apply with the source read directly (see :mod:`.mirror_direct`): one level of
        fine buckets, hashed on both sides, then the rows of the differing buckets. When the source's
        change counters are those the last run recorded, the whole table first (:mod:`.mirror_state`)."""
        p = self.plan
        source_hash = mq.row_hash_expr(columns, kinds, src.names)
        fingerprint = source_fingerprint(src.session, src.table, self.log)
        recorded = None if fingerprint is None else recorded_fingerprint(s, p.target, oid, self.log)
        same_counters = fingerprint is not None and fingerprint == recorded
        why = " (the source's change counters are those recorded by the last run)"
        if same_counters and self._whole_tables_equal(
            s, src.session, src.table, source_hash, only, row_hash, why
        ):
            return
        self._compare_direct(s, src, oid, only, key, key_is_unique, columns, source_hash, row_hash)
        if fingerprint is not None and fingerprint != recorded:  # in the run's transaction
            record_fingerprint(s, p.target, oid, fingerprint, self.log)

    def _whole_tables_equal(
        self,
        s: LocalSession,
        source: LocalSession,
        source_table: QualifiedName,
        source_hash: sql.Composable,
        only: bool,
        row_hash: sql.Composable,
        why: str = "",
    ) -> bool:
        """One plain aggregate per side, side by side: the whole table's rows and sum of row hashes
        (the source's read in ``source``: through postgres_fdw, or the direct connection)."""
        p = self.plan
        src, tgt = self._side_by_side(
            s,
            lambda: read_buckets(
                source, mq.bucket_checksums(source_table, False, None, source_hash), None, "source"
            ),
            lambda t: read_buckets(t, mq.bucket_checksums(p.target, only, None, row_hash), None, "target"),
        )
        self.result.levels += 1
        self.result.buckets_compared += 1
        self.result.rows, checksum = src.get(0, (0, None))
        self.target_rows = tgt.get(0, (0, None))[0]
        self.result.checksum = str(checksum or 0)
        equal = src == tgt
        self.log.info(
            "Level %d: the whole table%s, %s", self.result.levels, why, "equal" if equal else "differs"
        )
        if equal:
            self.result.unchanged = self.result.rows
        return equal

    def _compare_direct(
        self,
        s: LocalSession,
        src: DirectSource,
        oid: int,
        only: bool,
        key: tuple[str, ...],
        key_is_unique: bool,
        columns: list[str],
        source_hash: sql.Composable,
        row_hash: sql.Composable,
    ) -> None:
        p = self.plan
        level = self.buckets.first
        source_buckets = self.buckets.renamed(src.names)
        self.result.levels += 1
        (src_b, total), (tgt_b, _) = self._side_by_side(
            s,
            lambda: bucket_arrays(
                src.session,
                mq.bucket_checksum_arrays(src.table, False, source_buckets.bucket(level), source_hash),
                "source",
            ),
            lambda t: bucket_arrays(
                t, mq.bucket_checksum_arrays(p.target, only, self.buckets.bucket(level), row_hash), "target"
            ),
        )
        refuse_null_keys(src_b, p.source, key)
        refuse_null_keys(tgt_b, p.target, key)
        rows_before = sum(n for n, _ in tgt_b.values())
        compared = src_b.keys() | tgt_b.keys()
        self.result.rows = sum(n for n, _ in src_b.values())
        self.result.checksum = total or "0"
        self.result.buckets_compared += len(compared)
        differing = sorted(b for b in compared if src_b.get(b) != tgt_b.get(b))
        self.log.info(
            "Level %d: %d buckets (%s), %d differ",
            self.result.levels,
            len(compared),
            self.buckets.describe(level),
            len(differing),
        )
        self.result.unchanged = self.result.rows
        if not differing:
            return
        self.result.levels += 1
        in_differing = sum(max(src_b.get(b, (0, None))[0], tgt_b.get(b, (0, None))[0]) for b in differing)
        if isinstance(source_buckets, HashBuckets) or in_differing > ROWS_COMPARED_MAX:
            # Stage every source row of the differing buckets; the apply compares them. A hash bucket's
            # rows have no index to be read by (one filtered pass per batch), and beyond
            # ROWS_COMPARED_MAX the rows are too many to hold one by one.
            self.log.info("The differing buckets hold %d rows: staging all their source rows", in_differing)
            leaves = numeric_sums(src_b, differing)
            remote_columns = [src.names[c] for c in columns]

            def fetch(staging: QualifiedName) -> int:
                return sum(
                    src.copy_into(
                        s, staging, columns, source_buckets.copy_rows(src.table, remote_columns, batch, level)
                    )
                    for batch in batches(differing, KEYS_PER_FETCH)
                )

            differences = bucket_differences(
                s, p, self.buckets, self.result, only, columns, row_hash, level, leaves, rows_before, fetch
            )
            self._apply(s, oid, only, key, key_is_unique, columns, differences)
            return
        source_key = src.names[key[0]]
        alias = unused_alias([*columns, *src.names.values()])
        src_rows, tgt_rows = self._side_by_side(
            s,
            lambda: row_hashes(
                src.session,
                mq.rows_in_ranges(src.table, False, source_key, level, source_hash, alias),
                differing,
                p.source,
                key[0],
                "source",
            ),
            lambda t: row_hashes(
                t,
                mq.rows_in_ranges(p.target, only, key[0], level, row_hash, alias),
                differing,
                p.target,
                key[0],
                "target",
            ),
        )
        self.log.info(
            "Level %d: %d source and %d target rows of the differing buckets",
            self.result.levels,
            len(src_rows),
            len(tgt_rows),
        )
        by_row = row_differences(s, src, p, only, key[0], columns, row_hash, src_rows, tgt_rows, rows_before)
        self._apply(s, oid, only, key, key_is_unique, columns, by_row)

    def _refuse_other_feeds(self, s: LocalSession, oid: int) -> None:
        """Refuse, before any change, a target that incremental copies of other sources feed (records
        in the state table): the mirror makes it hold this source's rows only. If theirs are other
        rows, it deletes them and their next runs would not copy them again; if they read the same rows
        under another name (another server, a second foreign table), their next runs would copy again
        the rows the mirror inserted. Which of the two it is, only the user knows."""
        p = self.plan
        others = watermark.other_feeds(s, p.target, oid, self.feed)
        if not others:
            return
        state = watermark.state_table(p.target)
        forget_them = sql.SQL(
            "DELETE FROM {} WHERE target_table = {} AND (source_table, source_server) <> ({}, {})"
        ).format(
            sql.Identifier(*state),
            *(sql.Literal(v) for v in (p.target.name, self.feed.source, self.feed.server)),
        )
        raise FdwConfigError(
            f"{p.target} is also fed by incremental copies of other sources "
            f"({'; '.join(str(f) for f in others)}), whose records in {state} say which of their rows it "
            f"holds. A mirror makes it hold the rows of {p.source} only: it would delete theirs, which "
            "their next runs would not copy again, or, if they read the same rows under another name "
            "(another server, a second foreign table), their next runs would copy again the rows the "
            "mirror inserts. Nothing was changed. Mirror from the foreign table those copies read, mirror "
            "into a table of its own, or, if those copies no longer run (or read the same rows and should "
            "start from the mirrored rows' max()), drop their records:\n"
            f"{s.render(forget_them)};"
        )

    def _apply(
        self,
        s: LocalSession,
        oid: int,
        only: bool,
        key: tuple[str, ...],
        key_is_unique: bool,
        columns: list[str],
        differences: Differences,
    ) -> None:
        """Write the differences (see :func:`.mirror_apply.apply_differences`). The target then holds
        exactly the source's rows: an incremental copy of the same source forgets its record in the same
        transaction, and reads max() of them next time (it would append the mirror's new rows again)."""
        apply_differences(s, self.plan, self.result, oid, only, key, key_is_unique, columns, differences)
        watermark.forget(s, self.plan.target, self.feed)

    # -- steps ----------------------------------------------------------------------------------

    def _estimate_rows(self, s: LocalSession, oid: int) -> float:
        estimate = s.fetchvalue("estimate target rows", mq.ROW_ESTIMATE_QUERY, (oid,))
        if estimate is None or estimate < 0:  # never analyzed: count (an index-only scan when vacuumed)
            estimate = s.fetchvalue("count target rows", q.count_rows(self.plan.target))
        return float(estimate)

    def _both_checksums(
        self,
        s: LocalSession,
        only: bool,
        row_hash: sql.Composable,
        level: int | None,
        parents: list[int] | None,
        parent_level: int,
    ) -> tuple[Buckets, Buckets]:
        """The source's and the target's checksums of one level (side by side with ``new_session``)."""
        p = self.plan

        def side(session: LocalSession, table: QualifiedName, only_rows: bool, name: str) -> Buckets:
            return checksums(
                session, self.buckets, table, only_rows, row_hash, level, parents, parent_level, name
            )

        return self._side_by_side(
            s, lambda: side(s, p.source, False, "source"), lambda t: side(t, p.target, only, "target")
        )

    def _side_by_side(
        self, s: LocalSession, source_side: Callable[[], T], target_side: Callable[[LocalSession], U]
    ) -> tuple[T, U]:
        """``source_side()`` and ``target_side(session)``: the target's in the helper session (its
        own transaction, grouping by hash) while the source's runs, or after it in ``s``."""
        if self.new_session is None:
            return source_side(), target_side(s)
        if self.helper is None:
            self.helper = self.new_session()
        helper = self.helper

        def in_helper() -> U:
            with helper.transaction():
                hash_aggregate(helper)
                return target_side(helper)

        with ThreadPoolExecutor(1, thread_name_prefix="fdw-mirror-target") as pool:
            pending = pool.submit(in_helper)
            try:
                src = source_side()
            finally:
                tgt = pending.result()
        return src, tgt
