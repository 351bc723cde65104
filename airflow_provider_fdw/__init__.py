"""Apache Airflow provider for PostgreSQL foreign data wrappers (postgres_fdw)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

PACKAGE_NAME = "airflow-provider-fdw"
INTEGRATION = "PostgreSQL Foreign Data Wrappers"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""
    from airflow_provider_fdw.connection_form import CONNECTION_TYPES

    return {
        "package-name": PACKAGE_NAME,
        "name": "PostgreSQL Foreign Data Wrappers (postgres_fdw)",
        "description": "Create postgres_fdw servers and user mappings from Airflow connections, import "
        "foreign schemas, bulk-copy tables, refresh materialized views and wait for replication.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://www.postgresql.org/docs/current/postgres-fdw.html",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "airflow_provider_fdw.hooks.fdw",
                    *(t.hook_module for t in CONNECTION_TYPES),
                ],
            }
        ],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "airflow_provider_fdw.operators.server",
                    "airflow_provider_fdw.operators.schema",
                    "airflow_provider_fdw.operators.matview",
                    "airflow_provider_fdw.operators.copy",
                    "airflow_provider_fdw.operators.embedding",
                ],
            }
        ],
        "sensors": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_fdw.sensors.replication"]}
        ],
        "triggers": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_fdw.triggers.replication"]}
        ],
        "connection-types": [t.provider_info() for t in CONNECTION_TYPES],
    }
