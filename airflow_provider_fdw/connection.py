"""The ``postgres_fdw`` connection type: its form fields, and how a connection becomes server options.

This module is the only place that parses the remote connection. The same field table feeds the
connection form (``conn-fields`` in ``get_provider_info()``) and the validation, so the UI and the
operators cannot disagree on names or types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The form's field table lives in a module free of Airflow imports: get_provider_info() reads it while
# Airflow itself is still importing (importing exceptions below starts Airflow's provider discovery).
from airflow_provider_fdw.connection_form import (
    CONN_TYPE,
    EXTRA_FIELDS,
    ExtraField,
)
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.validation import check_option

# Options a postgres_fdw server accepts (libpq keywords plus postgres_fdw's own, PostgreSQL 13-17).
# user/password live in the user mapping; client_encoding and fallback_application_name are managed
# by postgres_fdw itself.
LIBPQ_SERVER_OPTIONS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "passfile",
        "channel_binding",
        "connect_timeout",
        "options",
        "application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "gssencmode",
        "sslmode",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "krbsrvname",
        "gsslib",
        "gssdelegation",
        "target_session_attrs",
        "load_balance_hosts",
        "require_auth",
        "service",
        "sslnegotiation",
    }
)
FDW_SERVER_OPTIONS = frozenset(
    {
        "use_remote_estimate",
        "fdw_startup_cost",
        "fdw_tuple_cost",
        "extensions",
        "fetch_size",
        "batch_size",
        "updatable",
        "truncatable",
        "async_capable",
        "parallel_commit",
        "parallel_abort",
        "keep_connections",
        "analyze_sampling",
    }
)
SERVER_OPTIONS = LIBPQ_SERVER_OPTIONS | FDW_SERVER_OPTIONS
USER_MAPPING_ONLY = frozenset({"user", "password", "sslpassword", "password_required"})
MANAGED_BY_FDW = frozenset({"client_encoding", "fallback_application_name"})


_FIELDS_BY_NAME = {f.name: f for f in EXTRA_FIELDS}
_PREFIX = f"extra__{CONN_TYPE}__"


@dataclass(frozen=True)
class RemoteServer:
    """What a ``postgres_fdw`` connection says about the remote server (password never in repr)."""

    server_options: dict[str, str]
    user: str | None
    password: str | None = field(default=None, repr=False)

    def libpq_params(self) -> dict[str, Any]:
        """Arguments for reaching the remote from Airflow: its libpq server options + login."""
        args: dict[str, Any] = {k: v for k, v in self.server_options.items() if k in LIBPQ_SERVER_OPTIONS}
        return {**args, "user": self.user, "password": self.password}

    def user_mapping_options(self) -> dict[str, str]:
        options = {"user": self.user} if self.user else {}
        if self.password:
            options["password"] = self.password
        return options


def remote_server_from_connection(conn: Any) -> RemoteServer:
    """Validate a ``postgres_fdw`` connection and turn it into server and user-mapping options.

    :raises FdwConfigError: naming the connection and the offending field, before any SQL runs.
    """
    conn_id = getattr(conn, "conn_id", None) or "<unnamed>"
    if not conn.host:
        raise FdwConfigError(f"Connection {conn_id!r}: host is required (the remote server's address).")
    options: dict[str, str] = {"host": str(conn.host)}
    if conn.port:
        options["port"] = str(int(conn.port))
    if conn.schema:
        options["dbname"] = str(conn.schema)
    extras = normalize_extras(conn_id, extra_of(conn_id, conn))
    for name, value in extras.items():
        if name == "server_options":
            continue
        options[name] = render_option_value(value)
    for name, value in extras.get("server_options", {}).items():
        if name in options:
            raise FdwConfigError(
                f"Connection {conn_id!r}: server_options sets {name!r}, which another field already sets."
            )
        options[name] = render_option_value(value)
    # Every value by its documented type (sslmode inside server_options included), before any SQL.
    options = {name: check_option(name, value, f"Connection {conn_id!r}") for name, value in options.items()}
    return RemoteServer(server_options=options, user=conn.login or None, password=conn.password or None)


def normalize_extras(conn_id: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Check every extra key and value; return typed values (``server_options`` as a dict)."""
    result: dict[str, Any] = {}
    for raw_key, raw_value in extra.items():
        key = raw_key[len(_PREFIX) :] if raw_key.startswith(_PREFIX) else raw_key
        spec = _FIELDS_BY_NAME.get(key)
        if spec is None:
            allowed = ", ".join(sorted(_FIELDS_BY_NAME))
            raise FdwConfigError(f"Connection {conn_id!r}: unknown extra field {key!r}; allowed: {allowed}.")
        if raw_value is None or raw_value == "":
            continue
        if key == "server_options":
            result[key] = validate_server_options(raw_value, f"Connection {conn_id!r}: server_options")
        elif key == "extensions":  # a JSON list is stored as PostgreSQL expects it: a comma list
            result[key] = check_option(key, raw_value, f"Connection {conn_id!r}")
        else:
            result[key] = _coerce(spec, raw_value, f"Connection {conn_id!r}: {key}")
    return result


