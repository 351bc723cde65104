"""Real pgvector (built by scripts/bootstrap.sh): vector(384) backfill, HNSW search, write-back, fallback.

Each test uses a database of its own on the target, so creating the extension there cannot change
what the other tests see (they expect ``real[]`` in ``analytics``, which has no pgvector).
"""

from __future__ import annotations

import uuid

import pytest
from conftest import READER, SOURCE_DB, ident, postgres_connection

from airflow_provider_fdw.backfill import SentenceTransformerEmbedder, plan_backfill
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.operators.embedding import CopyToForeignTableOperator

TEXTS = [
    "a cat sits on the mat",
    "a kitten is sitting on a rug",
    "quarterly revenue grew ten percent",
    "the stock market fell sharply today",
    "how to bake sourdough bread at home",
    "a recipe for a rye loaf with a crisp crust",
    "the train to Berlin leaves at noon",
    "our flight to Madrid was delayed",
] + [f"filler sentence number {i} about nothing in particular" for i in range(40)]


@pytest.fixture
def local_db(monkeypatch, target):
    """A fresh target database as ``postgres_default``; yields (name, with_vector) set by the caller."""
    created = []

    def make(with_vector: bool) -> str:
        name = f"vec_{uuid.uuid4().hex[:8]}"
        target.execute(sql.SQL("CREATE DATABASE {}").format(ident(name)))
        created.append(name)
        if with_vector:
            target.execute("CREATE EXTENSION vector", dbname=name)
        target.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)", dbname=name)
        rows = sql.SQL(", ").join(
            sql.SQL("({}, {})").format(sql.Literal(i + 1), sql.Literal(t)) for i, t in enumerate(TEXTS)
        )
        target.execute(sql.SQL("INSERT INTO docs VALUES {}").format(rows), dbname=name)
        monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", postgres_connection(target, name))
        return name

    yield make
    for name in created:
        target.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident(name)))


def backfill(embedder=None, **kwargs) -> dict:
    with FdwHook() as hook:
        return hook.backfill_embeddings(
            plan_backfill("public.docs", "body", batch_size=16, **kwargs),
            embedder or SentenceTransformerEmbedder(),
            384,
        )


def with_index_scans(target, db: str, statement: str) -> list[tuple]:
    """Run a query with sequential scans off, so the plan must use the HNSW index."""
    conn = target.connect(db)
    try:
        cur = conn.cursor()
        cur.execute("SET enable_seqscan = off")
        cur.execute(statement)
        return list(cur.fetchall())
    finally:
        conn.close()


def test_pgvector_is_available_on_the_target_server(target):
    assert target.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'") == [
        ("0.8.0",)
    ]


def test_backfill_into_vector_384_and_an_hnsw_index_finds_the_similar_text(target, local_db):
    db = local_db(with_vector=True)
    first = backfill(lambda texts: [[1.0] * 384 for _ in texts], max_rows=1)  # adds the column
    assert first["storage"] == "vector"
    column_type = target.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'docs'::regclass AND attname = 'embedding'",
        dbname=db,
    )
    assert column_type == [("vector(384)",)]
    # Start over with the real model, through an HNSW index that every write must maintain.
    target.execute("UPDATE docs SET embedding = NULL", dbname=db)
    target.execute(
        "CREATE INDEX docs_embedding_hnsw ON docs USING hnsw (embedding vector_cosine_ops)", dbname=db
    )
    result = backfill()
    assert result["rows_embedded"] == len(TEXTS) and result["rows_remaining"] == 0
    assert result["storage"] == "vector" and result["dimensions"] == 384

    nearest = (
        "SELECT d.id FROM docs d, docs q WHERE q.id = %s AND d.id <> q.id "
        "ORDER BY d.embedding <=> q.embedding LIMIT 1"
    )
    by_cat = "SELECT id FROM docs ORDER BY embedding <=> (SELECT embedding FROM docs WHERE id = 1) LIMIT 2"
    plan = with_index_scans(target, db, "EXPLAIN (COSTS OFF) " + by_cat)
    assert any("docs_embedding_hnsw" in row[0] for row in plan), plan
    # Cat <-> kitten, sourdough <-> rye loaf.
    pairs = {1: 2, 2: 1, 5: 6, 6: 5}
    for query, expected in pairs.items():
        assert target.execute(nearest, (query,), dbname=db) == [(expected,)], query
    assert with_index_scans(target, db, by_cat) == [(1,), (2,)]


