"""Step 1 of a copy: read the source and the target, check they fit, choose the path, build the filter.

Nothing changes here: every problem is a clear error before the load starts. :func:`inspect_tables`
starts the run's :class:`.CopyRun`; :func:`choose_path` picks direct COPY or postgres_fdw;
:func:`read_conditions` builds the user's filter and the watermark bound.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.bulkcopy import remote_indexes, watermark
from airflow_provider_fdw.bulkcopy.direct import plan_direct
from airflow_provider_fdw.bulkcopy.load import check_split_column
from airflow_provider_fdw.bulkcopy.merge import check_finite_watermark
from airflow_provider_fdw.bulkcopy.plan import CopyResult
from airflow_provider_fdw.bulkcopy.state import CopyRun
from airflow_provider_fdw.bulkcopy.verify import choose_verifier, early_end_columns
from airflow_provider_fdw.bulkcopy.watermark_types import (
    UNNAMED,
    ColumnType,
    from_catalog,
    from_remote,
    narrowing,
    widest,
)
from airflow_provider_fdw.catalog import Table, foreign_reads, parse_options, read_table, where_reads
from airflow_provider_fdw.compat import DriverError
from airflow_provider_fdw.exceptions import INSUFFICIENT_PRIVILEGE, FdwConfigError, FdwError
from airflow_provider_fdw.file_tables import (
    check_header_order,
    check_not_truncated,
    check_one_reader,
    read_encoding,
)
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.predicate import parse_where
from airflow_provider_fdw.privileges import check_policies_do_not_apply, check_readable
from airflow_provider_fdw.refresh import bounded_name
from airflow_provider_fdw.remote_answers import check_servers_read, servers_to_check_exist
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.wrappers import FILE_FDW, WRAPPERS, Wrapper, reads_postgres

if TYPE_CHECKING:
    from airflow_provider_fdw.bulkcopy.engine import BulkCopy


def inspect_tables(copy: BulkCopy, s: LocalSession) -> CopyRun:
    """Read the source and the target once, check they fit; the run's state starts here."""
    p = copy.plan
    with s.transaction():
        source = read_table(s, p.source, "source_table")
        if source is None:
            raise FdwConfigError(
                f"source_table {p.source} does not exist in the local database "
                "(import it with ImportForeignSchemaOperator first)."
            )
        target = read_table(s, p.target, "target", generated=True)
        if target is not None and not target.relation.is_table:
            raise FdwConfigError(f"target_table {p.target} exists but is not a table.")
        reads = foreign_reads(s, source)  # the (wrapper, server) of each foreign table the read reaches
        # before any statement that makes the local server connect (the checks below read the remote)
        check_servers_read(s, reads, copy.log)
    columns = list(p.columns or source.columns)
    unknown = [c for c in columns if c not in source.columns]
    if unknown:
        raise FdwConfigError(f"columns {unknown} do not exist in {p.source}; it has {list(source.columns)}.")
    for what, names in (
        ("key_columns", p.key_columns or ()),
        ("watermark_column", [p.watermark_column] if p.watermark_column else []),
        ("split_column", [p.split_column] if p.split_column else []),
    ):
        missing = [c for c in names if c not in source.columns]
        if missing:
            raise FdwConfigError(f"{what} {missing} not found in {p.source}.")
    if target is not None:
        check_target_columns(copy, source, target, columns)
    if p.where:  # one boolean condition over the source (server-parsed)
        # A subquery of it may read another remote: checked before it is planned (psycopg2 runs
        # parse_where's probe, which plans it).
        with s.transaction():
            if servers_to_check_exist(s):
                subquery_reads = where_reads(s, p.source, p.where, copy.log)
                check_servers_read(s, subquery_reads, copy.log)
                for wrapper in read_wrappers(subquery_reads):
                    if wrapper.sends_conditions_by_name:  # applied locally as a whole, not inside
                        copy.log.warning(
                            "The where of %s reads %s tables: conditions on them inside its subqueries "
                            "are sent to the remote by name and get the remote's meaning (%s: casts "
                            "dropped, || is OR, length counts bytes). Keep them to plain comparisons "
                            "of columns with constants, or filter in a view defined on the remote.",
                            p.source,
                            wrapper.name,
                            wrapper.name,
                        )
        parse_where(s.conn, p.source, p.where)
    read = {*columns, *(p.key_columns or ()), *filter(None, (p.watermark_column, p.split_column))}
    watermark_type, overlap = None, None
    with s.transaction():
        if p.mode != "replace" and p.watermark_column:
            watermark_type = watermark.read_type(s, source.oid, p.watermark_column)
            check_watermark_comparable(
                s, p.source, source, p.watermark_column, reads, copy.log, watermark_type
            )
            check_watermark_collation(s, p, source, target, copy.log)
            type_sql = source.columns[p.watermark_column].type_sql
            overlap = watermark.overlap_for(p.overlap, p.watermark_column, type_sql, watermark_type)
        check_readable(s, p.source, source.oid, sorted(read), p.where)
        if target is not None and (p.mode == "replace" or (p.mode == "append" and p.watermark_column)):
            # (an upsert's ON CONFLICT finds every row; a policy can only make it fail)
            run = "a replace (in place: it compares the rows)" if p.mode == "replace" else "an append"
            check_policies_do_not_apply(s, p.target, target.oid, run, deletes=p.mode == "replace")
        files: list[tuple[QualifiedName, Table]] = []
        file_encoding = None
        if reads_a_file(reads):  # a view over one too
            if p.parallelism > 1:
                check_one_reader(p.source, p.parallelism)
            files = files_read(s, p.source, source)  # a view's or a partition's file too
            file_encoding = read_encoding(s, files, copy.log)
            if s.speaks(file_encoding):
                check_files(copy, s, files)
                files = []
    if files:  # read as the load reads them (a header line is text in the file's encoding)
        with s.transaction(client_encoding=file_encoding):
            check_files(copy, s, files)
    result = CopyResult(p.mode, str(p.source), str(p.target), parallelism=p.parallelism)
    verifier = choose_verifier(p.verify, early_end_columns(source), columns, p.where, copy.log)
    return CopyRun(
        source,
        target,
        columns,
        result,
        verifier,
        watermark.Feed.of(p.source, source.server_name),
        wrappers=read_wrappers(reads),
        file_encoding=file_encoding,
        watermark_type=watermark_type,
        overlap=overlap,
    )


