"""Rendered SQL of embedding backfills: the statements the backfill engine runs, quoted by the driver."""

from __future__ import annotations

import pytest

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.compat import USE_PSYCOPG3
from airflow_provider_fdw.names import QualifiedName

TABLE = QualifiedName("ml", 'doc"s')


@pytest.fixture
def render(request):
    if USE_PSYCOPG3:
        return lambda stmt: stmt.as_string(None)
    conn = request.getfixturevalue("target").connect()  # psycopg2 quotes literals with a connection
    request.addfinalizer(conn.close)
    return lambda stmt: stmt.as_string(conn)


def test_backfill_batch_resumes_after_the_last_key_and_skips_locked_rows(render):
    first = q.embedding_batch(TABLE, "id", "body", "embedding", None, 256)
    assert render(first) == (
        'SELECT "id", "body" FROM "ml"."doc""s" WHERE "embedding" IS NULL AND "body" IS NOT NULL '
        'ORDER BY "id" LIMIT 256 FOR UPDATE SKIP LOCKED'
    )
    later = q.embedding_batch(TABLE, "id", "body", "embedding", "k'1", 10)
    assert " AND \"id\" > 'k''1' ORDER BY" in render(later)


def test_backfill_in_database_updates_only_rows_still_missing_their_embedding(render):
    batch = q.embedding_batch(TABLE, "id", "body", "embedding", None, 5)
    call = q.embedding_call("pgml.embed", "intfloat/e5-small-v2", "body")
    assert render(call) == '"pgml"."embed"(\'intfloat/e5-small-v2\', "t"."body")'
    statement = render(q.embed_in_database(batch, TABLE, "id", "embedding", call, "vector"))
    assert statement.startswith("WITH batch AS (SELECT ")
    assert statement.endswith(
        'UPDATE "ml"."doc""s" t SET "embedding" = '
        '"pgml"."embed"(\'intfloat/e5-small-v2\', "t"."body")::vector FROM batch '
        'WHERE t."id" = batch."id" AND t."embedding" IS NULL RETURNING t."id"'
    )


def test_backfill_adds_a_vector_column_with_pgvector_and_real_array_without(render):
    assert render(q.add_embedding_column(TABLE, "emb", 384, True)) == (
        'ALTER TABLE "ml"."doc""s" ADD COLUMN "emb" vector(384)'
    )
    assert render(q.add_embedding_column(TABLE, "emb", 384, False)) == (
        'ALTER TABLE "ml"."doc""s" ADD COLUMN "emb" real[]'
    )


def test_backfill_writes_a_batch_from_values_or_the_copied_batch_table(render):
    values = q.embedding_values([(1, "{0.5,1.0}"), ("a'b", "{2.0,3.0}")], "text")
    assert render(q.write_embeddings(TABLE, "id", "emb", "real[]", values)) == (
        'UPDATE "ml"."doc""s" t SET "emb" = b.e::real[] FROM (VALUES (1::text, \'{0.5,1.0}\'), '
        "('a''b'::text, '{2.0,3.0}')) b(k, e) WHERE t.\"id\" = b.k AND t.\"emb\" IS NULL"
    )
    write = render(q.write_embeddings(TABLE, "id", "emb", "vector", q.EMBEDDING_BATCH_SOURCE))
    assert 'SET "emb" = b.e::vector FROM pg_temp.fdw_embedding_batch b WHERE' in write
    assert render(q.missing_embeddings_count(TABLE, "id", "body", "emb")) == (
        'SELECT count(*), count(*) FILTER (WHERE "id" IS NULL) FROM "ml"."doc""s" '
        'WHERE "emb" IS NULL AND "body" IS NOT NULL'
    )
