"""CreateFileForeignTableOperator: a file_fdw foreign table over a file on the LOCAL database server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_fdw.file_tables import create_file_table, plan_file_table
from airflow_provider_fdw.operators.base import FdwBaseOperator


class CreateFileForeignTableOperator(FdwBaseOperator):
    """Create or converge a file_fdw server and a foreign table over a file, then read its first row.

    Runs ``CREATE EXTENSION IF NOT EXISTS file_fdw``, creates the server if needed, and creates the
    foreign table (or redefines it when its columns or options differ), all in ONE transaction that
    also reads the file's first row: a missing or unreadable file leaves everything as it was.
    Idempotent. Copy the table with ``BulkCopyOperator`` (``source_table`` = ``table``).

    :param server_name: the file_fdw server in the local database (created if missing). (templated)
    :param table: schema-qualified name of the foreign table. (templated)
    :param columns: ``{"name": "type", ...}`` (or ``[(name, type), ...]``) in the file's column order.
    :param options: file_fdw table options: ``filename`` (a path on the database server) or
        ``program``, and ``format``, ``header``, ``delimiter``, ``quote``, ``escape``, ``null``,
        ``encoding``. (templated) file_fdw maps fields by position: ``header: "match"`` has every read
        check that the header names the columns in order; with ``header: True`` a header naming a
        column at another position is refused here and before each copy (docs/wrappers.md).
        Without ``encoding`` the table gets the local database's encoding: file_fdw would otherwise
        decode the file in each reading session's client_encoding (a role default of WIN1252 reads
        a UTF-8 'café' as 'cafÃ©'). Give it for a file in another encoding.
    :param postgres_conn_id: the ``postgres`` connection of the local database. (templated)
    :return: ``{"server", "table", "changed"}``.
    """

    template_fields: Sequence[str] = ("server_name", "table", "options", "postgres_conn_id")
    template_fields_renderers = {"options": "json"}
    ui_color = "#e4f0d6"

    def __init__(
        self,
        *,
        server_name: str,
        table: str,
        columns: Mapping[str, str] | Sequence[tuple[str, str]],
        options: Mapping[str, Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.server_name = server_name
        self.table = table
        self.columns = dict(columns) if isinstance(columns, Mapping) else [tuple(c) for c in columns]
        self.options = dict(options)
        self.validate_if_static(server_name, table, self.options)

    def validate(self) -> None:
        plan_file_table(self.server_name, self.table, self.columns, self.options)

    def execute(self, context: Any) -> dict[str, Any]:
        plan = plan_file_table(self.server_name, self.table, self.columns, self.options)
        with self.get_hook() as hook:
            summary = create_file_table(hook.session, plan, self.log)
        self.log.info("File foreign table ready: %s", summary)
        return summary
