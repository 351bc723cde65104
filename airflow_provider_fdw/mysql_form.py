"""The ``mysql_fdw`` connection form: its field table, read by ``get_provider_info()``.

Plain data and the standard library only, like :mod:`airflow_provider_fdw.connection_form` (Airflow's
provider discovery reads it while Airflow itself is importing). Each field is a mysql_fdw server
option of the same name (mysql_fdw 2.8, README "Usage"); :mod:`airflow_provider_fdw.hooks.mysql_fdw`
validates the values with the rules of :data:`airflow_provider_fdw.wrappers.MYSQL_FDW`.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_fdw.connection_form import ExtraField

CONN_TYPE = "mysql_fdw"
HOOK_NAME = "MySQL FDW remote server"
# mysql_fdw's own default, "auto", follows the PostgreSQL server's locale: under C, Latin-1 bytes in
# a UTF-8 database. The provider sets the character set every UTF-8 database can hold instead.
DEFAULT_CHARACTER_SET = "utf8mb4"

EXTRA_FIELDS: tuple[ExtraField, ...] = (
    ExtraField("fetch_size", "Fetch size", int, "Rows per remote fetch (mysql_fdw default 100).", 1),
    ExtraField(
        "character_set",
        "Character set",
        str,
        f"Connection character set (default {DEFAULT_CHARACTER_SET}; 'auto' follows the server locale).",
    ),
    ExtraField("init_command", "Init command", str, "SQL run by MySQL on every new connection."),
    ExtraField(
        "sql_mode", "SQL mode", str, "sql_mode of mysql_fdw's sessions (mysql_fdw default ANSI_QUOTES)."
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


def conn_fields() -> dict[str, dict[str, Any]]:
    """The ``conn-fields`` entry of the provider info (Airflow 3.2+ declarative connection form)."""
    return {
        f.name: {"label": f.label, "schema": f.json_schema(), "description": f.description}
        for f in EXTRA_FIELDS
    }


UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["extra"],
    "relabeling": {"schema": "Default database", "login": "MySQL user"},
    "placeholders": {
        "host": "MySQL host as seen from the LOCAL PostgreSQL server",
        "port": "3306",
        "schema": "database to import from (IMPORT FOREIGN SCHEMA's remote schema)",
        "login": "least-privileged MySQL user",
        "fetch_size": "10000",
        "character_set": DEFAULT_CHARACTER_SET,
        "ssl_ca": "/etc/ssl/mysql/ca.pem",
    },
}


def connection_type() -> dict[str, Any]:
    """The ``connection-types`` entry of the provider info for ``mysql_fdw``."""
    return {
        "hook-class-name": "airflow_provider_fdw.hooks.mysql_fdw.MySqlFdwHook",
        "hook-name": HOOK_NAME,
        "connection-type": CONN_TYPE,
        "conn-fields": conn_fields(),
        "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
    }
