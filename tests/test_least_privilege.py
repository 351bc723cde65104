"""The whole flow as a non-superuser LOCAL role holding exactly the grants docs/security.md lists,
against a REMOTE role holding only USAGE/SELECT (and a monitoring role for the sensor)."""

from __future__ import annotations

import datetime
import json
import re
import time
import uuid

import pytest
from conftest import REPO, SOURCE_DB, postgres_connection

from airflow_provider_fdw.compat import sql
from fdw_testing.pgcluster import standby_of

LOCAL_ROLE = "etl_lp"
LOCAL_PASSWORD = "Etl-Secret-51c2"
REMOTE_ROLE = "reader_lp"
REMOTE_PASSWORD = "Remote-Secret-9d41"
MONITOR_ROLE = "monitor_lp"
MONITOR_PASSWORD = "Monitor-Secret-3e77"
DATA_SCHEMA = "etl_data"

DOCS = REPO / "docs" / "security.md"
# The names docs/security.md uses, and the placeholders the test maps them to.
DOC_NAMES = {
    "etl_role": "role",
    "fdw_reader": "role",
    "fdw_monitor": "role",
    "analytics": "db",
    "etl_data": "schema",
}


def documented_grants(first_line: str) -> list[str]:
    """The statements of the sql block in docs/security.md that starts with ``first_line``."""
    text = DOCS.read_text()
    block = text.split(f"```sql\n{first_line}\n", 1)[1].split("```", 1)[0]
    return [line.rstrip(";") for line in block.splitlines() if line.strip() and not line.startswith("--")]


def run_grants(cluster, statements, dbname, **names) -> None:
    """Run documented statements with the doc's names replaced by this test's (as identifiers)."""
    values = {
        k: sql.Literal(v) if k == "password" else sql.Identifier(v) for k, v in names.items() if v is not None
    }
    pattern = r"\b(" + "|".join(DOC_NAMES) + r")\b"
    for statement in statements:
        template = re.sub(pattern, lambda m: "{" + DOC_NAMES[m.group(1)] + "}", statement)
        template = template.replace("'change-me'", "{password}")
        cluster.execute(sql.SQL(template).format(**values), dbname=dbname)


LOCAL_GRANTS = documented_grants("-- local database, as a superuser")
REMOTE_GRANTS = documented_grants("-- remote database, as a superuser")
MONITOR_GRANTS = documented_grants("-- primary and standby (replicated), as a superuser")


@pytest.fixture(scope="module")
def least_privilege(airflow_connections):
    """A fresh local database set up by a DBA with exactly the documented grants; the roles and
    connections: lp_local (the ETL role), lp_remote (postgres_fdw, SELECT-only), lp_primary /
    lp_standby (the monitoring role) and a standby of the source."""
    pair = airflow_connections
    src, tgt = pair.source, pair.target
    db = f"lp_{uuid.uuid4().hex[:8]}"
    tgt.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    run_grants(tgt, LOCAL_GRANTS, db, role=LOCAL_ROLE, password=LOCAL_PASSWORD, db=db, schema=DATA_SCHEMA)
    run_grants(src, REMOTE_GRANTS, SOURCE_DB, role=REMOTE_ROLE, password=REMOTE_PASSWORD)
    run_grants(src, MONITOR_GRANTS, SOURCE_DB, role=MONITOR_ROLE, password=MONITOR_PASSWORD)
    remote = {
        "conn_type": "postgres_fdw",
        "host": src.fdw_host,
        "port": src.fdw_port,
        "schema": SOURCE_DB,
        "login": REMOTE_ROLE,
        "password": REMOTE_PASSWORD,
    }
    with (
        standby_of(src, application_name="lp_standby") as standby,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("AIRFLOW_CONN_LP_LOCAL", postgres_connection(tgt, db, LOCAL_ROLE, LOCAL_PASSWORD))
        mp.setenv("AIRFLOW_CONN_LP_REMOTE", json.dumps(remote))
        mp.setenv(
            "AIRFLOW_CONN_LP_PRIMARY", postgres_connection(src, SOURCE_DB, MONITOR_ROLE, MONITOR_PASSWORD)
        )
        mp.setenv(
            "AIRFLOW_CONN_LP_STANDBY", postgres_connection(standby, SOURCE_DB, MONITOR_ROLE, MONITOR_PASSWORD)
        )
        yield pair, db, standby
    tgt.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))


