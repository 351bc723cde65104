"""One exported snapshot shared by every range of a direct copy."""

from __future__ import annotations

from collections.abc import Sequence

from airflow_provider_fdw.compat import sql

# One snapshot for every range of a direct copy (as pgcopydb): a holder exports it, each reader imports it.
SNAPSHOT_ISOLATION = sql.SQL("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


BEGIN_SNAPSHOT_READ = sql.SQL("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")  # psql: no implicit BEGIN


EXPORT_SNAPSHOT = sql.SQL("SELECT pg_catalog.pg_export_snapshot()")


def import_snapshot(snapshot_id: str) -> sql.Composed:
    """First statement of a reader's transaction: read exactly what the holder's snapshot sees."""
    return sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id))


def set_local_lock_timeout(value: str) -> sql.Composed:
    """``SET LOCAL lock_timeout``: a SET statement, which takes no snapshot (``set_config()`` is a
    SELECT: it would fix the transaction's snapshot before the lock)."""
    return sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(value))


def lock_access_share(table: Sequence[str], nowait: bool = False) -> sql.Composed:
    """``LOCK TABLE … IN ACCESS SHARE MODE``: its partitions and inheritance children too, and for a
    view the relations it reads (as pg_dump locks what it dumps). It takes no snapshot, so it may
    precede the one the transaction exports or imports. ``nowait``: fail at once when it must wait."""
    wait = sql.SQL(" NOWAIT" if nowait else "")
    return sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE{}").format(sql.Identifier(*table), wait)


# A lock tried and undone at once (bulkcopy/direct.py lock_allowed), inside the planning transaction.
LOCK_PROBE = sql.SQL("SAVEPOINT fdw_lock_probe")
LOCK_PROBE_UNDO = sql.SQL("ROLLBACK TO SAVEPOINT fdw_lock_probe")


# Lock requests this session's locks keep waiting. Not pg_stat_activity: a transaction reads it once
# and keeps that copy (the holder's transaction lasts the whole copy); pg_locks is read anew each time.
BLOCKED_BY_ME_QUERY = sql.SQL(
    "SELECT DISTINCT l.pid, l.mode FROM pg_catalog.pg_locks l WHERE NOT l.granted "
    "AND l.locktype = 'relation' AND pg_catalog.pg_backend_pid() = ANY(pg_catalog.pg_blocking_pids(l.pid))"
)

# Who holds, or waits for, a lock on a relation that ACCESS SHARE conflicts with (the diagnosis of a
# lock the holder could not take).
EXCLUSIVE_LOCKERS_QUERY = sql.SQL(
    "SELECT l.pid, a.application_name, CASE WHEN l.granted THEN 'holds' ELSE 'waits for' END "
    "FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' "
    "AND l.relation = pg_catalog.to_regclass(%s) AND l.pid <> pg_catalog.pg_backend_pid()"
)
