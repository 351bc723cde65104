"""OpenLineage for the provider's operators: the REMOTE tables behind foreign tables, by their real names.

A SQL parser would name the local foreign table as a copy's input; this module resolves a foreign
table to the remote table it stands for, from its server's options (``host``, ``port``, ``dbname``)
and its own (``schema_name``, ``table_name``, ``column_name``), and names datasets the way
OpenLineage names PostgreSQL tables: namespace ``postgres://host:port``, name
``database.schema.table``. Local tables use the local connection's host, port and database.

Needs the optional extra ``openlineage`` (apache-airflow-providers-openlineage); without it the
operators' ``get_openlineage_facets_*`` methods return None and nothing here is imported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_fdw._driver import sql
from airflow_provider_fdw.catalog import parse_options
from airflow_provider_fdw.names import QualifiedName, parse_qualified_name

_TABLE_QUERY = sql.SQL(
    "SELECT c.oid, c.relkind, s.srvoptions, ft.ftoptions, "
    # Only the mapped user name: the mapping's password never leaves the server.
    "  (SELECT o.option_value FROM pg_user_mappings um, pg_options_to_table(um.umoptions) o "
    "   WHERE um.srvid = s.oid AND um.umuser IN (0, (SELECT oid FROM pg_roles WHERE rolname = current_user)) "
    "   AND o.option_name = 'user' ORDER BY um.umuser DESC LIMIT 1) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_foreign_table ft ON ft.ftrelid = c.oid "
    "LEFT JOIN pg_foreign_server s ON s.oid = ft.ftserver "
    "WHERE n.nspname = %s AND c.relname = %s"
)
_COLUMNS_QUERY = sql.SQL(
    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attfdwoptions FROM pg_attribute a "
    "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)
_FOREIGN_TABLES_QUERY = sql.SQL(
    "SELECT c.relname FROM pg_foreign_table ft JOIN pg_class c ON c.oid = ft.ftrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_foreign_server s ON s.oid = ft.ftserver "
    "WHERE n.nspname = %s AND s.srvname = %s ORDER BY 1"
)
# Relations a view reads (one level: tables, foreign tables, views, materialized views).
_VIEW_SOURCES_QUERY = sql.SQL(
    "SELECT DISTINCT n.nspname, c.relname FROM pg_rewrite r "
    "JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass "
    "  AND d.refclassid = 'pg_class'::regclass "
    "JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_class v ON v.oid = r.ev_class JOIN pg_namespace vn ON vn.oid = v.relnamespace "
    "WHERE vn.nspname = %s AND v.relname = %s AND c.oid <> v.oid AND c.relkind IN ('r', 'p', 'f', 'v', 'm') "
    "ORDER BY 1, 2"
)


@dataclass(frozen=True)
class TableDataset:
    """A table as OpenLineage names it, with its columns (local name -> (name on its side, type))."""

    namespace: str
    name: str
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)
    foreign: bool = False


def local_namespace(conn: Any) -> str:
    """``postgres://host:port`` of the LOCAL database, from its Airflow connection."""
    return f"postgres://{conn.host or 'localhost'}:{conn.port or 5432}"


def resolve(session: Any, table: QualifiedName | str, local_ns: str, local_db: str) -> TableDataset | None:
    """The dataset behind ``table``: the remote table for a foreign table, else the local table."""
    name = table if isinstance(table, QualifiedName) else parse_qualified_name(table, "table")
    with session.transaction():
        row = session.fetchone("read lineage", _TABLE_QUERY, (name.schema, name.name))
        if row is None:
            return None
        oid, relkind, server_options, table_options, mapped_user = row
        columns = session.fetchall("read lineage", _COLUMNS_QUERY, (oid,))
    if relkind != "f":
        return TableDataset(
            local_ns, f"{local_db}.{name.schema}.{name.name}", {c: (c, t) for c, t, _ in columns}
        )
    server, options = parse_options(server_options), parse_options(table_options)
    # libpq defaults: port 5432, database named after the (mapped) user.
    dbname = server.get("dbname") or mapped_user or "postgres"
    remote_name = f"{dbname}.{options.get('schema_name', name.schema)}.{options.get('table_name', name.name)}"
    return TableDataset(
        f"postgres://{server.get('host', 'localhost')}:{server.get('port', '5432')}",
        remote_name,
        {c: (parse_options(o).get("column_name", c), t) for c, t, o in columns},
        foreign=True,
    )


