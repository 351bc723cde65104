"""The apply step of a replace: swap the staging table in by rename, or diff it into the target in place.

Two ways to make the target hold the new rows, both in ONE transaction bounded by ``lock_timeout``:

- **rename**: the target is renamed away and dropped, the staging table (indexes built after the
  load) renamed in its place. Fast whatever changed, but a new table: only possible when nothing
  holds on to the target's OID (views, foreign keys pointing at it, triggers, policies,
  publications, owned sequences …) and nothing of the target would be lost (a tablespace, a grant
  chain, settings and comments the swap does not re-make), and readers whose snapshot predates the
  load see no rows. A target whose definition changed during the load is refused, never reverted.
- **in place** (a diff): delete the rows whose key vanished, update the rows whose values differ,
  insert the new keys. Only changed rows are written, so children, triggers, publications and
  sequences see exactly the real changes, and every reader keeps an MVCC-consistent view. Before
  anything changes, every foreign key pointing at the target is checked: a child row that would
  lose its parent fails the copy, naming the constraint and a sample key.

``swap="auto"`` (default) renames when the target allows it, else goes in place.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.bulkcopy import watermark
from airflow_provider_fdw.bulkcopy.writes import (
    DELETE,
    INSERT,
    UPDATE,
    Written,
    skipped,
    skipping_writers,
    unchosen,
)
from airflow_provider_fdw.catalog import (
    Index,
    Relation,
    read_indexes,
    read_oid,
    read_relation,
)
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.locks import LockTimeout
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.refresh import bounded_name
from airflow_provider_fdw.session import LocalSession

SWAPS = ("auto", "rename", "in_place")
MARKER_PREFIX = "airflow_provider_fdw: work table of "


@dataclass
class ApplyCounts:
    """Rows the apply wrote; ``None`` where a rename swap does not compute a diff."""

    inserted: int | None = None
    updated: int | None = None
    deleted: int | None = None
    unchanged: int | None = None


# -- the provider's own work tables (staging, retired) ----------------------------------------------


def marker(target: QualifiedName) -> str:
    """The comment that marks a staging table as the provider's, for this one target."""
    return f"{MARKER_PREFIX}{target}"


def new_work_table(s: LocalSession, target: QualifiedName, role: str) -> QualifiedName:
    """A name no relation in the target's schema has: ``<target>_fdw_<role>_<run id>``."""
    for _ in range(10):
        name = QualifiedName(target.schema, bounded_name(target.name, "fdw", role, uuid.uuid4().hex[:8]))
        if s.fetchone("check work table name", q.RELATION_QUERY, name) is None:
            return name
    raise FdwError(f"Could not find a free name for a {role} table of {target}.", step="name staging table")


def drop_leftovers(s: LocalSession, target: QualifiedName, log: Any) -> list[str]:
    """Drop staging tables a killed run left for this target, found by their marker (never by name)."""
    names = [
        n
        for (n,) in s.fetchall(
            "find leftover work tables", q.MARKED_TABLES_QUERY, (target.schema, marker(target))
        )
    ]
    for name in names:
        log.info("Dropping %s.%s, left behind by an earlier run on %s", target.schema, name, target)
        s.execute("drop leftover work table", q.drop_table(QualifiedName(target.schema, name)), quiet=True)
    return names


def mark(s: LocalSession, table: QualifiedName, target: QualifiedName) -> None:
    s.execute("mark work table", q.comment_on_table(table, marker(target)), quiet=True)


# -- choosing the way ---------------------------------------------------------------------------------


def in_place_reasons(s: LocalSession, oid: int) -> list[str]:
    """What a rename swap would break or lose; empty when the target can be swapped by rename."""
    return sorted(
        {r for (r,) in s.fetchall("read what a rename loses", q.RENAME_BLOCKERS_QUERY, {"oid": oid})}
    )


def read_definition(s: LocalSession, oid: int) -> str:
    """What a staging table ``LIKE`` the target copies from it, as one comparable text."""
    return str(s.fetchvalue("read target definition", q.DEFINITION_QUERY, (oid,)))