def check_files(copy: BulkCopy, s: LocalSession, files: list[tuple[QualifiedName, Table]]) -> None:
    """The empty-file (replace) and header checks of each file table the copy reads."""
    p = copy.plan
    for name, table in files:
        assert table.server_name is not None
        try:
            if p.mode == "replace":
                check_not_truncated(s, name, table.server_name, table.relation.options, copy.log)
            check_header_order(s, name, table.server_name, list(table.columns), table.relation.options)
        except FdwError as exc:
            # A view reads its file as its owner: this role may not read the file by itself.
            if name == p.source or exc.sqlstate != INSUFFICIENT_PRIVILEGE:
                raise
            copy.log.warning(
                "%s reads %s, whose file this role may not read by itself (%s): its empty-file and "
                "header checks are skipped.",
                p.source,
                name,
                exc,
            )


def read_wrappers(reads: list[tuple[str, str]]) -> list[Wrapper]:
    """The described wrappers of these (wrapper, server) reads, each once."""
    return [WRAPPERS[fdw] for fdw in sorted({fdw for fdw, _ in reads}) if fdw in WRAPPERS]


def check_watermark_comparable(
    s: LocalSession,
    name: Any,
    source: Table,
    column: str,
    reads: list[tuple[str, str]],
    log: Any,
    declared: watermark.WatermarkType,
) -> None:
    """Refuse a watermark the remote cannot compare as PostgreSQL computed it, before anything changes
    (``reads``: the (wrapper, server) of the foreign tables a read of ``source`` reaches).

    A character column of a source whose remote compares text in its own collation (mysql_fdw): the
    bound ``column > 'b'`` is evaluated by MySQL, case-insensitively and blind to trailing spaces by
    default, while the bound itself is PostgreSQL's ``max()``. A row ``'b '`` is then never copied,
    and a row ``'B'`` (below ``'b'`` here, above it there) is copied again on every run, both silently.
    A column whose values arrive rounded (mysql_fdw's ``real``, a MySQL FLOAT; a declared type
    narrower than the remote's, :func:`check_declared_types`): the bound is the rounded value, above
    or below the one the remote holds, so later rows are skipped or rows copied again. The remote
    types of a postgres_fdw source are read once the FDW path is chosen
    (:func:`check_remote_watermark_type`, :func:`read_source_side`). ``declared``: the column's type
    (:func:`.watermark.read_type`).
    """
    # a view over such a foreign table (or a table with such foreign partitions) passes the bound to it
    wrappers = read_wrappers(reads)
    type_sql = source.columns[column].type_sql
    for wrapper in wrappers:
        if type_sql in wrapper.rounded_types:
            raise FdwConfigError(
                f"watermark_column {column} of {name} is {type_sql}: {wrapper.rounded_types[type_sql]}, "
                "so its bound is not a value the remote holds and rows would be skipped or copied again. "
                "Use an exact column (integer, decimal, date or time). Nothing was changed."
            )
    found = remote_column_types(s, source, column, log, postgres=False)
    rounded = sorted(
        (t.name, why)
        for table, types in found
        for t in types
        if (why := WRAPPERS[table.relation.wrapper or ""].rounded_remote_types.get(t.name))
    )
    if rounded:
        remote_type, why = rounded[0]
        raise FdwConfigError(
            f"watermark_column {column} of {name} is a {remote_type.upper()} on the remote: {why}, so its "
            "bound is not a value the remote holds and rows would be skipped or copied again. Use an "
            "exact column (integer, decimal, date or time). Nothing was changed."
        )
    collating = next((w for w in wrappers if w.compares_text_in_its_collation), None)
    if collating is not None and s.fetchvalue(
        "check watermark type", q.COLLATABLE_COLUMN_QUERY, (source.oid, column)
    ):
        raise FdwConfigError(
            f"watermark_column {column} of {name} is {source.columns[column].type_sql}: {collating.name} "
            "sends the watermark bound to the remote, which compares text in its own collation (MySQL's "
            "default is case-insensitive and ignores trailing spaces), not in PostgreSQL's, so rows would "
            "be skipped or copied again. Use a numeric, date or time watermark column. Nothing was changed."
        )
    check_declared_types(s, name, source, column, found, declared, log)


