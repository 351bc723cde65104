"""What a direct mirror keeps between runs: the source's change counters, so that a source that did
not change is compared in one plain pass per side.

Grouping every row into fine buckets costs each server about twice a plain ``count(*), sum(row
hash)`` of the whole table. The remote counts the rows written to each table (``n_tup_ins``,
``n_tup_upd``, ``n_tup_del`` of ``pg_stat_all_tables``); with the table's oid and relfilenode (a
TRUNCATE, VACUUM FULL or rewriting ALTER changes it) they fingerprint the source's changes. A run
records the fingerprint it read at its start in ``<target schema>.fdw_mirror_state``, in the
mirror's transaction (rolled back with it). When the next run reads the same fingerprint the source
most likely did not change, and it first compares the whole table's count and sum of row hashes on
both sides: equal ends the run.

The counters choose the order of the comparisons, never their outcome. A change they miss (a
counter the remote has not flushed yet, a change written on the target) makes the whole-table sums
differ, and the run goes on to the buckets as it does without a record, one pass later. Sources
whose counters do not see their changes get no fingerprint: a hot standby (replay counts nothing),
a table with inheritance children (the read includes them), a view, a partitioned table.

The record is a hint: its table is UNLOGGED (a crash only costs one bucket pass; never published
to logical replication), and a role that may not create or write it, or a failure reading or
writing it, costs the hint (said in the log), never the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from airflow_provider_fdw.bulkcopy.watermark import distrust, state_trust
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.locks import lock_object
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.session import LocalSession

T = TypeVar("T")

STATE_TABLE = "fdw_mirror_state"

# Read in the source's snapshot transaction (statistics are read once per transaction).
COUNTERS_QUERY = sql.SQL(
    "SELECT c.relkind = 'r' AND NOT c.relhassubclass AND NOT pg_catalog.pg_is_in_recovery() "
    "  AND pg_catalog.current_setting('track_counts')::bool AND s.relid IS NOT NULL, "
    "  pg_catalog.concat_ws('/', c.oid, pg_catalog.pg_relation_filenode(c.oid), "
    "    s.n_tup_ins, s.n_tup_upd, s.n_tup_del) "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = c.oid "
    "WHERE n.nspname = %s AND c.relname = %s"
)
SCHEMA_CREATE_QUERY = sql.SQL("SELECT pg_catalog.has_schema_privilege(%s, 'CREATE')")


def source_fingerprint(remote: LocalSession, table: QualifiedName, log: Any) -> str | None:
    """The remote table's change counters as one text, or None when it has none."""
    row = hint(
        remote,
        log,
        lambda: remote.fetchone("read the source's change counters", COUNTERS_QUERY, tuple(table)),
    )
    return row[1] if row is not None and row[0] else None


def recorded_fingerprint(s: LocalSession, target: QualifiedName, oid: int, log: Any) -> str | None:
    """The fingerprint the last mirror of ``target`` recorded, while it describes the same table."""
    state = state_table(target)

    def read() -> str | None:
        exists, reason = state_trust(s, state, target)
        if not exists or reason is not None:  # only a hint: without it the buckets are compared
            return None
        row = s.fetchone("read the recorded source counters", _read_statement(state), (target.name, oid))
        return None if row is None else str(row[0])

    return hint(s, log, read)


def record_fingerprint(s: LocalSession, target: QualifiedName, oid: int, fingerprint: str, log: Any) -> None:
    """Record ``fingerprint`` for ``target`` in the run's transaction, when this role may (else the
    next run compares buckets at once, as without a record)."""
    state = state_table(target)

    def write() -> None:
        exists, reason = state_trust(s, state, target)
        if not exists:
            if not s.fetchvalue("check schema privileges", SCHEMA_CREATE_QUERY, (target.schema,)):
                log.info("Not recording the source's change counters: no CREATE on schema %s.", target.schema)
                return
            lock_object(s, "mirror state", str(state))  # two targets in one schema may create it at once
            s.execute(f"create {state}", _create_statement(state))
            reason = distrust(s, state, target)
        if reason is not None:
            log.info("Not recording the source's change counters in %s: %s.", state, reason)
            return
        s.execute(
            "record the source's change counters",
            _record_statement(state),
            {"target": target.name, "oid": oid, "counters": fingerprint},
            quiet=True,
        )

    hint(s, log, write)


def hint(s: LocalSession, log: Any, work: Callable[[], T]) -> T | None:
    """``work()`` in a savepoint of ``s``'s transaction: a failure is logged and rolled back to it,
    and None returned (the run goes on as without a record)."""
    try:
        return s.in_savepoint("mirror state", work)
    except FdwError as exc:
        log.warning("The mirror's record of the source's change counters is not used: %s", exc)
        return None


def state_table(target: QualifiedName) -> QualifiedName:
    return QualifiedName(target.schema, STATE_TABLE)


def _create_statement(state: QualifiedName) -> sql.Composed:
    return sql.SQL(
        "CREATE UNLOGGED TABLE IF NOT EXISTS {} (target_table text PRIMARY KEY, target_oid oid NOT NULL, "
        "target_filenode oid, source_counters text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now())"
    ).format(sql.Identifier(*state))


def _read_statement(state: QualifiedName) -> sql.Composed:
    return sql.SQL(
        "SELECT source_counters FROM {} WHERE target_table = %s AND target_oid = %s::oid "
        "AND target_filenode IS NOT DISTINCT FROM pg_catalog.pg_relation_filenode(target_oid)"
    ).format(sql.Identifier(*state))


def _record_statement(state: QualifiedName) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {} AS s (target_table, target_oid, target_filenode, source_counters) "
        "VALUES (%(target)s, %(oid)s::oid, pg_catalog.pg_relation_filenode(%(oid)s::oid), %(counters)s) "
        "ON CONFLICT (target_table) DO UPDATE SET target_oid = excluded.target_oid, "
        "target_filenode = excluded.target_filenode, source_counters = excluded.source_counters, "
        "recorded_at = pg_catalog.now()"
    ).format(sql.Identifier(*state))
