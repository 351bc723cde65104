"""Concurrent tasks on the same objects: every DDL step is safe, overlapping runs serialize or converge."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from conftest import READER, SOURCE_DB, TARGET_DB, postgres_connection

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.operators.embedding import CopyToForeignTableOperator, EmbeddingBackfillOperator
from airflow_provider_fdw.operators.matview import RefreshMaterializedViewOperator
from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
from airflow_provider_fdw.operators.server import CreateForeignServerOperator

CALLERS = 4


def run_together(
    calls: list[Callable[[], Any]], timeout: float = 120.0
) -> tuple[list[Any], list[BaseException]]:
    """Start every call at the same instant (a barrier) in its own thread; return results and errors."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # collected: the test reports every failure, not the first
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a concurrent call did not finish in time"
    return results, errors


@pytest.fixture
def fresh_database(target, monkeypatch):
    """A new, empty local database (no postgres_fdw yet) and a connection id for it."""
    created: list[str] = []

    def make() -> str:
        name = f"fresh_{uuid.uuid4().hex[:8]}"
        target.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", postgres_connection(target, name))
        return name

    yield make
    for name in created:
        target.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_concurrent_create_server_on_a_fresh_database_never_fails(fresh_database):
    """4 CreateForeignServerOperator tasks at once on a database without postgres_fdw, 15 rounds."""
    failures: list[str] = []
    for _ in range(15):
        conn_id = fresh_database()
        operators = [
            CreateForeignServerOperator(
                task_id=f"server_{i}",
                server_name="shared_src",
                fdw_conn_id="fdw_source",
                postgres_conn_id=conn_id,
                user_mappings=["CURRENT_USER", "PUBLIC"],
            )
            for i in range(CALLERS)
        ]
        results, errors = run_together([lambda op=op: op.execute({}) for op in operators])
        failures += [f"{type(e).__name__}: {e}" for e in errors]
        if not errors:
            created = sum(r["extension_created"] for r in results)
            if created != 1:
                failures.append(f"{created} callers report that they created the extension")
            assert all(r["remote_version"] for r in results)
    assert failures == [], f"{len(failures)} failures in {15 * CALLERS} calls: {failures[:3]}"


@pytest.fixture
def ready_server(target, server_name):
    """A server and mapping on the shared local database (postgres_default)."""
    CreateForeignServerOperator(task_id="server", server_name=server_name, fdw_conn_id="fdw_source").execute(
        {}
    )
    return server_name


def foreign_tables(target, schema: str) -> list[str]:
    rows = target.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'f' ORDER BY 1",
        (schema,),
        dbname=TARGET_DB,
    )
    return [r[0] for r in rows]


def test_concurrent_imports_into_a_new_schema_all_succeed_with_one_set_of_tables(
    target, ready_server, local_schema
):
    operators = [
        ImportForeignSchemaOperator(
            task_id=f"import_{i}", server_name=ready_server, remote_schema="app", local_schema=local_schema
        )
        for i in range(CALLERS)
    ]
    for _ in range(3):  # the first round creates the schema, the later ones re-import over it
        results, errors = run_together([lambda op=op: op.execute({}) for op in operators])
        assert errors == []
        assert all(r["tables"] == ["events", "orders", "users"] for r in results)
        assert foreign_tables(target, local_schema) == ["events", "orders", "users"]
    leftovers = target.execute(
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE '\\_fdw\\_import\\_%'", dbname=TARGET_DB
    )
    assert leftovers == [(0,)]


def test_concurrent_create_and_refresh_of_one_materialized_view_converge(target, ready_server, local_schema):
    ImportForeignSchemaOperator(
        task_id="import", server_name=ready_server, remote_schema="app", local_schema=local_schema
    ).execute({})
    view = f"{local_schema}_views.user_totals"  # its schema does not exist yet either
    operators = [
        RefreshMaterializedViewOperator(
            task_id=f"refresh_{i}",
            views=view,
            query=f"SELECT u.id, count(o.id) AS orders FROM {local_schema}.users u "
            f"LEFT JOIN {local_schema}.orders o ON o.user_id = u.id GROUP BY u.id",
            unique_key="id",
            concurrently=concurrently,
        )
        for i, concurrently in enumerate(["auto", "auto", False, "auto"])
    ]
    for round_ in range(3):
        results, errors = run_together([lambda op=op: op.execute({}) for op in operators])
        assert errors == []
        created = [r[0]["created"] for r in results]
        assert created.count(True) == (1 if round_ == 0 else 0)
        assert all(r[0]["rows_after"] == 1000 for r in results)
    assert target.execute(f"SELECT count(*), count(DISTINCT id) FROM {view}", dbname=TARGET_DB) == [
        (1000, 1000)
    ]


