"""Mirror mode's apply: write the differing buckets' rows, then check the changed buckets again.

The source rows of the differing leaf buckets are fetched into a temporary table; the target rows of
those buckets whose key vanished are deleted, the rows whose values differ updated and the new keys
inserted (as the replace's in-place apply). A row of another table referencing a row the mirror would
delete or re-key fails the run before any change (:func:`check_children`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.bulkcopy.apply import (
    catch_up_sequences,
    check_no_null_key,
    check_rows_stay_in_partition,
    check_unique,
)
from airflow_provider_fdw.bulkcopy.mirror_compare import Bucketing, Buckets, checksums, read_buckets
from airflow_provider_fdw.bulkcopy.writes import Written, unchosen
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.sql import mirror as mq

if TYPE_CHECKING:
    from airflow_provider_fdw.bulkcopy.mirror import MirrorPlan, MirrorResult


UNIQUE_VIOLATION = "23505"


@dataclass
class Differences:
    """What an apply rewrites: the target rows ``within`` (a condition, with ``params``) become the
    source rows ``fetch`` stages (given the staging table, it returns the rows staged); ``verify``
    then checks the result, before the commit. The staging table takes the column types of
    ``staging_like``."""

    within: sql.Composable
    params: list[Any] | None
    staging_like: QualifiedName
    fetch: Callable[[QualifiedName], int]
    verify: Callable[[], None]
    rows_before: int  # the target's rows, as compared
    row_hash: sql.Composable  # the target's (the whole table's check, without track_counts)


def apply_differences(
    s: LocalSession,
    p: MirrorPlan,
    result: MirrorResult,
    oid: int,
    only: bool,
    key: tuple[str, ...],
    key_is_unique: bool,
    columns: list[str],
    d: Differences,
) -> None:
    """Make the target rows ``d.within`` equal to the source's; fills ``result``'s counts."""
    within, params = d.within, d.params
    staging = QualifiedName("pg_temp", f"fdw_mirror_{uuid.uuid4().hex[:12]}")
    like_only = only if d.staging_like == p.target else False
    s.execute(
        "create mirror staging table",
        mq.create_staging(staging, d.staging_like, columns, like_only),
        quiet=True,
    )
    result.rows_fetched = d.fetch(staging)
    # The apply joins each side to the other by key: both through an index, never a full scan.
    s.execute("index mirror staging table", q.create_index(staging, f"{staging.name}_key", key), quiet=True)
    s.execute("analyze mirror staging table", q.analyze(staging), quiet=True)
    # DEFERRABLE unique keys / foreign keys are checked at commit, on the final rows.
    s.execute("defer deferrable constraints", q.DEFER_CONSTRAINTS, quiet=True)
    check_no_null_key(s, staging, key, f"source rows of {p.source}", "the mirror never matches")
    check_unique(s, staging, key, str(p.source))
    if not key_is_unique:
        check_unique(s, p.target, key, str(p.target), only)
    self_referencing = check_children(s, p.target, oid, only, key, staging, within, params)
    always = {c for (c,) in s.fetchall("read identity columns", q.ALWAYS_IDENTITY_QUERY, (oid,))}
    image_equal = [c for (c,) in s.fetchall("read column types", q.IMAGE_EQUAL_COLUMNS_QUERY, (oid,))]
    joins = prefer_index_lookups(s) if key_is_unique else {}
    before = Written.read(s, oid)
    # With a self-reference, rows re-pointed away from a deleted row are updated first, so its
    # ON DELETE action finds no row to act on; otherwise deletes first free unique values.
    if self_referencing:
        result.updated = update_changed(s, p.target, staging, key, columns, only, image_equal)
    result.deleted = s.execute(
        f"delete vanished rows of {p.target}",
        mq.delete_vanished(p.target, staging, key, within, only),
        params,
    ).rowcount
    if not self_referencing:
        result.updated = update_changed(s, p.target, staging, key, columns, only, image_equal)
    result.inserted = s.execute(
        f"insert new rows of {p.target}",
        q.diff_insert(p.target, staging, key, columns, only, bool(always & set(columns))),
    ).rowcount
    for setting, value in joins.items():
        s.execute("restore planner setting", q.set_local(setting, value), quiet=True)
    result.unchanged = result.rows - result.inserted - result.updated
    catch_up_sequences(s, p.target, oid, only)
    check_only_chosen_rows_written(s, p, result, oid, only, d, before)
    d.verify()
    s.execute("drop mirror staging table", q.drop_table(staging), quiet=True)


def bucket_differences(
    s: LocalSession,
    p: MirrorPlan,
    bucketing: Bucketing,
    result: MirrorResult,
    only: bool,
    columns: list[str],
    row_hash: sql.Composable,
    level: int,
    leaves: Buckets,
    rows_before: int,
    fetch: Callable[[QualifiedName], int] | None = None,
) -> Differences:
    """Every row of the differing leaf buckets, fetched through postgres_fdw (or by ``fetch``);
    checked by recomputing those buckets and counting the target."""
    buckets = sorted(leaves)
    within, params = bucketing.within(buckets, level)

    def through_fdw(staging: QualifiedName) -> int:
        statement = mq.fetch_rows(staging, p.source, columns, within)
        return int(s.execute(f"fetch the differing rows of {p.source}", statement, params).rowcount)

    def verify() -> None:
        after = checksums(s, bucketing, p.target, only, row_hash, level, buckets, level, "target")
        wrong = [b for b in buckets if after.get(b, (0, None)) != leaves[b]]
        if wrong:
            raise mismatch(
                p, len(wrong), f"bucket {wrong[0]}, target {after.get(wrong[0])}, source {leaves[wrong[0]]}"
            )

    staging_like = p.target if fetch is None else p.source  # a relayed COPY needs the source's types
    return Differences(within, params, staging_like, fetch or through_fdw, verify, rows_before, row_hash)


def check_only_chosen_rows_written(
    s: LocalSession,
    p: MirrorPlan,
    result: MirrorResult,
    oid: int,
    only: bool,
    d: Differences,
    before: Written,
) -> None:
    """The apply wrote the rows it chose and no other: a trigger, rule or foreign key action on the
    target writing any other row fails the run (the verify re-reads only the chosen rows).

    By the transaction's own counts of the rows it wrote (:mod:`.writes`). When they are off or do
    not add up, the whole table's rows and checksum against the source snapshot's decide (one more
    pass over the target): equal, the run goes on whatever a trigger wrote."""
    written = Written.after(s, oid, before)
    error = None
    if written.counting:
        error = unchosen(p.target, written, result.inserted, result.updated, result.deleted, "Mirror")
        if error is None and d.rows_before + written.inserted - written.deleted == result.rows:
            return
    statement = mq.bucket_checksums(p.target, only, None, d.row_hash)
    rows, checksum = read_buckets(s, statement, None, "target").get(0, (0, None))
    check_total(p, result, rows)
    if int(checksum or 0) != int(result.checksum or 0):
        raise error or mismatch(p, 1, "the whole table's checksum")
    if written.counting:
        s.log.info(
            "%s: the counts of what the apply wrote do not add up (a trigger's own writes, or writes "
            "undone in a subtransaction), but the whole table equals the source",
            p.target,
        )


def check_total(p: MirrorPlan, result: MirrorResult, total: int) -> None:
    if total != result.rows:  # a foreign key action or trigger reached rows the mirror did not write
        raise FdwError(
            f"Mirror check failed: after the apply {p.target} has {total} rows, the source snapshot "
            f"{result.rows} (a foreign key action or trigger on the target changed rows the mirror did "
            "not write). Nothing was committed to the target.",
            step="verify",
        )


def mismatch(p: MirrorPlan, count: int, first: str) -> FdwError:
    return FdwError(
        f"Mirror check failed: after the apply, {count} key buckets or rows of {p.target} still differ "
        f"from the source snapshot (first: {first}); values whose equality is not identity (a "
        "non-deterministic collation) cannot be mirrored, nor non-ASCII text from a database of "
        "another encoding (the remote hashes its own bytes). Nothing was committed to the target.",
        step="verify",
    )


def update_changed(
    s: LocalSession,
    target: QualifiedName,
    staging: QualifiedName,
    key: tuple[str, ...],
    columns: list[str],
    only: bool,
    image_equal: list[str],
) -> int:
    """Update the target rows whose values differ from the staged ones; the number of rows updated."""
    if all(c in key and c in image_equal for c in columns):
        return 0  # every column is a key compared by identity: a matched row cannot differ
    try:
        return s.execute(
            f"update changed rows of {target}",
            q.diff_update(target, staging, key, columns, only, image_equal),
        ).rowcount
    except FdwError as exc:
        if exc.sqlstate != UNIQUE_VIOLATION:
            raise
        # One UPDATE checks a non-deferrable unique index row by row: values swapped between two
        # rows meet each other mid-statement; a DEFERRABLE constraint is checked at the commit.
        raise FdwError(
            f"{exc} The mirror updates the changed rows in one statement: values that rows of the "
            "source swapped in a unique column other than the key collide in it midway. Declare that "
            "unique constraint DEFERRABLE (the mirror defers deferrable constraints to its commit).",
            step=exc.step,
            sqlstate=exc.sqlstate,
        ) from None


def prefer_index_lookups(s: LocalSession) -> dict[str, str]:
    """The few changed rows find their target rows through the key's unique index, not by a hash
    join over the whole target (the planner cannot know that the staged keys are a small sample)."""
    saved = {}
    for setting in ("enable_hashjoin", "enable_mergejoin"):
        saved[setting] = s.fetchvalue("read planner setting", q.CURRENT_SETTING_QUERY, (setting,))
        s.execute("prefer index lookups", q.set_local(setting, "off"), quiet=True)
    return saved


def check_children(
    s: LocalSession,
    target: QualifiedName,
    oid: int,
    only: bool,
    key: tuple[str, ...],
    staging: QualifiedName,
    within: sql.Composable,
    params: list[Any] | None,
) -> bool:
    """Fail, naming the constraint, when a row referencing the target would see its parent row
    deleted or its referenced values changed (its ON DELETE/UPDATE action would fire). True when the
    target references itself."""
    self_referencing = False
    for conname, schema, table, child_columns, parent_columns, _, partition_keys, referenced in s.fetchall(
        "read foreign keys pointing at the target", q.REFERENCING_KEYS_QUERY, {"oid": oid}
    ):
        child = QualifiedName(schema, table)
        check_rows_stay_in_partition(target, key, conname, child, referenced, partition_keys)
        self_referencing = self_referencing or child == target
        probe = mq.mirror_orphan_probe(
            child, child_columns, target, parent_columns, staging, key, within, only
        )
        twice = None if params is None else params * 2  # a self-reference filters the child rows too
        orphan = s.fetchone(
            f"check rows referencing {target} through {conname}",
            probe,
            twice if child == target else params,
        )
        if orphan is not None:
            shown = repr(orphan[0]) if len(orphan) == 1 else repr(tuple(orphan))
            raise FdwError(
                f"Mirroring {target} would delete or change the row that rows of {child} "
                f"reference through foreign key {conname} ({', '.join(child_columns)}) = {shown}: the "
                "source no longer has it. Nothing was changed; delete or re-point those rows first.",
                step="check referencing rows",
            )
    return self_referencing