def check_remote_watermark_type(copy: BulkCopy, s: LocalSession, run: CopyRun) -> None:
    """On the FDW path, for a view or a partitioned source: refuse a watermark whose postgres_fdw
    tables declare a type narrower than the remote column's (:func:`check_declared_types`), read from
    each remote's information_schema, before anything changes. A foreign table source is checked by
    :func:`read_source_side` (its index probe reads the remote column's type: no statement more).
    The direct path reads the remote column itself (a filtered column of another type there is
    refused or read through postgres_fdw: :func:`.plan_direct`)."""
    p = copy.plan
    if p.mode == "replace" or not p.watermark_column or run.source.is_foreign:
        return
    if not any(w.remote_is_postgres for w in run.wrappers):
        return
    assert run.watermark_type is not None  # read by inspect_tables for append/upsert
    with s.transaction():
        found = remote_column_types(s, run.source, p.watermark_column, copy.log, postgres=True)
        check_declared_types(s, p.source, run.source, p.watermark_column, found, run.watermark_type, copy.log)


def check_probed_watermark_type(copy: BulkCopy, s: LocalSession, run: CopyRun, row: tuple[Any, ...]) -> None:
    """On the FDW path, for a postgres_fdw foreign table source: :func:`check_declared_types` with the
    remote column's type read by the index probe (``row``: relkind, has an index, type OID,
    modifier); a type not built in (a domain, an enum) is read from the remote's information_schema."""
    p = copy.plan
    assert p.watermark_column is not None and run.watermark_type is not None
    if row[2] is None:
        return  # no such column on the remote: the read fails on its own
    remote = from_catalog(int(row[2]), int(row[3]))
    if remote is None:
        with s.transaction():
            found = remote_column_types(s, run.source, p.watermark_column, copy.log, postgres=True)
    else:
        found = [(run.source, [remote])]
    # the source's own type, already read: no statement
    check_declared_types(s, p.source, run.source, p.watermark_column, found, run.watermark_type, copy.log)


def check_declared_types(
    s: LocalSession,
    name: Any,
    source: Table,
    column: str,
    found: list[tuple[Table, list[ColumnType]]],
    source_type: watermark.WatermarkType,
    log: Any,
) -> None:
    """Refuse a watermark column whose foreign tables (``found``: each with its remote column's types)
    declare a type holding fewer distinct values than the remote's, or ordering them otherwise: the
    values arrive rounded (a remote ``timestamp`` declared ``timestamp(0)``, a ``numeric`` declared
    ``numeric(10,2)``) and the bound, their ``max()``, is compared by the remote with its own values,
    so rows are copied again on every run or never copied (:func:`.watermark_types.narrowing`).
    ``source_type``: the source's column type, already read (the foreign tables a view or a
    partitioned source reads are read in one query)."""
    if not found:
        return
    declared: dict[int, ColumnType | None]
    if [t.oid for t, _ in found] == [source.oid]:
        declared = {source.oid: from_catalog(source_type.oid, source_type.typmod)}
    else:
        # Of the foreign tables a view reads (a join's, a subquery's too), the column comes from those
        # declaring it of the view's own type (a union of timestamp(0) and timestamp(6) is a
        # timestamp: the modifier may differ); a partition's is the partitioned table's.
        step = "read the watermark's declared types"
        rows = s.fetchall(step, q.WATERMARK_TYPE_QUERY, ([t.oid for t, _ in found], column))
        declared = {
            int(oid): from_catalog(int(typid), int(typmod))
            for oid, _, _, typid, typmod in rows
            if int(typid) == source_type.oid
        }
    for table, types in found:
        if table.oid not in declared:
            continue
        here = declared[table.oid]
        if here is None:
            log.info(
                "watermark_column %s of %s is %s, whose rounding against the remote's type is not known: "
                "not compared.",
                column,
                name,
                table.columns[column].type_sql,
            )
            continue
        for remote in types:
            if remote.data_type == UNNAMED:
                continue  # an enum, a composite, an extension's type: the remote's catalog does not say
            why = narrowing(here, remote)
            if why is None:
                continue
            remote_table = ".".join(_remote_name(table) or ("?", "?"))
            via = "" if table.oid == source.oid else f" (read from the foreign table {table.relation.name})"
            remote_column = table.columns[column].remote_name
            to = widest(remote)
            fix = (
                f"ALTER FOREIGN TABLE {table.relation.name} ALTER COLUMN {column} TYPE {to}"
                if to
                else "the remote column's type"
            )
            raise FdwConfigError(
                f"watermark_column {column} of {name}{via} is declared {table.columns[column].type_sql} but "
                f"is {remote.describe()} on the remote ({remote_table}.{remote_column}): {why}. The bound "
                "recorded is the max() of the values as declared, and the remote compares it with its own "
                "values, so rows would be copied again on every run or never copied. Nothing was changed. "
                f"Declare the column with the remote's type, as IMPORT FOREIGN SCHEMA does ({fix}), or "
                "use another watermark column."
            )


