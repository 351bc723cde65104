"""The provider's connection types and their forms, read by ``get_provider_info()``.

Plain data and the standard library only: Airflow's provider discovery calls ``get_provider_info()``
while Airflow itself is still being imported, so nothing here may import Airflow (or a module that
does). ``connection.py`` validates connections against the same field table.

A connection type is one :class:`ConnectionType`: its hook (``hooks/<conn_type>.py``, with
``conn_name_attr = "fdw_conn_id"``), its form fields and UI behaviour. Another wrapper's type is one
more entry in :data:`CONNECTION_TYPES`.
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


def conn_fields(fields: tuple[ExtraField, ...] = EXTRA_FIELDS) -> dict[str, dict[str, Any]]:
    """The ``conn-fields`` entry of the provider info (Airflow 3.2+ declarative connection form)."""
    return {
        f.name: {"label": f.label, "schema": f.json_schema(), "description": f.description} for f in fields
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


@dataclass(frozen=True)
class ConnectionType:
    """One connection type the provider registers: its hook and its form."""

    conn_type: str
    hook_name: str
    hook_module: str
    hook_class: str
    fields: tuple[ExtraField, ...]
    ui_field_behaviour: dict[str, Any]

    @property
    def hook_class_name(self) -> str:
        return f"{self.hook_module}.{self.hook_class}"

    def provider_info(self) -> dict[str, Any]:
        """The ``connection-types`` entry of ``get_provider_info()``."""
        return {
            "hook-class-name": self.hook_class_name,
            "hook-name": self.hook_name,
            "connection-type": self.conn_type,
            "conn-fields": conn_fields(self.fields),
            "ui-field-behaviour": self.ui_field_behaviour,
        }


POSTGRES_FDW = ConnectionType(
    conn_type=CONN_TYPE,
    hook_name="Postgres FDW remote server",
    hook_module="airflow_provider_fdw.hooks.postgres_fdw",
    hook_class="PostgresFdwHook",
    fields=EXTRA_FIELDS,
    ui_field_behaviour=UI_FIELD_BEHAVIOUR,
)


# -- mysql_fdw: each field is the mysql_fdw server option of the same name (mysql_fdw 2.8, README "Usage");
# hooks/mysql_fdw.py validates the values with the rules of wrappers.MYSQL_FDW.

MYSQL_CONN_TYPE = "mysql_fdw"
MYSQL_HOOK_NAME = "MySQL FDW remote server"
# MySQL shows a TIMESTAMP column in the session time zone (the server's default when nothing sets
# it): with a zone that has daylight saving time the hour of a fall-back repeats, and a change of the
# server's zone shifts every value, so a watermark on such a column skips rows. mysql_fdw's sessions
# read in UTC instead, as postgres_fdw's remote sessions do (a connection's own init_command wins).
# A read waits for a table's metadata lock (LOCK TABLES, a pending ALTER) up to lock_wait_timeout, a
# day by default, inside the client library, where the local backend cannot be cancelled: 300 s, as
# long as a copy waits for another copy of its target.
DEFAULT_INIT_COMMAND = "SET time_zone = '+00:00', lock_wait_timeout = 300"

MYSQL_EXTRA_FIELDS: tuple[ExtraField, ...] = (
    ExtraField("fetch_size", "Fetch size", int, "Rows per remote fetch (mysql_fdw default 100).", 1),
    ExtraField(
        "character_set",
        "Character set",
        str,
        "MySQL connection character set: empty for the one of the local database's encoding (utf8mb4 "
        "for UTF8); mysql_fdw stores MySQL's bytes unconverted, so another one is refused.",
    ),
    ExtraField(
        "init_command",
        "Init command",
        str,
        f"SQL run by MySQL on every new connection (default {DEFAULT_INIT_COMMAND}: TIMESTAMP values in "
        "UTC, lock waits bounded; keep both in your own).",
    ),
    ExtraField(
        "sql_mode",
        "SQL mode",
        str,
        "sql_mode of mysql_fdw's sessions (mysql_fdw default ANSI_QUOTES; NO_BACKSLASH_ESCAPES and "
        "EMPTY_STRING_IS_NULL are refused: they change what the string constants mysql_fdw sends mean).",
    ),
    ExtraField("ssl_ca", "SSL CA file", str, "Path of the CA certificate, on the LOCAL database server."),
    ExtraField("ssl_capath", "SSL CA directory", str, "Directory of trusted CA certificates (local server)."),
    ExtraField("ssl_cert", "SSL client certificate", str, "Path of the client certificate (local server)."),
    ExtraField("ssl_key", "SSL client key", str, "Path of the client private key (local server)."),
    ExtraField("ssl_cipher", "SSL ciphers", str, "Permissible ciphers for SSL."),
    ExtraField("secure_auth", "Secure auth", bool, "Refuse the pre-4.1 password protocol (default true)."),
    ExtraField(
        "reconnect", "Reconnect", bool, "Reconnect when the connection to MySQL is lost (default false)."
    ),
    ExtraField("use_remote_estimate", "Use remote estimate", bool, "Ask MySQL (EXPLAIN) for cost estimates."),
)


MYSQL_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["extra"],
    "relabeling": {"schema": "Default database", "login": "MySQL user"},
    "placeholders": {
        "host": "MySQL host as seen from the LOCAL PostgreSQL server",
        "port": "3306",
        "schema": "database to import from (IMPORT FOREIGN SCHEMA's remote schema)",
        "login": "least-privileged MySQL user",
        "fetch_size": "10000",
        "character_set": "empty: the local database's (utf8mb4 for UTF8)",
        "init_command": DEFAULT_INIT_COMMAND,
        "ssl_ca": "/etc/ssl/mysql/ca.pem",
    },
}


MYSQL_FDW = ConnectionType(
    conn_type=MYSQL_CONN_TYPE,
    hook_name=MYSQL_HOOK_NAME,
    hook_module="airflow_provider_fdw.hooks.mysql_fdw",
    hook_class="MySqlFdwHook",
    fields=MYSQL_EXTRA_FIELDS,
    ui_field_behaviour=MYSQL_UI_FIELD_BEHAVIOUR,
)

CONNECTION_TYPES: tuple[ConnectionType, ...] = (POSTGRES_FDW, MYSQL_FDW)
