"""Parallel ranges by physical position (``ctid``) for tables without an integer key (direct path).

As pgcopydb and PeerDB do: the remote table's blocks (``pg_relation_size / block_size``; for a
partitioned table, its largest partition's) are cut into ``parallelism`` ranges
``ctid >= '(b,0)' AND ctid < '(e,0)'``, which PostgreSQL 14+ reads with a TID Range Scan (only those
blocks). The first range is open below and the last open above, so a row in a block added after
the size was read is still read once. Every row version has exactly one ctid, so the ranges split
the rows of one snapshot exactly; all ranges import the copy's one exported snapshot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_fdw.compat import DriverError, sql
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.session import describe

if TYPE_CHECKING:
    from airflow_provider_fdw.bulkcopy.engine import BulkCopy
    from airflow_provider_fdw.bulkcopy.state import CopyRun

# (relkind, blocks) of the remote relation: a partitioned table's ctids are per partition.
BLOCKS_QUERY = sql.SQL(
    "SELECT c.relkind, coalesce((SELECT max(pg_relation_size(t.relid)) FROM pg_partition_tree(c.oid) t), "
    "pg_relation_size(c.oid)) / current_setting('block_size')::bigint "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
)
SPLITTABLE = ("r", "m", "p")  # relations that have ctids (not views, not foreign tables)


def direct_ranges(copy: BulkCopy, run: CopyRun) -> list[Any]:
    """The ranges of a direct copy without an integer split column: the remote table's blocks."""
    p = copy.plan
    assert copy.remote_connect is not None and run.direct is not None and run.source.remote is not None
    try:
        remote = copy.remote_connect(client_encoding=run.direct.client_encoding)
        try:
            with remote.cursor() as cur:
                found = read_blocks(cur, *run.source.remote)
        finally:
            remote.close()
    except DriverError as exc:
        raise FdwError(
            f"reading the size of {run.source.remote} on the remote failed: {describe(exc)}",
            step="split by ctid",
        ) from None
    if found is None or found[0] not in SPLITTABLE:
        copy.log.info(
            "%s has no integer split column and is not a table on the remote (no ctid): one range.",
            p.source,
        )
        return [None]
    ranges = ctid_ranges(found[1], p.parallelism)
    copy.log.info(
        "Splitting %s by ctid into %d ranges of about %d blocks (no integer split column), all read in "
        "one snapshot.",
        p.source,
        len(ranges),
        -(-max(found[1], 1) // len(ranges)),
    )
    return ranges


def ctid_ranges(blocks: int, parallelism: int) -> list[sql.Composable]:
    """``parallelism`` (fewer for a table of fewer blocks) ranges of about equal numbers of blocks."""
    parts = max(1, min(parallelism, blocks))
    step = -(-max(blocks, 1) // parts)
    bounds: list[int | None] = [i * step for i in range(parts)] + [None]
    bounds[0] = None  # open ends: blocks before/after the ones counted (the table grew) are read once
    return [ctid_predicate(bounds[i], bounds[i + 1]) for i in range(parts)]


def ctid_predicate(low: int | None, high: int | None) -> sql.Composable:
    """``ctid >= '(low,0)' AND ctid < '(high,0)'`` (open ends for None)."""
    parts: list[sql.Composable] = []
    if low is not None:
        parts.append(sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({low},0)")))
    if high is not None:
        parts.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({high},0)")))
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")


def read_blocks(cursor: Any, schema: str, name: str) -> tuple[str, int] | None:
    """(relkind, blocks) of the remote relation, or None when it is not visible."""
    cursor.execute(BLOCKS_QUERY, (schema, name))
    row = cursor.fetchone()
    return None if row is None else (row[0], int(row[1] or 0))