def check_watermark_collation(s: LocalSession, p: Any, source: Table, target: Table | None, log: Any) -> None:
    """Refuse a text-like watermark that two collations compare, before anything changes.

    The bound is ``max()`` in the foreign table's declared collation (of the staged rows, recorded)
    or the target's (read from it), and ``column > bound`` runs on the remote (postgres_fdw ships it
    without a COLLATE; the direct path reads there) in the remote column's collation. Where those
    sort differently (``'a'`` and ``'B'`` in "C" and in en-x-icu) rows are copied again on every run
    or never copied. The target's collation is compared with the declared one; the remote's is read
    from the remote catalogs through postgres_fdw (skipped, logged, when it cannot say)."""
    column = p.watermark_column
    if not s.fetchvalue("check watermark type", q.COLLATABLE_COLUMN_QUERY, (source.oid, column)):
        return
    database = s.fetchvalue("read database", q.sql.SQL("SELECT pg_catalog.current_database()"))
    declared = _local_collation(s, database, p.source, column)
    sorts = {f"the foreign table {p.source}" if source.is_foreign else str(p.source): declared}
    if target is not None:
        sorts[f"the target {p.target}"] = _local_collation(s, database, p.target, column)
    for table in _postgres_tables_read(s, p.source, source, column):
        remote = _remote_collation(s, table, column, log)
        if remote is not None:
            sorts[f"the remote column {table.remote}.{table.columns[column].remote_name}"] = remote
    if len({_byte_order(c) for c in sorts.values()}) > 1:
        raise FdwConfigError(
            f"watermark_column {column} of {p.source} is text compared in more than one collation ("
            + "; ".join(f"{who}: {how}" for who, how in sorts.items())
            + "): the bound is max() in one and the remote compares it in another, so rows would be "
            "copied again on every run or never copied. Nothing was changed. Give the foreign table's "
            "column (and the target's) the remote column's collation (ALTER FOREIGN TABLE … ALTER COLUMN "
            f"{column} TYPE … COLLATE …; IMPORT FOREIGN SCHEMA declares it with import_collate 'true', the "
            "default), or use a numeric, date or time watermark column."
        )


# Collations that compare text by its bytes: libc "C" and "POSIX" (strcmp), and code point order, which
# in UTF-8 is the bytes' order: libc C.UTF-8 (a collation or locale of that name exists only for UTF8),
# builtin C and C.UTF-8 (PostgreSQL 17: the database default or ucs_basic and pg_c_utf8).
BYTE_ORDER_COLLATIONS = frozenset({"libc c", "libc posix", "libc c.utf8", "builtin c", "builtin c.utf8"})


def _byte_order(collation: str | None) -> str | None:
    """One name for the collations that sort as bytes; any other as it is."""
    if collation is None:
        return None
    key = collation.lower().replace("utf-8", "utf8")
    return "bytes" if key in BYTE_ORDER_COLLATIONS else collation


def _local_collation(s: LocalSession, database: str, table: QualifiedName, column: str) -> str | None:
    step = "read the watermark's collation"
    version = int(s.fetchvalue(step, q.CURRENT_SETTING_QUERY, ("server_version_num",)))
    statement = q.column_collation_query(through_fdw=False, version=version)
    return s.fetchvalue(step, statement, (database, *table, column))


def _postgres_tables_read(s: LocalSession, name: QualifiedName, source: Table, column: str) -> list[Table]:
    """The postgres_fdw tables a read of ``source`` passes the bound to that have ``column``."""
    if source.is_foreign:
        tables = [source]
    else:
        tables = []
        for wrapper in (w for w in WRAPPERS.values() if w.remote_is_postgres):
            step = f"read the {wrapper.name} tables read"
            for schema, relname in s.fetchall(step, q.WRAPPER_TABLES_READ_QUERY, (source.oid, wrapper.name)):
                table = read_table(s, QualifiedName(schema, relname), "foreign table")
                if table is not None:
                    tables.append(table)
    return [
        t
        for t in tables
        if reads_postgres(t.relation.wrapper)
        and t.remote is not None
        and t.server_name
        and column in t.columns
    ]


def _remote_collation(s: LocalSession, table: Table, column: str, log: Any) -> str | None:
    """The remote column's collation, read through postgres_fdw; None when the remote cannot say."""
    assert table.remote is not None and table.server_name is not None
    row = s.fetchone("read foreign server", q.SERVER_OPTIONS_QUERY, (table.server_name,))
    options = parse_options(row[0] if row else None)
    mapping = s.fetchone("read user mapping", q.MAPPED_USER_QUERY, (table.server_name,))
    database = options.get("dbname") or (mapping[1] if mapping and mapping[0] else None)
    step = "read the remote watermark column's collation"
    params = (database, *table.remote, table.columns[column].remote_name)
    try:
        with s.undone(step):
            # the version first: the catalogs' columns saying a database's provider differ by version
            s.execute(step, q.create_remote_probe(q.COLLATION_VERSION_PROBE, table.server_name), quiet=True)
            version = s.fetchone(step, q.read_remote_probe(q.COLLATION_VERSION_PROBE))
            if version is None or version[1] is None:
                raise FdwError("the remote's server_version_num is not readable", step=step)
            probes = q.watermark_collation_probes(int(version[1]))
            for create in q.create_pk_probes(table.server_name, probes):
                s.execute(step, create, quiet=True)
            found = s.fetchone(
                step, q.column_collation_query(through_fdw=True, version=int(version[1])), params
            )
    except FdwError as exc:
        log.info("Could not read the collation of %s on the remote (%s): not compared.", table.remote, exc)
        return None
    if found is None or found[0] is None:
        return None  # no such column there, or its database's default collation unknown
    return str(found[0])


