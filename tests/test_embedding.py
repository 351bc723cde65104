"""Embedding backfills on the real target: the offline model, an in-database function, kill and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from conftest import TARGET_DB, ident, postgres_connection

from airflow_provider_fdw.backfill import (
    SentenceTransformerEmbedder,
    SqlFunctionEmbedder,
    plan_backfill,
)
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.operators.embedding import EmbeddingBackfillOperator

SUBJECTS = ["the cat", "a dog", "the chef", "our team", "the river", "a child", "the market", "my laptop"]
VERBS = ["sleeps near", "runs past", "looks at", "talks about", "moves toward", "waits for"]
OBJECTS = ["the mat", "the window", "a bowl of soup", "the quarterly report", "the old bridge", "a red ball"]
ROWS = 300


@pytest.fixture
def docs(target):
    """A docs table with ROWS sentences (ids 1..3 chosen for the similarity check) and a write audit."""
    name = f"docs_{uuid.uuid4().hex[:8]}"
    texts = ["a cat sits on the mat", "a kitten is sitting on a rug", "quarterly revenue grew ten percent"]
    texts += [f"{SUBJECTS[i % 8]} {VERBS[i % 6]} {OBJECTS[(i // 7) % 6]} ({i})" for i in range(ROWS - 3)]
    rows = sql.SQL(", ").join(
        sql.SQL("({}, {})").format(sql.Literal(i + 1), sql.Literal(t)) for i, t in enumerate(texts)
    )
    for statement in [
        sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, body text)").format(ident(name)),
        sql.SQL("INSERT INTO {} VALUES {}").format(ident(name), rows),
        sql.SQL("INSERT INTO {} VALUES (100000, NULL)").format(ident(name)),  # no text: nothing to embed
        sql.SQL("CREATE TABLE {} (id bigint, overwrite boolean)").format(ident(name + "_audit")),
    ]:
        target.execute(statement, dbname=TARGET_DB)
    return name


def add_audit_trigger(target, name: str) -> None:
    """Record every write of an embedding; an overwrite of an existing one is flagged."""
    target.execute(
        sql.SQL(
            "CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.embedding IS DISTINCT FROM OLD.embedding THEN "
            "INSERT INTO {audit} VALUES (NEW.id, OLD.embedding IS NOT NULL); END IF; RETURN NEW; END $$"
        ).format(fn=ident(name + "_fn"), audit=ident(name + "_audit")),
        dbname=TARGET_DB,
    )
    target.execute(
        sql.SQL("CREATE TRIGGER audit BEFORE UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
            ident(name), ident(name + "_fn")
        ),
        dbname=TARGET_DB,
    )


def run_backfill(name: str, embedder, dimensions: int, batch_size: int = 64, **kwargs):
    plan = plan_backfill(f"public.{name}", "body", batch_size=batch_size, **kwargs)
    with FdwHook() as hook:
        return hook.backfill_embeddings(plan, embedder, dimensions)


def cosine(target, name: str, a: int, b: int) -> float:
    # float8: real (float4) arithmetic raises on underflow in PostgreSQL
    statement = sql.SQL(
        "SELECT sum(x::float8 * y::float8) "
        "       / (sqrt(sum(x::float8 * x::float8)) * sqrt(sum(y::float8 * y::float8))) "
        "FROM {t} p, {t} q, unnest(p.embedding, q.embedding) u(x, y) WHERE p.id = %s AND q.id = %s"
    ).format(t=ident(name))
    return target.execute(statement, (a, b), dbname=TARGET_DB)[0][0]


def test_python_backfill_embeds_every_row_once_and_similar_texts_are_nearer(target, docs):
    model = SentenceTransformerEmbedder()
    first = run_backfill(docs, model, 384, max_rows=10)  # adds the column, then the audit trigger can see it
    assert first["rows_embedded"] == 10 and first["storage"] == "real[]"
    add_audit_trigger(target, docs)
    result = run_backfill(docs, model, 384)
    assert result["rows_embedded"] == ROWS - 10 and result["rows_remaining"] == 0
    assert result["batches"] == -(-(ROWS - 10) // 64)
    dims = target.execute(
        sql.SQL("SELECT DISTINCT array_length(embedding, 1) FROM {} WHERE body IS NOT NULL").format(
            ident(docs)
        ),
        dbname=TARGET_DB,
    )
    assert dims == [(384,)]
    assert cosine(target, docs, 1, 2) > cosine(target, docs, 1, 3) + 0.3
    assert run_backfill(docs, model, 384)["rows_embedded"] == 0  # nothing left: idempotent
    audit = target.execute(
        sql.SQL("SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE overwrite) FROM {}").format(
            ident(docs + "_audit")
        ),
        dbname=TARGET_DB,
    )
    assert audit == [(ROWS - 10, ROWS - 10, 0)]


KILLABLE = textwrap.dedent(
    """
    import sys, time
    from airflow_provider_fdw.backfill import plan_backfill, SentenceTransformerEmbedder
    from airflow_provider_fdw.hooks.fdw import FdwHook
    model = SentenceTransformerEmbedder()
    def slow(texts):
        time.sleep(0.3)  # slow enough to be killed mid-run
        return model(texts)
    with FdwHook() as hook:
        hook.backfill_embeddings(plan_backfill("public." + sys.argv[1], "body", batch_size=16), slow, 384)
    """
)


def test_a_backfill_killed_mid_way_resumes_with_no_row_skipped_or_written_twice(target, docs):
    run_backfill(docs, lambda texts: [[0.0] * 384 for _ in texts], 384, max_rows=1)  # adds the column
    target.execute(sql.SQL("UPDATE {} SET embedding = NULL").format(ident(docs)), dbname=TARGET_DB)
    add_audit_trigger(target, docs)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, docs],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    done_sql = sql.SQL("SELECT count(*) FROM {} WHERE embedding IS NOT NULL").format(ident(docs))
    try:
        deadline = time.monotonic() + 120
        while target.execute(done_sql, dbname=TARGET_DB)[0][0] < 48 and time.monotonic() < deadline:
            assert proc.poll() is None, "the backfill ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # as the OOM killer or a lost worker would
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = target.execute(done_sql, dbname=TARGET_DB)[0][0]
    assert 48 <= partial < ROWS
    resumed = run_backfill(docs, SentenceTransformerEmbedder(), 384, batch_size=16)
    assert resumed["rows_embedded"] == ROWS - partial and resumed["rows_remaining"] == 0
    audit = target.execute(
        sql.SQL("SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE overwrite) FROM {}").format(
            ident(docs + "_audit")
        ),
        dbname=TARGET_DB,
    )
    assert audit == [(ROWS, ROWS, 0)]


def test_in_database_embedder_runs_the_function_on_the_server(target, docs):
    # A stand-in for pgml.embed(model, text): deterministic, 3 dimensions, run by the database.
    target.execute(
        "CREATE OR REPLACE FUNCTION public.fake_embed(model text, body text) RETURNS real[] "
        "LANGUAGE sql IMMUTABLE AS $$ SELECT ARRAY[length(body), length(model), 1]::real[] $$",
        dbname=TARGET_DB,
    )
    result = run_backfill(docs, SqlFunctionEmbedder("public.fake_embed", "m1", 3), 3, batch_size=100)
    assert result["rows_embedded"] == ROWS and result["batches"] == 3
    check = target.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE embedding = ARRAY[length(body), 2, 1]::real[]").format(
            ident(docs)
        ),
        dbname=TARGET_DB,
    )
    assert check == [(ROWS,)]


def test_embedding_operator_in_a_dag_run(airflow_db, target, docs):
    from airflow.sdk import DAG

    from fdw_testing.dagrun import run_dag

    with DAG(f"embed_{docs}", schedule=None) as dag:
        EmbeddingBackfillOperator(task_id="embed", table=f"public.{docs}", text_column="body", batch_size=128)
    result = run_dag(dag)
    assert result.state == "success", result.task_states
    assert result.xcom["embed"]["rows_embedded"] == ROWS and result.xcom["embed"]["dimensions"] == 384


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"text_column": "id"}, "three different columns"),
        ({"embedder": "bert"}, "embedder must be"),
        ({"embedder": lambda texts: texts}, "Pass dimensions="),
        ({"table": "no_schema"}, "schema-qualified"),
    ],
)
def test_bad_arguments_fail_at_parse_time(kwargs, message):
    args = {"task_id": "t", "table": "public.docs", "text_column": "body", **kwargs}
    with pytest.raises(FdwConfigError, match=message):
        EmbeddingBackfillOperator(**args)


def test_wrong_vector_size_from_an_embedder_is_refused_before_writing(target, docs):
    with pytest.raises(FdwConfigError, match="expected 384"):
        run_backfill(docs, lambda texts: [[0.0] * 3 for _ in texts], 384)
    assert target.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE embedding IS NOT NULL").format(ident(docs)), dbname=TARGET_DB
    ) == [(0,)]


def test_non_integer_keys_take_the_literal_path_with_exact_values(target):
    name = f"docs_{uuid.uuid4().hex[:8]}"
    target.execute(
        sql.SQL("CREATE TABLE {} (id uuid PRIMARY KEY, body text)").format(ident(name)), dbname=TARGET_DB
    )
    target.execute(
        sql.SQL(
            "INSERT INTO {} SELECT md5(g::text)::uuid, repeat('x', g) FROM generate_series(1, 50) g"
        ).format(ident(name)),
        dbname=TARGET_DB,
    )
    result = run_backfill(name, lambda texts: [[len(t), 0.5, -1.25] for t in texts], 3, batch_size=16)
    assert result["rows_embedded"] == 50 and result["batches"] == 4
    exact = target.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE embedding = ARRAY[length(body), 0.5, -1.25]::real[]").format(
            ident(name)
        ),
        dbname=TARGET_DB,
    )
    assert exact == [(50,)]


def lengths(texts):
    return [[float(len(t)), 1.0, 2.0] for t in texts]


def test_a_char_n_key_is_matched_with_its_padding(target):
    """A text literal compared with a ``char(8)`` key as text, without the padding, and matched no
    row: the batch's keys are cast to the key column's type, and a batch that writes fewer rows than
    it read fails instead of being counted done."""
    name = f"docs_{uuid.uuid4().hex[:8]}"
    target.execute(
        sql.SQL("CREATE TABLE {} (id char(8) PRIMARY KEY, body text)").format(ident(name)), dbname=TARGET_DB
    )
    target.execute(
        sql.SQL("INSERT INTO {} VALUES ('ab', 'hello'), ('cd', 'world!'), ('e f', 'x')").format(ident(name)),
        dbname=TARGET_DB,
    )
    result = run_backfill(name, lengths, 3, batch_size=2)
    assert (result["rows_embedded"], result["rows_remaining"]) == (3, 0)
    written = sql.SQL("SELECT id, embedding FROM {} ORDER BY id").format(ident(name))
    assert target.execute(written, dbname=TARGET_DB) == [
        ("ab      ", [5.0, 1.0, 2.0]),
        ("cd      ", [6.0, 1.0, 2.0]),
        ("e f     ", [1.0, 1.0, 2.0]),
    ]


def test_rows_without_a_key_are_refused_before_any_embedding(target):
    name = f"docs_{uuid.uuid4().hex[:8]}"
    target.execute(
        sql.SQL("CREATE TABLE {} (id bigint UNIQUE, body text)").format(ident(name)), dbname=TARGET_DB
    )
    target.execute(
        sql.SQL("INSERT INTO {} VALUES (1, 'one'), (2, 'two'), (NULL, 'no key')").format(ident(name)),
        dbname=TARGET_DB,
    )
    with pytest.raises(FdwConfigError, match=r"1 rows of .* to embed have a NULL id"):
        run_backfill(name, lengths, 3)
    count = sql.SQL("SELECT count(embedding) FROM {}").format(ident(name))
    assert target.execute(count, dbname=TARGET_DB) == [(0,)]


def test_the_batch_table_is_never_one_planted_earlier_in_the_search_path(pair, target, monkeypatch):
    """A table named like the batch's, in a schema the task role's search_path lists before pg_temp:
    the COPY and the UPDATE use pg_temp's, so no row gets a vector its text did not give."""
    role, password = f"sp_{uuid.uuid4().hex[:6]}", "Local-Pw-5"
    schema = f"planted_{uuid.uuid4().hex[:6]}"
    target.execute(
        sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(ident(role), sql.Literal(password))
    )
    target.execute(
        sql.SQL("ALTER ROLE {} SET search_path = {}, public, pg_temp").format(ident(role), ident(schema))
    )
    name = f"docs_{uuid.uuid4().hex[:8]}"
    for statement in (
        "CREATE SCHEMA {s}",
        "CREATE TABLE {s}.fdw_embedding_batch (k bigint, e real[])",
        "INSERT INTO {s}.fdw_embedding_batch VALUES (3, '{{9,9,9}}')",
        "CREATE TABLE public.{t} (id bigint PRIMARY KEY, body text)",
        "INSERT INTO public.{t} VALUES (1, 'a'), (2, 'bb'), (3, 'ccc')",
    ):
        target.execute(sql.SQL(statement).format(s=ident(schema), t=ident(name)), dbname=TARGET_DB)
    monkeypatch.setenv("AIRFLOW_CONN_PLANTED_LOCAL", postgres_connection(target, TARGET_DB, role, password))
    try:
        with FdwHook(postgres_conn_id="planted_local") as hook:
            hook.backfill_embeddings(plan_backfill(f"public.{name}", "body", batch_size=1), lengths, 3)
        written = sql.SQL("SELECT id, embedding FROM public.{} ORDER BY id").format(ident(name))
        assert target.execute(written, dbname=TARGET_DB) == [
            (1, [1.0, 1.0, 2.0]),
            (2, [2.0, 1.0, 2.0]),
            (3, [3.0, 1.0, 2.0]),
        ]
    finally:
        target.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident(schema)), dbname=TARGET_DB)