def flow_dag(dag_id: str):
    """Server, mapping, import, copy, refresh, backfill and sensor: the example DAGs' steps."""
    from airflow.sdk import DAG

    from airflow_provider_fdw.operators.copy import BulkCopyOperator
    from airflow_provider_fdw.operators.embedding import EmbeddingBackfillOperator
    from airflow_provider_fdw.operators.matview import RefreshMaterializedViewOperator
    from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
    from airflow_provider_fdw.operators.server import CreateForeignServerOperator
    from airflow_provider_fdw.sensors.replication import ReplicationLagSensor

    local = {"postgres_conn_id": "lp_local"}
    with DAG(dag_id, schedule=None, start_date=datetime.datetime(2024, 1, 1)) as dag:
        fresh = ReplicationLagSensor(
            task_id="replica_fresh",
            postgres_conn_id="lp_standby",
            primary_conn_id="lp_primary",
            catch_up=True,
            fail_on_broken=True,
            poke_interval=0.5,
            timeout=60,
            deferrable=False,
        )
        server = CreateForeignServerOperator(
            task_id="server", server_name="lp_src", fdw_conn_id="lp_remote", **local
        )
        proxy = ImportForeignSchemaOperator(
            task_id="import", server_name="lp_src", remote_schema="app", local_schema="lp_proxy", **local
        )
        copy_users = BulkCopyOperator(
            task_id="copy_users",
            source_table="lp_proxy.users",
            target_table=f"{DATA_SCHEMA}.users",
            mode="upsert",  # keeps the embedding column the backfill adds
            key_columns=["id"],
            watermark_column="created_at",
            **local,
        )
        copy_orders = BulkCopyOperator(
            task_id="copy_orders",
            source_table="lp_proxy.orders",
            target_table=f"{DATA_SCHEMA}.orders",
            **local,
        )
        # the direct mirror reads the remote's statistics and records them beside the target
        mirror_orders = BulkCopyOperator(
            task_id="mirror_orders",
            source_table="lp_proxy.orders",
            target_table=f"{DATA_SCHEMA}.orders",
            mode="mirror",
            transport="copy",
            fdw_conn_id="lp_remote",
            **local,
        )
        refresh = RefreshMaterializedViewOperator(
            task_id="refresh",
            views="lp_views.user_totals",
            query="SELECT u.id, count(o.id) AS orders FROM etl_data.users u "
            "LEFT JOIN etl_data.orders o ON o.user_id = u.id GROUP BY u.id",
            unique_key="id",
            **local,
        )
        embed = EmbeddingBackfillOperator(
            task_id="embed",
            table=f"{DATA_SCHEMA}.users",
            text_column="email",
            embedder=lambda texts: [[float(len(t)), 1.0] for t in texts],
            dimensions=2,
            **local,
        )
        fresh >> server >> proxy >> [copy_users, copy_orders] >> refresh
        copy_users >> embed
        copy_orders >> mirror_orders
    return dag


def test_the_whole_flow_runs_twice_with_exactly_the_documented_grants(airflow_db, least_privilege):
    from fdw_testing.dagrun import run_dag

    pair, db, _ = least_privilege
    for attempt in (1, 2):
        result = run_dag(flow_dag(f"least_privilege_{db}"))
        assert result.state == "success", (attempt, result.task_states)
        assert result.xcom["import"]["tables"] == ["events", "orders", "users"]
        assert result.xcom["copy_orders"]["rows"] == 5000
        mirrored = result.xcom["mirror_orders"]
        assert (mirrored["path"], mirrored["rows"], mirrored["rows_fetched"]) == ("direct", 5000, 0)
        assert result.xcom["refresh"][0]["rows_after"] == 1000
        assert result.xcom["replica_fresh"]["lag_bytes"] == 0
    assert pair.target.execute(
        "SELECT count(*) FROM etl_data.users WHERE embedding IS NOT NULL", dbname=db
    ) == [(1000,)]
    roles = pair.target.execute(
        "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s", (LOCAL_ROLE,)
    )
    assert roles == [(False, False, False)]