def files_read(s: LocalSession, name: QualifiedName, source: Table) -> list[tuple[QualifiedName, Table]]:
    """The file_fdw tables a read of ``source`` reads: itself, or those a view or partitioned table reads
    (each read by the copy as it is, so each gets the checks of a file table read directly)."""
    if source.is_foreign:
        return [(name, source)] if source.relation.wrapper == FILE_FDW.name and source.server_name else []
    found: list[tuple[QualifiedName, Table]] = []
    for schema, relname in s.fetchall(
        "read the file tables read", q.WRAPPER_TABLES_READ_QUERY, (source.oid, FILE_FDW.name)
    ):
        file_name = QualifiedName(schema, relname)
        table = read_table(s, file_name, "file table")
        if table is not None and table.server_name is not None:
            found.append((file_name, table))
    return found


def reads_a_file(reads: list[tuple[str, str]]) -> bool:
    """Whether a read reaching these (wrapper, server) foreign tables (:func:`.foreign_reads`: the
    source itself, or those a view or partition reads) reads a file_fdw table."""
    return any(wrapper == FILE_FDW.name for wrapper, _ in reads)


def remote_column_types(
    s: LocalSession, source: Table, column: str, log: Any, postgres: bool
) -> list[tuple[Table, list[ColumnType]]]:
    """The remote types of a foreign table's column, each foreign table with the types read from its
    remote's catalog (none when the wrapper has no such probe; left out, logged, when the remote
    cannot say), of the wrappers whose remote is PostgreSQL (``postgres``) or of the others. For a
    view or a partitioned table: of the column of that name of each foreign table it reads (a
    partition's columns are the table's; a view that renames the column is not followed), as the
    bound is passed on to them."""
    tables = [source] if source.is_foreign else _probed_tables_read(s, source, postgres)
    found = []
    for table in tables:
        wrapper = WRAPPERS.get(table.relation.wrapper or "")
        if wrapper is None or wrapper.remote_is_postgres != postgres or column not in table.columns:
            continue
        types = _remote_types(s, table, column, log)
        if types:
            found.append((table, types))
    return found


def _probed_tables_read(s: LocalSession, source: Table, postgres: bool) -> list[Table]:
    """The foreign tables a view or partitioned table reads whose wrapper can read a remote type (of
    the wrappers whose remote is PostgreSQL, ``postgres``, or of the others)."""
    tables = []
    for wrapper in WRAPPERS.values():
        if wrapper.column_type_probe is None or wrapper.remote_is_postgres != postgres:
            continue
        step = f"read the {wrapper.name} tables read"
        for schema, name in s.fetchall(step, q.WRAPPER_TABLES_READ_QUERY, (source.oid, wrapper.name)):
            table = read_table(s, QualifiedName(schema, name), "foreign table")
            if table is not None:
                tables.append(table)
    return tables


def _remote_types(s: LocalSession, source: Table, column: str, log: Any) -> list[ColumnType]:
    relation = source.relation
    wrapper = WRAPPERS.get(relation.wrapper or "")
    if (
        wrapper is None
        or wrapper.column_type_probe is None
        or wrapper.remote_table_options is None
        or relation.server_name is None
    ):
        return []
    remote = _remote_name(source)
    if remote is None:
        return []
    names = {"dbname": remote[0], "table_name": remote[1], "column_name": source.columns[column].remote_name}
    probe = bounded_name("fdw_type", relation.name.name)
    create, read = wrapper.column_type_probe(probe, relation.server_name, names)
    step = "read the watermark column's remote type"
    try:
        with s.undone(step):
            s.execute(step, create, quiet=True)
            rows = s.fetchall(step, read)
    except FdwError as exc:  # the remote cannot say: the declared type was checked
        log.info(
            "Could not read the type of %s.%s on the remote (%s): not compared.",
            ".".join(remote),
            column,
            exc,
        )
        return []
    if not rows:  # a materialized view (information_schema lists none), a column the role may not see
        log.info(
            "The remote does not describe %s.%s (a materialized view, or no privilege on the column): "
            "its type is not compared with the declared one.",
            ".".join(remote),
            column,
        )
    return sorted({from_remote(row, wrapper.remote_type_names) for row in rows}, key=repr)


