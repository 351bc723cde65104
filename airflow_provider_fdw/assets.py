"""Airflow Assets for tables this provider produces in the LOCAL database."""

from __future__ import annotations

from urllib.parse import quote

from airflow.sdk import Asset

SCHEME = "x-postgres"  # "x-" marks a custom scheme Airflow leaves as is (no host needed at parse time)


def table_asset(postgres_conn_id: str, schema: str, table: str) -> Asset:
    """The asset of ``schema.table`` in the database of connection ``postgres_conn_id``.

    URI ``x-postgres://<conn_id>/<schema>/<table>`` (parts percent-quoted), name
    ``<conn_id>.<schema>.<table>``: consumer DAGs schedule on it without knowing the database's host.
    """
    parts = [quote(p, safe="") for p in (postgres_conn_id, schema, table)]
    return Asset(
        uri=f"{SCHEME}://{parts[0]}/{parts[1]}/{parts[2]}", name=f"{postgres_conn_id}.{schema}.{table}"
    )
