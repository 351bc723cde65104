"""The operators inside real DAG runs against the pair: twice in a row, and after remote changes."""

from __future__ import annotations

import datetime
import threading
import time

import pytest
from conftest import READER, READER_PASSWORD, SOURCE_DB, TARGET_DB, fdw_connection, ident

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.operators.matview import RefreshMaterializedViewOperator
from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
from airflow_provider_fdw.operators.server import CreateForeignServerOperator
from fdw_testing.dagrun import run_dag

START = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def dag(dag_id: str):
    from airflow.sdk import DAG

    return DAG(dag_id, schedule=None, start_date=START, catchup=False)


def sync_dag(dag_id: str, server: str, proxy: str):
    """Server + mapping, import, and a materialized view over the proxy schema (the sync pattern)."""
    with dag(dag_id) as d:
        server_task = CreateForeignServerOperator(
            task_id="server", server_name=server, fdw_conn_id="fdw_source"
        )
        import_task = ImportForeignSchemaOperator(
            task_id="import", server_name=server, remote_schema="app", local_schema=proxy, analyze=True
        )
        refresh = RefreshMaterializedViewOperator(
            task_id="refresh",
            views=f"{proxy}.user_totals",
            query=f"SELECT u.id, u.email, coalesce(sum(o.amount), 0) AS total FROM {proxy}.users u "
            f"LEFT JOIN {proxy}.orders o ON o.user_id = u.id GROUP BY u.id, u.email",
            unique_key="id",
            indexes=[{"columns": ["email"], "using": "btree"}],
        )
        server_task >> import_task >> refresh
    return d


def test_sync_dag_runs_twice_and_converges(airflow_db, target, server_name, local_schema, capfd):
    d = sync_dag("sync_twice", server_name, local_schema)
    first = run_dag(d)
    assert first.state == "success", first.task_states
    assert first.xcom["server"]["changed"] is True
    assert first.xcom["server"]["user_mappings"] == [{"local_user": "CURRENT_USER", "changed": True}]
    assert first.xcom["server"]["remote_version"].startswith("1")
    assert first.xcom["import"]["tables"] == ["events", "orders", "users"]
    (created,) = first.xcom["refresh"]
    assert created["created"] is True and created["rows_after"] == 1000

    second = run_dag(d)
    assert second.state == "success", second.task_states
    assert second.xcom["server"]["changed"] is False
    assert second.xcom["import"]["tables"] == ["events", "orders", "users"]
    (refreshed,) = second.xcom["refresh"]
    assert refreshed["created"] is False and refreshed["concurrently"] is True
    assert refreshed["rows_before"] == refreshed["rows_after"] == 1000
    indexes = target.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = %s ORDER BY 1", (local_schema,), dbname=TARGET_DB
    )
    assert [i for (i,) in indexes] == ["user_totals_email_idx", "user_totals_id_key"]
    out, err = capfd.readouterr()
    assert READER_PASSWORD not in out + err
    assert "Refreshed" in out + err


def test_runs_pick_up_remote_changes_and_password_rotation(
    airflow_db, pair, source, target, server_name, local_schema, monkeypatch
):
    d = sync_dag("sync_changes", server_name, local_schema)
    assert run_dag(d).state == "success"
    new_password = "Rotated-In-Dag-77"
    source.execute("ALTER TABLE app.users ADD COLUMN country text DEFAULT 'NL'", dbname=SOURCE_DB)
    source.execute("CREATE TABLE app.new_table (id int)", dbname=SOURCE_DB)
    source.execute("INSERT INTO app.users (id, email) VALUES (1001, 'late@example.com')", dbname=SOURCE_DB)
    source.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident(READER), sql.Literal(new_password)))
    try:
        monkeypatch.setenv("AIRFLOW_CONN_FDW_SOURCE", fdw_connection(pair, password=new_password))
        result = run_dag(d)
        assert result.state == "success", result.task_states
        assert result.xcom["server"]["changed"] is True  # the mapping got the new password
        assert result.xcom["import"]["tables"] == ["events", "new_table", "orders", "users"]
        assert result.xcom["refresh"][0]["rows_after"] == 1001
        cols = target.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'users' ORDER BY ordinal_position",
            (local_schema,),
            dbname=TARGET_DB,
        )
        assert [c for (c,) in cols] == ["id", "email", "created_at", "country"]

        source.execute("DROP TABLE app.new_table", dbname=SOURCE_DB)
        result = run_dag(d)
        assert result.xcom["import"]["tables"] == ["events", "orders", "users"]
    finally:
        source.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident(READER), sql.Literal(READER_PASSWORD))
        )
        source.execute("ALTER TABLE app.users DROP COLUMN IF EXISTS country", dbname=SOURCE_DB)
        source.execute("DELETE FROM app.users WHERE id = 1001", dbname=SOURCE_DB)
        source.execute("DROP TABLE IF EXISTS app.new_table", dbname=SOURCE_DB)


