"""file_fdw: a foreign table over a file (CSV, text) on the LOCAL database server.

The simplest wrapper: no remote, no connection, no user mapping. :func:`create_file_table` makes
the server (``CREATE EXTENSION IF NOT EXISTS file_fdw`` and ``CREATE SERVER``) and the foreign table
in ONE transaction, converging an existing one to the requested columns and options, and reads the
file's first row before committing, so a missing file, a file the server may not read or a first row
that does not parse fails with nothing changed. The table is then a source like any other foreign
table: ``BulkCopyOperator`` copies it into a local table (FDW path).

The file is read by the PostgreSQL server process, on the database host: ``filename`` is a path on
that host, and the role needs ``pg_read_server_files`` (``program``: ``pg_execute_server_program``)
or superuser, as file_fdw requires.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.catalog import parse_options, read_columns
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.locks import create_schema, lock_object
from airflow_provider_fdw.names import QualifiedName, check_identifier, parse_qualified_name
from airflow_provider_fdw.refresh import bounded_name
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.wrappers import FILE_FDW

# A type name as written in a column definition: words, an optional schema, (precision, scale), [].
_TYPE = re.compile(
    r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?( [A-Za-z_][A-Za-z0-9_]*)*"
    r"( ?\(\s*\d+\s*(,\s*\d+\s*)?\))?( with(out)? time zone)?(\[\d*\])*"
)

SERVER_QUERY = q.sql.SQL(
    "SELECT w.fdwname FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw "
    "WHERE s.srvname = %s"
)
TYPE_QUERY = q.sql.SQL("SELECT to_regtype(%s) IS NOT NULL")
TEMP_SCHEMA_QUERY = q.sql.SQL("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()")


@dataclass(frozen=True)
class FileTablePlan:
    """Validated arguments of a file_fdw foreign table."""

    server_name: str
    table: QualifiedName
    columns: tuple[tuple[str, str], ...]
    options: tuple[tuple[str, str], ...]


def plan_file_table(
    server_name: str,
    table: str,
    columns: Mapping[str, str] | Sequence[Sequence[str]],
    options: Mapping[str, Any],
) -> FileTablePlan:
    """Check every argument before anything runs; raise :class:`FdwConfigError` with a clear message."""
    check_identifier(server_name, "server_name")
    name = parse_qualified_name(table, "table")
    pairs = list(columns.items()) if isinstance(columns, Mapping) else list(columns)
    if not pairs:
        raise FdwConfigError("columns must name at least one column and its type.")
    seen: set[str] = set()
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise FdwConfigError(f"columns entries must be (name, type) pairs, got {pair!r}.")
        column, type_sql = pair
        check_identifier(column, "column name")
        if column in seen:
            raise FdwConfigError(f"column {column!r} is given twice.")
        seen.add(column)
        if not isinstance(type_sql, str) or not _TYPE.fullmatch(type_sql.strip()):
            raise FdwConfigError(
                f"type of column {column!r} must be a type name such as numeric(12,2), got {type_sql!r}."
            )
    checked = FILE_FDW.check_table_options(options, "options")
    return FileTablePlan(
        server_name,
        name,
        tuple((c, t.strip()) for c, t in pairs),
        tuple(checked.items()),
    )


def create_file_table(s: LocalSession, plan: FileTablePlan, log: Any) -> dict[str, Any]:
    """Create or converge the file_fdw server and foreign table, then read the first row; one transaction.

    :return: ``{"server", "table", "changed"}``.
    """
    table = plan.table
    with s.transaction():
        for type_sql in {t for _, t in plan.columns}:
            if not s.fetchvalue("check column type", TYPE_QUERY, (type_sql,)):
                raise FdwConfigError(f"type {type_sql!r} does not exist in the local database.")
        changed = _ensure_server(s, plan.server_name)
        create_schema(s, table.schema)
        lock_object(s, "foreign table", str(table))
        row = s.fetchone(f"read {table}", q.RELATION_QUERY, table)
        if row is not None:
            _oid, relkind, _owner, _comment, server, ftoptions, _wrapper = row
            if relkind != "f" or server != plan.server_name:
                raise FdwConfigError(
                    f"{table} exists and is not a foreign table of server {plan.server_name!r}; "
                    "choose another name (the provider does not drop it)."
                )
            if _same_definition(s, plan, parse_options(ftoptions)):
                log.info("Foreign table %s over %s is up to date", table, dict(plan.options).get("filename"))
                _read_first_row(s, plan)
                return {"server": plan.server_name, "table": str(table), "changed": changed}
            s.execute(
                f"drop {table} to redefine it",
                q.sql.SQL("DROP FOREIGN TABLE {}").format(q.sql.Identifier(*table)),
            )
        s.execute(f"create foreign table {table}", _create_statement(plan))
        _read_first_row(s, plan)
    return {"server": plan.server_name, "table": str(table), "changed": True}


def _ensure_server(s: LocalSession, server_name: str) -> bool:
    lock_object(s, "server", server_name)
    installed = s.fetchone("check extension", q.EXTENSION_AVAILABLE_QUERY, (FILE_FDW.name, FILE_FDW.name))
    if not installed or not installed[0]:
        if not installed or not installed[1]:
            raise FdwError(
                "file_fdw is not available on the local PostgreSQL server: install the server's contrib "
                "package (Debian: postgresql-contrib) on that host.",
                step="ensure extension",
            )
        lock_object(s, "extension", FILE_FDW.name)
        s.execute("ensure extension", q.create_extension(FILE_FDW.name))
    row = s.fetchone("read server", SERVER_QUERY, (server_name,))
    if row is not None:
        if row[0] != FILE_FDW.name:
            raise FdwConfigError(
                f"Server {server_name!r} exists but uses foreign-data wrapper {row[0]!r}, not file_fdw."
            )
        return False
    s.execute(
        f"create server {server_name!r}",
        q.sql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER {}").format(
            q.sql.Identifier(server_name), q.sql.Identifier(FILE_FDW.name)
        ),
    )
    return True


def _same_definition(s: LocalSession, plan: FileTablePlan, current_options: dict[str, str]) -> bool:
    """Whether the existing table has these options and columns, types as the server spells them
    (a scratch temporary table with the requested definition gives the server's spelling)."""
    if current_options != dict(plan.options):
        return False
    name = bounded_name("fdw_file", plan.table.name)
    s.execute("create scratch table", _create_statement(plan, QualifiedName("pg_temp", name)), quiet=True)
    # The session's temporary schema exists now; its real name (pg_temp_N) is what the catalog shows.
    scratch = QualifiedName(s.fetchvalue("temp schema", TEMP_SCHEMA_QUERY), name)
    wanted = [(name, col.type_sql) for name, col in read_columns(s, scratch).items()]
    s.execute(
        "drop scratch table",
        q.sql.SQL("DROP FOREIGN TABLE pg_temp.{}").format(q.sql.Identifier(scratch.name)),
        quiet=True,
    )
    return [(name, col.type_sql) for name, col in read_columns(s, plan.table).items()] == wanted


def _create_statement(plan: FileTablePlan, table: QualifiedName | None = None) -> Any:
    columns = q.sql.SQL(", ").join(
        q.sql.SQL("{} {}").format(q.sql.Identifier(name), q.sql.SQL(type_sql))
        for name, type_sql in plan.columns
    )
    return q.sql.SQL("CREATE FOREIGN TABLE {} ({}) SERVER {}{}").format(
        q.sql.Identifier(*(table or plan.table)),
        columns,
        q.sql.Identifier(plan.server_name),
        q.options_clause(dict(plan.options)),
    )


def _read_first_row(s: LocalSession, plan: FileTablePlan) -> None:
    """Read one row now: a missing or unreadable file, or a first row that does not parse, fails here."""
    try:
        s.execute(
            f"read the first row of {plan.table}",
            q.sql.SQL("SELECT FROM {} LIMIT 1").format(q.sql.Identifier(*plan.table)),
            quiet=True,
        )
    except FdwError as exc:
        raise FdwError(
            f"Foreign table {plan.table} cannot read its file: {exc}", step="read file", sqlstate=exc.sqlstate
        ) from None


# The file's size when the role may stat it (pg_stat_file is superuser-only unless granted): else NULL.
FILE_SIZE_QUERY = q.sql.SQL(
    "SELECT CASE WHEN pg_catalog.has_function_privilege('pg_catalog.pg_stat_file(text, boolean)', 'EXECUTE') "
    "THEN (pg_catalog.pg_stat_file(%s, true)).size END"
)
_TRUE = ("true", "on", "yes", "1", "t", "y")


def check_not_truncated(s: LocalSession, name: QualifiedName, options: Mapping[str, str], log: Any) -> None:
    """Before a replace from a file with ``header``: refuse a file of 0 bytes. Such a file holds at
    least its header line, so an empty one is an export that failed or is still being written, and
    file_fdw would read it as an empty table, swapped in for the target's rows."""
    filename = options.get("filename")
    if filename is None or options.get("header", "false").lower() not in _TRUE:
        return
    size = s.fetchvalue("read the file's size", FILE_SIZE_QUERY, (filename,))
    if size is None:
        log.info("Not checking that %s is not empty: the role may not run pg_stat_file", filename)
    elif size == 0:
        raise FdwConfigError(
            f"{filename} (the file behind {name}) has 0 bytes although its table says it has a header "
            "line: an export that failed or is still being written. Nothing was changed; replace "
            "would have emptied the target. Write exports to another name and rename them into place."
        )
