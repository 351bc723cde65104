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

A file table without an ``encoding`` option is decoded in the READING session's client_encoding (as
``COPY FROM`` is), which a role's or database's default or the worker's ``PGCLIENTENCODING`` decides:
the same UTF-8 file reads 'café' in one session and 'cafÃ©' in another. So :func:`create_file_table`
writes ``encoding`` (the local database's encoding when none is given), and a copy reads a table made
without one in the local database's encoding (:func:`read_encoding`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.catalog import Table, parse_options, read_columns
from airflow_provider_fdw.compat import parameter_status
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
    if "encoding" not in dict(plan.options):
        plan = with_database_encoding(s, plan, log)
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
                _check_header(s, plan)
                return {"server": plan.server_name, "table": str(table), "changed": changed}
            s.execute(
                f"drop {table} to redefine it",
                q.sql.SQL("DROP FOREIGN TABLE {}").format(q.sql.Identifier(*table)),
            )
        s.execute(f"create foreign table {table}", _create_statement(plan))
        _read_first_row(s, plan)
        _check_header(s, plan)
    return {"server": plan.server_name, "table": str(table), "changed": True}


def database_encoding(s: LocalSession) -> str:
    """The local database's encoding (``UTF8``, ``LATIN1`` …), as the server reported it at login."""
    encoding = parameter_status(s.conn, "server_encoding")
    if not encoding:
        raise FdwError("the server reported no server_encoding", step="read encoding")
    return encoding


def with_database_encoding(s: LocalSession, plan: FileTablePlan, log: Any) -> FileTablePlan:
    """``plan`` with ``encoding`` = the local database's encoding: without the option file_fdw decodes
    the file in each reading session's client_encoding, so the table would mean other text to other
    sessions. (SQL_ASCII: the bytes as they are, which a SQL_ASCII database stores anyway.)"""
    encoding = database_encoding(s)
    log.info(
        "No encoding given for %s: its file is read as %s, the database's encoding (pass "
        "options={'encoding': ...} for a file in another one)",
        plan.table,
        encoding,
    )
    return replace(plan, options=(*plan.options, ("encoding", encoding)))


def read_encoding(s: LocalSession, files: Sequence[tuple[QualifiedName, Table]], log: Any) -> str | None:
    """The client_encoding a copy reading these file tables (name, table) reads
    them in: the local database's encoding when one has no ``encoding`` option (file_fdw would decode
    its file in this session's client_encoding, whatever the role's or database's default or
    ``PGCLIENTENCODING`` say), logged once; None when each has one. A SQL_ASCII database stores a
    file's bytes as they are whatever the client_encoding (it converts nothing): None there too (a
    pinned SQL_ASCII would have psycopg 3 return text as bytes). No statement: the server reports both."""
    bare = [str(name) for name, table in files if "encoding" not in table.relation.options]
    if not bare:
        return None
    encoding = database_encoding(s)
    session = parameter_status(s.conn, "client_encoding")
    if encoding == "SQL_ASCII":
        log.info(
            "%s: no encoding option; the database is SQL_ASCII, which stores the file's bytes as they are",
            ", ".join(bare),
        )
        return None
    log.info(
        "%s: no encoding option, so file_fdw decodes the file in the reading session's client_encoding "
        "(this session's: %s); the copy reads it in %s, the database's encoding. Set the table's "
        "encoding option (ALTER FOREIGN TABLE … OPTIONS (ADD encoding '…')) for a file in another one.",
        ", ".join(bare),
        session,
        encoding,
    )
    return encoding


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


def check_one_reader(name: QualifiedName, parts: int) -> None:
    """Refuse a copy of a file_fdw table in several ranges (``parallelism``, partitions): each range
    would read and parse the WHOLE file again (no speed-up) and at another moment, so a file replaced
    meanwhile would load some ranges from one export and the rest from the next, silently."""
    if parts > 1:
        raise FdwConfigError(
            f"{name} is a file_fdw table: a copy in {parts} ranges would read the whole file once per "
            "range, each at another moment (a file replaced meanwhile would mix two exports), and be no "
            "faster. Copy it in one range (parallelism=1, no partitions). Nothing was changed."
        )


def _check_header(s: LocalSession, plan: FileTablePlan) -> None:
    check_header_order(s, plan.table, plan.server_name, [c for c, _ in plan.columns], dict(plan.options))


# Whether the file has a first line, read through a one-column probe table over it. Not pg_stat_file:
# superuser-only unless granted, and its EXECUTE privilege is checked when a statement naming it
# starts, whether or not a CASE would reach the call.
FIRST_LINE_QUERY = q.sql.SQL("SELECT count(*) FROM (SELECT FROM pg_temp.{} LIMIT 1) t")
_TRUE = ("true", "on", "yes", "1", "t", "y")


def has_header(options: Mapping[str, str]) -> bool:
    """Whether the table's file starts with a header line (``header`` true or ``match``)."""
    return options.get("header", "false").lower() in (*_TRUE, "match")


HEADER_QUERY = q.sql.SQL("SELECT * FROM pg_temp.{} LIMIT 1")


def check_header_order(
    s: LocalSession, name: QualifiedName, server: str, columns: Sequence[str], options: Mapping[str, str]
) -> None:
    """With ``header`` true (not ``match``, which COPY checks itself): refuse a header line that names a
    column of the table at another position. file_fdw skips the header line unread and maps the
    values by position, so a file exported with its columns in another order would load each value
    into another column, silently whenever the types accept it. A header whose names are not the
    column names (other spellings) is taken as it is. Read through a session-private table over the
    same file whose columns are all text and which has no header, so the header line is its first row.

    Runs in the caller's transaction (undone: the private table never stays). Not for ``program``
    (it would run the program once more); ``header 'match'`` covers it on every read.
    """
    if options.get("header", "false").lower() not in _TRUE or "filename" not in options:
        return
    if options.get("format", "text") == "binary":
        return
    probe = bounded_name("fdw_header", name.name)
    no_options: dict[str, str] = {}
    defs = [(f"c{i}", "text", None, no_options) for i in range(len(columns))]
    read_options = {k: v for k, v in options.items() if k != "header"}
    header: tuple[Any, ...] | None = None
    with s.undone(f"read the header line of {name}"):
        s.execute(
            "create header probe", q.create_temp_foreign_table(probe, server, defs, read_options), quiet=True
        )
        try:
            header = s.fetchone(
                f"read the header line of {name}",
                HEADER_QUERY.format(q.sql.Identifier(probe)),
            )
        except FdwError as exc:
            if exc.sqlstate != "22P04":  # bad_copy_file_format: another number of fields than columns
                raise
    if header is None:
        return
    fields = [(f or "").strip().casefold() for f in header]
    fields[0] = fields[0].removeprefix("\ufeff")  # a UTF-8 byte order mark starts the header line
    wanted = [c.casefold() for c in columns]
    misplaced = [(i, f) for i, f in enumerate(fields) if f != wanted[i] and f in wanted]
    if misplaced:
        where = ", ".join(f"{f!r} is field {i + 1}, column {wanted.index(f) + 1}" for i, f in misplaced)
        raise FdwConfigError(
            f"The header line of {options['filename']} (behind {name}) names the columns in another "
            f"order than the table: {where}. file_fdw skips the header and maps values by position, so "
            f"they would land in other columns. Header: {list(header)}; columns: {list(columns)}. "
            "Nothing was changed. Define the columns in the file's order, or use header 'match' to "
            "have every read check the header."
        )


def check_not_truncated(
    s: LocalSession, name: QualifiedName, server: str, options: Mapping[str, str], log: Any
) -> None:
    """Before a replace from a file with ``header``: refuse a file of 0 bytes. Such a file holds at
    least its header line, so an empty one is an export that failed or is still being written, and
    file_fdw would read it as an empty table, swapped in for the target's rows."""
    filename = options.get("filename")
    if filename is None or not has_header(options):
        return
    probe = bounded_name("fdw_lines", name.name)
    # One text column: any line is a row, whatever its fields (csv with a quote and a delimiter no
    # text holds: no backslash escapes are decoded, so no first line fails to parse).
    line_options = {k: v for k, v in options.items() if k in ("filename", "encoding")}
    create = q.create_temp_foreign_table(
        probe,
        server,
        [("line", "text", None, {})],
        line_options | {"format": "csv", "delimiter": "\x01", "quote": "\x02"},
    )
    with s.undone(f"read the first line of {filename}"):
        s.execute("create first-line probe", create, quiet=True)
        lines = s.fetchvalue(
            f"read the first line of {filename}", FIRST_LINE_QUERY.format(q.sql.Identifier(probe))
        )
    log.debug("%s has %s first line", filename, "a" if lines else "no")
    if lines == 0:
        raise FdwConfigError(
            f"{filename} (the file behind {name}) has 0 bytes although its table says it has a header "
            "line: an export that failed or is still being written. Nothing was changed; replace "
            "would have emptied the target. Write exports to another name and rename them into place."
        )