def goes_in_place(swap: str, reasons: Sequence[str], target: QualifiedName) -> bool:
    if swap == "rename" and reasons:
        raise FdwConfigError(
            f"swap='rename' would break what holds on to {target} ({', '.join(reasons)}); "
            "use swap='in_place' or 'auto'."
        )
    return swap == "in_place" or bool(reasons)


# -- the apply ----------------------------------------------------------------------------------------


def apply_replace(
    s: LocalSession,
    staging: QualifiedName,
    target: QualifiedName,
    *,
    swap: str,
    staging_indexed: bool,
    key_columns: Sequence[str] | None,
    columns: Sequence[str],
    staged_rows: int,
    lock_timeout: LockTimeout,
    log: Any,
    verify_target: Callable[[LocalSession, QualifiedName, bool], None] | None = None,
    feed: watermark.Feed,
    definition: str | None = None,
) -> tuple[str, ApplyCounts]:
    """Make the target hold exactly the staging table's rows; return how ("created", "renamed",
    "in-place") and the rows written.

    ``verify_target(session, target, only)`` runs inside the transaction after an in-place apply
    changed the rows: when it raises, nothing is committed. ``definition``: the target's
    (:func:`read_definition`) when the indexed staging table was made like it (None: there was no target).
    ``feed``: the copy's source, whose rows the target then holds (:func:`.watermark.replaced`).
    """
    with s.transaction():
        lock_timeout.set_local(s, log)
        relation = read_relation(s, target, "target")
        if relation is None:
            s.execute(f"rename {staging} to {target.name}", q.rename_table(staging, target.name))
            s.execute("unmark target", q.uncomment_table(target), quiet=True)
            counts, how = ApplyCounts(staged_rows, 0, 0, 0), "created"
        else:
            oid, relkind = relation.oid, relation.relkind
            in_place = not staging_indexed or goes_in_place(swap, in_place_reasons(s, oid), target)
            # In place, readers go on reading (MVCC); writers and new child references wait.
            s.execute(
                f"lock {target}", q.lock_table_in(target, "EXCLUSIVE" if in_place else "ACCESS EXCLUSIVE")
            )
            if not in_place:  # re-read under the lock: something may have started to depend on it
                in_place = goes_in_place(swap, in_place_reasons(s, oid), target)
            if in_place:
                log.info("Applying %s to %s in place (rows that changed only)", staging, target)
                # same oid and storage: the next incremental run must read max() from the new rows
                watermark.replaced(s, target, feed)
                # DEFERRABLE unique keys / foreign keys are checked at commit, on the final rows.
                s.execute("defer deferrable constraints", q.DEFER_CONSTRAINTS, quiet=True)
                counts = diff_apply(s, staging, target, oid, relkind, key_columns, columns, staged_rows, log)
                if verify_target is not None:
                    verify_target(s, target, relkind == "r")
                s.execute("drop staging table", q.drop_table(staging), quiet=True)
                how = "in-place"
            else:
                check_definition_unchanged(s, target, oid, definition)
                rename_swap(s, staging, target, relation)
                watermark.replaced(s, target, feed)
                counts, how = ApplyCounts(inserted=staged_rows), "renamed"
    return how, counts


