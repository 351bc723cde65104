"""Re-importing a foreign schema without breaking what depends on it.

``IMPORT FOREIGN SCHEMA`` cannot replace a table, and dropping the foreign tables first fails (or,
with CASCADE, destroys) as soon as a view or materialized view reads them, which is the normal
"proxy schema + materialized views" setup. So the import goes into a scratch schema inside the same
transaction, and each table is then converged:

- new remotely: moved into the local schema;
- unchanged: left alone (same OID, dependants untouched, no lock taken on it);
- changed: ``ALTER FOREIGN TABLE`` adds, drops or retypes columns (fails with PostgreSQL's own
  message only when a dependant uses a column that changed, which it could not survive anyway);
- gone remotely: dropped (a clear error names the dependants if there are any);
- left out by the wrapper although the remote still has it (mysql_fdw skips a table with a SET column
  with a WARNING only): kept as it was, with a warning saying why.

Only foreign tables exactly like an import's (this server, the remote schema, the remote table's own
name) are the previous import's; any other foreign table in the local schema (a DBA's own, under
another name) is never altered or dropped.

Everything happens in one transaction: other sessions see the old definitions until commit. A table
to alter or drop is locked in attempts bounded by ``lock_timeout`` (a long reader must not queue new
readers behind the import); each failed attempt rolls the whole transaction back and is retried.
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.catalog import read_columns
from airflow_provider_fdw.connection import render_option_value
from airflow_provider_fdw.exceptions import DEPENDENT_OBJECTS_STILL_EXIST, FdwConfigError, FdwError
from airflow_provider_fdw.foreign_tables import read_foreign_tables
from airflow_provider_fdw.locks import LockTimeout, create_schema, table_lock_holders
from airflow_provider_fdw.names import QualifiedName, check_identifier, check_identifiers
from airflow_provider_fdw.refresh import lock_timeout_setting
from airflow_provider_fdw.remote_answers import check_servers_read
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.timeouts import (
    DEFAULT_LOCK_RETRIES,
    DEFAULT_SWAP_LOCK_TIMEOUT,
    LOCK_NOT_AVAILABLE,
    lock_attempts,
    with_lock_retries,
)
from airflow_provider_fdw.wrappers import WRAPPERS

# The wrapper is known only from the server at run time, where its validator checks exactly: here any
# option of a wrapper the provider drives (postgres_fdw's, mysql_fdw's import_enum_as_text).
IMPORT_OPTIONS = frozenset().union(*(w.import_options for w in WRAPPERS.values()))


@dataclass(frozen=True)
class ImportPlan:
    """Checked arguments of an import: what to import from where, and how to treat a previous import."""

    server_name: str
    remote_schema: str
    local_schema: str
    limit_to: Sequence[str] | None
    exclude: Sequence[str] | None
    import_options: dict[str, str]
    replace: bool
    analyze: bool
    lock_timeout: str | None
    # the user passed lock_timeout (kept as given); else the default, raised above deadlock_timeout
    lock_timeout_explicit: bool
    lock_retries: int


def plan_import(
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
) -> ImportPlan:
    """Check the arguments of an import (before any SQL runs) and return the plan."""
    check_identifier(server_name, "server_name")
    check_identifier(remote_schema, "remote_schema")
    check_identifier(local_schema, "local_schema")
    limit_to = check_identifiers(limit_to, "limit_to")
    exclude = check_identifiers(exclude, "exclude")
    if limit_to and exclude:
        raise FdwConfigError("Pass either limit_to or exclude, not both (IMPORT FOREIGN SCHEMA takes one).")
    options: dict[str, str] = {}
    if import_options:
        unknown = sorted(set(import_options) - IMPORT_OPTIONS)
        if unknown:
            raise FdwConfigError(
                f"Unknown import option(s) {', '.join(unknown)}; "
                f"postgres_fdw and mysql_fdw accept {', '.join(sorted(IMPORT_OPTIONS))}."
            )
        options = {k: render_option_value(v) for k, v in import_options.items()}
    return ImportPlan(
        server_name,
        remote_schema,
        local_schema,
        limit_to,
        exclude,
        options,
        replace,
        analyze,
        lock_timeout_setting(lock_timeout if lock_timeout is not None else DEFAULT_SWAP_LOCK_TIMEOUT),
        lock_timeout is not None,
        lock_attempts(lock_retries),
    )


class TableChanges:
    """Alters or drops existing tables (each lock wait bounded by the transaction's ``lock_timeout``;
    a foreign table cannot be LOCKed beforehand), remembering the one whose lock an attempt could
    not get, to name who holds it."""

    def __init__(self) -> None:
        self.busy: QualifiedName | None = None

    def change(self, s: LocalSession, table: QualifiedName, step: str, statement: Any) -> None:
        try:
            s.execute(step, statement)
        except FdwError as exc:
            if exc.sqlstate == LOCK_NOT_AVAILABLE:
                self.busy = table
            raise

    def holders(self, s: LocalSession) -> str:
        return table_lock_holders(s, self.busy) if self.busy else ""


def import_schema(s: LocalSession, plan: ImportPlan, log: Any) -> list[str]:
    """Import (or converge a previous import) in one transaction, retried while a table it changes
    is busy; return the selected foreign tables."""
    p = plan
    server = s.fetchone("read server", q.SERVER_OPTIONS_QUERY, (p.server_name,))
    reads = [(server[1], p.server_name)] if server else []
    check_servers_read(s, reads, log)
    lock_timeout, table_changes = LockTimeout(p.lock_timeout, p.lock_timeout_explicit), TableChanges()
    # A retry needs a transaction of its own: inside the caller's block the first failure is final.
    attempts = 1 if s.in_transaction_block else p.lock_retries
    tables = with_lock_retries(
        lambda: import_once(s, p, lock_timeout, table_changes, log),
        attempts,
        f"import of {p.remote_schema!r} into {p.local_schema!r}",
        log,
        lambda: table_changes.holders(s),
    )
    log.info("Foreign tables in %r from %r: %s", p.local_schema, p.remote_schema, ", ".join(tables))
    return tables


def import_once(
    s: LocalSession, plan: ImportPlan, lock_timeout: LockTimeout, table_changes: TableChanges, log: Any
) -> list[str]:
    """One attempt: the whole import in one transaction (all or nothing). Inside a caller's
    transaction, its ``lock_timeout`` is given back afterwards."""
    nested = s.in_transaction_block
    with s.transaction():
        kept = (
            s.fetchvalue("read lock_timeout", q.CURRENT_SETTING_QUERY, ("lock_timeout",)) if nested else None
        )
        lock_timeout.set_local(s, log)  # first, so that every lock wait of the attempt is bounded
        create_schema(s, plan.local_schema)  # also serialises imports into the same schema
        previous = imported_tables(s, plan)
        import_and_converge(s, plan, previous, table_changes, log)
        tables = imported_tables(s, plan)
        if kept is not None:
            s.execute("restore lock_timeout", q.set_local("lock_timeout", kept), quiet=True)
        return tables


def imported_tables(s: LocalSession, plan: ImportPlan) -> list[str]:
    """The foreign tables in the local schema that look exactly like this import's (this server, the
    remote schema, the remote table's own name, as IMPORT FOREIGN SCHEMA makes them), within the
    plan's LIMIT TO / EXCEPT selection (remote names, so the same as theirs)."""
    p = plan
    names = [
        t.table
        for t in read_foreign_tables(s, p.local_schema)
        if (t.server, t.remote_schema, t.remote_table) == (p.server_name, p.remote_schema, t.table)
    ]
    if p.limit_to:
        return [n for n in names if n in p.limit_to]
    if p.exclude:
        return [n for n in names if n not in p.exclude]
    return names