def _remote_name(table: Table) -> tuple[str, str] | None:
    """(remote schema or database, table) a foreign table of a described wrapper reads; None when
    it does not say (a mysql_fdw table without its database)."""
    relation = table.relation
    wrapper = WRAPPERS.get(relation.wrapper or "")
    if wrapper is None or wrapper.remote_table_options is None:
        return None
    if wrapper.remote_table_options[0] not in relation.options and not wrapper.remote_is_postgres:
        return None  # postgres_fdw defaults to the local schema's name, mysql_fdw to none
    return wrapper.remote_table(relation.options, (relation.name.schema, relation.name.name))


def check_target_columns(copy: BulkCopy, source: Table, target: Table, columns: list[str]) -> None:
    p = copy.plan
    problems = []
    for name in columns:
        if name not in target.columns:
            problems.append(f"{name} is missing in the target")
        elif name in target.generated:
            problems.append(
                f"{name} is a generated column of the target (computed from the others): leave it out "
                "of columns="
            )
        elif target.columns[name].type_sql != source.columns[name].type_sql:
            problems.append(
                f"{name} is {source.columns[name].type_sql} in the source but "
                f"{target.columns[name].type_sql} in the target"
            )
    if p.mode == "replace":
        # generated columns are recomputed by the target
        extra = [n for n in target.columns if n not in columns and n not in target.generated]
        if extra:
            problems.append(f"the target has columns the copy does not fill: {extra}")
    if problems:
        raise FdwConfigError(f"Columns of {p.source} and {p.target} do not match: {'; '.join(problems)}.")


def choose_path(
    copy: BulkCopy,
    s: LocalSession,
    run: CopyRun,
    keep_remote: bool = False,
    connect: Callable[..., Any] | None = None,
) -> None:
    """Direct COPY or postgres_fdw (see :func:`.plan_direct`), said in the log when it matters.

    ``keep_remote``: keep the remote connection the direct path was planned on in ``run.remote``
    (the caller closes it with :meth:`.CopyRun.close_remote`). ``connect``: the remote connection
    to plan on (an :class:`.EarlyConnect`), else ``copy.remote_connect``.
    """
    p = copy.plan
    keep = (lambda conn: setattr(run, "remote", conn)) if keep_remote else None
    run.direct = plan_direct(
        s, p, run.source, run.columns, connect or copy.remote_connect, copy.remote_identity, copy.log, keep
    )
    if run.direct is None:  # planned, then fell back to the FDW path: the connection is not needed
        run.close_remote()
    run.result.path = "direct" if run.direct else "fdw"
    if p.verify == "checksum" and run.direct is not None and not run.direct.binary:
        # The checksum hashes binary values: equal only when the remote types are the declared ones.
        reason = (
            "verify='checksum' on the direct path needs every copied column's remote type to be its "
            f"declared type (binary COPY); {p.source} is read as text"
        )
        if p.transport == "copy":
            raise FdwConfigError(f"{reason}: use verify='count', or transport='fdw' to checksum.")
        copy.log.info("%s: copying through postgres_fdw instead.", reason)
        run.direct, run.result.path = None, "fdw"
        run.close_remote()
    if run.direct is None:
        check_remote_watermark_type(copy, s, run)  # before anything changes, as the checks above
    if run.direct is None and p.parallelism > 1:
        check_split_column(copy, run)  # before anything changes: ctid ranges need the direct path
        wrappers = ", ".join(w.name for w in run.wrappers) or "its foreign tables"
        copy.log.info(
            "Parallel copy through %s: each of the %d ranges reads in its own remote transaction, so "
            "rows changed on the source meanwhile may be seen by one range and not another "
            "(transport='copy' reads every range of a PostgreSQL source in one snapshot).",
            wrappers,
            p.parallelism,
        )


@dataclass(frozen=True)
class Ceiling:
    """The source's ``max(watermark)`` (as text; None: no row had one), read once before the first
    range of a copy whose ranges read in separate remote transactions (:func:`needs_ceiling`)."""

    top: str | None


def needs_ceiling(plan: Any, path: str, ranges: int) -> bool:
    """Whether ranges read at different times must stop at a :class:`Ceiling`: through postgres_fdw
    each range reads its own snapshot, so without one the recorded watermark (the newest row staged)
    could pass a row changed after an earlier range read its rows, never to be copied."""
    return plan.mode in ("append", "upsert") and bool(plan.watermark_column) and path == "fdw" and ranges > 1


def target_is_empty(s: LocalSession, target: QualifiedName) -> bool:
    return not s.fetchvalue("look for a row", q.has_rows(target))


def conditions_by_name(run: CopyRun) -> Wrapper | None:
    """A wrapper of the source's reads that sends conditions to its remote by name, if any."""
    return next((w for w in run.wrappers if w.sends_conditions_by_name), None)


def user_conditions(where: str | None, run: CopyRun) -> list[Any]:
    """The user's ``where`` as every read of the source applies it: by the local server when a
    wrapper of the source would send it to its remote by name."""
    if not where:
        return []
    predicate = q.user_predicate(where)
    return [q.applied_locally(predicate) if conditions_by_name(run) else predicate]