def diff_apply(
    s: LocalSession,
    staging: QualifiedName,
    target: QualifiedName,
    oid: int,
    relkind: str,
    key_columns: Sequence[str] | None,
    columns: Sequence[str],
    staged_rows: int,
    log: Any,
) -> ApplyCounts:
    """Delete vanished keys, update changed rows, insert new keys; fail first if a child would be
    orphaned, and after if a trigger, rule or foreign key action wrote other rows, or skipped or
    rewrote rows the diff wrote (:mod:`.writes`)."""
    only = relkind == "r"  # inheritance children of a plain table keep their rows
    key, key_is_unique = choose_key(s, oid, key_columns)
    always = {c for (c,) in s.fetchall("read identity columns", q.ALWAYS_IDENTITY_QUERY, (oid,))}
    overriding = bool(always & set(columns))
    if key:
        check_no_null_key(
            s, staging, key, f"rows of the new data for {target}", "the in-place diff never matches"
        )
        check_unique(s, staging, key, f"the new data for {target}")
        if not key_is_unique:
            check_unique(s, target, key, str(target), only)
    check_children(s, staging, target, oid)
    check_moved_parents(s, staging, target, oid, key, columns, only)
    before = Written.read(s, oid)
    if key:
        deleted = s.execute(
            f"delete vanished rows of {target}", q.diff_delete(target, staging, key, only)
        ).rowcount
        updated = 0
        image_equal = [c for (c,) in s.fetchall("read column types", q.IMAGE_EQUAL_COLUMNS_QUERY, (oid,))]
        if any(c not in key or c not in image_equal for c in columns):
            updated = s.execute(
                f"update changed rows of {target}",
                q.diff_update(target, staging, key, columns, only, image_equal),
            ).rowcount
        inserted = s.execute(
            f"insert new rows of {target}", q.diff_insert(target, staging, key, columns, only, overriding)
        ).rowcount
    else:
        inserted, deleted = s.fetchrow(
            f"apply the difference to {target}",
            q.multiset_diff(target, staging, columns, only, overriding),
        )
        updated = 0
    written = Written.after(s, oid, before)
    error = unchosen(target, written, inserted, updated, deleted, "Replace") if written.counting else None
    # A row a statement skipped or rewrote shows in neither its count nor the transaction's.
    writers = skipping_writers(s, oid, INSERT | UPDATE | DELETE)
    if error is not None or not written.counting or writers:
        # The counts are off, do not add up, or cannot tell: the whole target against the new data decides.
        differing = s.fetchvalue("compare the target", q.rows_differing(target, staging, columns, only))
        if differing and writers:
            raise skipped(
                target,
                "Replace",
                f"after the apply {differing} rows of {target} differ from the new data",
                writers,
                "or make it leave the copied values as they come (a replace writes every column)",
            )
        if differing:
            raise error or FdwError(
                f"Replace check failed: after the apply {differing} rows of {target} differ from the new "
                "data (a trigger, rule or foreign key action on the target wrote rows the run did not "
                "choose). Nothing was committed to the target.",
                step="verify",
            )
        if error is not None:
            log.info(
                "%s: a trigger wrote more than the apply chose, but the table equals the new data", target
            )
    catch_up_sequences(s, target, oid, only)
    return ApplyCounts(inserted, updated, deleted, staged_rows - inserted - updated)


def check_definition_unchanged(
    s: LocalSession, target: QualifiedName, oid: int, definition: str | None
) -> None:
    """Under the swap's lock: the staging table is like the target as it was when staging began, so a
    column, index, constraint, default or comment changed since would be undone by the swap. Refused
    rather than applied in place: the staged columns and types were read from the old definition."""
    if definition is None or read_definition(s, oid) != definition:
        raise FdwError(
            f"The definition of {target} changed while the new rows were loaded (a column, index, "
            "constraint, default or comment added, changed or dropped; or the table was created "
            "meanwhile): swapping in the staging table, made like the old definition, would undo it. "
            "Nothing was changed; run the copy again.",
            step="check target definition",
        )


def catch_up_sequences(s: LocalSession, target: QualifiedName, oid: int, only: bool) -> None:
    """Sequences the target's columns take values from (owned, or ``DEFAULT nextval('s')``): moved up
    to max(column) if behind, never down (a sequence shared with other tables keeps its higher value)."""
    for sequence_oid, column in s.fetchall("read sequences", q.SEQUENCES_QUERY, {"oid": oid}):
        s.execute("catch up sequence", q.catch_up_sequence(sequence_oid, target, column, only), quiet=True)


def choose_key(s: LocalSession, oid: int, key_columns: Sequence[str] | None) -> tuple[tuple[str, ...], bool]:
    """The rows' identity: ``key_columns``, else the primary key, else a unique index over NOT NULL columns.

    Returns ``((), False)`` when there is none (the diff then matches whole rows).
    """
    candidates = [
        (tuple(cols), bool(not_null))
        for cols, not_null in s.fetchall("read keys", q.KEY_CANDIDATES_QUERY, (oid,))
    ]
    if key_columns:
        unique = any(sorted(cols) == sorted(key_columns) for cols, _ in candidates)
        return tuple(key_columns), unique
    for cols, not_null in candidates:
        if not_null:
            return cols, True
    return (), False