def foreign_tables_of(session: Any, server_name: str, local_schema: str) -> list[QualifiedName]:
    """The foreign tables of ``server_name`` in ``local_schema`` (what an import created)."""
    with session.transaction():
        rows = session.fetchall("read lineage", _FOREIGN_TABLES_QUERY, (local_schema, server_name))
    return [QualifiedName(local_schema, name) for (name,) in rows]


def view_sources(session: Any, view: QualifiedName | str) -> list[QualifiedName]:
    """The relations a (materialized) view reads directly."""
    name = view if isinstance(view, QualifiedName) else parse_qualified_name(view, "views")
    with session.transaction():
        rows = session.fetchall("read lineage", _VIEW_SOURCES_QUERY, (name.schema, name.name))
    return [QualifiedName(schema, name) for schema, name in rows]


def operator_lineage(
    inputs: Iterable[TableDataset],
    outputs: Iterable[TableDataset],
    column_lineage: bool = False,
    statistics: Sequence[dict[str, Any] | None] = (),
) -> Any:
    """An ``OperatorLineage`` with schema facets, column lineage (output column <- same-named input
    column, under its remote name) and output statistics (``rows``, ``bytes``: one dict per output)."""
    from airflow.providers.common.compat.openlineage.facet import (
        ColumnLineageDatasetFacet,
        Dataset,
        Fields,
        InputField,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
        SchemaDatasetFacet,
        SchemaDatasetFacetFields,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    inputs, outputs = list(inputs), list(outputs)

    def schema(table: TableDataset) -> dict[str, Any]:
        fields = [SchemaDatasetFacetFields(name=n, type=t) for n, t in table.columns.values()]
        return {"schema": SchemaDatasetFacet(fields=fields)} if fields else {}

    result_outputs = []
    stats = list(statistics) + [None] * len(outputs)
    for out, counts in zip(outputs, stats[: len(outputs)], strict=True):
        facets = schema(out)
        if column_lineage and inputs:
            lineage = {}
            for local_name, (out_name, _) in out.columns.items():
                sources = [
                    InputField(namespace=i.namespace, name=i.name, field=i.columns[local_name][0])
                    for i in inputs
                    if local_name in i.columns
                ]
                if sources:
                    lineage[out_name] = Fields(inputFields=sources, transformationType="IDENTITY")
            if lineage:
                facets["columnLineage"] = ColumnLineageDatasetFacet(fields=lineage)
        output_facets = {}
        if counts:
            output_facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(
                rowCount=counts.get("rows"), size=counts.get("bytes")
            )
        result_outputs.append(
            OutputDataset(namespace=out.namespace, name=out.name, facets=facets, outputFacets=output_facets)
        )
    return OperatorLineage(
        inputs=[Dataset(namespace=i.namespace, name=i.name, facets=schema(i)) for i in inputs],
        outputs=result_outputs,
    )


def task_result(operator: Any) -> Any:
    """The summary ``execute`` returned (kept on the operator), or None if it did not run here."""
    return getattr(operator, "_lineage_summary", None)


def datasets_of(hook: Any, tables: Sequence[QualifiedName | str]) -> list[TableDataset]:
    """Resolve several tables with one hook; tables that do not exist are left out."""
    conn = hook.connection
    ns, db = local_namespace(conn), conn.schema or "postgres"
    found = (resolve(hook.session, t, ns, db) for t in tables)
    return [d for d in found if d is not None]
