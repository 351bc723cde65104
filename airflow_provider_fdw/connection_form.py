"""The ``postgres_fdw`` connection form: its field table, read by ``get_provider_info()``.

Plain data and the standard library only: Airflow's provider discovery calls ``get_provider_info()``
while Airflow itself is still being imported, so nothing here may import Airflow (or a module that
does). ``connection.py`` validates connections against the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONN_TYPE = "postgres_fdw"
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class ExtraField:
    """One FDW field of the connection form, stored in the connection's extra."""

    name: str
    label: str
    kind: type
    description: str
    minimum: int | None = None
    choices: tuple[str, ...] | None = None

    def json_schema(self) -> dict[str, Any]:
        json_type = {int: "integer", bool: "boolean", str: "string"}[self.kind]
        schema: dict[str, Any] = {"type": [json_type, "null"]}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.choices:
            schema["enum"] = [*self.choices, None]
        return schema


EXTRA_FIELDS: tuple[ExtraField, ...] = (
    ExtraField("fetch_size", "Fetch size", int, "Rows per remote fetch (postgres_fdw default 100).", 1),
    ExtraField("batch_size", "Batch size", int, "Rows per remote INSERT batch (default 1).", 1),
    ExtraField("sslmode", "SSL mode", str, "libpq sslmode used by the server.", choices=SSLMODES),
    ExtraField("use_remote_estimate", "Use remote estimate", bool, "Ask the remote for cost estimates."),
    ExtraField("keep_connections", "Keep connections", bool, "Keep remote sessions open between queries."),
    ExtraField("extensions", "Extensions", str, "Comma-separated extensions shipped with the remote."),
    ExtraField("updatable", "Updatable", bool, "Allow INSERT/UPDATE/DELETE on the foreign tables."),
    ExtraField("server_options", "Other server options (JSON)", str, 'e.g. {"connect_timeout": 5}.'),
)


def conn_fields() -> dict[str, dict[str, Any]]:
    """The ``conn-fields`` entry of the provider info (Airflow 3.2+ declarative connection form)."""
    return {
        f.name: {"label": f.label, "schema": f.json_schema(), "description": f.description}
        for f in EXTRA_FIELDS
    }


UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["extra"],
    "relabeling": {"schema": "Database", "login": "Remote user"},
    "placeholders": {
        "host": "remote host as seen from the LOCAL PostgreSQL server",
        "port": "5432",
        "schema": "remote database name",
        "login": "least-privileged remote role",
        "fetch_size": "10000",
        "sslmode": "require",
        "extensions": "vector,pg_trgm",
        "server_options": '{"connect_timeout": "10"}',
    },
}
