"""Embedding backfills: the next batch, the in-database UPDATE, the vector column, the batch write."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.names import QualifiedName

PGVECTOR_INSTALLED_QUERY = sql.SQL("SELECT count(*) FROM pg_extension WHERE extname = 'vector'")

# One batch of binary-COPYed vectors per transaction: emptied at commit, reused by the next batch.
# Qualified: a table of that name earlier in the role's search_path must never be read or written.
CREATE_EMBEDDING_BATCH = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS pg_temp.fdw_embedding_batch (k bigint, e real[]) ON COMMIT DELETE ROWS"
)
COPY_EMBEDDING_BATCH = sql.SQL("COPY pg_temp.fdw_embedding_batch (k, e) FROM STDIN (FORMAT binary)")
EMBEDDING_BATCH_SOURCE = sql.SQL("pg_temp.fdw_embedding_batch b")


def embedding_type(storage: str) -> sql.Composable:
    """The cast a vector goes through: ``vector`` (pgvector) or ``real[]``."""
    return sql.SQL("vector") if storage == "vector" else sql.SQL("real[]")


def missing_embeddings_count(
    table: QualifiedName, key_column: str, text_column: str, embedding_column: str
) -> sql.Composed:
    """Rows lacking an embedding, and how many of them have no key to be written back by."""
    return sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE {} IS NULL) FROM {} WHERE {} IS NULL AND {} IS NOT NULL"
    ).format(
        sql.Identifier(key_column),
        sql.Identifier(*table),
        sql.Identifier(embedding_column),
        sql.Identifier(text_column),
    )


def embedding_batch(
    table: QualifiedName, key_column: str, text_column: str, embedding_column: str, after: Any, limit: int
) -> sql.Composed:
    """The next ``limit`` rows lacking an embedding after key ``after`` (None: from the start), locked."""
    key = sql.Identifier(key_column)
    after_key = sql.SQL("") if after is None else sql.SQL(" AND {} > {}").format(key, sql.Literal(after))
    # SKIP LOCKED: an overlapping run takes other rows instead of embedding the same ones again.
    return sql.SQL(
        "SELECT {k}, {t} FROM {tbl} WHERE {e} IS NULL AND {t} IS NOT NULL{after} "
        "ORDER BY {k} LIMIT {n} FOR UPDATE SKIP LOCKED"
    ).format(
        k=key,
        t=sql.Identifier(text_column),
        tbl=sql.Identifier(*table),
        e=sql.Identifier(embedding_column),
        after=after_key,
        n=sql.Literal(limit),
    )


def embedding_call(function: str, model: str, text_column: str, alias: str = "t") -> sql.Composed:
    """``function(model, alias.text_column)``; ``function`` is ``name`` or ``schema.name``."""
    return sql.SQL("{}({}, {})").format(
        sql.Identifier(*function.split(".")), sql.Literal(model), sql.Identifier(alias, text_column)
    )


def embed_in_database(
    batch: sql.Composable,
    table: QualifiedName,
    key_column: str,
    embedding_column: str,
    call: sql.Composable,
    storage: str,
) -> sql.Composed:
    """One UPDATE embedding a batch in the database (rows never leave it); returns the keys written."""
    return sql.SQL(
        "WITH batch AS ({select}) UPDATE {tbl} t SET {e} = {call}::{cast} FROM batch "
        "WHERE t.{k} = batch.{k} AND t.{e} IS NULL RETURNING t.{k}"
    ).format(
        select=batch,
        tbl=sql.Identifier(*table),
        e=sql.Identifier(embedding_column),
        k=sql.Identifier(key_column),
        cast=embedding_type(storage),
        call=call,
    )


def add_embedding_column(table: QualifiedName, column: str, dimensions: int, pgvector: bool) -> sql.Composed:
    """``vector(dimensions)`` when pgvector is installed, else ``real[]``."""
    type_sql = sql.SQL("vector({})").format(sql.Literal(dimensions)) if pgvector else sql.SQL("real[]")
    return sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
        sql.Identifier(*table), sql.Identifier(column), type_sql
    )


def embedding_values(pairs: Iterable[tuple[Any, str]], key_type: str) -> sql.Composed:
    """A batch as ``(VALUES (key, vector text), ...) b(k, e)``, the source of :func:`write_embeddings`.

    Each key is cast to the key column's type (``key_type``, as ``format_type`` spells it): a text
    literal would compare with a ``char(n)`` key as text, without its padding, and match no row."""
    values = sql.SQL(", ").join(
        sql.SQL("({}::{}, {})").format(sql.Literal(k), sql.SQL(key_type), sql.Literal(v)) for k, v in pairs
    )
    return sql.SQL("(VALUES {}) b(k, e)").format(values)


def write_embeddings(
    table: QualifiedName, key_column: str, embedding_column: str, storage: str, source: sql.Composable
) -> sql.Composed:
    """Write a batch's vectors (``source`` has columns ``k``, ``e``) where the embedding is still NULL."""
    return sql.SQL(
        "UPDATE {tbl} t SET {e} = b.e::{cast} FROM {source} WHERE t.{k} = b.k AND t.{e} IS NULL"
    ).format(
        tbl=sql.Identifier(*table),
        e=sql.Identifier(embedding_column),
        cast=embedding_type(storage),
        source=source,
        k=sql.Identifier(key_column),
    )
