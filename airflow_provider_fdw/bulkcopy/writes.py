"""What a run's transaction wrote to its target, by the server's own counts.

A run chooses the rows it inserts, updates and deletes, and re-reads (at most) those. A trigger, rule
or foreign key action on the target can write other rows in the same transaction: another row
updated, one deleted and another inserted. Those writes show in the transaction's counters of the
target (``pg_stat_get_xact_tuples_*``, over its leaf partitions), so a run compares them with its own
choice before it commits, and fails when they differ: its result would not be what it reports.

The other way round, a BEFORE row trigger returning NULL (or changing ``NEW``) or a rule makes a
statement skip (or rewrite) a row it chose: the statement's count and the transaction's then agree
on what was really written. Only those two can, so a run whose target has one (:func:`skipping_writers`)
checks the rows themselves, and :func:`skipped` is its error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.session import LocalSession

# The target and its leaf partitions, each once: rows inserted, updated, deleted by this transaction
# (zero while track_counts is off), and whether a leaf is a foreign table (its rows never count).
ROWS_WRITTEN_QUERY = sql.SQL(
    "SELECT pg_catalog.current_setting('track_counts')::bool, "
    "coalesce(sum(pg_catalog.pg_stat_get_xact_tuples_inserted(l.r)), 0), "
    "coalesce(sum(pg_catalog.pg_stat_get_xact_tuples_updated(l.r)), 0), "
    "coalesce(sum(pg_catalog.pg_stat_get_xact_tuples_deleted(l.r)), 0), "
    "coalesce(bool_or(c.relkind = 'f'), false) "
    "FROM (SELECT %(oid)s::oid AS r UNION SELECT relid FROM pg_catalog.pg_partition_tree(%(oid)s::oid) "
    "WHERE isleaf) AS l JOIN pg_catalog.pg_class c ON c.oid = l.r"
)


@dataclass(frozen=True)
class Written:
    """Rows of the target the transaction has inserted, updated and deleted so far."""

    counting: bool  # track_counts: off, the counts stay zero
    inserted: int
    updated: int
    deleted: int
    foreign: bool = False  # a foreign partition, whose rows no count shows

    @classmethod
    def read(cls, s: LocalSession, oid: int) -> Written:
        counting, inserted, updated, deleted, foreign = s.fetchrow(
            "count the rows written", ROWS_WRITTEN_QUERY, {"oid": oid}
        )
        return cls(bool(counting), int(inserted), int(updated), int(deleted), bool(foreign))

    @classmethod
    def after(cls, s: LocalSession, oid: int, before: Written) -> Written:
        """What the transaction wrote since ``before``, its deferred constraint triggers fired first
        (``SET CONSTRAINTS ALL IMMEDIATE``): their writes count too, and would come only at commit."""
        s.execute("fire deferred triggers", q.IMMEDIATE_CONSTRAINTS, quiet=True)
        return cls.read(s, oid).since(before)

    def since(self, before: Written) -> Written:
        return Written(
            self.counting and before.counting,
            self.inserted - before.inserted,
            self.updated - before.updated,
            self.deleted - before.deleted,
            self.foreign,
        )


def unchosen(
    target: QualifiedName, written: Written, inserted: int, updated: int, deleted: int, what: str
) -> FdwError | None:
    """The error to raise when ``written`` (counting) is not exactly the ``inserted``, ``updated``,
    ``deleted`` rows the run chose (an update that moved a row to another partition counts as a
    delete and an insert there); None when it is.

    The counts also hold what cannot change the result: a write undone in a subtransaction (an
    ``EXCEPTION`` block) still counts, an ``AFTER`` trigger updating the row it fired for counts
    twice, and rows of a foreign partition never count; a caller that can compare the whole
    result does so before raising."""
    moved = written.inserted - inserted
    if moved >= 0 and written.deleted - deleted == moved and written.updated + moved == updated:
        return None
    return FdwError(
        f"{what} check failed: it chose to insert {inserted}, update {updated} and delete {deleted} "
        f"rows of {target}, but {written.inserted} were inserted, {written.updated} updated and "
        f"{written.deleted} deleted: a trigger, rule or foreign key action on the target wrote rows "
        "the run did not choose (or wrote a row twice, or undid a write in a subtransaction, which "
        "counts too). Nothing was committed to the target.",
        step="verify",
    )


# pg_trigger.tgtype's event bits, as SKIPPING_WRITERS_QUERY takes them
INSERT, DELETE, UPDATE = 4, 8, 16


def skipping_writers(s: LocalSession, oid: int, events: int) -> list[str]:
    """The BEFORE row triggers and rules that can make a statement on the target (``oid``, locked)
    skip or rewrite a row it chose, for ``events`` (``INSERT | UPDATE`` …); empty when none can."""
    return [
        w
        for (w,) in s.fetchall(
            "read triggers and rules", q.SKIPPING_WRITERS_QUERY, {"oid": oid, "events": events}
        )
    ]


def skipped(target: QualifiedName, what: str, problem: str, writers: Sequence[str], remedy: str) -> FdwError:
    """The error when rows the run wrote are not in the target: ``problem`` says which."""
    named = f" ({', '.join(writers)})" if writers else ""
    cause = f"a BEFORE row trigger or rule on the target{named} skipped or changed rows the run wrote"
    return FdwError(
        f"{what} check failed: {problem}: {cause}. Nothing was committed to the target. Disable the "
        f"trigger for the load (ALTER TABLE {target} DISABLE TRIGGER …) or drop the rule, {remedy}.",
        step="verify",
    )
