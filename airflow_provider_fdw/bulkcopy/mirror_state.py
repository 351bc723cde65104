"""What a direct mirror keeps between runs: the source's change counters, so that a source that did
not change is compared in one plain pass per side.

Grouping every row into fine buckets costs each server about twice a plain ``count(*), sum(row
hash)`` of the whole table. The remote counts the rows written to each table (``n_tup_ins``,
``n_tup_upd``, ``n_tup_del`` of ``pg_stat_all_tables``); with the table's oid and relfilenode (a
TRUNCATE, VACUUM FULL or rewriting ALTER changes it) they fingerprint the source's changes. A run
records the fingerprint it read at its start in the target's ``fdw_copy_state`` (the watermarks'
table, under an empty watermark column: no column can have that name), in its own transaction. When
the next run reads the same fingerprint the source most likely did not change, and it first
compares the whole table's count and sum of row hashes on both sides: equal ends the run.

The counters choose the order of the comparisons, never their outcome. A change they miss (a
counter the remote has not flushed yet, a change written on the target) makes the whole-table sums
differ, and the run goes on to the buckets as it does without a record, one pass later.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_fdw.bulkcopy.watermark import (
    EXISTS_QUERY,
    PRIVILEGE_QUERY,
    create_statement,
    state_table,
)
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.locks import lock_object
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.session import LocalSession

MIRROR_COLUMN = ""  # the watermark_column of a mirror's record

# Read in the source's snapshot transaction (statistics are read once per transaction). A view,
# a partitioned table (no counters of its own) or track_counts off: no fingerprint.
COUNTERS_QUERY = sql.SQL(
    "SELECT c.relkind = 'r' AND pg_catalog.current_setting('track_counts')::bool AND s.relid IS NOT NULL, "
    "  pg_catalog.concat_ws('/', c.oid, pg_catalog.pg_relation_filenode(c.oid), "
    "    s.n_tup_ins, s.n_tup_upd, s.n_tup_del) "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = c.oid "
    "WHERE n.nspname = %s AND c.relname = %s"
)
SCHEMA_CREATE_QUERY = sql.SQL("SELECT pg_catalog.has_schema_privilege(%s, 'CREATE')")


def source_fingerprint(remote: LocalSession, table: QualifiedName) -> str | None:
    """The remote table's change counters as one text, or None when it has none."""
    row = remote.fetchone("read the source's change counters", COUNTERS_QUERY, (table.schema, table.name))
    return row[1] if row is not None and row[0] else None


def recorded_fingerprint(s: LocalSession, target: QualifiedName, oid: int) -> str | None:
    """The fingerprint the last mirror of ``target`` recorded, while it describes the same table."""
    state = state_table(target)
    if not s.fetchvalue("find copy state", EXISTS_QUERY, (str(state),)):
        return None
    if not s.fetchvalue("check copy state privileges", PRIVILEGE_QUERY, (str(state),)):
        return None
    value = s.fetchone("read the recorded source counters", _read_statement(state), (target.name, oid))
    return None if value is None else str(value[0])


def record_fingerprint(s: LocalSession, target: QualifiedName, oid: int, fingerprint: str, log: Any) -> None:
    """Record ``fingerprint`` for ``target`` in the run's transaction, when this role may (else the
    next run compares buckets at once, as without a record)."""
    state = state_table(target)
    if not s.fetchvalue("find copy state", EXISTS_QUERY, (str(state),)):
        if not s.fetchvalue("check schema privileges", SCHEMA_CREATE_QUERY, (target.schema,)):
            log.info("Not recording the source's change counters: no CREATE on schema %s.", target.schema)
            return
        lock_object(s, "copy state", str(state))  # two targets in one schema may create it at once
        s.execute(f"create {state}", create_statement(state))
    if not s.fetchvalue("check copy state privileges", PRIVILEGE_QUERY, (str(state),)):
        log.info("Not recording the source's change counters: %s is not writable by this role.", state)
        return
    s.execute(
        "record the source's change counters",
        _record_statement(state),
        {"target": target.name, "column": MIRROR_COLUMN, "oid": oid, "value": fingerprint},
        quiet=True,
    )


def _read_statement(state: QualifiedName) -> sql.Composed:
    return sql.SQL(
        "SELECT watermark FROM {} WHERE target_table = %s AND watermark_column = {} AND target_oid = %s::oid "
        "AND target_filenode IS NOT DISTINCT FROM pg_catalog.pg_relation_filenode(target_oid)"
    ).format(sql.Identifier(*state), sql.Literal(MIRROR_COLUMN))


def _record_statement(state: QualifiedName) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {} AS s (target_table, watermark_column, target_oid, target_filenode, watermark) "
        "VALUES (%(target)s, %(column)s, %(oid)s::oid, pg_catalog.pg_relation_filenode(%(oid)s::oid), "
        "%(value)s) ON CONFLICT (target_table) DO UPDATE SET watermark_column = excluded.watermark_column, "
        "target_oid = excluded.target_oid, target_filenode = excluded.target_filenode, "
        "watermark = excluded.watermark, recorded_at = pg_catalog.now()"
    ).format(sql.Identifier(*state))