def check_no_null_key(s: LocalSession, table: QualifiedName, key: Sequence[str], what: str, why: str) -> None:
    """NULL never equals NULL: a row with a NULL key would be written again on every run."""
    nulls = s.fetchvalue("check keys are not NULL", q.null_key_count(table, key))
    if nulls:
        raise FdwError(
            f"{nulls} {what} have a NULL in the key ({', '.join(key)}): {why} NULL, so every run would "
            "write them again. Nothing was changed; make the key NOT NULL, or leave those rows out (a "
            "copy's where=, e.g. key IS NOT NULL; for a mirror, a source view that filters them).",
            step="check key",
        )


def check_unique(
    s: LocalSession, table: QualifiedName, key: Sequence[str], what: str, only: bool = False
) -> None:
    duplicate = s.fetchone("check key is unique", q.duplicate_key_probe(table, key, only))
    if duplicate is not None:
        raise duplicate_key(what, key, duplicate)


def duplicate_key(what: str, key: Sequence[str], value: Sequence[Any]) -> FdwError:
    return FdwError(
        f"{what} has several rows with key ({', '.join(key)}) = {_show(value)}: rows are "
        "matched by their key, which must be unique. Nothing was changed.",
        step="check key",
    )


def check_children(s: LocalSession, staging: QualifiedName, target: QualifiedName, oid: int) -> None:
    """Fail, naming the constraint, when a row referencing the target would lose its parent row."""
    for conname, schema, table, child_columns, parent_columns, _, _, _ in s.fetchall(
        "read foreign keys pointing at the target", q.REFERENCING_KEYS_QUERY, {"oid": oid}
    ):
        child = QualifiedName(schema, table)
        # A self-reference is checked within the new data (the target's rows become the staged ones).
        # Otherwise only references to rows the target has now can lose their parent: a child row whose
        # parent is not there (a NOT VALID key's old orphan, a row of the child table's own inheritance
        # children, which the key does not cover, a key to a wider partitioned table) is not the
        # replace's doing.
        self_reference = child == target
        probe = q.orphan_probe(
            staging if self_reference else child,
            child_columns,
            staging,
            parent_columns,
            None if self_reference else target,
        )
        orphan = s.fetchone(f"check rows referencing {target} through {conname}", probe)
        if orphan is not None:
            raise FdwError(
                f"Replacing {target} would leave rows of {child} without their parent: foreign key "
                f"{conname} ({', '.join(child_columns)}) references {_show(orphan)}, which the new "
                f"data for {target} no longer has. Nothing was changed; delete or re-point those "
                "rows first, or copy with a filter that keeps their parents.",
                step="check referencing rows",
            )


def check_moved_parents(
    s: LocalSession,
    staging: QualifiedName,
    target: QualifiedName,
    oid: int,
    key: Sequence[str],
    columns: Sequence[str],
    only: bool,
) -> None:
    """Fail when the diff would delete or change a target row that another table references, even
    though the referenced value is still in the new data (another key, or a changed keyless row):
    its ON DELETE CASCADE / SET NULL / ON UPDATE CASCADE would change the child's rows."""
    for conname, schema, table, child_columns, parent_columns, _, partition_keys, referenced in s.fetchall(
        "read foreign keys pointing at the target", q.REFERENCING_KEYS_QUERY, {"oid": oid}
    ):
        child = QualifiedName(schema, table)
        check_rows_stay_in_partition(target, key, conname, child, referenced, partition_keys)
        if child == target or (key and set(parent_columns) == set(key)):
            continue  # self-references are checked on the new data; a key reference by check_children
        probe = q.moved_parent_probe(
            child, child_columns, target, parent_columns, staging, key, columns, only
        )
        moved = s.fetchone(f"check rows referencing {target} through {conname}", probe)
        if moved is not None:
            raise FdwError(
                f"Replacing {target} in place would delete or change the row of {target} that rows of "
                f"{child} reference through foreign key {conname} ({', '.join(child_columns)}) = "
                f"{_show(moved)}: the new data has that row under another "
                f"{'key (' + ', '.join(key) + ')' if key else 'value'}, and deleting or changing it would "
                "fire the foreign key's action on the child's rows. Nothing was changed; re-point those "
                "rows first, or pass key_columns matching the referenced columns.",
                step="check referencing rows",
            )


