"""The main job: an embedded PostgreSQL pair, sample data, and the provider run end to end against it."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="fdw-demo-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow_provider_fdw.testing.pgcluster import local_pair
from airflow_provider_fdw.testing.sample_data import install_sample_data, set_airflow_connections


def main() -> int:
    started = time.monotonic()
    with local_pair() as pair:
        print(f"[demo] PostgreSQL pair up: source port {pair.source.port}, target port {pair.target.port}")
        install_sample_data(pair)
        set_airflow_connections(pair)
        from airflow_provider_fdw.hooks.fdw import FdwHook

        with FdwHook(fdw_conn_id="fdw_source") as hook:
            hook.ensure_extension()
            hook.create_server("production_db")
            hook.create_user_mapping("production_db")
            remote = hook.check_remote("production_db")
            tables = hook.import_foreign_schema("production_db", "app", "production_tables")
        print("[demo] remote reached through the user mapping:", json.dumps(remote))
        print("[demo] foreign tables imported:", ", ".join(tables))
    print(f"[demo] done in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