def test_each_missing_grant_fails_its_step_with_the_grant_to_run(least_privilege, source):
    """A role with LOGIN only: each step fails naming the GRANT; after running it, the step passes."""
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_provider_fdw.exceptions import FdwError
    from airflow_provider_fdw.operators.copy import BulkCopyOperator
    from airflow_provider_fdw.operators.schema import ImportForeignSchemaOperator
    from airflow_provider_fdw.operators.server import CreateForeignServerOperator
    from airflow_provider_fdw.sensors.replication import ReplicationLagSensor

    pair, db, standby = least_privilege
    bare = f"bare_{uuid.uuid4().hex[:6]}"
    tgt = pair.target
    run_grants(tgt, ["CREATE ROLE {role} LOGIN PASSWORD {password}"], db, role=bare, password=LOCAL_PASSWORD)
    local = {"postgres_conn_id": "lp_bare"}
    secret_table = f"lp_secret_{uuid.uuid4().hex[:6]}"
    source.execute(
        sql.SQL("CREATE TABLE app.{} AS SELECT 1 AS id").format(sql.Identifier(secret_table)),
        dbname=SOURCE_DB,
    )
    source.execute(  # the documented default privileges granted it: take it back for this check
        sql.SQL("REVOKE SELECT ON app.{} FROM {}").format(
            sql.Identifier(secret_table), sql.Identifier(REMOTE_ROLE)
        ),
        dbname=SOURCE_DB,
    )
    server = CreateForeignServerOperator(
        task_id="server", server_name="bare_src", fdw_conn_id="lp_remote", **local
    )
    proxy = ImportForeignSchemaOperator(
        task_id="import", server_name="bare_src", remote_schema="app", local_schema=f"{bare}_proxy", **local
    )

    def fails_with(operator, *expected: str) -> None:
        with pytest.raises((FdwError, AirflowFailException)) as err:
            operator.execute({})
        for text in expected:
            assert text in str(err.value), str(err.value)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_LP_BARE", postgres_connection(tgt, db, bare, LOCAL_PASSWORD))
        fails_with(server, f"GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO {bare}")
        run_grants(tgt, ["GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO {role}"], db, role=bare)
        server.execute({})

        fails_with(proxy, f"GRANT CREATE ON DATABASE {db} TO {bare}")
        run_grants(tgt, ["GRANT CREATE ON DATABASE {db} TO {role}"], db, role=bare, db=db)
        proxy.execute({})

        copy_public = BulkCopyOperator(
            task_id="copy", source_table=f"{bare}_proxy.users", target_table="public.users", **local
        )
        fails_with(copy_public, f"GRANT CREATE ON SCHEMA public TO {bare}")

        copy_secret = BulkCopyOperator(
            task_id="copy_secret",
            source_table=f"{bare}_proxy.{secret_table}",
            target_table=f"{bare}_proxy.secret_copy",
            **local,
        )
        fails_with(copy_secret, "On the remote server", f"GRANT SELECT ON app.{secret_table} TO")

        # A foreign table the role may not read: the copy reads through a private foreign table (or the
        # remote directly), which would not check the grants on it; the run checks them itself.
        hidden = f"{bare}_hidden"
        tgt.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(hidden)), dbname=db)
        tgt.execute(
            sql.SQL(
                "CREATE FOREIGN TABLE {}.users (id bigint, email text) SERVER bare_src "
                "OPTIONS (schema_name 'app', table_name 'users')"
            ).format(sql.Identifier(hidden)),
            dbname=db,
        )

        def copy_hidden(path: str, **kwargs) -> BulkCopyOperator:
            return BulkCopyOperator(
                task_id=f"copy_hidden_{path}",
                source_table=f"{hidden}.users",
                target_table=f"{bare}_proxy.hidden_copy_{path}",
                fdw_conn_id="lp_remote" if path == "direct" else None,
                transport="copy" if path == "direct" else "fdw",
                columns=["id"],
                **kwargs,
                **local,
            )

        def refused(expected: str, **kwargs) -> None:
            for path in ("fdw", "direct"):
                fails_with(copy_hidden(path, **kwargs), expected)
                assert not tgt.execute(  # refused before anything was created
                    "SELECT relname FROM pg_class WHERE relname LIKE %s",
                    (f"hidden_copy_{path}%",),
                    dbname=db,
                )

        refused(f"GRANT USAGE ON SCHEMA {hidden} TO {bare}")
        tgt.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(hidden), sql.Identifier(bare)),
            dbname=db,
        )
        refused(f"GRANT SELECT (id) ON {hidden}.users TO {bare}")
        tgt.execute(
            sql.SQL("GRANT SELECT (id) ON {}.users TO {}").format(
                sql.Identifier(hidden), sql.Identifier(bare)
            ),
            dbname=db,
        )
        # a condition on a column it may not read would tell it that column's values
        refused(f"GRANT SELECT (…) ON {hidden}.users TO {bare}", where="email > 'u'")
        for path in ("fdw", "direct"):
            result = copy_hidden(path, where="id <= 10").execute({})
            assert (result["rows"], result["path"]) == (10, path)

    sensor = ReplicationLagSensor(
        task_id="lag",
        postgres_conn_id="lp_bare_standby",
        primary_conn_id="lp_primary",
        catch_up=True,
        fail_on_broken=True,
        deferrable=False,
    )
    run_grants(
        source,
        ["CREATE ROLE {role} LOGIN PASSWORD {password}"],
        SOURCE_DB,
        role=bare,
        password=LOCAL_PASSWORD,
    )
    deadline = time.monotonic() + 60
    while not standby.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (bare,)):  # replayed yet?
        assert time.monotonic() < deadline, "the standby did not replay the new role"
        time.sleep(0.1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(
            "AIRFLOW_CONN_LP_BARE_STANDBY", postgres_connection(standby, SOURCE_DB, bare, LOCAL_PASSWORD)
        )
        sensor.target_lsn = sensor._start_lsn({})
        with pytest.raises(AirflowFailException, match=f"GRANT pg_monitor TO {bare}"):
            sensor.poke({})
    source.execute(sql.SQL("DROP TABLE app.{}").format(sql.Identifier(secret_table)), dbname=SOURCE_DB)


@pytest.mark.parametrize(
    ("step", "message", "context", "expected"),
    [
        (
            "create schema 'p'",
            "permission denied for database analytics",
            "",
            "GRANT CREATE ON DATABASE analytics TO etl",
        ),
        ("create staging", "permission denied for schema public", "", "GRANT CREATE ON SCHEMA public TO etl"),
        ("read batch", "permission denied for schema app", "", "GRANT USAGE ON SCHEMA app TO etl"),
        (
            "create server 's'",
            "permission denied for foreign-data wrapper postgres_fdw",
            "",
            "GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO etl",
        ),
        (
            "import",
            "permission denied for foreign server src",
            "",
            "GRANT USAGE ON FOREIGN SERVER src TO etl",
        ),
        (
            "write batch",
            "permission denied for table docs",
            "",
            "ON docs TO etl, or run the task as the table's owner",
        ),
        (
            "refresh s.v",
            "must be owner of materialized view v",
            "",
            "ALTER MATERIALIZED VIEW v OWNER TO etl",
        ),
        (
            "write s.t",
            "permission denied for table product_embeddings",
            "remote SQL command: INSERT INTO catalog.product_embeddings(id) VALUES ($1)",
            "On the remote server, grant the user mapping's role what this step needs: "
            "GRANT INSERT ON catalog.product_embeddings TO reader",
        ),
        (
            "ensure extension",
            'permission denied to create extension "postgres_fdw"',
            "",
            "A superuser must run",
        ),
    ],
)
def test_each_permission_error_names_the_grant(step, message, context, expected):
    from airflow_provider_fdw.privileges import privilege_hint

    assert expected in privilege_hint(step, message, "etl", context, "reader")
