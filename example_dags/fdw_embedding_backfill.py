"""Embedding backfill: copy a table, embed a text column in batches, write the vectors back.

The PostgresML flow: copy ``catalog.products`` into the analytics database (upsert on ``id``, so the
embedding column survives later runs), fill ``embedding`` for rows that lack it (all-MiniLM-L6-v2
in the worker, 384 dimensions; use ``embedder="pgml"`` on PostgresML to embed inside the database),
then write ``(id, embedding)`` back to the source through the foreign table
``catalog_proxy.product_embeddings`` (the mapped remote role needs INSERT and DELETE on it).

Connections: ``fdw_source`` (postgres_fdw), ``postgres_default`` (the local analytics database).
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from airflow_provider_fdw.operators.copy import BulkCopyOperator
from airflow_provider_fdw.operators.embedding import CopyToForeignTableOperator, EmbeddingBackfillOperator
from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
from airflow_provider_fdw.operators.server import CreateForeignServerOperator

with DAG(
    dag_id="fdw_embedding_backfill",
    schedule="@hourly",
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["fdw", "example", "embeddings"],
    doc_md=__doc__,
):
    server = CreateForeignServerOperator(
        task_id="foreign_server", server_name="catalog_db", fdw_conn_id="fdw_source"
    )
    proxy = ImportForeignSchemaOperator(
        task_id="import_catalog",
        server_name="catalog_db",
        remote_schema="catalog",
        local_schema="catalog_proxy",
    )
    copy = BulkCopyOperator(
        task_id="copy_products",
        source_table="catalog_proxy.products",
        target_table="public.products",
        mode="upsert",
        key_columns=["id"],
        watermark_column="updated_at",
        overlap="5 minutes",
    )
    embed = EmbeddingBackfillOperator(
        task_id="embed_descriptions", table="public.products", text_column="description", batch_size=64
    )
    write_back = CopyToForeignTableOperator(
        task_id="write_back_vectors",
        local_table="public.products",
        foreign_table="catalog_proxy.product_embeddings",
        key_column="id",
        columns=["embedding"],
    )
    server >> proxy >> copy >> embed >> write_back
