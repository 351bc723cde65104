"""One exported snapshot shared by every range of a direct copy."""

from __future__ import annotations

from airflow_provider_fdw._driver import sql

# One snapshot for every range of a direct copy (as pgcopydb): a holder exports it, each reader imports it.
SNAPSHOT_ISOLATION = sql.SQL("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


BEGIN_SNAPSHOT_READ = sql.SQL("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")  # psql: no implicit BEGIN


EXPORT_SNAPSHOT = sql.SQL("SELECT pg_catalog.pg_export_snapshot()")


def import_snapshot(snapshot_id: str) -> sql.Composed:
    """First statement of a reader's transaction: read exactly what the holder's snapshot sees."""
    return sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id))