def test_a_wrong_password_fails_the_server_task_with_the_remote_message(
    airflow_db, pair, server_name, monkeypatch, capfd
):
    secret = "Definitely-Wrong-Pw-31"
    monkeypatch.setenv("AIRFLOW_CONN_FDW_SOURCE", fdw_connection(pair, password=secret))
    with dag("wrong_password") as d:
        CreateForeignServerOperator(task_id="server", server_name=server_name, fdw_conn_id="fdw_source")
    result = run_dag(d)
    assert result.state == "failed" and result.task_states["server"] == "failed"
    out, err = capfd.readouterr()
    assert "password authentication failed" in out + err
    assert secret not in out + err


@pytest.fixture
def views_schema(target, local_schema):
    """base (unique id) <- plain view <- derived; plus a view with no unique index."""
    s = local_schema
    for statement in [
        "CREATE SCHEMA {s}",
        "CREATE TABLE {s}.src (id int PRIMARY KEY, v int)",
        "INSERT INTO {s}.src SELECT g, g % 10 FROM generate_series(1, 2000) g",
        "CREATE MATERIALIZED VIEW {s}.base AS SELECT id, v FROM {s}.src",
        "CREATE UNIQUE INDEX ON {s}.base (id)",
        "CREATE VIEW {s}.base_view AS SELECT v FROM {s}.base",
        "CREATE MATERIALIZED VIEW {s}.derived AS SELECT v, count(*) AS n FROM {s}.base_view GROUP BY v",
        "CREATE MATERIALIZED VIEW {s}.no_key AS SELECT v FROM {s}.src",
    ]:
        target.execute(sql.SQL(statement).format(s=ident(s)), dbname=TARGET_DB)
    return s


def test_views_refresh_in_dependency_order_whatever_order_they_are_listed(airflow_db, target, views_schema):
    s = views_schema
    target.execute(
        sql.SQL("INSERT INTO {}.src SELECT g, 99 FROM generate_series(2001, 2100) g").format(ident(s)),
        dbname=TARGET_DB,
    )
    with dag("matview_order") as d:
        RefreshMaterializedViewOperator(task_id="refresh", views=[f"{s}.derived", f"{s}.no_key", f"{s}.base"])
    result = run_dag(d)
    assert result.state == "success", result.task_states
    order = [r["view"] for r in result.xcom["refresh"]]
    assert order.index(f"{s}.base") < order.index(f"{s}.derived")
    by_view = {r["view"]: r for r in result.xcom["refresh"]}
    assert by_view[f"{s}.base"]["concurrently"] is True
    assert by_view[f"{s}.no_key"]["concurrently"] is False  # auto: no unique index
    assert by_view[f"{s}.base"]["rows_before"] == 2000 and by_view[f"{s}.base"]["rows_after"] == 2100
    # derived was refreshed after base, so it sees base's new rows
    assert target.execute(
        sql.SQL("SELECT n FROM {} WHERE v = 99").format(ident(s, "derived")), dbname=TARGET_DB
    ) == [(100,)]


def test_concurrently_true_explains_why_it_cannot(airflow_db, views_schema):
    with dag("matview_forced") as d:
        RefreshMaterializedViewOperator(task_id="refresh", views=f"{views_schema}.no_key", concurrently=True)
    result = run_dag(d)
    assert result.state == "failed"
    from airflow_provider_fdw.hooks.fdw import FdwHook

    with FdwHook() as hook, pytest.raises(FdwConfigError, match="no valid UNIQUE index"):
        hook.refresh_materialized_views(f"{views_schema}.no_key", concurrently=True)