def import_and_converge(
    s: LocalSession, plan: ImportPlan, previous: Sequence[str], table_changes: TableChanges, log: Any
) -> None:
    """Import into a scratch schema and converge ``plan.local_schema`` to it (caller's transaction)."""
    r = plan
    scratch = f"_fdw_import_{uuid.uuid4().hex[:12]}"
    s.execute("create scratch schema", q.create_schema(scratch), quiet=True)
    s.execute(
        f"import foreign schema {r.remote_schema!r} from server {r.server_name!r}",
        q.import_foreign_schema(
            r.server_name, r.remote_schema, scratch, r.limit_to, r.exclude, r.import_options
        ),
    )
    fresh = [row[0] for row in s.fetchall("list imported tables", q.FOREIGN_TABLES_QUERY, (scratch,))]
    # not brought back: gone from the remote, or left out by the wrapper (then kept, or refused if asked)
    absent = sorted({*previous, *(r.limit_to or ())} - set(fresh))
    skipped, why = skipped_tables(s, r, absent) if absent else ([], "")
    missing = [t for t in r.limit_to or () if t not in fresh and t not in skipped]
    # importing nothing (or less than asked) is a mistake, never a success
    if missing or not (fresh or skipped):
        raise FdwError(describe_missing(r, missing, remote_tables(s, r)), step="import foreign schema")
    never_imported = [t for t in skipped if t not in previous]
    if never_imported:  # asked for by LIMIT TO
        raise FdwError(
            f"Remote schema {r.remote_schema!r} on server {r.server_name!r} has "
            f"{', '.join(map(repr, never_imported))}, which the import leaves out. Why: {why}. "
            "Nothing was imported.",
            step="import foreign schema",
        )
    existing = dict(s.fetchall("list local relations", q.RELATIONS_IN_SCHEMA_QUERY, (r.local_schema,)))
    for table in fresh:
        local = QualifiedName(r.local_schema, table)
        if table in previous:
            if r.replace:
                converge_columns(s, local, QualifiedName(scratch, table), table_changes, log)
        elif table in existing:
            kind = q.RELKIND_NAMES.get(existing[table], "another object")
            raise FdwError(
                f"{local} already exists as {kind} that was not "
                f"imported from server {r.server_name!r} schema {r.remote_schema!r}; rename or drop it, or "
                "import into another local schema.",
                step="import foreign schema",
            )
        else:
            s.execute(f"add {local}", q.move_foreign_table(QualifiedName(scratch, table), r.local_schema))
    if r.replace:
        for table in previous:
            if table in skipped:
                log.warning(
                    "%s is kept as it was: remote schema %r on server %r still has table %r, which the "
                    "import left out. Why: %s. It reads the columns it had; changes of the remote table are "
                    "not applied. Change the remote table, or exclude it from the import.",
                    QualifiedName(r.local_schema, table),
                    r.remote_schema,
                    r.server_name,
                    table,
                    why,
                )
            elif table not in fresh:
                drop_vanished(s, QualifiedName(r.local_schema, table), r.server_name, table_changes)
    s.execute("drop scratch schema", q.drop_schema_cascade(scratch), quiet=True)


