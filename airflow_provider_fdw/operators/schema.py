"""ImportForeignSchemaOperator: (re-)import a remote schema's tables as foreign tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_fdw.assets import table_asset
from airflow_provider_fdw.operators.base import FdwBaseOperator, is_templated
from airflow_provider_fdw.reimport import plan_import
from airflow_provider_fdw.timeouts import DEFAULT_LOCK_RETRIES


class ImportForeignSchemaOperator(FdwBaseOperator):
    """Import a remote schema into a local "proxy" schema, or converge a previous import to the remote.

    The local schema is created if needed. The import goes into a scratch schema and, in ONE
    transaction, each foreign table previously imported from the same remote schema (within the same
    ``limit_to`` / ``exclude`` selection) is converged to it: new tables are added, changed columns
    altered in place (``ALTER FOREIGN TABLE``), vanished tables dropped, unchanged tables left alone.
    Previously imported means exactly like an import: same server, remote schema, and a local name
    equal to the remote table's; other foreign tables in ``local_schema`` are never altered or dropped.
    Nothing is dropped and re-created, so views and materialized views built on the foreign tables keep
    working and concurrent queries never find a table missing. When ``limit_to`` is given without
    templates, each table is declared as an Airflow ``Asset`` outlet
    (``x-postgres://<postgres_conn_id>/<local_schema>/<table>``).

    :param server_name: the foreign server (see CreateForeignServerOperator). (templated)
    :param remote_schema: schema on the remote database. (templated)
    :param local_schema: schema in the local database that receives the foreign tables. (templated)
    :param postgres_conn_id: the ``postgres`` connection of the local database. (templated)
    :param limit_to: import only these tables. (templated)
    :param exclude: import all but these tables. (templated)
    :param import_options: ``import_collate``, ``import_default``, ``import_generated``, ``import_not_null``.
    :param replace: converge previously imported tables to the remote definitions (default); else only
        import the tables not yet present and leave the others as they are.
    :param analyze: run ``ANALYZE`` on the imported foreign tables so the planner has statistics.
    :param lock_timeout: bound on each attempt to take the lock of a table the re-import alters or
        drops (seconds or ``"5s"``; default 1 s, raised above the server's ``deadlock_timeout``, as for
        BulkCopyOperator): a long reader then delays new readers by at most this long.
    :param lock_retries: attempts (default 30, with a short pause between them) before the import
        fails naming the table and who holds it, having changed nothing.
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
    planner = staticmethod(plan_import)

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
        lock_timeout: float | str | None = None,
        lock_retries: int = DEFAULT_LOCK_RETRIES,
        **kwargs: Any,
    ) -> None:
        if limit_to and "outlets" not in kwargs and not is_templated([local_schema, *limit_to]):
            conn_id = kwargs.get("postgres_conn_id", "postgres_default")
            if not is_templated(conn_id) and not isinstance(limit_to, str):
                kwargs["outlets"] = [table_asset(conn_id, local_schema, t) for t in limit_to]
        super().__init__(**kwargs)
        self.keep_plan_arguments(locals())
        self.validate_if_static(server_name, remote_schema, local_schema, limit_to, exclude)

    def execute(self, context: Any) -> dict[str, Any]:
        plan = self.plan()  # every argument checked (templated ones rendered now) before any SQL
        with self.get_hook() as hook:
            tables = hook.import_foreign_schema(plan)
        self.log.info("Imported %d foreign tables into %r: %s", len(tables), plan.local_schema, tables)
        return {
            "server": plan.server_name,
            "remote_schema": plan.remote_schema,
            "local_schema": plan.local_schema,
            "tables": tables,
            "analyzed": plan.analyze,
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

        plan = self.plan()
        with self.get_hook() as hook:
            tables = foreign_tables_of(hook.session, plan.server_name, plan.local_schema)
            per_table = [datasets_of(hook, [table]) for table in tables]
            ns, db = local_namespace(hook.connection), hook.connection.schema or "postgres"
        outputs = [
            replace(remote, namespace=ns, name=f"{db}.{table.schema}.{table.name}", foreign=False)
            for table, found in zip(tables, per_table, strict=True)
            for remote in found
        ]
        inputs = [remote for found in per_table for remote in found]
        return operator_lineage(inputs, outputs, column_lineage=True)

    def get_openlineage_facets_on_start(self) -> Any:
        """OpenLineage as the task starts: the datasets of the on-complete lineage, without statistics."""
        from airflow_provider_fdw.lineage import on_start

        return on_start(self.get_openlineage_facets_on_complete(None))