def test_lock_timeout_fails_fast_and_keeps_old_contents(target, views_schema):
    from airflow_provider_fdw.exceptions import FdwError
    from airflow_provider_fdw.hooks.fdw import FdwHook

    s = views_schema
    blocker = target.connect(TARGET_DB, autocommit=False)
    try:
        # An uncommitted refresh holds the view's ACCESS EXCLUSIVE lock (LOCK TABLE refuses matviews).
        blocker.cursor().execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(ident(s, "no_key")))
        started = time.monotonic()
        with FdwHook() as hook, pytest.raises(FdwError, match=r"previous contents are intact.*lock timeout"):
            hook.refresh_materialized_views(f"{s}.no_key", lock_timeout="300ms")
        assert time.monotonic() - started < 20
    finally:
        blocker.rollback()
        blocker.close()
    assert target.execute(
        sql.SQL("SELECT count(*) FROM {}").format(ident(s, "no_key")), dbname=TARGET_DB
    ) == [(2000,)]


def test_readers_never_see_an_empty_view_during_a_concurrent_refresh(target, views_schema):
    from airflow_provider_fdw.hooks.fdw import FdwHook

    s = views_schema
    target.execute(
        sql.SQL("INSERT INTO {}.src SELECT g, g % 10 FROM generate_series(2001, 200000) g").format(ident(s)),
        dbname=TARGET_DB,
    )
    seen: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def reader():
        conn = target.connect(TARGET_DB)
        try:
            while not stop.is_set():
                try:
                    cur = conn.cursor()
                    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(s, "base")))
                    seen.append(cur.fetchone()[0])
                except Exception as exc:
                    errors.append(str(exc))
        finally:
            conn.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        with FdwHook() as hook:
            for _ in range(3):
                (result,) = hook.refresh_materialized_views(f"{s}.base", concurrently=True)
                assert result["concurrently"] is True
    finally:
        stop.set()
        thread.join(30)
    assert errors == []
    assert len(seen) > 10
    assert set(seen) <= {2000, 200000} and 0 not in seen
    assert seen[-1] == 200000


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CreateForeignServerOperator(task_id="t", server_name="", fdw_conn_id="c"), "server_name"),
        (
            lambda: CreateForeignServerOperator(
                task_id="t", server_name="s", fdw_conn_id="c", options={"nope": 1}
            ),
            "'nope' is not a postgres_fdw server option",
        ),
        (
            lambda: CreateForeignServerOperator(
                task_id="t", server_name="s", fdw_conn_id="c", user_mappings=[""]
            ),
            "local_user",
        ),
        (
            lambda: ImportForeignSchemaOperator(
                task_id="t",
                server_name="s",
                remote_schema="a",
                local_schema="b",
                limit_to=["x"],
                exclude=["y"],
            ),
            "either limit_to or exclude",
        ),
        (lambda: RefreshMaterializedViewOperator(task_id="t", views="no_schema"), "must be schema-qualified"),
        (
            lambda: RefreshMaterializedViewOperator(task_id="t", views=["a.b", "c.d"], query="SELECT 1"),
            "exactly one name",
        ),
        (
            lambda: RefreshMaterializedViewOperator(task_id="t", views="a.b", unique_key="id"),
            "pass query too",
        ),
        (
            lambda: RefreshMaterializedViewOperator(task_id="t", views="a.b", concurrently="sometimes"),
            "concurrently must be",
        ),
        (
            lambda: RefreshMaterializedViewOperator(task_id="t", views="a.b", lock_timeout="soon"),
            "lock_timeout",
        ),
        (
            lambda: RefreshMaterializedViewOperator(
                task_id="t", views="a.b", query="SELECT 1", indexes=[{"cols": ["x"]}]
            ),
            "Unknown index key",
        ),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(make, message):
    with dag("bad_args"), pytest.raises(FdwConfigError, match=message):
        make()


def test_templated_arguments_are_validated_at_run_time_not_parse_time():
    with dag("templated"):
        op = ImportForeignSchemaOperator(
            task_id="t", server_name="{{ params.server }}", remote_schema="app", local_schema="p"
        )
    op.server_name = ""
    with pytest.raises(FdwConfigError, match="server_name"):
        op.execute({})


def test_import_declares_asset_outlets_for_a_static_table_list():
    with dag("assets"):
        op = ImportForeignSchemaOperator(
            task_id="t",
            server_name="s",
            remote_schema="app",
            local_schema="proxy",
            limit_to=["users", "orders"],
        )
    assert [a.uri for a in op.outlets] == [
        "x-postgres://postgres_default/proxy/users",
        "x-postgres://postgres_default/proxy/orders",
    ]
