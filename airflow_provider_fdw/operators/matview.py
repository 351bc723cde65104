"""RefreshMaterializedViewOperator: scheduled refreshes of materialized views over foreign tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_fdw.operators.base import FdwBaseOperator
from airflow_provider_fdw.refresh import plan_refresh


class RefreshMaterializedViewOperator(FdwBaseOperator):
    """Refresh materialized views in dependency order, creating the view on first run when asked.

    The "FDW for data synchronisation" pattern: foreign tables in a proxy schema, materialized views
    on top, refreshed on a schedule. Each view is refreshed in its own transaction; a failure (or
    ``lock_timeout``) leaves that view's previous contents intact.

    :param views: one ``schema.name`` or a list; a list is refreshed so that a view built on another
        listed view comes after it (read from the catalog). (templated)
    :param postgres_conn_id: the ``postgres`` connection of the local database. (templated)
    :param concurrently: ``"auto"`` uses ``REFRESH … CONCURRENTLY`` when the view is populated and has
        a unique index on plain columns; ``True`` demands it (clear error otherwise); ``False`` never.
    :param query: create the view with this SELECT when it does not exist (one view only). (templated)
    :param unique_key: column(s) of a unique index created with the view (makes CONCURRENTLY possible).
    :param indexes: more indexes: a column, a list of columns, or ``{"columns", "unique", "using", "name"}``.
    :param lock_timeout: how long to wait for locks (seconds, or a duration such as ``"5s"``).
    :param analyze: ``ANALYZE`` each view after refreshing it.
    :return: a list of ``{"view", "created", "concurrently", "rows_before", "rows_after", "seconds"}``.
    """

    template_fields: Sequence[str] = ("views", "postgres_conn_id", "query")
    template_fields_renderers = {"query": "sql"}
    ui_color = "#e8f0d6"
    planner = staticmethod(plan_refresh)

    def __init__(
        self,
        *,
        views: str | Sequence[str],
        concurrently: bool | str = "auto",
        query: str | None = None,
        unique_key: Sequence[str] | str | None = None,
        indexes: Sequence[Any] | None = None,
        lock_timeout: float | str | None = None,
        analyze: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.keep_plan_arguments(locals())
        self.validate_if_static(views, query)

    def execute(self, context: Any) -> list[dict[str, Any]]:
        plan = self.plan()
        with self.get_hook() as hook:
            self._lineage_summary = hook.refresh_materialized_views(plan)
        return self._lineage_summary  # kept: lineage is reported from a fork that cannot read XCom

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: what the views read (the REMOTE tables behind foreign tables) in, the views out,
        with their row counts."""
        from airflow_provider_fdw.lineage import datasets_of, operator_lineage, task_result, view_sources
        from airflow_provider_fdw.names import parse_qualified_name

        views = list(self.plan().views)
        results = {parse_qualified_name(r["view"], "views"): r for r in task_result(self) or []}
        with self.get_hook() as hook:
            sources = {s for view in views for s in view_sources(hook.session, view)}
            inputs = datasets_of(hook, sorted(sources - set(views)))
            outputs = datasets_of(hook, views)
        counts = [{"rows": results.get(v, {}).get("rows_after")} for v in views]
        return operator_lineage(inputs, outputs, statistics=counts)
