"""What a copy reads: ``where`` is one boolean expression (issue 10 item 4), unquoted names fold like
PostgreSQL (item 6), NULL watermarks are counted and copied by key (item 7). Against the real pair."""

from __future__ import annotations

import logging
import os
import uuid

import pytest
from conftest import READER, SOURCE_DB, TARGET_DB, ident

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.predicate import check_where_text
from fdw_testing.sample_data import postgres_connection

SCS_OFF_ROLE, SCS_OFF_PASSWORD = "inputs_scs_off", "Inputs-Scs-3d9f"
INJECTION = "true); DROP TABLE public.canary_local; --"
# Reads as ONE string literal with standard_conforming_strings=on (what check_where_text assumes), but
# with it off the server ends the string early and sees "; DROP TABLE ...": only the server can tell.
SMUGGLED = "'\\' ' = ' ' OR true); DROP TABLE public.canary_local; --'"


@pytest.fixture(scope="module")
def inputs(airflow_connections):
    pair = airflow_connections
    src, tgt = pair.source, pair.target
    src.execute(
        "CREATE SCHEMA inputs; "
        "CREATE TABLE inputs.items (id int PRIMARY KEY, updated_at timestamptz, note text); "
        "INSERT INTO inputs.items SELECT g, CASE WHEN g <= 100 THEN '2024-01-01'::timestamptz "
        "+ g * interval '1 hour' END, 'note ' || g FROM generate_series(1, 110) g; "
        "CREATE TABLE inputs.canary_remote (id int)",
        dbname=SOURCE_DB,
    )
    src.execute(
        sql.SQL(
            "GRANT USAGE ON SCHEMA inputs TO {0}; GRANT SELECT ON ALL TABLES IN SCHEMA inputs TO {0}; "
            "ALTER TABLE inputs.canary_remote OWNER TO {0}"
        ).format(ident(READER)),
        dbname=SOURCE_DB,
    )
    tgt.execute(
        sql.SQL(
            "CREATE ROLE {} SUPERUSER LOGIN PASSWORD {}; ALTER ROLE {} SET standard_conforming_strings = off"
        ).format(ident(SCS_OFF_ROLE), sql.Literal(SCS_OFF_PASSWORD), ident(SCS_OFF_ROLE))
    )
    os.environ["AIRFLOW_CONN_INPUTS_SCS_OFF"] = postgres_connection(
        tgt, TARGET_DB, SCS_OFF_ROLE, SCS_OFF_PASSWORD
    )
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        hook.ensure_extension()
        hook.create_server("inputs_src")
        hook.create_user_mapping("inputs_src")
        hook.create_user_mapping("inputs_src", SCS_OFF_ROLE)
        hook.import_foreign_schema("inputs_src", "inputs", "proxy_inputs")
    tgt.execute("CREATE TABLE public.canary_local (id int)", dbname=TARGET_DB)
    return pair


def run_copy(local="postgres_default", direct=None, relay="auto", target=None, **kwargs):
    kwargs.setdefault("source_table", "proxy_inputs.items")
    target = target or f"public.inputs_{uuid.uuid4().hex[:8]}"
    plan = plan_copy(target_table=target, **kwargs)
    with FdwHook(fdw_conn_id="fdw_source", postgres_conn_id=local) as hook:
        hook._log = logging.getLogger("test_copy_inputs")  # a stdlib logger: caplog sees it
        return target, hook.bulk_copy(plan, direct=direct, relay=relay)


def exists(cluster, dbname, name):
    return cluster.execute("SELECT to_regclass(%s) IS NOT NULL", (name,), dbname=dbname)[0][0]


def count(cluster, table, where="true"):
    return cluster.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {}").format(ident(*table.split(".")), sql.SQL(where)),
        dbname=TARGET_DB,
    )[0][0]


# -- where: one boolean expression -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (INJECTION, "unbalanced '\\)'"),
        ("id > 1; DROP TABLE x", "contains ';'"),
        ("id > 1 -- trailing", "comments"),
        ("id > 1 /* c */", "comments"),
        ("(id > 1", "unclosed"),
        ("note = 'open", "unterminated string"),
        ('"open = 1', "unterminated a quoted identifier"),
        ("note = $q$open", "unterminated dollar"),
        ("note = E'it\\'s'; DROP TABLE x", "contains ';'"),
    ],
)
def test_where_that_could_end_the_expression_is_refused_before_any_sql(where, message):
    with pytest.raises(FdwConfigError, match=message):
        plan_copy("a.b", "c.d", where=where)


