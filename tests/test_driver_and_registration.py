"""Both drivers PostgresHook may hand out, and registration with Airflow's ProvidersManager."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO, python_json

PSYCOPG2_FLOW = textwrap.dedent(
    """
    import json, sys
    sys.modules["psycopg"] = None  # as on an install without psycopg 3: PostgresHook uses psycopg2
    from airflow_provider_fdw.compat import USE_PSYCOPG3, sql
    from airflow_provider_fdw.hooks.fdw import FdwHook
    server, schema = sys.argv[1], sys.argv[2]
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        conn_module = type(hook.session.conn).__module__
        hook.ensure_extension()
        created = hook.create_server(server, options={"connect_timeout": 5})
        again = hook.create_server(server, options={"connect_timeout": 5})
        mapped = hook.create_user_mapping(server)
        tables = hook.import_foreign_schema(server, "app", schema, limit_to=["users", "orders"])
        remote = hook.check_remote(server)
        with hook.session.transaction() as s:
            users = sql.Identifier(schema, "users")
            count = s.fetchone("count", sql.SQL("SELECT count(*) FROM {}").format(users))[0]
        dropped = hook.drop_server(server, cascade=True)
    print(json.dumps({"psycopg3": USE_PSYCOPG3, "module": conn_module, "created": created, "again": again,
                      "mapped": mapped, "tables": tables, "version": remote["remote_version_num"],
                      "count": count, "dropped": dropped}))
    """
)


def test_the_whole_hook_flow_works_on_psycopg2(airflow_connections, server_name, local_schema):
    result = python_json(PSYCOPG2_FLOW, server_name, local_schema)
    assert result["psycopg3"] is False and result["module"].startswith("psycopg2")
    assert result["created"] is True and result["again"] is False and result["mapped"] is True
    assert result["tables"] == ["orders", "users"] and result["count"] == 1000
    assert result["version"] >= 130000 and result["dropped"] is True


def airflow_cli(*args: str) -> subprocess.CompletedProcess:
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    return subprocess.run(
        [airflow, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=os.environ.copy(),
        cwd=REPO,
    )


def test_airflow_providers_list_and_get_show_the_provider():
    listed = airflow_cli("providers", "list", "--output", "json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    packages = {p["package_name"]: p for p in json.loads(listed.stdout[listed.stdout.index("[{") :])}
    assert "airflow-provider-fdw" in packages
    details = airflow_cli("providers", "get", "airflow-provider-fdw", "--full", "--output", "json")
    assert details.returncode == 0, details.stderr[-2000:]
    assert "postgres_fdw" in details.stdout and "PostgresFdwHook" in details.stdout


def test_connection_type_is_registered_with_its_fields():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    hook = manager.hooks["postgres_fdw"]
    assert hook.hook_class_name == "airflow_provider_fdw.hooks.postgres_fdw.PostgresFdwHook"
    assert hook.connection_id_attribute_name == "fdw_conn_id"
    widgets = manager.connection_form_widgets
    assert widgets["extra__postgres_fdw__fetch_size"].field["schema"]["title"] == "Fetch size"
    assert manager.field_behaviours["postgres_fdw"]["relabeling"]["schema"] == "Database"
