"""CreateForeignServerOperator: the foreign server and its user mappings, from a postgres_fdw connection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_fdw.connection import validate_server_options
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.names import check_identifier, check_role
from airflow_provider_fdw.operators.base import FdwBaseOperator
from airflow_provider_fdw.wrappers import MYSQL_FDW


class CreateForeignServerOperator(FdwBaseOperator):
    """Create or converge a postgres_fdw server and its user mappings, then prove the remote is reachable.

    Runs ``CREATE EXTENSION IF NOT EXISTS postgres_fdw``, creates the server from the connection's
    host/port/database and FDW fields (or converges an existing server's options with
    ``ALTER SERVER … OPTIONS (SET/ADD/DROP …)``), creates or updates each user mapping from the
    connection's login/password (so re-running after a password rotation applies it), and with
    ``check`` reads the remote through the mapping from the LOCAL server. Server, mappings and check
    run in ONE transaction: when the check fails, nothing changed. Idempotent.

    :param server_name: name of the foreign server in the local database. (templated)
    :param fdw_conn_id: the ``postgres_fdw`` or ``mysql_fdw`` connection of the remote database; its
        type picks the wrapper. (templated)
    :param postgres_conn_id: the ``postgres`` connection of the local database. (templated)
    :param user_mappings: local roles to map: ``CURRENT_USER`` (default), ``PUBLIC`` or role names.
        (templated)
    :param options: extra server options overriding the connection's, e.g. ``{"fetch_size": 50000}``.
        (templated)
    :param check: prove that the local server reaches the remote through the mapping.
    :return: ``{"server", "changed", "extension_created", "user_mappings": [{"local_user", "changed"}],
        "remote_version"}`` (no secrets).
    """

    template_fields: Sequence[str] = (
        "server_name",
        "fdw_conn_id",
        "postgres_conn_id",
        "user_mappings",
        "options",
    )
    template_fields_renderers = {"options": "json"}
    ui_color = "#d6e4f0"

    def __init__(
        self,
        *,
        server_name: str,
        fdw_conn_id: str,
        user_mappings: Sequence[str] | str = ("CURRENT_USER",),
        options: Mapping[str, Any] | None = None,
        check: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.server_name = server_name
        self.fdw_conn_id = fdw_conn_id
        self.user_mappings = [user_mappings] if isinstance(user_mappings, str) else list(user_mappings)
        self.options = dict(options) if options else None
        self.check = check
        self.validate_if_static(server_name, self.user_mappings, self.options)

    def validate(self) -> None:
        check_identifier(self.server_name, "server_name")
        check_identifier(self.fdw_conn_id, "fdw_conn_id")
        for role in self.user_mappings:
            check_role(role)
        if self.options:
            # Which wrapper is known only from the connection, read at run time (then checked exactly):
            # here the options must suit postgres_fdw or mysql_fdw.
            try:
                validate_server_options(self.options, "options")
            except FdwConfigError as postgres_error:
                try:
                    MYSQL_FDW.check_server_options(self.options, "options")
                except FdwConfigError as mysql_error:
                    # options only mysql_fdw knows: its message says what is wrong with their values
                    if set(self.options) <= set(MYSQL_FDW.server_options):
                        raise mysql_error from None
                    raise postgres_error from None

    def execute(self, context: Any) -> dict[str, Any]:
        self.validate()
        with self.get_hook(self.fdw_conn_id) as hook:
            # validates the connection's fields and the character set before any change
            hook.server_options(self.options, self.server_name)
            extension_created = hook.ensure_extension()
            # One transaction: a failed check (or any failed step) leaves the server as it was.
            with hook.session.transaction():
                changed = hook.create_server(self.server_name, self.options)
                mappings = [
                    {"local_user": role, "changed": hook.create_user_mapping(self.server_name, role)}
                    for role in self.user_mappings
                ]
                remote = hook.check_remote(self.server_name) if self.check else {}
        summary = {
            "server": self.server_name,
            "changed": changed or extension_created or any(m["changed"] for m in mappings),
            "extension_created": extension_created,
            "user_mappings": mappings,
            "remote_version": remote.get("remote_version"),
        }
        self.log.info("Server %r ready: %s", self.server_name, summary)
        return summary