@pytest.mark.parametrize(
    "where",
    [
        "note = 'a;b -- not a comment /* nor this */ (('",
        '"odd;name" = 1',
        "note = $$;)$$ AND note = $tag$ ' $tag$",
        "note = E'it\\'s; fine'",
        "note LIKE '%--%' AND (id > 1 OR (id < 0))",
        "id = ANY('{1,2}'::int[])",
    ],
)
def test_where_with_separators_inside_literals_is_accepted(where):
    assert check_where_text(where) == where


def test_where_injection_does_not_drop_a_local_table_on_the_fdw_path(inputs):
    with pytest.raises(FdwConfigError, match="unbalanced"):
        run_copy(where=INJECTION)
    assert exists(inputs.target, TARGET_DB, "public.canary_local")


def test_where_injection_does_not_drop_a_remote_table_on_the_direct_path(inputs):
    where = "true)) TO STDOUT; DROP TABLE inputs.canary_remote; COPY (SELECT 1 WHERE (true"
    with pytest.raises(FdwConfigError, match=r"unbalanced|contains ';'"):
        run_copy(where=where, relay="psql", transport="copy")
    assert exists(inputs.source, SOURCE_DB, "inputs.canary_remote")


def test_where_smuggled_past_the_text_check_is_refused_by_the_server_parse(inputs):
    """With standard_conforming_strings=off the text check is fooled; the server parse is not."""
    assert check_where_text(SMUGGLED)  # the client-side check alone would let it through
    target = f"public.inputs_{uuid.uuid4().hex[:8]}"
    # Refused by the text check read the server's way, or (psycopg 3) by the extended-protocol parse.
    with pytest.raises(
        FdwConfigError, match=r"standard_conforming_strings is off|cannot insert multiple commands"
    ):
        run_copy(local=SCS_OFF_ROLE, where=SMUGGLED, target=target)
    assert exists(inputs.target, TARGET_DB, "public.canary_local")
    assert not exists(inputs.target, TARGET_DB, target)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("id", "argument of WHERE must be type boolean"),
        ("count(*) > 0", "aggregate functions are not allowed in WHERE"),
        ("no_such_column = 1", "no_such_column"),
    ],
)
def test_where_that_is_not_one_boolean_condition_is_refused_by_the_server(inputs, where, message):
    target = f"public.inputs_{uuid.uuid4().hex[:8]}"
    with pytest.raises(FdwConfigError, match=message):
        run_copy(where=where, target=target)
    assert not exists(inputs.target, TARGET_DB, target)


@pytest.mark.parametrize("transport", ["fdw", "copy"])
def test_a_good_where_filters_on_both_paths(inputs, transport):
    _target, result = run_copy(where="id <= 10 OR note = 'note 20'", transport=transport)
    assert result["rows"] == 11 and result["path"] == ("direct" if transport == "copy" else "fdw")


def test_auto_transport_with_where_uses_the_fdw_path_and_says_why(inputs, caplog):
    caplog.set_level(logging.INFO)
    _target, result = run_copy(where="id <= 10", transport="auto")
    assert result["path"] == "fdw" and "where is evaluated locally" in caplog.text


# -- NULL watermarks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["fdw", "copy"])
def test_upsert_copies_rows_with_a_null_watermark_by_key_and_reports_them(inputs, transport):
    target = f"public.inputs_{uuid.uuid4().hex[:8]}"
    args = dict(
        target=target, mode="upsert", key_columns=["id"], watermark_column="updated_at", transport=transport
    )
    first = run_copy(**args)[1]
    assert first["rows"] == 110 and first["null_watermark_rows"] == 10
    inputs.source.execute(
        "INSERT INTO inputs.items VALUES (1000, NULL, 'late'); "
        "UPDATE inputs.items SET note = 'changed' WHERE id = 105",
        dbname=SOURCE_DB,
    )
    try:
        second = run_copy(**args)[1]
        assert second["null_watermark_rows"] == 11
        assert count(inputs.target, target) == 111
        assert count(inputs.target, target, "id = 105 AND note = 'changed'") == 1
    finally:
        inputs.source.execute(
            "DELETE FROM inputs.items WHERE id = 1000; "
            "UPDATE inputs.items SET note = 'note 105' WHERE id = 105",
            dbname=SOURCE_DB,
        )