@pytest.fixture
def write_back(source, target, ready_server, local_schema):
    """A remote table the reader may write, its foreign table, and a local table of 500 vectors."""
    name = f"wb_{uuid.uuid4().hex[:8]}"
    for statement in [
        "CREATE TABLE catalog.{t} (id bigint PRIMARY KEY, embedding real[] NOT NULL)",
        "GRANT SELECT, INSERT, DELETE ON catalog.{t} TO {reader}",
    ]:
        source.execute(
            sql.SQL(statement).format(t=sql.Identifier(name), reader=sql.Identifier(READER)), dbname=SOURCE_DB
        )
    ImportForeignSchemaOperator(
        task_id="import",
        server_name=ready_server,
        remote_schema="catalog",
        local_schema=local_schema,
        limit_to=[name],
    ).execute({})
    target.execute(
        sql.SQL(
            "CREATE TABLE {} AS SELECT g::bigint AS id, ARRAY[g, g + 0.5]::real[] AS embedding "
            "FROM generate_series(1, 500) g"
        ).format(sql.Identifier("public", name)),
        dbname=TARGET_DB,
    )
    yield f"public.{name}", f"{local_schema}.{name}", name
    source.execute(sql.SQL("DROP TABLE catalog.{}").format(sql.Identifier(name)), dbname=SOURCE_DB)


def test_overlapping_write_backs_to_one_foreign_table_never_collide(source, write_back):
    """The fdw_embedding_backfill failure: two write_back_vectors at once hit a duplicate key."""
    local_table, foreign_table, name = write_back
    operators = [
        CopyToForeignTableOperator(
            task_id=f"write_back_{i}",
            local_table=local_table,
            foreign_table=foreign_table,
            key_column="id",
            columns=["embedding"],
        )
        for i in range(CALLERS)
    ]
    for _ in range(3):  # the first round writes into an empty remote table, the later ones replace
        results, errors = run_together([lambda op=op: op.execute({}) for op in operators])
        assert [f"{type(e).__name__}: {e}" for e in errors] == []
        assert all(r["rows"] == 500 for r in results)
        remote = source.execute(
            sql.SQL(
                "SELECT count(*), count(DISTINCT id), sum(embedding[1]), bool_and(embedding[2] = id + 0.5) "
                "FROM catalog.{}"
            ).format(sql.Identifier(name)),
            dbname=SOURCE_DB,
        )
        assert remote == [(500, 500, 125250.0, True)]


def test_overlapping_backfills_share_the_rows_and_embed_each_once(target):
    """Two EmbeddingBackfillOperator runs at once on one table: no error, every row written once."""
    name = f"docs_{uuid.uuid4().hex[:8]}"
    target.execute(
        sql.SQL(
            "CREATE TABLE {} AS SELECT g::bigint AS id, 'text ' || g AS body FROM generate_series(1, 400) g"
        ).format(sql.Identifier(name)),
        dbname=TARGET_DB,
    )
    target.execute(
        sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(sql.Identifier(name)), dbname=TARGET_DB
    )
    calls: list[int] = []

    def slow_embedder(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        time.sleep(0.05)  # both runs are mid-way at the same time
        return [[float(len(t)), 1.0] for t in texts]

    operators = [
        EmbeddingBackfillOperator(
            task_id=f"embed_{i}",
            table=f"public.{name}",
            text_column="body",
            embedder=slow_embedder,
            dimensions=2,
            batch_size=20,
        )
        for i in range(CALLERS)
    ]
    results, errors = run_together([lambda op=op: op.execute({}) for op in operators])
    assert [f"{type(e).__name__}: {e}" for e in errors] == []
    assert sum(r["rows_embedded"] for r in results) == 400
    assert sum(calls) == 400  # no text was embedded twice: the model's time is not wasted
    # Each run ends only when every row has its embedding (a write-back downstream relies on it),
    # also the rows the other run was embedding.
    assert [r["rows_remaining"] for r in results] == [0] * CALLERS
    assert target.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE embedding IS NULL").format(sql.Identifier(name)),
        dbname=TARGET_DB,
    ) == [(0,)]