def read_ceiling(copy: BulkCopy, s: LocalSession, run: CopyRun) -> Ceiling:
    """``max(watermark)`` of the source (under ``where``), as text that reads back to the same value
    (the session's DateStyle is ISO and extra_float_digits 3: connection.py)."""
    p = copy.plan
    assert p.watermark_column is not None
    conditions = user_conditions(p.where, run)  # the load's: the ceiling reads the rows it reads
    with run.reading_source(s):
        top = s.fetchvalue(
            "read the source's watermark", q.max_text_of(p.source, p.watermark_column, conditions)
        )
    copy.log.info(
        "The ranges read %s in separate remote transactions: rows with %s above %s (the newest when the "
        "copy started) are left to the next run, so the recorded watermark passes no row changed after "
        "an earlier range read its rows.",
        p.source,
        p.watermark_column,
        top,
    )
    return Ceiling(top)


def read_start(copy: BulkCopy, s: LocalSession, run: CopyRun, target: Table, overlap: Any) -> watermark.Bound:
    """Where an append/upsert starts in an existing target: its feed's record; when other feeds share
    the target, by what it holds (empty: every row; rewritten: the feed's record of this table; no
    record: upsert every row, append refused); else ``max()`` of the target."""
    p = copy.plan
    assert p.watermark_column is not None
    column = p.watermark_column
    type_sql = run.source.columns[column].type_sql  # the target's too (checked)
    feed = run.feed
    with s.transaction():
        run.start_files = watermark.table_files(s, target.oid)
        # Subtract the overlap here: the remote then gets a constant bound it can push down
        # (timestamptz - interval is only STABLE, so postgres_fdw would filter locally).
        recorded = watermark.read_bound(s, p.target, target.oid, column, type_sql, feed, overlap)
        if recorded is not None:
            return recorded
        others = watermark.other_feeds(s, p.target, target.oid, feed)
        if not others:  # no record (first incremental run, replaced target): max()
            check_finite_watermark(s, p.target, column)
            copy.log.info("No recorded watermark for %s: read max(%s) from it", p.target, column)
            return watermark.read_target_bound(s, p.target, column, overlap)
        if target_is_empty(s, p.target):  # a TRUNCATE: every feed's rows are gone
            run.restarts_other_feeds = True
            copy.log.info("No rows in %s, which other copies feed: copying every row of %s", p.target, feed)
            return watermark.Bound(None, None, False)
        # A VACUUM FULL, CLUSTER or a partition added or dropped changed the storage the records were
        # made on; the table, not empty, keeps the feeds' rows: the feed's own record holds.
        kept = watermark.read_bound(
            s, p.target, target.oid, column, type_sql, feed, overlap, any_storage=True
        )
        if kept is not None:
            copy.log.info(
                "%s was rewritten since %s recorded its watermark and other copies feed it: the record "
                "is kept (the table is not empty)",
                p.target,
                feed,
            )
            return kept
        if p.mode == "append":  # max() of the target is the other feeds': it would skip rows
            raise FdwConfigError(watermark.shared_target_error(s, p.target, feed, others, column))
        copy.log.info(
            "No recorded watermark for %s into %s, which other copies feed (%s): copying every row of it "
            "(matched by key: nothing is duplicated)",
            feed,
            p.target,
            "; ".join(str(f) for f in others),
        )
        return watermark.Bound(None, None, False)


def read_conditions(
    copy: BulkCopy, s: LocalSession, run: CopyRun, ceiling: Ceiling | None = None
) -> list[Any]:
    """The user's filter and, for append/upsert, the watermark bound read from the target.

    Rows whose watermark is NULL never pass a ``>`` bound: they are counted on the source each run
    (``null_watermark_rows`` in the summary); upsert also copies them (matched on the key, unchanged
    ones are not rewritten), append warns (copying them again would duplicate them).
    ``ceiling``: rows above it are left to the next run (:func:`needs_ceiling`).
    """
    p = copy.plan
    by_name = conditions_by_name(run)
    conditions = user_conditions(p.where, run)
    if by_name is not None and p.where:
        copy.log.info(
            "%s reads %s tables: its where is applied by the local server, after every row is read "
            "(%s would send its functions, operators and casts to the remote, which gives them its own "
            "meaning). To filter on the remote, read a view defined there.",
            p.source,
            by_name.name,
            by_name.name,
        )
    if p.mode == "replace" or not p.watermark_column:
        return conditions
    if run.target is not None:
        run.start = read_start(copy, s, run, run.target, run.overlap)  # overlap: upsert only (plan_copy)
    bound = run.start.bound if run.start else None
    nulls, index_row = read_source_side(copy, s, run, conditions)
    remote_column = run.source.columns[p.watermark_column].options.get("column_name", p.watermark_column)
    advice = watermark.index_advice(run.source.remote or p.source, remote_column, index_row)
    if advice is not None:
        copy.log.warning(
            "%s: no index on the source serves the watermark filter on %s, so every run reads the "
            "whole table there. On the source database, run: %s;",
            p.source,
            p.watermark_column,
            s.render(advice),
        )
    run.result.details["previous_watermark"] = bound
    run.result.details["null_watermark_rows"] = nulls
    top = None
    if ceiling is not None:
        type_sql = run.source.columns[p.watermark_column].type_sql
        top = q.watermark_ceiling(p.watermark_column, ceiling.top, type_sql)
        if bound is None:  # a first run copies the rows without a watermark too
            conditions.append(q.or_null(top, p.watermark_column))
    if bound is not None:
        assert run.watermark_type is not None  # read by inspect_tables for append/upsert
        bounded = q.watermark_predicate(
            p.watermark_column, bound, p.mode == "upsert", run.watermark_type.bound_type
        )
        if top is not None:
            bounded = q.sql.SQL("{} AND {}").format(bounded, top)
        if by_name is not None and not run.source.is_foreign and not run.source.relation.is_table:
            # a view's column may be an expression (seen_at::date) the wrapper would send without it
            bounded = q.applied_locally(bounded)
            copy.log.warning(
                "%s is a view over %s tables: its watermark bound is applied by the local server, "
                "after every row is read, on every run. Copy from the foreign table itself to have "
                "the bound sent to the remote.",
                p.source,
                by_name.name,
            )
        if p.mode == "upsert":
            bounded = q.or_null(bounded, p.watermark_column)
        elif nulls:
            copy.log.warning(
                "%d rows of %s have a NULL %s: append copies them only on its first run "
                "(use mode='upsert' with key_columns to copy them by key).",
                nulls,
                p.source,
                p.watermark_column,
            )
        conditions.append(bounded)
        copy.log.info(
            "Copying rows with %s %s %s%s",
            p.watermark_column,
            ">=" if p.mode == "upsert" else ">",
            bound,
            f" and the {nulls} rows where it is NULL" if p.mode == "upsert" and nulls else "",
        )
    run.estimated_rows = estimate_direct_rows(copy, run, conditions)
    return conditions