def check_rows_stay_in_partition(
    target: QualifiedName,
    key: Sequence[str],
    conname: str,
    child: QualifiedName,
    referenced: str,
    partition_keys: Sequence[str] | None,
) -> None:
    """Fail when a foreign key references a partition below the target and the rows are matched by a
    key that leaves out a partition key column on the way: a row whose key stays but whose partition
    key changes would be updated into another partition, a delete from the referenced one that fires
    the key's action on the child's rows, unseen by the checks that match rows by key."""
    if partition_keys is None or not key:
        return
    missing = sorted({c for c in partition_keys if c not in key})
    if missing:
        outside = ", ".join(c or "a partition key expression" for c in missing)
        raise FdwConfigError(
            f"Foreign key {conname} of {child} references {referenced}, a partition of {target}; rows "
            f"are matched by ({', '.join(key)}), without {outside}, so a row could move out of "
            f"{referenced} (a delete there, which fires the key's action on {child}'s rows) unchecked. "
            f"Nothing was changed; add the partition key columns to key_columns."
        )


def _show(values: Sequence[Any]) -> str:
    return repr(values[0]) if len(values) == 1 else repr(tuple(values))


def rename_swap(s: LocalSession, staging: QualifiedName, target: QualifiedName, relation: Relation) -> None:
    """Swap ``staging`` in by rename (the caller holds ACCESS EXCLUSIVE); keep names, grants, owner,
    and catch up the sequences of its column defaults."""
    oid, owner, comment = relation.oid, relation.owner, relation.comment
    new_oid = read_oid(s, staging, "staging")
    old_indexes = read_indexes(s, oid, "target indexes")
    new_indexes = read_indexes(s, new_oid, "staging indexes")
    foreign_keys = s.fetchall("read foreign keys", q.FOREIGN_KEYS_QUERY, (oid,))
    acl = s.fetchall("read grants", q.ACL_RESTORE_QUERY, {"target": oid, "new": new_oid})
    retired = new_work_table(s, target, "retired")
    s.execute(f"retire {target}", q.rename_table(target, retired.name))
    s.execute(f"swap in {staging}", q.rename_table(staging, target.name))
    s.execute(f"drop retired {target}", q.drop_table(retired))
    _restore_names(s, target, old_indexes, new_indexes)
    for conname, condef in foreign_keys:
        s.execute(f"restore foreign key {conname}", q.add_constraint(target, conname, condef))
    # before the grants are reset: reading max() needs the copying role's SELECT
    catch_up_sequences(s, target, new_oid, relation.relkind == "r")
    revoked = [grantee for is_grant, grantee, _, _ in acl if not is_grant]
    if revoked:  # what the new table got from default privileges, the owner's own entry too
        s.execute("reset grants", q.revoke_all(target, revoked), quiet=True)
    for is_grant, grantee, privileges, grantable in acl:
        if is_grant:
            s.execute("restore grant", q.grant(privileges, target, grantee, grantable), quiet=True)
    if comment is not None:
        s.execute("restore comment", q.comment_on_table(target, comment), quiet=True)
    else:
        s.execute("unmark target", q.uncomment_table(target), quiet=True)
    current = read_relation(s, target, "owner")
    if current is not None and owner != current.owner:
        s.execute("restore owner", q.owner_to(target, owner))


def _restore_names(s: LocalSession, target: QualifiedName, old: list[Index], new: list[Index]) -> None:
    """Give the new indexes/constraints the old names, matched by what they index (catalog signature)."""
    unmatched = list(new)
    for old_index in old:
        match = next((n for n in unmatched if n.signature == old_index.signature), None)
        if match is None:
            continue
        unmatched.remove(match)
        new_name, new_con, old_name, old_con = (
            match.name,
            match.constraint,
            old_index.name,
            old_index.constraint,
        )
        if new_con and old_con:
            if new_con != old_con:
                s.execute(
                    "restore constraint name", q.rename_constraint(target, new_con, old_con), quiet=True
                )
        elif new_name != old_name:
            s.execute("restore index name", q.rename_index(target.schema, new_name, old_name), quiet=True)
