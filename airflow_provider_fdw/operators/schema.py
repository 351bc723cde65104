"""ImportForeignSchemaOperator: (re-)import a remote schema's tables as foreign tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_fdw.assets import table_asset
from airflow_provider_fdw.hooks.reimport import plan_import
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.operators.base import FdwBaseOperator, is_templated


class ImportForeignSchemaOperator(FdwBaseOperator):
    """Import (or atomically re-import) a remote schema into a local "proxy" schema.

    The local schema is created if needed. With ``replace`` the foreign tables previously imported
    from the same remote schema are dropped and re-imported in one transaction, so remote changes
    (a new column, a new or dropped table) are picked up and concurrent queries never find a table
    missing. When ``limit_to`` is given without templates, each table is declared as an Airflow
    ``Asset`` outlet (``x-postgres://<postgres_conn_id>/<local_schema>/<table>``).

    :param server_name: the foreign server (see CreateForeignServerOperator). (templated)
    :param remote_schema: schema on the remote database. (templated)
    :param local_schema: schema in the local database that receives the foreign tables. (templated)
    :param postgres_conn_id: the ``postgres`` connection of the local database. (templated)
    :param limit_to: import only these tables. (templated)
    :param exclude: import all but these tables. (templated)
    :param import_options: ``import_collate``, ``import_default``, ``import_generated``, ``import_not_null``.
    :param replace: drop and re-import previously imported tables (default); else only add missing ones.
    :param analyze: run ``ANALYZE`` on the imported foreign tables so the planner has statistics.
    :return: ``{"server", "remote_schema", "local_schema", "tables": [...], "analyzed": bool}``.
    """

    template_fields: Sequence[str] = (
        "server_name",
        "remote_schema",
        "local_schema",
        "postgres_conn_id",
        "limit_to",
        "exclude",
    )
    ui_color = "#d6e4f0"

    def __init__(
        self,
        *,
        server_name: str,
        remote_schema: str,
        local_schema: str,
        limit_to: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        import_options: Mapping[str, Any] | None = None,
        replace: bool = True,
        analyze: bool = False,
        **kwargs: Any,
    ) -> None:
        if limit_to and "outlets" not in kwargs and not is_templated([local_schema, *limit_to]):
            conn_id = kwargs.get("postgres_conn_id", "postgres_default")
            if not is_templated(conn_id) and not isinstance(limit_to, str):
                kwargs["outlets"] = [table_asset(conn_id, local_schema, t) for t in limit_to]
        super().__init__(**kwargs)
        self.server_name = server_name
        self.remote_schema = remote_schema
        self.local_schema = local_schema
        self.limit_to = limit_to
        self.exclude = exclude
        self.import_options = dict(import_options) if import_options else None
        self.replace = replace
        self.analyze = analyze
        self.validate_if_static(server_name, remote_schema, local_schema, limit_to, exclude)

    def validate(self) -> None:
        plan_import(
            self.server_name,
            self.remote_schema,
            self.local_schema,
            self.limit_to,
            self.exclude,
            self.import_options,
            self.replace,
        )

    def execute(self, context: Any) -> dict[str, Any]:
        # import_foreign_schema validates every argument (templated ones rendered now) before any SQL.
        with self.get_hook() as hook:
            tables = hook.import_foreign_schema(
                self.server_name,
                self.remote_schema,
                self.local_schema,
                self.limit_to,
                self.exclude,
                self.import_options,
                self.replace,
            )
            if self.analyze:
                hook.analyze_tables([QualifiedName(self.local_schema, t) for t in tables])
        self.log.info("Imported %d foreign tables into %r: %s", len(tables), self.local_schema, tables)
        return {
            "server": self.server_name,
            "remote_schema": self.remote_schema,
            "local_schema": self.local_schema,
            "tables": tables,
            "analyzed": self.analyze,
        }

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the imported REMOTE tables in, the local foreign tables standing for them out."""
        from dataclasses import replace

        from airflow_provider_fdw.lineage import (
            datasets_of,
            foreign_tables_of,
            local_namespace,
            operator_lineage,
        )

        with self.get_hook() as hook:
            tables = foreign_tables_of(hook.session, self.server_name, self.local_schema)
            inputs = [datasets_of(hook, [table]) for table in tables]
            ns, db = local_namespace(hook.connection), hook.connection.schema or "postgres"
        outputs = [
            replace(remote, namespace=ns, name=f"{db}.{table.schema}.{table.name}", foreign=False)
            for table, found in zip(tables, inputs, strict=True)
            for remote in found
        ]
        inputs = [remote for found in inputs for remote in found]
        return operator_lineage(inputs, outputs, column_lineage=True)

    def get_openlineage_facets_on_start(self) -> Any:
        """OpenLineage as the task starts: the datasets of the on-complete lineage, without statistics."""
        from airflow_provider_fdw.lineage import on_start

        return on_start(self.get_openlineage_facets_on_complete(None))