def test_append_counts_and_warns_about_rows_with_a_null_watermark(inputs, caplog):
    caplog.set_level(logging.INFO)
    target = f"public.inputs_{uuid.uuid4().hex[:8]}"
    first = run_copy(target=target, mode="append", watermark_column="updated_at")[1]
    assert first["rows"] == 110 and first["null_watermark_rows"] == 10
    second = run_copy(target=target, mode="append", watermark_column="updated_at")[1]
    assert second["rows"] == 0 and second["null_watermark_rows"] == 10
    assert "10 rows of proxy_inputs.items have a NULL updated_at" in caplog.text
    assert count(inputs.target, target) == 110  # nothing duplicated


def test_replace_reports_no_null_watermark_count(inputs):
    assert run_copy()[1]["null_watermark_rows"] is None


# -- names fold like PostgreSQL -------------------------------------------------------------------------


def test_unquoted_non_ascii_names_find_the_tables_postgresql_created(inputs):
    tgt = inputs.target
    # Unquoted in SQL: the server folds only ASCII letters (İSTANBUL_ÜBER -> İstanbul_Über).
    tgt.execute(
        "CREATE FOREIGN TABLE proxy_inputs.İSTANBUL_ÜBER (id int, note text) SERVER inputs_src "
        "OPTIONS (schema_name 'inputs', table_name 'items')",
        dbname=TARGET_DB,
    )
    assert exists(tgt, TARGET_DB, 'proxy_inputs."İstanbul_Über"')
    _target, result = run_copy(source_table="proxy_inputs.İSTANBUL_ÜBER", target="public.ÜBER_COPY")
    assert result["rows"] == 110 and result["target"] == 'public."Über_copy"'
    assert tgt.execute("SELECT count(*) FROM public.ÜBER_COPY", dbname=TARGET_DB) == [(110,)]


# -- the operator's arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transport": "copy"}, "pass fdw_conn_id"),
        ({"transport": "auto"}, "pass fdw_conn_id"),
        ({"transport": "binary", "fdw_conn_id": "fdw_source"}, "transport must be one of"),
        ({"where": INJECTION}, "unbalanced"),
    ],
)
def test_bad_transport_or_where_fails_when_the_dag_is_parsed(kwargs, message):
    from airflow_provider_fdw.operators.copy import BulkCopyOperator

    with pytest.raises(FdwConfigError, match=message):
        BulkCopyOperator(task_id="copy", source_table="a.b", target_table="c.d", **kwargs)


def test_operator_passes_transport_to_the_plan():
    from airflow_provider_fdw.operators.copy import BulkCopyOperator

    op = BulkCopyOperator(
        task_id="copy", source_table="a.b", target_table="c.d", transport="auto", fdw_conn_id="fdw_source"
    )
    assert op.plan().transport == "auto"
    default = BulkCopyOperator(task_id="copy2", source_table="a.b", target_table="c.d", fdw_conn_id="x")
    assert default.plan().transport == "fdw"


def test_bulk_copy_operator_with_transport_copy_in_a_dag_run(airflow_db, inputs):
    from airflow.sdk import DAG

    from airflow_provider_fdw.operators.copy import BulkCopyOperator
    from fdw_testing.dagrun import run_dag

    target = f"public.inputs_{uuid.uuid4().hex[:8]}"
    with DAG("bulk_copy_transport", schedule=None) as dag:
        BulkCopyOperator(
            task_id="copy",
            source_table="proxy_inputs.items",
            target_table=target,
            mode="upsert",
            key_columns=["id"],
            watermark_column="updated_at",
            transport="copy",
            fdw_conn_id="fdw_source",
        )
    result = run_dag(dag)
    assert result.state == "success", result.task_states
    summary = result.xcom["copy"]
    assert summary["path"] == "direct" and summary["rows"] == 110 and summary["null_watermark_rows"] == 10