def skipped_tables(s: LocalSession, r: ImportPlan, absent: Sequence[str]) -> tuple[list[str], str]:
    """Which of ``absent`` (tables the import did not bring back) the remote schema still has, when the
    server's wrapper leaves out some tables without an error, and why it does; ([], "") otherwise."""
    server = s.fetchone("read server", q.SERVER_OPTIONS_QUERY, (r.server_name,))
    wrapper = WRAPPERS.get(server[1]) if server else None
    if wrapper is None or wrapper.remote_tables_probe is None:
        return [], ""
    probe = f"fdw_tables_{uuid.uuid4().hex[:12]}"
    create, read = wrapper.remote_tables_probe(probe, r.server_name, {"dbname": r.remote_schema})
    step = f"list the tables of remote schema {r.remote_schema!r} on server {r.server_name!r}"
    with s.undone(step):
        s.execute(step, create, quiet=True)
        rows = s.fetchall(step, read)
    remote = {name for schema, name in rows if schema == r.remote_schema}
    return [t for t in absent if t in remote], wrapper.skips_on_import


def remote_tables(s: LocalSession, r: ImportPlan) -> list[str]:
    """Every table, view and foreign table the remote schema has (an unrestricted import, rolled back)."""
    scratch = f"_fdw_list_{uuid.uuid4().hex[:12]}"
    s.execute("create scratch schema", q.create_schema(scratch), quiet=True)
    s.execute(
        f"list remote schema {r.remote_schema!r}",
        q.import_foreign_schema(r.server_name, r.remote_schema, scratch),
        quiet=True,
    )
    rows = s.fetchall("list remote tables", q.FOREIGN_TABLES_QUERY, (scratch,))
    s.execute("drop scratch schema", q.drop_schema_cascade(scratch), quiet=True)
    return sorted(row[0] for row in rows)


