"""Bulk copies from a foreign table into a local table: replace, append and upsert.

How a copy runs (every mode):

1. Validate the arguments, read the source and target definitions (nothing changed yet).
2. Load the rows into a staging table, in ``parallelism`` sessions each reading one key range.
   Rows flow server to server (``INSERT … SELECT`` from a session-private foreign table tuned for
   bulk reads), or, with ``fdw_conn_id``, as a binary ``COPY`` stream relayed in chunks by the worker.
   Nothing is buffered in the worker.
3. Apply the staging table in ONE short transaction (see :mod:`.apply`): ``replace`` swaps it in
   by rename (indexes built after the load, grants/owner/comment copied) or, when something holds
   on to the target, applies the difference in place; ``append`` inserts it; ``upsert`` merges it
   with ``ON CONFLICT … DO UPDATE``. With ``verify`` the rows are checked first (:mod:`.verify`).

Any failure before step 3 commits leaves the target exactly as it was; the staging table (named for
the run, marked with a comment naming the target) is dropped, and a retry drops the marked leftovers
of a killed run first.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from airflow_provider_fdw import locks
from airflow_provider_fdw import sql as q
from airflow_provider_fdw._driver import DriverError, make_conninfo
from airflow_provider_fdw.cancel import (
    CancelScope,
    acquire_run_lock,
    die_with_parent,
    release_run_lock,
    terminate_leftovers,
)
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.apply import (
    SWAPS,
    apply_replace,
    catch_up_sequences,
    check_no_null_key,
    drop_leftovers,
    goes_in_place,
    in_place_reasons,
    mark,
    new_work_table,
)
from airflow_provider_fdw.hooks.direct import DEFAULT_TRANSPORT, TRANSPORTS, DirectRead, plan_direct
from airflow_provider_fdw.hooks.snapshot import SnapshotHolder
from airflow_provider_fdw.hooks.verify import Verifier
from airflow_provider_fdw.names import (
    QualifiedName,
    check_identifier,
    check_identifiers,
    parse_qualified_name,
)
from airflow_provider_fdw.predicate import check_where_text, parse_where
from airflow_provider_fdw.progress import Progress, estimate_source_rows
from airflow_provider_fdw.refresh import bounded_name, lock_timeout_setting
from airflow_provider_fdw.reimport import Column, parse_options, read_columns
from airflow_provider_fdw.session import LocalSession, describe
from airflow_provider_fdw.timeouts import (
    DEFAULT_LOCK_RETRIES,
    DEFAULT_SWAP_LOCK_TIMEOUT,
    DEFAULT_TARGET_LOCK_WAIT,
    with_lock_retries,
)
from airflow_provider_fdw.validation import INT_MAX, check_interval

MODES = ("replace", "append", "upsert")
VERIFY_MODES = ("off", "count", "checksum")
LOAD_STATE_QUERY = q.sql.SQL("SELECT state FROM pg_stat_activity WHERE pid = %s")
DEFAULT_FETCH_SIZE = 50_000
INTEGER_TYPES = ("smallint", "integer", "bigint")


@dataclass(frozen=True)
class CopyPlan:
    """Validated arguments of a bulk copy."""

    source: QualifiedName
    target: QualifiedName
    mode: str
    key_columns: tuple[str, ...] | None
    watermark_column: str | None
    where: str | None
    columns: tuple[str, ...] | None
    parallelism: int
    overlap: Any
    fetch_size: int
    lock_timeout: str | None
    split_column: str | None
    swap: str = "auto"
    verify: str = "off"
    transport: str = DEFAULT_TRANSPORT


def plan_copy(
    source_table: str,
    target_table: str,
    mode: str = "replace",
    key_columns: Sequence[str] | None = None,
    watermark_column: str | None = None,
    where: str | None = None,
    columns: Sequence[str] | None = None,
    parallelism: int = 1,
    overlap: Any = None,
    fetch_size: int | None = None,
    lock_timeout: float | str | None = None,
    split_column: str | None = None,
    swap: str = "auto",
    verify: str = "off",
    transport: str = DEFAULT_TRANSPORT,
) -> CopyPlan:
    """Check every argument before anything runs; raise :class:`FdwConfigError` with a clear message."""
    source = parse_qualified_name(source_table, "source_table")
    target = parse_qualified_name(target_table, "target_table")
    if source == target:
        raise FdwConfigError("source_table and target_table are the same table.")
    if mode not in MODES:
        raise FdwConfigError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
    keys = check_identifiers(key_columns, "key_columns")
    cols = check_identifiers(columns, "columns")
    if watermark_column is not None:
        check_identifier(watermark_column, "watermark_column")
    if mode == "upsert" and not keys:
        raise FdwConfigError("mode='upsert' needs key_columns (the columns of the target's unique key).")
    if mode == "upsert" and not watermark_column:
        raise FdwConfigError("mode='upsert' needs watermark_column (e.g. updated_at) to find changed rows.")
    if mode == "replace" and watermark_column:
        raise FdwConfigError("watermark_column is for append/upsert; replace always copies everything.")
    if overlap is not None and mode != "upsert":
        raise FdwConfigError("overlap applies to mode='upsert' only.")
    if overlap is not None and (
        isinstance(overlap, bool) or not isinstance(overlap, str | int | float | timedelta)
    ):
        raise FdwConfigError("overlap must be an interval ('5 minutes', a timedelta) or a number.")
    if swap not in SWAPS:
        raise FdwConfigError(f"swap must be one of {', '.join(SWAPS)}; got {swap!r}.")
    if swap != "auto" and mode != "replace":
        raise FdwConfigError("swap applies to mode='replace' only.")
    if verify not in VERIFY_MODES:
        raise FdwConfigError(f"verify must be one of {', '.join(VERIFY_MODES)}; got {verify!r}.")
    if isinstance(overlap, str):
        overlap = check_interval(overlap, "overlap")
    if where is not None and (not isinstance(where, str) or not where.strip()):
        raise FdwConfigError("where must be a non-empty SQL condition, or None.")
    if where is not None:
        where = check_where_text(where)
    if transport not in TRANSPORTS:
        raise FdwConfigError(f"transport must be one of {', '.join(TRANSPORTS)}; got {transport!r}.")
    if not isinstance(parallelism, int) or isinstance(parallelism, bool) or not 1 <= parallelism <= 64:
        raise FdwConfigError(f"parallelism must be an integer from 1 to 64, got {parallelism!r}.")
    split = split_column or (keys[0] if keys else None)
    if split is not None:
        check_identifier(split, "split_column")
    if parallelism > 1 and split is None:
        raise FdwConfigError("parallelism > 1 splits by key ranges: pass key_columns or split_column.")
    if fetch_size is not None and (
        isinstance(fetch_size, bool) or not isinstance(fetch_size, int) or not 1 <= fetch_size <= INT_MAX
    ):
        raise FdwConfigError(f"fetch_size must be an integer from 1 to {INT_MAX}, got {fetch_size!r}.")
    if cols is not None:
        missing = [
            c for c in [*(keys or ()), *([watermark_column] if watermark_column else [])] if c not in cols
        ]
        if missing:
            raise FdwConfigError(f"columns must include the key/watermark columns; missing {missing}.")
    return CopyPlan(
        source,
        target,
        mode,
        tuple(keys) if keys else None,
        watermark_column,
        where.strip() if where else None,
        tuple(cols) if cols else None,
        parallelism,
        overlap,
        fetch_size or DEFAULT_FETCH_SIZE,
        lock_timeout_setting(lock_timeout if lock_timeout is not None else DEFAULT_SWAP_LOCK_TIMEOUT),
        split,
        swap,
        verify,
        transport,
    )


@dataclass
class SourceInfo:
    oid: int
    relkind: str
    columns: dict[str, Column]
    server_name: str | None
    remote: QualifiedName | None  # remote schema/table of a foreign table

    @property
    def is_foreign(self) -> bool:
        return self.relkind == "f"


@dataclass
class CopyResult:
    mode: str
    source: str
    target: str
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    watermark: Any = None
    path: str = "fdw"
    parallelism: int = 1
    swap: str | None = None
    inserted: int | None = None
    updated: int | None = None
    deleted: int | None = None
    unchanged: int | None = None
    verification: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "source": self.source,
            "target": self.target,
            "rows": self.rows,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "watermark": _json_safe(self.watermark),
            "previous_watermark": _json_safe(self.details.get("previous_watermark")),
            "path": self.path,
            "parallelism": self.parallelism,
            "swap": self.swap,
            "inserted": self.inserted,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "verify": self.verification,
            # rows a watermark bound cannot see (None: no watermark_column)
            "null_watermark_rows": self.details.get("null_watermark_rows"),
        }


def _json_safe(value: Any) -> Any:
    if value is not None and not isinstance(value, int | float | str | bool):
        return str(value)  # datetimes, Decimals: JSON-safe for XCom
    return value


class BulkCopy:
    """One bulk copy: ``run()`` does it; sessions come from ``new_session`` (one per parallel worker).

    :param remote_connect: when given, a function returning a new connection to the REMOTE database
        (keyword ``client_encoding``), pinned like postgres_fdw's sessions, for the direct COPY path
        (``plan.transport`` "copy"/"auto"); else rows move server to server through postgres_fdw.
    :param remote_identity: the libpq parameters ``remote_connect`` uses (no password): compared with
        the foreign server's options so a connection to another database is never read.
    :param scope: the connections and children to cancel when one loader fails (all of them stop).
    :param target_lock_wait: seconds to wait for another copy of the same target.
    :param leftovers: ``application_name`` prefix of an earlier try's sessions, terminated at start.
    :param lock_retries: attempts to apply (each bounded by the plan's ``lock_timeout``).
    """

    def __init__(
        self,
        plan: CopyPlan,
        new_session: Callable[[], LocalSession],
        log: Any,
        remote_connect: Callable[[], Any] | None = None,
        psql_relay: PsqlRelay | None = None,
        remote_identity: dict[str, Any] | None = None,
        *,
        scope: CancelScope | None = None,
        target_lock_wait: float = DEFAULT_TARGET_LOCK_WAIT,
        leftovers: str | None = None,
        lock_retries: int = DEFAULT_LOCK_RETRIES,
    ) -> None:
        self.plan = plan
        self.new_session = new_session
        self.log = log
        self.remote_connect = remote_connect
        self.psql_relay = psql_relay
        self.remote_identity = remote_identity
        self.direct: DirectRead | None = None
        self.snapshot: SnapshotHolder | None = None  # direct path: the snapshot every range reads
        self.scope = scope or CancelScope()
        self.target_lock_wait = target_lock_wait
        self.leftovers = leftovers
        self.lock_retries = lock_retries
        self.result = CopyResult(plan.mode, str(plan.source), str(plan.target), parallelism=plan.parallelism)
        self.verifier = Verifier(plan.verify, log)

    # -- the whole copy ----------------------------------------------------------------------

    def run(self, session: LocalSession) -> CopyResult:
        started = time.monotonic()
        lock_key = locks.lock_key("copy", str(self.plan.target))
        if self.leftovers:  # a killed try's sessions would hold the lock and the staging table
            terminate_leftovers(session, self.leftovers, self.log)
        # Two runs on one target (a retry racing a slow attempt) take turns, for a bounded time.
        acquire_run_lock(session, lock_key, self.target_lock_wait, self.log)
        try:
            return self._run(session, started)
        except BaseException:
            self.scope.cancel()  # a time-out or kill in this thread: stop the statements still running
            raise
        finally:
            release_run_lock(session, lock_key, self.log)

    def _run(self, session: LocalSession, started: float) -> CopyResult:
        p = self.plan
        source, target_columns, columns = self._inspect(session)
        if p.where:  # before anything changes: one boolean condition over the source, parsed by the server
            parse_where(session.conn, p.source, p.where)
        self.direct = plan_direct(
            session, p, source, columns, self.remote_connect, self.remote_identity, self.log
        )
        self.result.path = "direct" if self.direct else "fdw"
        conditions = self._conditions(session, columns, source)
        if p.verify == "checksum" and self.direct is not None and not self.direct.binary:
            # The checksum hashes binary values: equal only when the remote types are the declared ones.
            reason = (
                "verify='checksum' on the direct path needs every copied column's remote type to be its "
                f"declared type (binary COPY); {p.source} is read as text"
            )
            if p.transport == "copy":
                raise FdwConfigError(f"{reason}: use verify='count', or transport='fdw' to checksum.")
            self.log.info("%s: copying through postgres_fdw instead.", reason)
            self.direct, self.result.path = None, "fdw"
        if self.direct is None and p.parallelism > 1:
            self.log.info(
                "Parallel copy through postgres_fdw: each of the %d ranges reads in its own remote "
                "transaction, so rows changed on the source meanwhile may be seen by one range and not "
                "another (transport='copy' reads every range in one snapshot).",
                p.parallelism,
            )
        # The direct path reads the remote table itself: checksummed by the direct connection, not planned.
        is_foreign = source.is_foreign and self.direct is None
        self.verifier.prepare(session, source.oid, p.source, is_foreign, columns, conditions)
        staging = self._prepare_staging(session, source, target_columns, columns)
        try:
            ranges = self._ranges(session, source, columns, conditions)
            if self.direct is not None:
                self._load_in_one_snapshot(source, staging, columns, conditions, ranges)
            else:
                self._load(source, staging, columns, conditions, ranges)
            self._apply(session, staging, source, columns, target_columns)
        except BaseException:
            self._drop_staging(session, staging)
            raise
        self.result.seconds = time.monotonic() - started
        self.log.info(
            "Copied %d rows (%.1f MB) from %s to %s in %.2fs (%s, %s path, parallelism %d, swap %s, "
            "inserted %s, updated %s, deleted %s, unchanged %s)",
            self.result.rows,
            self.result.bytes / 1e6,
            p.source,
            p.target,
            self.result.seconds,
            p.mode,
            self.result.path,
            p.parallelism,
            self.result.swap,
            self.result.inserted,
            self.result.updated,
            self.result.deleted,
            self.result.unchanged,
        )
        self.result.verification = self.verifier.result()
        return self.result

    # -- step 1: inspect -----------------------------------------------------------------------

    def _inspect(self, s: LocalSession) -> tuple[SourceInfo, dict[str, Column] | None, list[str]]:
        p = self.plan
        with s.transaction():
            source = self._relation(s, p.source, "source_table")
            if source is None:
                raise FdwConfigError(
                    f"source_table {p.source} does not exist in the local database "
                    "(import it with ImportForeignSchemaOperator first)."
                )
            target_row = s.fetchone("read target", q.RELATION_QUERY, p.target)
            target_columns = read_columns(s, p.target) if target_row else None
            generated = (
                {
                    c
                    for (c,) in s.fetchall(
                        "read generated columns", q.GENERATED_COLUMNS_QUERY, (target_row[0],)
                    )
                }
                if target_row
                else set()
            )
            if target_row and target_row[1] not in ("r", "p"):
                raise FdwConfigError(f"target_table {p.target} exists but is not a table.")
        columns = list(p.columns or source.columns)
        unknown = [c for c in columns if c not in source.columns]
        if unknown:
            raise FdwConfigError(
                f"columns {unknown} do not exist in {p.source}; it has {list(source.columns)}."
            )
        for what, names in (
            ("key_columns", p.key_columns or ()),
            ("watermark_column", [p.watermark_column] if p.watermark_column else []),
            ("split_column", [p.split_column] if p.split_column else []),
        ):
            missing = [c for c in names if c not in source.columns]
            if missing:
                raise FdwConfigError(f"{what} {missing} not found in {p.source}.")
        if target_columns is not None:
            self._check_target_columns(source, target_columns, columns, generated)
        return source, target_columns, columns

    def _relation(self, s: LocalSession, name: QualifiedName, what: str) -> SourceInfo | None:
        row = s.fetchone(f"read {what}", q.RELATION_QUERY, name)
        if row is None:
            return None
        oid, relkind, _owner, _comment, server_name, ftoptions = row
        options = parse_options(ftoptions)
        remote = QualifiedName(options.get("schema_name", name.schema), options.get("table_name", name.name))
        return SourceInfo(oid, relkind, read_columns(s, name), server_name, remote if server_name else None)

    def _check_target_columns(
        self, source: SourceInfo, target: dict[str, Column], columns: list[str], generated: set[str]
    ) -> None:
        p = self.plan
        problems = []
        for name in columns:
            if name not in target:
                problems.append(f"{name} is missing in the target")
            elif name in generated:
                problems.append(
                    f"{name} is a generated column of the target (computed from the others): leave it out "
                    "of columns="
                )
            elif target[name].type_sql != source.columns[name].type_sql:
                problems.append(
                    f"{name} is {source.columns[name].type_sql} in the source but "
                    f"{target[name].type_sql} in the target"
                )
        if p.mode == "replace":
            extra = [n for n in target if n not in columns and n not in generated]  # generated: recomputed
            if extra:
                problems.append(f"the target has columns the copy does not fill: {extra}")
        if problems:
            raise FdwConfigError(f"Columns of {p.source} and {p.target} do not match: {'; '.join(problems)}.")

    # -- step 2: staging and load --------------------------------------------------------------

    def _conditions(self, s: LocalSession, columns: list[str], source: SourceInfo) -> list[Any]:
        """The user's filter and, for append/upsert, the watermark bound read from the target.

        Rows whose watermark is NULL never pass a ``>`` bound: they are counted on the source each run
        (``null_watermark_rows`` in the summary); upsert also copies them (matched on the key, unchanged
        ones are not rewritten), append warns (copying them again would duplicate them).
        """
        p = self.plan
        conditions: list[Any] = [q.user_predicate(p.where)] if p.where else []
        if p.mode != "replace" and p.watermark_column:
            overlap = p.overlap if p.mode == "upsert" else None
            with s.transaction():
                exists = s.fetchone("read target", q.RELATION_QUERY, p.target)
                if exists:
                    check_finite_watermark(s, p.target, p.watermark_column)
                # Subtract the overlap here: the remote then gets a constant bound it can push down
                # (timestamptz - interval is only STABLE, so postgres_fdw would filter locally).
                bound = (
                    s.fetchone("read watermark", q.max_of(p.target, p.watermark_column, overlap))[0]
                    if exists
                    else None
                )
            nulls = self._count_null_watermarks(s, source, conditions)
            self.result.details["previous_watermark"] = bound
            self.result.details["null_watermark_rows"] = nulls
            if bound is not None:
                bounded = q.watermark_predicate(p.watermark_column, bound, inclusive=p.mode == "upsert")
                if p.mode == "upsert":
                    bounded = q.or_null(bounded, p.watermark_column)
                elif nulls:
                    self.log.warning(
                        "%d rows of %s have a NULL %s: append copies them only on its first run "
                        "(use mode='upsert' with key_columns to copy them by key).",
                        nulls,
                        p.source,
                        p.watermark_column,
                    )
                conditions.append(bounded)
                self.log.info(
                    "Copying rows with %s %s %s%s",
                    p.watermark_column,
                    ">=" if p.mode == "upsert" else ">",
                    bound,
                    f" and the {nulls} rows where it is NULL" if p.mode == "upsert" and nulls else "",
                )
        return conditions

    def _count_null_watermarks(self, s: LocalSession, source: SourceInfo, conditions: list[Any]) -> int:
        """Source rows (matching ``where``) whose watermark is NULL, counted where the rows are read."""
        p = self.plan
        assert p.watermark_column is not None
        if self.direct is None:
            with s.transaction():
                statement = q.null_watermark_count(p.source, p.watermark_column, conditions)
                return int(s.fetchone("count NULL watermarks", statement)[0])
        assert self.remote_connect is not None and source.remote is not None
        # The direct path needs no user mapping: count over the direct connection too (same names).
        remote = self.remote_connect(client_encoding=self.direct.client_encoding)
        try:
            with remote.cursor() as cur:
                cur.execute(q.null_watermark_count(source.remote, p.watermark_column, conditions))
                return int(cur.fetchone()[0])
        except DriverError as exc:
            raise s.error("count NULL watermarks on the remote", exc) from None
        finally:
            remote.close()

    def _prepare_staging(
        self,
        s: LocalSession,
        source: SourceInfo,
        target_columns: dict[str, Column] | None,
        columns: list[str],
    ) -> QualifiedName:
        """Create the staging table, named for this run and marked as the provider's.

        ``replace`` by rename: like the target, indexes dropped until after the load. ``replace`` in
        place, append, upsert: an UNLOGGED table with the target's column types (applied, then dropped).
        """
        p = self.plan
        with s.transaction():
            drop_leftovers(s, p.target, self.log)  # only tables marked for this target: never a user's
            staging = new_work_table(s, p.target, "staging")
            self._in_place = False
            if p.mode == "replace" and target_columns is not None:
                oid = s.fetchone("read target", q.RELATION_QUERY, p.target)[0]
                self._in_place = goes_in_place(p.swap, in_place_reasons(s, oid), p.target)
            if self._in_place:
                self._deferred_indexes = []
                assert target_columns is not None
                defs = [(c, target_columns[c].type_sql, target_columns[c].collation, False) for c in columns]
                s.execute(f"create staging table {staging}", q.create_table(staging, defs, unlogged=True))
            elif p.mode == "replace" and target_columns is not None:
                oid = s.fetchone("read target", q.RELATION_QUERY, p.target)[0]
                # LIKE does not copy persistence: an UNLOGGED target must stay unlogged after the swap
                unlogged = s.fetchone("read persistence", q.PERSISTENCE_QUERY, (oid,))[0] == "u"
                s.execute(
                    f"create staging table {staging}",
                    q.create_table_like(staging, p.target, unlogged=unlogged),
                )
                oid = s.fetchone("read staging", q.RELATION_QUERY, staging)[0]
                self._deferred_indexes = s.fetchall("read staging indexes", q.INDEXES_QUERY, (oid,))
                for name, _indexdef, conname, _condef, *_ in self._deferred_indexes:
                    if conname:
                        s.execute("defer constraint", q.drop_constraint(staging, conname), quiet=True)
                    else:
                        s.execute("defer index", q.drop_index(staging.schema, name), quiet=True)
            else:
                self._deferred_indexes = []
                defs = column_defs(source, columns)
                # append/upsert stage a delta that is applied and dropped: no WAL needed for it.
                s.execute(
                    f"create staging table {staging}",
                    q.create_table(staging, defs, unlogged=p.mode != "replace"),
                )
            mark(s, staging, p.target)
        return staging

    def _ranges(
        self, s: LocalSession, source: SourceInfo, columns: list[str], conditions: list[Any]
    ) -> list[Any]:
        """Split conditions for the parallel sessions: key ranges over [min, max] of the split column."""
        p = self.plan
        if p.parallelism == 1:
            return [None]
        column = source.columns[p.split_column]
        if column.type_sql not in INTEGER_TYPES and not column.type_sql.startswith("numeric"):
            raise FdwConfigError(
                f"parallelism splits by ranges of an integer column; {p.split_column} is "
                f"{column.type_sql}. Pass split_column= with an integer column."
            )
        finite = list(conditions)
        with s.transaction():
            low, high = s.fetchone("read key range", q.min_max(p.source, p.split_column, finite))
            # numeric NaN / ±Infinity cannot bound a range: split the finite values (open ends read the rest)
            while low is not None and not all(math.isfinite(v) for v in (low, high)):
                if not math.isfinite(high):
                    finite.append(
                        q.sql.SQL("{} < {}").format(q.sql.Identifier(p.split_column), q.sql.Literal(high))
                    )
                else:
                    finite.append(
                        q.sql.SQL("{} > {}").format(q.sql.Identifier(p.split_column), q.sql.Literal(low))
                    )
                low, high = s.fetchone("read key range", q.min_max(p.source, p.split_column, finite))
        if low is None:
            return [None]
        low, high = int(low), int(high)
        step = max(1, -(-(high - low + 1) // p.parallelism))
        bounds = [low + i * step for i in range(p.parallelism)] + [None]
        bounds[0] = None  # open ends: rows outside the range read (e.g. inserted meanwhile) are not lost
        return [
            q.range_predicate(p.split_column, bounds[i], bounds[i + 1], include_nulls=(i == 0))
            for i in range(p.parallelism)
        ]

    def _load(
        self,
        source: SourceInfo,
        staging: QualifiedName,
        columns: list[str],
        conditions: list[Any],
        ranges: list[Any],
    ) -> None:
        p = self.plan
        probe = None
        if self.result.path == "fdw" or self.psql_relay:  # rows counted only at the end: watch staging grow
            monitor = self.new_session()
            with monitor.transaction():
                staging_oid = monitor.fetchone("read staging", q.RELATION_QUERY, staging)[0]

            def probe() -> int:
                with monitor.transaction():
                    return int(monitor.fetchone("measure staging", q.RELATION_SIZE_QUERY, (staging_oid,))[0])

        # Percent and ETA against the remote's reltuples, for copies of the whole table only.
        estimate = (
            None
            if conditions
            else lambda: estimate_source_rows(
                self.new_session, p.source, source.server_name, source.remote, self.remote_connect
            )
        )
        progress = Progress(self.log, str(p.source), str(p.target), probe=probe, estimate=estimate)
        with progress, ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="fdw-copy") as pool:
            futures = [
                pool.submit(
                    self._load_range,
                    source,
                    staging,
                    columns,
                    conditions + ([r] if r is not None else []),
                    progress,
                )
                for r in ranges
            ]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # execution_timeout / kill while waiting: stop the loaders now
                self.scope.cancel()
                raise
            # The first failure (in time) is the error; the other ranges are cancelled at once.
            first = next((f.exception() for f in futures if f in done and f.exception()), None)
            if first is not None:
                self.scope.cancel()
            errors = [f.exception() for f in futures]
        if probe is not None:
            monitor.close()
        failures = [e for e in errors if e is not None]
        if failures:
            first = first or failures[0]
            server = f" from server {source.server_name!r}" if source.server_name else ""
            raise FdwError(
                f"Copy {p.source} -> {p.target}{server} failed while loading rows: {describe(first)}",
                step="load",
                sqlstate=getattr(first, "sqlstate", None),
            ) from None
        self.result.rows = sum(f.result() for f in futures)
        progress.finish(self.result.rows)

    def _load_in_one_snapshot(
        self,
        source: SourceInfo,
        staging: QualifiedName,
        columns: list[str],
        conditions: list[Any],
        ranges: list[Any],
    ) -> None:
        """The direct path: every range imports one exported snapshot; verify counts the source in it."""
        assert self.remote_connect is not None and self.direct is not None and source.remote is not None
        self.snapshot = SnapshotHolder(
            self.remote_connect, self.direct.client_encoding, self.leftovers, self.log
        )
        try:
            if self.verifier.enabled:
                remote_name = {c: source.columns[c].options.get("column_name", c) for c in columns}
                self.snapshot.start_count(self.verifier.remote_select(source.remote, remote_name, conditions))
            self._load(source, staging, columns, conditions, ranges)
            if self.verifier.enabled:
                self.verifier.add_counted(*self.snapshot.counted())
        finally:
            self.snapshot.close()  # after every range read: the snapshot is no longer needed

    def _load_range(
        self,
        source: SourceInfo,
        staging: QualifiedName,
        columns: list[str],
        conditions: list[Any],
        progress: Progress,
    ) -> int:
        s = self.new_session()
        stop, fired = threading.Event(), threading.Event()
        swallowed = _SwallowedCopyErrors()
        try:
            if self.result.path == "direct":
                if self.psql_relay is None:  # the in-process relay learns of a local error only at the end
                    threading.Thread(target=self._watch_load, args=(s, stop, fired), daemon=True).start()
                with swallowed:
                    return self._copy_direct(s, source, staging, columns, conditions, progress)
            rows = self._copy_through_fdw(s, source, staging, columns, conditions)
            progress.add(rows)
            return rows
        except Exception:
            local = swallowed.first()
            if fired.is_set() and local is not None:  # the local refusal is the cause, not the cancel
                raise FdwError(
                    f"writing the staging table failed: {describe(local)}", step="copy into staging"
                ) from None
            raise
        finally:
            stop.set()
            s.close()

    def _watch_load(self, s: LocalSession, stop: threading.Event, fired: threading.Event) -> None:
        """When the local COPY fails (its session turns "idle in transaction (aborted)") while the
        remote still streams, cancel the copy's statements so the remote read stops at once."""
        try:
            pid = s.conn.info.backend_pid if hasattr(s.conn, "info") else s.conn.get_backend_pid()
            monitor = self.new_session()
        except Exception:  # no watcher: the error still arrives, only later
            return
        try:
            while not stop.wait(0.5):
                with monitor.transaction():
                    row = monitor.fetchone("watch load", LOAD_STATE_QUERY, (pid,))
                if row and row[0] == "idle in transaction (aborted)" and not stop.is_set():
                    fired.set()
                    self.scope.cancel()
                    return
        except Exception:  # best effort, like the rest of the clean-up
            return
        finally:
            monitor.close()

    def _copy_through_fdw(
        self,
        s: LocalSession,
        source: SourceInfo,
        staging: QualifiedName,
        columns: list[str],
        conditions: list[Any],
    ) -> int:
        p = self.plan
        with s.transaction():
            read_from = p.source
            if source.is_foreign:
                # A private foreign table with a bulk fetch_size: the user's table keeps its options.
                read_from = QualifiedName("pg_temp", bounded_name("fdw_bulk", p.source.name))
                defs = [(name, col.type_sql, col.options) for name, col in source.columns.items()]
                options = {
                    "schema_name": source.remote.schema,
                    "table_name": source.remote.name,
                    "fetch_size": str(p.fetch_size),
                }
                s.execute(
                    "create bulk-read foreign table",
                    q.create_temp_foreign_table(read_from.name, source.server_name, defs, options),
                    quiet=True,
                )
            cur = s.execute(f"load {staging}", q.insert_select(staging, columns, read_from, conditions))
            rows = cur.rowcount
            self.verifier.add_source(s, read_from, conditions)  # same transaction: same remote snapshot
            if source.is_foreign:
                s.execute("drop bulk-read foreign table", q.drop_remote_probe(read_from.name), quiet=True)
        return rows

    def _copy_direct(
        self,
        s: LocalSession,
        source: SourceInfo,
        staging: QualifiedName,
        columns: list[str],
        conditions: list[Any],
        progress: Progress,
    ) -> int:
        """COPY from the remote into COPY on the local side, relayed without buffering.

        Binary or text as :func:`~airflow_provider_fdw.hooks.direct.plan_direct` chose; both sessions
        speak the local database's encoding, as postgres_fdw's do.
        """
        assert self.remote_connect is not None and source.remote is not None and self.direct is not None
        binary, encoding = self.direct.binary, self.direct.client_encoding
        remote_columns = [source.columns[c].options.get("column_name", c) for c in columns]
        out_stmt = q.select_for_copy(source.remote, remote_columns, conditions, binary)
        in_stmt = q.copy_from_stdin(staging, columns, binary)
        if self.psql_relay is not None:
            relay = replace(
                self.psql_relay,
                remote={**self.psql_relay.remote, "client_encoding": encoding},
                local={**self.psql_relay.local, "client_encoding": encoding},
            )
            first = []
            if self.snapshot is not None:  # psql runs no implicit BEGIN: open the transaction itself
                first = [s.render(q.BEGIN_SNAPSHOT_READ), s.render(self.snapshot.reader_statements()[-1])]
            return relay.copy(s.render(out_stmt), s.render(in_stmt), first)
        remote = self.remote_connect(client_encoding=encoding)
        try:
            if self.snapshot is not None:  # before the COPY, in the driver's implicit transaction
                with remote.cursor() as cur:
                    for statement in self.snapshot.reader_statements():
                        cur.execute(statement)
            with s.transaction():
                s.execute("set client_encoding", q.set_local("client_encoding", encoding), quiet=True)
                return copy_stream(remote, s.conn, out_stmt, in_stmt, progress)
        finally:
            remote.close()

    # -- step 3: apply ---------------------------------------------------------------------------

    def _apply(
        self,
        s: LocalSession,
        staging: QualifiedName,
        source: SourceInfo,
        columns: list[str],
        target_columns: dict[str, Column] | None,
    ) -> None:
        p = self.plan
        with s.transaction():
            oid = s.fetchone("read staging", q.RELATION_QUERY, staging)[0]
            self.result.bytes = s.fetchone("measure staging", q.RELATION_SIZE_QUERY, (oid,))[0]
        self.verifier.check_loaded(s, staging, str(p.target))
        if p.mode != "replace" and p.watermark_column:
            with s.transaction():  # before the merge: the target must never get a bound at infinity
                check_finite_watermark(s, staging, p.watermark_column, f"The new rows for {p.target}")
        if p.mode == "replace":
            if not self._in_place:
                self._build_indexes(s, staging, target_columns is None, source)
            self.result.swap, counts = with_lock_retries(
                lambda: apply_replace(
                    s,
                    staging,
                    p.target,
                    swap=p.swap,
                    staging_indexed=not self._in_place,
                    key_columns=p.key_columns,
                    columns=columns,
                    staged_rows=self.result.rows,
                    lock_timeout=p.lock_timeout,
                    log=self.log,
                    verify_target=self.verifier.check_target,
                ),
                self.lock_retries,
                f"swap into {p.target}",
                self.log,
            )
            r = self.result
            r.inserted, r.updated, r.deleted, r.unchanged = (
                counts.inserted,
                counts.updated,
                counts.deleted,
                counts.unchanged,
            )
        else:
            with_lock_retries(
                lambda: self._merge(s, staging, source, columns, target_columns),
                self.lock_retries,
                f"{p.mode} into {p.target}",
                self.log,
            )
        if p.watermark_column:
            with s.transaction():
                self.result.watermark = s.fetchone("read watermark", q.max_of(p.target, p.watermark_column))[
                    0
                ]

    def _build_indexes(
        self, s: LocalSession, staging: QualifiedName, new_target: bool, source: SourceInfo
    ) -> None:
        """After the load: the target's indexes and constraints (or the source's primary key)."""
        p = self.plan
        keys = (p.key_columns or tuple(self._remote_primary_key(s, source))) if new_target else ()
        with s.transaction():
            for _name, indexdef, conname, condef, *_ in self._deferred_indexes:
                if conname:
                    s.execute(f"add constraint {conname}", q.add_constraint(staging, conname, condef))
                else:
                    s.execute("create index", q.server_ddl(indexdef))
            if keys:
                # Named for the table it will become (constraints keep their names across the rename).
                s.execute(
                    "add primary key", q.add_primary_key(staging, bounded_name(p.target.name, "pkey"), keys)
                )
            s.execute(f"analyze {staging}", q.analyze(staging))

    def _remote_primary_key(self, s: LocalSession, source: SourceInfo) -> list[str]:
        """The remote table's primary key, read through the same server (information_schema views)."""
        if not source.is_foreign or source.remote is None:
            return []
        try:
            for statement in q.create_pk_probes(source.server_name):
                s.execute("read remote primary key", statement, quiet=True)
            rows = s.fetchall("read remote primary key", q.REMOTE_PK_QUERY, source.remote)
        except FdwError as exc:
            self.log.warning("Could not read the primary key of %s on the remote: %s", source.remote, exc)
            return []
        finally:
            s.rollback()  # the probe tables were created in this transaction: gone with it
        remote_to_local = {col.options.get("column_name", name): name for name, col in source.columns.items()}
        return [remote_to_local.get(r[0], r[0]) for r in rows]

    def _merge(
        self,
        s: LocalSession,
        staging: QualifiedName,
        source: SourceInfo,
        columns: list[str],
        target_columns: dict[str, Column] | None,
    ) -> None:
        p = self.plan
        with s.transaction():
            if p.lock_timeout:
                s.execute("set lock_timeout", q.set_local("lock_timeout", p.lock_timeout), quiet=True)
            if target_columns is None:
                defs = column_defs(source, columns)
                s.execute(f"create {p.target}", q.create_table(p.target, defs, primary_key=p.key_columns))
            if p.mode == "append":
                cur = s.execute(f"append to {p.target}", q.insert_select(p.target, columns, staging))
                inserted, updated = cur.rowcount, 0
            else:
                check_unique_key(s, p.target, p.key_columns)
                check_no_null_key(
                    s, staging, p.key_columns, f"rows to upsert into {p.target}", "ON CONFLICT never matches"
                )
                target_oid = s.fetchone("read target", q.RELATION_QUERY, p.target)[0]
                image_equal = [
                    c for (c,) in s.fetchall("read column types", q.IMAGE_EQUAL_COLUMNS_QUERY, (target_oid,))
                ]
                upsert = q.upsert_from(p.target, staging, columns, p.key_columns, image_equal)
                inserted, updated = s.execute(f"upsert into {p.target}", q.counted_upsert(upsert)).fetchone()
            self.result.details["applied_rows"] = inserted + updated
            r = self.result
            r.inserted, r.updated, r.deleted = inserted, updated, 0
            r.unchanged = r.rows - inserted - updated  # upsert: rows of the overlap window already equal
            target_row = s.fetchone("read target", q.RELATION_QUERY, p.target)
            only = target_row[1] == "r"
            if p.mode == "upsert":  # the staged keys now hold exactly the staged rows
                self.verifier.check_target(s, p.target, only, (staging, p.key_columns))
            catch_up_sequences(s, p.target, target_row[0], only)
            s.execute("drop staging table", q.drop_table(staging), quiet=True)

    def _drop_staging(self, s: LocalSession, staging: QualifiedName) -> None:
        s.rollback()
        try:
            with s.transaction():
                s.execute("drop staging table", q.drop_table(staging), quiet=True)
        except FdwError as exc:  # the original error matters more; a retry drops the leftover
            self.log.warning("Could not drop %s: %s", staging, exc)


class _SwallowedCopyErrors(logging.Handler):
    """psycopg logs (and drops) the server's error of a COPY FROM ended by another exception
    ("error ignored terminating …"); this keeps it, for this thread, so it can be reported."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread and "error ignored terminating" in str(record.msg):
            self.errors.extend(a for a in record.args or () if isinstance(a, BaseException))

    def first(self) -> BaseException | None:
        return self.errors[0] if self.errors else None

    def __enter__(self) -> _SwallowedCopyErrors:
        logging.getLogger("psycopg").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("psycopg").removeHandler(self)


def column_defs(source: SourceInfo, columns: list[str]) -> list[tuple[str, str, str | None, bool]]:
    """(name, type, collation, NOT NULL) of the copied columns, as the source declares them."""
    return [
        (c, source.columns[c].type_sql, source.columns[c].collation, source.columns[c].not_null)
        for c in columns
    ]


def check_unique_key(s: LocalSession, target: QualifiedName, keys: Sequence[str]) -> None:
    oid = s.fetchone("read target", q.RELATION_QUERY, target)[0]
    for _name, _def, _con, _condef, unique, plain, index_columns, _signature in s.fetchall(
        "read target indexes", q.INDEXES_QUERY, (oid,)
    ):
        if unique and plain and sorted(index_columns) == sorted(keys):
            return
    raise FdwConfigError(
        f"upsert needs a unique index or primary key on {list(keys)} in {target} "
        "(ON CONFLICT uses it); create one or adjust key_columns."
    )


NON_FINITE = ("infinity", "-infinity", "nan")


def check_finite_watermark(s: LocalSession, table: QualifiedName, column: str, what: str = "") -> None:
    """A watermark at infinity (or NaN, which sorts above every number) lets no later row through."""
    top = s.fetchone("read watermark", q.max_text_of(table, column))[0]
    if top is not None and top.strip().lower() in NON_FINITE:
        raise FdwError(
            f"{what or table} has {column} = {top!r}: a watermark bound there would let no later row "
            "through, so every following run would copy nothing. Nothing was changed; leave such rows "
            f"out with where= (e.g. {column} < 'infinity'), fix them, or copy with mode='replace'.",
            step="check watermark",
        )


@dataclass
class PsqlRelay:
    """``psql`` COPY TO STDOUT piped into ``psql`` COPY FROM STDIN: the stream stays in C (twice the
    in-process relay's speed, which pays a Python call per row). Used when ``psql`` is on the PATH.

    Secrets never reach a command line (visible in ``ps``) nor an environment (``/proc/PID/environ``):
    each child reads its password from a private 0600 passfile (``PGPASSFILE``) removed when it ends,
    and gets a minimal environment (no ``AIRFLOW_CONN_*``, no ``PG*`` of the worker). Children die
    with the worker (``PR_SET_PDEATHSIG``) and are recorded in ``scope`` so ``on_kill`` stops them.
    """

    psql: str
    remote: dict[str, Any] = field(repr=False)
    local: dict[str, Any] = field(repr=False)
    scope: CancelScope | None = field(default=None, repr=False)
    # Opens a LOCAL connection: watches the load's session, whose error psql reports only at EOF.
    monitor: Callable[[], Any] | None = field(default=None, repr=False)
    _interrupted: dict[str, bool] = field(default_factory=dict, repr=False, init=False)

    def copy(self, out_statement: str, in_statement: str, first: Sequence[str] = ()) -> int:
        """``first``: statements the reader runs before its COPY, in one transaction (the snapshot)."""
        base = str(self.local.get("application_name") or "airflow_provider_fdw")
        load_name = f"{base.encode()[:50].decode(errors='ignore')}:L{uuid.uuid4().hex[:8]}"
        local = {**self.local, "application_name": load_name}
        with tempfile.TemporaryDirectory(prefix="fdw-psql-") as private:  # mode 0700
            remote_env = self._env(self.remote, os.path.join(private, "remote.pgpass"))
            local_env = self._env(local, os.path.join(private, "local.pgpass"))
            out = self._start(
                self._command(self.remote, *first, out_statement), remote_env, None, subprocess.PIPE
            )
            try:
                load = self._start(self._command(local, in_statement), local_env, out.stdout, subprocess.PIPE)
            except BaseException:
                out.kill()
                out.wait()
                raise
            out.stdout.close()  # the load child holds the pipe now: a dead reader means EOF there
            stop = threading.Event()
            watcher = threading.Thread(
                target=self._stop_reader_when_load_fails, args=(load_name, out, stop), daemon=True
            )
            watcher.start()
            try:
                load_out, load_err = load.communicate()
                stop.set()
                if load.returncode != 0 and out.poll() is None:
                    out.send_signal(signal.SIGINT)  # psql cancels the remote read now, not at its next write
                out_err = out.stderr.read()
                out.wait()
            except BaseException:  # interrupted (execution_timeout): the children must not outlive us
                for proc in (out, load):
                    proc.kill()
                    proc.wait()
                raise
            finally:
                out.stderr.close()
        load_error = (
            FdwError(
                f"writing the staging table on {endpoint(self.local)} failed: "
                f"{server_message(load_err, load.returncode)}",
                step="copy into staging",
            )
            if load.returncode != 0
            else None
        )
        if load_error is not None and out.returncode != 0 and self._interrupted.get(load_name):
            raise load_error  # the reader was stopped because of the load's failure: that is the cause
        if out.returncode != 0:
            raise FdwError(
                f"reading the remote {endpoint(self.remote)} failed: "
                f"{server_message(out_err, out.returncode)}",
                step="copy from remote",
            )
        if load_error is not None:
            raise load_error
        match = re.search(r"^COPY (\d+)$", load_out, re.MULTILINE)
        return int(match.group(1)) if match else 0

    def _stop_reader_when_load_fails(
        self, load_name: str, out: subprocess.Popen[Any], stop: threading.Event
    ) -> None:
        """psql keeps feeding a COPY the server already refused until its input ends: when the load's
        session stops being active while the reader still runs, interrupt the reader (psql then
        cancels the remote read), so the load's error is reported at once."""
        if self.monitor is None:
            return
        try:
            conn = self.monitor()
        except Exception:  # no watcher: the error still arrives, only later
            return
        seen_active = False
        query = "SELECT state FROM pg_stat_activity WHERE application_name = %s"
        try:
            while not stop.wait(0.5):
                with conn.cursor() as cur:
                    cur.execute(query, (load_name,))
                    row = cur.fetchone()
                conn.commit()  # a new snapshot of pg_stat_activity next time
                state = row[0] if row else None
                if state == "active":
                    seen_active = True
                elif seen_active and out.poll() is None:
                    self._interrupted[load_name] = True
                    out.send_signal(signal.SIGINT)
                    return
        except Exception:  # best effort, like the rest of the clean-up
            return
        finally:
            with suppress(Exception):
                conn.close()

    def _start(
        self, command: list[str], env: dict[str, str], stdin: Any, stdout: Any
    ) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(
            command,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=stdout is subprocess.PIPE and stdin is not None,
            preexec_fn=die_with_parent,  # only prctl, before exec
        )
        if self.scope is not None:
            self.scope.add_process(proc)
        return proc

    def _command(self, params: dict[str, Any], *statements: str) -> list[str]:
        conninfo = make_conninfo(**{k: v for k, v in params.items() if k != "password"})
        # -q with several statements: their tags (BEGIN, SET) must not mix into the COPY data on stdout.
        quiet = ["-q"] if len(statements) > 1 else []
        commands = [arg for statement in statements for arg in ("-c", statement)]
        return [self.psql, "-X", *quiet, "-v", "ON_ERROR_STOP=1", "-d", conninfo, *commands]

    @staticmethod
    def _env(params: dict[str, Any], passfile: str) -> dict[str, str]:
        """Only what psql needs: PATH, locale, HOME (for ~/.postgresql certificates), a passfile."""
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        if params.get("password"):
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(":".join(["*", "*", "*", "*", _pgpass_escape(str(params["password"]))]) + "\n")
            env["PGPASSFILE"] = passfile
        return env


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def endpoint(params: dict[str, Any]) -> str:
    """``host:port/dbname`` of libpq parameters, for messages (never the user or password)."""
    return f"{params.get('host')}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


def server_message(stderr: str | bytes, returncode: int | None = None) -> str:
    """The server's own error from psql's stderr: the ERROR/FATAL line with its DETAIL and HINT
    (not the CONTEXT line, which only says where in the stream it happened)."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith(("ERROR:", "FATAL:", "psql: error:", "PANIC:")):
            message = line.removeprefix("psql: error:").strip()
            for extra in lines[i + 1 :]:
                if extra.startswith(("DETAIL:", "HINT:")):
                    message += f" ({extra.replace(':  ', ': ', 1)})"
                elif extra.startswith(("ERROR:", "FATAL:", "CONTEXT:")):
                    break
            return message
    if lines:
        return lines[0]
    if returncode is not None and returncode < 0:
        return f"psql was stopped by signal {-returncode} (cancelled)"
    return f"psql exited with status {returncode} and no message"


def copy_stream(remote: Any, local: Any, out_stmt: Any, in_stmt: Any, progress: Progress) -> int:
    """Relay ``COPY … TO STDOUT`` on ``remote`` into ``COPY … FROM STDIN`` on ``local`` chunk by chunk.

    Memory stays flat whatever the table size. Returns the rows the local COPY reported.
    """
    from airflow_provider_fdw._driver import USE_PSYCOPG3

    if USE_PSYCOPG3:
        seen = 0
        local_cur = local.cursor()
        with remote.cursor().copy(out_stmt) as out, local_cur.copy(in_stmt) as inp:
            for chunk in out:  # psycopg yields one row per chunk
                inp.write(chunk)
                seen += 1
                if seen == 10_000:
                    progress.add(seen)
                    seen = 0
        return local_cur.rowcount
    read_fd, write_fd = os.pipe()
    sink = _CountingWriter(os.fdopen(write_fd, "wb", buffering=1 << 20), progress)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            remote.cursor().copy_expert(out_stmt.as_string(remote), sink)
        except BaseException as exc:
            errors.append(exc)
        finally:
            sink.close()

    thread = threading.Thread(target=produce, name="fdw-copy-producer")
    thread.start()
    local_cur = local.cursor()
    with os.fdopen(read_fd, "rb", buffering=1 << 20) as reader:
        try:
            local_cur.copy_expert(in_stmt.as_string(local), reader, size=1 << 18)
        finally:
            thread.join()
    if errors:
        raise errors[0]
    return local_cur.rowcount


class _CountingWriter:
    """File-like sink for psycopg2's copy_expert: counts rows (one write per row) and reports progress."""

    def __init__(self, raw: Any, progress: Progress) -> None:
        self.raw, self.progress, self.pending = raw, progress, 0

    def write(self, data: bytes) -> int:
        self.pending += 1
        if self.pending == 10_000:
            self.progress.add(self.pending)
            self.pending = 0
        return self.raw.write(data)

    def close(self) -> None:
        self.raw.close()