def test_a_run_waits_a_bounded_time_for_another_run_and_names_the_object(target, server_name, monkeypatch):
    """A run holding the server's lock (a hung task) makes the next one fail after the bounded wait."""
    from airflow_provider_fdw import locks
    from airflow_provider_fdw.exceptions import FdwError

    monkeypatch.setattr(locks, "DEFAULT_LOCK_WAIT", 1.0)
    holder = target.connect(TARGET_DB, autocommit=False)
    try:
        holder.cursor().execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (locks.lock_key("server", server_name),)
        )
        operator = CreateForeignServerOperator(
            task_id="server", server_name=server_name, fdw_conn_id="fdw_source"
        )
        with pytest.raises(
            FdwError, match=f"Another task has been working on server '{server_name}' for more than 1 s"
        ):
            operator.execute({})
    finally:
        holder.rollback()
        holder.close()
    assert operator.execute({})["changed"]  # the holder is gone: the same task now succeeds


def test_two_overlapping_runs_of_the_embedding_pipeline_both_succeed_with_the_right_data(
    source, target, server_name, local_schema
):
    """fdw_embedding_backfill's tasks (server, import, upsert copy, backfill, write-back) run by two
    overlapping DAG runs at once, on the same objects, twice over."""
    from airflow_provider_fdw.operators.copy import BulkCopyOperator

    written = f"emb_{uuid.uuid4().hex[:8]}"
    for statement in [
        "CREATE TABLE catalog.{t} (id bigint PRIMARY KEY, embedding real[] NOT NULL)",
        "GRANT SELECT, INSERT, DELETE ON catalog.{t} TO {reader}",
    ]:
        source.execute(
            sql.SQL(statement).format(t=sql.Identifier(written), reader=sql.Identifier(READER)),
            dbname=SOURCE_DB,
        )
    local_table = f"{local_schema}_data.products"
    target.execute(
        sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(f"{local_schema}_data")), dbname=TARGET_DB
    )

    def embedder(texts: list[str]) -> list[list[float]]:
        time.sleep(0.02)
        return [[float(len(t)), float(sum(map(ord, t)) % 97)] for t in texts]

    def pipeline(run: int) -> list:
        steps = [
            CreateForeignServerOperator(task_id="server", server_name=server_name, fdw_conn_id="fdw_source"),
            ImportForeignSchemaOperator(
                task_id="import",
                server_name=server_name,
                remote_schema="catalog",
                local_schema=local_schema,
                limit_to=["products", written],
            ),
            BulkCopyOperator(
                task_id="copy",
                source_table=f"{local_schema}.products",
                target_table=local_table,
                mode="upsert",
                key_columns=["id"],
                watermark_column="updated_at",
            ),
            EmbeddingBackfillOperator(
                task_id="embed",
                table=local_table,
                text_column="description",
                embedder=embedder,
                dimensions=2,
                batch_size=16,
            ),
            CopyToForeignTableOperator(
                task_id="write_back",
                local_table=local_table,
                foreign_table=f"{local_schema}.{written}",
                key_column="id",
                columns=["embedding"],
            ),
        ]
        return [step.execute({}) for step in steps]

    try:
        for _ in range(2):
            results, errors = run_together([lambda: pipeline(1), lambda: pipeline(2)], timeout=300)
            assert [f"{type(e).__name__}: {e}" for e in errors] == []
            assert all(r[-1]["rows"] == 240 for r in results)
        local = target.execute(
            sql.SQL("SELECT count(*), count(DISTINCT id), count(embedding) FROM {}").format(
                sql.Identifier(f"{local_schema}_data", "products")
            ),
            dbname=TARGET_DB,
        )
        assert local == [(240, 240, 240)]
        remote = source.execute(
            sql.SQL(
                "SELECT count(*), count(DISTINCT e.id), bool_and(e.embedding[1] = length(p.description)) "
                "FROM catalog.{} e JOIN catalog.products p USING (id)"
            ).format(sql.Identifier(written)),
            dbname=SOURCE_DB,
        )
        assert remote == [(240, 240, True)]
    finally:
        source.execute(sql.SQL("DROP TABLE catalog.{}").format(sql.Identifier(written)), dbname=SOURCE_DB)