def describe_missing(r: ImportPlan, missing: Sequence[str], available: Sequence[str]) -> str:
    where = f"remote schema {r.remote_schema!r} on server {r.server_name!r}"
    has = f"It has: {', '.join(available)}." if available else "It has no tables, views or foreign tables."
    if not missing:
        if available:
            return f"Importing from {where} finds nothing left to import after EXCEPT. {has}"
        return f"Remote schema {r.remote_schema!r} on server {r.server_name!r} has no tables to import. {has}"
    guesses = []
    for name in missing:
        folded = [a for a in available if a.lower() == name.lower()]
        close = folded or difflib.get_close_matches(name, available, n=2, cutoff=0.6)
        if close:
            guesses.append(f"{name!r}: did you mean {' or '.join(map(repr, close))}?")
    return (
        f"Tables not found in {where}: {', '.join(map(repr, missing))} (names are case-sensitive). "
        + (" ".join(guesses) + " " if guesses else "")
        + has
        + " Nothing was imported."
    )


def converge_columns(
    s: LocalSession, local: QualifiedName, fresh: QualifiedName, table_changes: TableChanges, log: Any
) -> None:
    """ALTER the existing foreign table so its columns match the freshly imported definition."""
    old, new = read_columns(s, local), read_columns(s, fresh)
    actions = [q.drop_column(name) for name in old if name not in new]
    for name, col in new.items():
        before = old.get(name)
        if before is None:
            actions.append(q.add_column(name, col.type_sql, col.collation, col.not_null, col.options))
            continue
        if (before.type_sql, before.collation) != (col.type_sql, col.collation):
            actions.append(q.alter_column_type(name, col.type_sql, col.collation))
        if before.not_null != col.not_null:
            actions.append(q.alter_column_not_null(name, col.not_null))
        option_change = q.alter_column_options(name, before.options, col.options)
        if option_change is not None:
            actions.append(option_change)
    if not actions:
        return
    try:
        table_changes.change(s, local, f"update columns of {local}", q.alter_foreign_table(local, actions))
    except FdwError as exc:
        if exc.sqlstate == LOCK_NOT_AVAILABLE:  # busy, not incompatible: retried
            raise
        raise FdwError(
            f"The remote definition of {local} changed in a way its local dependants cannot follow: {exc}",
            step="converge foreign table",
            sqlstate=exc.sqlstate,
        ) from None
    log.info("Updated the columns of %s to the remote definition", local)


def drop_vanished(
    s: LocalSession, table: QualifiedName, server_name: str, table_changes: TableChanges
) -> None:
    try:
        table_changes.change(
            s, table, f"drop {table} (gone on the remote)", q.drop_foreign_tables(table.schema, [table.name])
        )
    except FdwError as exc:
        if exc.sqlstate != DEPENDENT_OBJECTS_STILL_EXIST:
            raise
        raise FdwError(
            f"The remote table behind {table} (server {server_name!r}) no longer exists, but local objects "
            f"depend on it: {exc}. Drop or change them, or exclude the table from the import.",
            step="drop vanished foreign table",
            sqlstate=exc.sqlstate,
        ) from None