def read_source_side(
    copy: BulkCopy, s: LocalSession, run: CopyRun, conditions: list[Any]
) -> tuple[int, tuple[Any, ...] | None]:
    """Source rows (matching ``where``) whose watermark is NULL, counted where the rows are read;
    and (relkind, whether an index leads with the watermark column) of the remote table."""
    p = copy.plan
    assert p.watermark_column is not None
    remote_column = run.source.columns[p.watermark_column].options.get("column_name", p.watermark_column)
    if run.direct is None:
        with run.reading_source(s):
            statement = q.null_watermark_count(p.source, p.watermark_column, conditions)
            nulls = int(s.fetchvalue("count NULL watermarks", statement))
        if run.source.remote is None or run.source.server_name is None:
            return nulls, None
        if not reads_postgres(run.source.relation.wrapper):  # the probe reads pg_catalog
            return nulls, None
        try:
            row = remote_indexes.probe_through_fdw(
                s, run.source.server_name, run.source.remote, remote_column
            )
        except FdwError as exc:  # only advice (the type not compared): the copy goes on without it
            copy.log.info(
                "Could not read the indexes and the type of %s on the remote: %s", run.source.remote, exc
            )
            row = None
        if row is not None:
            check_probed_watermark_type(copy, s, run, row)
        return nulls, row
    assert copy.remote_connect is not None and run.source.remote is not None
    # The direct path reads as the user mapping's role without going through it: count over the direct
    # connection too (same names), the one that planned the path when it was kept (one connection less).
    kept = run.remote is not None
    remote = run.remote if kept else copy.remote_connect(client_encoding=run.direct.client_encoding)
    try:
        with remote.cursor() as cur:
            cur.execute(q.null_watermark_count(run.source.remote, p.watermark_column, conditions))
            row = cur.fetchone()
            if row is None:
                raise FdwError("count NULL watermarks on the remote: no row returned.", step="count")
            probe_query = remote_indexes.index_probe_query(through_fdw=False)
            cur.execute(probe_query, (remote_column, *run.source.remote))
            probe = cur.fetchone()
        remote.rollback()  # the snapshot holder that takes it next starts its own transaction
        return int(row[0]), probe
    except DriverError as exc:
        raise s.error("count NULL watermarks on the remote", exc) from None
    finally:
        if not kept:
            remote.close()


def estimate_direct_rows(copy: BulkCopy, run: CopyRun, conditions: list[Any]) -> int | None:
    """The remote planner's estimate of the rows a one-range direct read returns (EXPLAIN, on the
    kept connection: no extra connection, no scan); None when unknown."""
    if copy.psql_relay is None or not copy.small_loads_in_process or copy.plan.parallelism > 1:
        return None  # the relay is already decided
    if run.direct is None or run.remote is None or run.source.remote is None:
        return None
    remote_columns = [run.source.columns[c].remote_name for c in run.columns]
    statement = q.explain_select_json(run.source.remote, remote_columns, conditions)
    try:
        with run.remote.cursor() as cur:
            cur.execute(statement)
            row = cur.fetchone()
        run.remote.rollback()
    except DriverError as exc:  # only a hint for the relay: the copy goes on without it
        copy.log.info("Could not estimate the rows to read from %s: %s", run.source.remote, exc)
        with suppress(DriverError):
            run.remote.rollback()
        return None
    plan: Any = row[0] if row else None
    if isinstance(plan, str):  # psycopg2 without a json adapter returns text
        plan = json.loads(plan)
    try:
        return int(plan[0]["Plan"]["Plan Rows"])
    except (TypeError, KeyError, IndexError, ValueError):
        return None