def test_without_the_extension_in_the_database_vectors_fall_back_to_real_arrays(target, local_db):
    """pgvector is installed on the server, but not created in this database: real[] it is."""
    db = local_db(with_vector=False)
    assert target.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'", dbname=db) == [(0,)]
    result = backfill()
    assert result["storage"] == "real[]" and result["rows_embedded"] == len(TEXTS)
    assert target.execute(
        "SELECT format_type(atttypid, atttypmod), (SELECT DISTINCT array_length(embedding, 1) FROM docs) "
        "FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attname = 'embedding'",
        dbname=db,
    ) == [("real[]", 384)]


@pytest.fixture
def remote_vectors(pair):
    """A remote table with a vector(384) column, writable by the FDW reader role."""
    schema = f"vec_{uuid.uuid4().hex[:8]}"
    for statement in [
        sql.SQL("CREATE EXTENSION IF NOT EXISTS vector"),
        sql.SQL("CREATE SCHEMA {}").format(ident(schema)),
        sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, embedding vector(384) NOT NULL)").format(
            ident(schema, "doc_vectors")
        ),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident(schema), ident(READER)),
        sql.SQL("GRANT SELECT, INSERT, DELETE ON {} TO {}").format(
            ident(schema, "doc_vectors"), ident(READER)
        ),
    ]:
        pair.source.execute(statement, dbname=SOURCE_DB)
    yield schema
    pair.source.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident(schema)), dbname=SOURCE_DB)


def test_vectors_are_written_back_to_a_remote_vector_column_and_searchable_there(
    pair, local_db, remote_vectors, airflow_db
):
    from airflow.sdk import DAG

    from fdw_testing.dagrun import run_dag

    db = local_db(with_vector=True)
    backfill()
    server = f"vec_src_{uuid.uuid4().hex[:8]}"
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.ensure_extension()
        hook.create_server(server)
        hook.create_user_mapping(server)
        hook.import_foreign_schema(server, remote_vectors, "remote_vec")
    foreign_type = pair.target.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'remote_vec.doc_vectors'::regclass AND attname = 'embedding'",
        dbname=db,
    )
    assert foreign_type == [("vector(384)",)]

    with DAG(f"write_back_{server}", schedule=None) as dag:
        CopyToForeignTableOperator(
            task_id="write_back",
            local_table="public.docs",
            foreign_table="remote_vec.doc_vectors",
            key_column="id",
            columns=["embedding"],
        )
    for _ in range(2):  # a rerun replaces the same keys: no duplicates
        result = run_dag(dag)
        assert result.state == "success", result.task_states
        assert result.xcom["write_back"]["rows"] == len(TEXTS)

    table = ident(remote_vectors, "doc_vectors")
    same = pair.source.execute(
        sql.SQL("SELECT count(*), count(DISTINCT id) FROM {}").format(table), dbname=SOURCE_DB
    )
    assert same == [(len(TEXTS), len(TEXTS))]
    local = pair.target.execute("SELECT embedding::text FROM docs WHERE id = 1", dbname=db)
    remote = pair.source.execute(
        sql.SQL("SELECT embedding::text FROM {} WHERE id = 1").format(table), dbname=SOURCE_DB
    )
    assert local == remote  # the vector arrives unchanged
    nearest = pair.source.execute(
        sql.SQL(
            "SELECT d.id FROM {t} d, {t} q WHERE q.id = 1 AND d.id <> 1 "
            "ORDER BY d.embedding <=> q.embedding LIMIT 1"
        ).format(t=table),
        dbname=SOURCE_DB,
    )
    assert nearest == [(2,)]
