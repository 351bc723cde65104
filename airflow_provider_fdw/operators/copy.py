"""BulkCopyOperator: copy a foreign table into a local table (replace, append or upsert)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_fdw.assets import table_asset
from airflow_provider_fdw.bulkcopy import CopyPlan, plan_copy
from airflow_provider_fdw.bulkcopy.direct import DEFAULT_TRANSPORT
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.names import parse_qualified_name
from airflow_provider_fdw.operators.base import FdwBaseOperator, is_templated
from airflow_provider_fdw.timeouts import (
    DEFAULT_LOCK_RETRIES,
    DEFAULT_TARGET_LOCK_WAIT,
    lock_attempts,
    positive_seconds,
)


class BulkCopyOperator(FdwBaseOperator):
    """Copy rows of a foreign table into a local table, safely and fast.

    Rows are loaded into a staging table (in ``parallelism`` sessions over key ranges), then applied
    in one short transaction, so a failure at any point leaves the target as it was (a retry
    succeeds). What readers see at each isolation level: docs/bulk-copy.md (guarantees).

    - ``replace``: the target gets exactly the source's rows, by rename (indexes, constraints,
      grants, owner and comments kept) or, when views, foreign keys, triggers, sequences … hold on
      to it, in place writing only the rows that changed (see ``swap``). A missing target is created
      like the source, with the remote table's primary key (or ``key_columns``).
    - ``append``: insert rows matching ``where`` and, with ``watermark_column``, newer than the
      target's current maximum.
    - ``upsert``: rows with ``watermark_column >= max(target) - overlap`` are merged with
      ``ON CONFLICT (key_columns) DO UPDATE`` (unchanged rows are not rewritten), plus the rows whose
      watermark is NULL. The watermark is read from the target itself, so it only moves when the
      data committed.

    :param source_table: the foreign table (``schema.table``) in the local database. (templated)
    :param target_table: the local table to fill (``schema.table``). (templated)
    :param postgres_conn_id: the ``postgres`` connection of the local database. (templated)
    :param mode: ``replace`` (default), ``append``, ``upsert`` or ``mirror`` (make an existing target
        equal to the source, writing only what differs: docs/bulk-copy.md, "Mirror mode").
    :param key_columns: the target's unique key (required for ``upsert``; splits ``parallelism``).
    :param watermark_column: a column that grows with changes (``updated_at``, an id) for append/upsert.
    :param where: ONE boolean SQL condition on the source's columns, e.g. ``"country = 'NL'"``: trusted
        DAG-author SQL (like ``SQLExecuteQueryOperator``'s ``sql``), refused before anything runs if
        it could end the expression or add a statement (``;``, comments, unbalanced parentheses) or
        the server does not parse it as one boolean condition. (templated)
    :param columns: copy only these columns (default: all).
    :param parallelism: sessions reading disjoint key ranges at once (needs an integer split column).
    :param split_column: the integer column to split by (default: the first key column).
    :param overlap: upsert re-reads this much below the watermark (an interval such as
        ``"5 minutes"`` or a timedelta for date/time watermarks, a number for numeric ones) so rows
        that committed late are not missed. Zero or more and finite; a negative, NaN or infinite one,
        an interval with a negative part, or one of the wrong kind is refused before anything runs.
    :param fetch_size: rows per postgres_fdw fetch (default 10,000; set on a session-private copy
        of the foreign table, never on yours).
    :param transport: how rows leave the remote: ``"fdw"`` (default) through postgres_fdw, server to
        server; ``"copy"`` with ``COPY`` over ``fdw_conn_id`` straight from the remote table behind
        the foreign table (faster, same rows; refused before anything changes when ``fdw_conn_id`` is
        not the foreign table's server); ``"auto"``: ``"copy"`` when it can give the same rows, else
        ``"fdw"`` (the log says why). See docs/bulk-copy.md, "The direct path". A ``mirror`` over
        the direct connection hashes its buckets on the remote without sorting and fetches only the
        differing buckets' rows (for a single integer key only the rows that differ; see "Mirror mode").
    :param fdw_conn_id: the ``postgres_fdw`` connection of the source's foreign server, used by
        ``transport="copy"``/``"auto"``. (templated)
    :param lock_timeout: bound on each attempt to take the target's lock when applying (seconds or
        ``"5s"``; default 1 s, raised above the server's ``deadlock_timeout``, to 1.5 s by default, so
        that the server cancels an autovacuum holding the target): a long reader of the target then delays new
        readers by at most this long, instead of queueing them behind the swap for as long as it reads.
    :param lock_retries: attempts to take that lock (default 30, with a short pause between them)
        before the copy fails, leaving the target as it was.
    :param target_lock_wait: seconds to wait for another copy of the same target to finish (default
        300) before failing; an earlier try of this same task instance is terminated instead.
    :param connect_timeout: seconds a database login may take (default 10).
    :param swap: how ``replace`` applies the new rows: ``"rename"`` swaps in the staging table (fast;
        only when nothing holds on to the target's OID; REPEATABLE READ / SERIALIZABLE readers whose
        snapshot predates the load see no rows), ``"in_place"`` writes only the rows that changed
        (every reader keeps a consistent view; children, triggers and sequences see real changes
        only), ``"auto"`` (default) renames when the target allows it, else goes in place.
    :param verify: ``"off"``, ``"count"`` or ``"checksum"``: compare the rows loaded with the source
        snapshot the copy read, before the apply commits; a mismatch fails the task and leaves the
        target unchanged. Default (None): ``"off"``, but ``"count"`` for a mysql_fdw source with
        binary columns (mysql_fdw can end a read early, docs/bulk-copy.md "Verify").
    :return: ``{"mode", "source", "target", "rows", "bytes", "seconds", "watermark",
        "previous_watermark", "path", "parallelism", "swap", "inserted", "updated", "deleted",
        "unchanged", "verify", "null_watermark_rows"}`` (``null_watermark_rows``: source rows whose
        watermark is NULL, copied by key in upsert, warned about in append; None without a watermark).
    """

    template_fields: Sequence[str] = (
        "source_table",
        "target_table",
        "postgres_conn_id",
        "where",
        "fdw_conn_id",
    )
    template_fields_renderers = {"where": "sql"}
    ui_color = "#f0e4d6"

    def __init__(
        self,
        *,
        source_table: str,
        target_table: str,
        mode: str = "replace",
        key_columns: Sequence[str] | None = None,
        watermark_column: str | None = None,
        where: str | None = None,
        columns: Sequence[str] | None = None,
        parallelism: int = 1,
        split_column: str | None = None,
        overlap: Any = None,
        fetch_size: int | None = None,
        fdw_conn_id: str | None = None,
        lock_timeout: float | str | None = None,
        swap: str = "auto",
        verify: str | None = None,
        transport: str = DEFAULT_TRANSPORT,
        target_lock_wait: float = DEFAULT_TARGET_LOCK_WAIT,
        lock_retries: int = DEFAULT_LOCK_RETRIES,
        **kwargs: Any,
    ) -> None:
        conn_id = kwargs.get("postgres_conn_id", "postgres_default")
        if "outlets" not in kwargs and not is_templated([target_table, conn_id]):
            target = parse_qualified_name(target_table, "target_table")
            kwargs["outlets"] = [table_asset(conn_id, target.schema, target.name)]
        super().__init__(**kwargs)
        self.source_table = source_table
        self.target_table = target_table
        self.mode = mode
        self.key_columns = list(key_columns) if key_columns else None
        self.watermark_column = watermark_column
        self.where = where
        self.columns = list(columns) if columns else None
        self.parallelism = parallelism
        self.split_column = split_column
        self.overlap = overlap
        self.fetch_size = fetch_size
        self.fdw_conn_id = fdw_conn_id
        self.lock_timeout = lock_timeout
        self.swap = swap
        self.verify = verify
        self.transport = transport
        self.target_lock_wait = positive_seconds(target_lock_wait, "target_lock_wait")
        self.lock_retries = lock_attempts(lock_retries)
        self.validate_if_static(source_table, target_table, where)

    def validate(self) -> None:
        self.plan()

    def plan(self) -> CopyPlan:
        """The copy's one plan: every argument checked here (``plan_copy``), then passed down unchanged."""
        plan = self._plan()
        if plan.transport != "fdw" and not self.fdw_conn_id:
            raise FdwConfigError(f"transport={plan.transport!r} reads the remote directly: pass fdw_conn_id.")
        return plan

    def _plan(self) -> CopyPlan:
        return plan_copy(
            self.source_table,
            self.target_table,
            self.mode,
            self.key_columns,
            self.watermark_column,
            self.where,
            self.columns,
            self.parallelism,
            self.overlap,
            self.fetch_size,
            self.lock_timeout,
            self.split_column,
            self.swap,
            self.verify,
            self.transport,
        )

    def execute(self, context: Any) -> dict[str, Any]:
        plan = self.plan()
        with self.get_hook(self.fdw_conn_id) as hook:
            self._lineage_summary = hook.bulk_copy(
                plan, target_lock_wait=self.target_lock_wait, lock_retries=self.lock_retries
            )
        return self._lineage_summary  # kept: lineage is reported from a fork that cannot read XCom

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the REMOTE table behind ``source_table`` in, ``target_table`` out, with schema,
        column lineage and the rows and bytes written."""
        from airflow_provider_fdw.lineage import datasets_of, operator_lineage, task_result

        with self.get_hook() as hook:
            inputs, outputs = datasets_of(hook, [self.source_table]), datasets_of(hook, [self.target_table])
        return operator_lineage(inputs, outputs, column_lineage=True, statistics=[task_result(self)])

    def get_openlineage_facets_on_start(self) -> Any:
        """OpenLineage as the task starts: the datasets of the on-complete lineage, without statistics."""
        from airflow_provider_fdw.lineage import on_start

        return on_start(self.get_openlineage_facets_on_complete(None))