def validate_server_options(value: Any, where: str) -> dict[str, Any]:
    """Check a mapping of extra server options: known names, scalar values, nothing secret."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise FdwConfigError(f"{where} is not valid JSON ({exc.msg}).") from None
    if not isinstance(value, Mapping):
        raise FdwConfigError(f"{where} must be a JSON object of option names to values.")
    for name, item in value.items():
        if name in USER_MAPPING_ONLY:
            raise FdwConfigError(f"{where}: {name!r} belongs in the user mapping (login/password fields).")
        if name in MANAGED_BY_FDW:
            raise FdwConfigError(f"{where}: {name!r} is set by postgres_fdw itself and cannot be changed.")
        if name not in SERVER_OPTIONS:
            raise FdwConfigError(f"{where}: {name!r} is not a postgres_fdw server option.")
        if not isinstance(item, str | int | float | bool) and name != "extensions":
            raise FdwConfigError(f"{where}: value of {name!r} must be a string, number or boolean.")
    return {name: check_option(name, item, where) for name, item in value.items()}


def render_option_value(value: Any) -> str:
    """Options are stored as text by PostgreSQL; booleans as postgres_fdw spells them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


def _coerce(spec: ExtraField, value: Any, where: str) -> Any:
    if spec.kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise FdwConfigError(f"{where} must be a boolean, got {value!r}.")
    if spec.kind is int:
        if isinstance(value, bool):
            raise FdwConfigError(f"{where} must be an integer, got {value!r}.")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise FdwConfigError(f"{where} must be an integer, got {value!r}.") from None
        if spec.minimum is not None and number < spec.minimum:
            raise FdwConfigError(f"{where} must be at least {spec.minimum}, got {number}.")
        return number
    text = str(value).strip()
    if spec.choices and text not in spec.choices:
        raise FdwConfigError(f"{where} must be one of {', '.join(spec.choices)}; got {value!r}.")
    return text


def extra_of(conn_id: str, conn: Any) -> dict[str, Any]:
    # Airflow's extra_dejson turns malformed JSON into {} (silently losing fields): parse it here.
    raw = getattr(conn, "extra", None)
    if isinstance(raw, str) and raw.strip():
        try:
            extra = json.loads(raw)
        except json.JSONDecodeError:
            raise FdwConfigError(f"Connection {conn_id!r}: extra is not valid JSON.") from None
    elif isinstance(raw, dict):
        extra = raw
    else:
        extra = getattr(conn, "extra_dejson", None) or {}
    if not isinstance(extra, dict):
        raise FdwConfigError(f"Connection {conn_id!r}: extra must be a JSON object.")
    return extra
