"""Catalog reads on the LOCAL database (relations, columns, indexes, FDW options) as typed records.

Each function runs one query and returns frozen records, so callers name fields instead of indexing
rows by position, and read a relation once per run instead of re-querying it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.session import LocalSession


def parse_options(raw: Sequence[str] | None) -> dict[str, str]:
    """PostgreSQL stores FDW options as ``name=value`` text; split at the first ``=``."""
    return dict(item.split("=", 1) for item in raw or ())


@dataclass(frozen=True)
class Column:
    name: str
    type_sql: str  # format_type() output: quoted by the server
    collation: str | None
    not_null: bool
    options: Mapping[str, str]

    @property
    def remote_name(self) -> str:
        """The column's name on the remote (its ``column_name`` option), for a foreign table's column."""
        return self.options.get("column_name", self.name)


@dataclass(frozen=True)
class Relation:
    name: QualifiedName
    oid: int
    relkind: str
    owner: str
    comment: str | None
    server_name: str | None  # a foreign table's server
    options: Mapping[str, str]  # a foreign table's options
    wrapper: str | None = None  # a foreign table's foreign-data wrapper (postgres_fdw, mysql_fdw …)

    @property
    def is_foreign(self) -> bool:
        return self.relkind == "f"

    @property
    def is_table(self) -> bool:
        return self.relkind in ("r", "p")

    @property
    def remote(self) -> QualifiedName | None:
        """The remote schema/table a foreign table reads (None for any other relation)."""
        if self.server_name is None:
            return None
        return QualifiedName(
            self.options.get("schema_name", self.name.schema), self.options.get("table_name", self.name.name)
        )


@dataclass(frozen=True)
class Index:
    name: str
    indexdef: str
    constraint: str | None  # the constraint the index backs (primary key, unique), if any
    constraintdef: str | None
    unique: bool
    plain: bool  # no predicate, no expressions
    columns: tuple[str, ...]  # its key columns, without the INCLUDE columns
    signature: str  # what the index is, independent of its own and its table's name


@dataclass(frozen=True)
class Table:
    """A relation with its columns (and, for a copy's target, its generated columns)."""

    relation: Relation
    columns: Mapping[str, Column]
    generated: frozenset[str] = frozenset()

    @property
    def oid(self) -> int:
        return self.relation.oid

    @property
    def server_name(self) -> str | None:
        return self.relation.server_name

    @property
    def remote(self) -> QualifiedName | None:
        return self.relation.remote

    @property
    def is_foreign(self) -> bool:
        return self.relation.is_foreign


def read_relation(s: LocalSession, name: QualifiedName, what: str = "relation") -> Relation | None:
    row = s.fetchone(f"read {what}", q.RELATION_QUERY, name)
    if row is None:
        return None
    oid, relkind, owner, comment, server_name, ftoptions, wrapper = row
    return Relation(name, oid, relkind, owner, comment, server_name, parse_options(ftoptions), wrapper)


def foreign_reads(s: LocalSession, table: Table) -> list[tuple[str, str]]:
    """The (foreign-data wrapper, server) of each foreign table a read of ``table`` reads: its own, or
    those of the foreign tables a view reads and of foreign partitions or inheritance children."""
    if table.is_foreign:
        relation = table.relation
        return [(relation.wrapper, relation.server_name)] if relation.wrapper and relation.server_name else []
    return [
        (w, srv) for w, srv in s.fetchall("read foreign tables read", q.FOREIGN_READS_QUERY, (table.oid,))
    ]


def relation_reads(s: LocalSession, name: QualifiedName, what: str) -> list[tuple[str, str]]:
    """As :func:`foreign_reads`, for a relation given by name (which must exist)."""
    rows = s.fetchall("read foreign tables read", q.FOREIGN_READS_QUERY, (read_oid(s, name, what),))
    return [(w, srv) for w, srv in rows]


def where_reads(s: LocalSession, source: QualifiedName, where: str, log: Any) -> list[tuple[str, str]]:
    """As :func:`foreign_reads`, for a read of ``source`` filtered by ``where`` (a subquery of it may
    read other foreign tables), found without planning it: a temporary view over the filtered read is
    only analysed; it is dropped again. A role that may not create it (no TEMPORARY privilege), or a
    ``where`` the view refuses (left to the parse that follows), gets a warning and an empty list;
    what a function called in ``where`` reads is not followed (the catalog does not record it)."""
    view = f"fdw_where_{uuid.uuid4().hex[:12]}"
    step = "read what the filter reads"
    try:
        with s.undone(step):
            s.execute(step, q.create_temporary_view(view, q.where_probe(source, where)))
            oid = s.fetchvalue(step, q.TEMPORARY_RELATION_QUERY, (view,))
            rows = s.fetchall("read foreign tables read", q.FOREIGN_READS_QUERY, (oid,))
    except FdwError as exc:
        log.warning(
            "Could not read which foreign tables the where condition reads (%s): a remote one of them "
            "is not checked to answer before the local server dials it.",
            exc,
        )
        return []
    return [(w, srv) for w, srv in rows]


def refresh_reads(s: LocalSession, view: QualifiedName) -> list[tuple[str, str]]:
    """As :func:`foreign_reads`, for a refresh of the materialized view ``view``: the foreign tables its
    query reads (a materialized view it reads gives its own rows)."""
    oid = read_oid(s, view, "materialized view")
    return [
        (w, srv) for w, srv in s.fetchall("read foreign tables read", q.REFRESH_FOREIGN_READS_QUERY, (oid,))
    ]


def foreign_readers(s: LocalSession, table: Table) -> list[tuple[str, str, str | None]]:
    """As :func:`foreign_reads`, each with the role whose user mapping (hence whose cached remote
    connection) the read goes through: None for the current user's, else a view's owner."""
    if table.is_foreign:
        return [(w, srv, None) for w, srv in foreign_reads(s, table)]
    return [
        (w, srv, reader)
        for w, srv, reader in s.fetchall("read foreign tables read", q.FOREIGN_READERS_QUERY, (table.oid,))
    ]


def read_oid(s: LocalSession, name: QualifiedName, what: str) -> int:
    """The OID of a relation that must exist (a clear error if it does not)."""
    row = s.fetchone(f"read {what}", q.OID_QUERY, name)
    if row is None:
        raise FdwError(f"read {what}: {name} does not exist (dropped meanwhile?).", step=f"read {what}")
    return int(row[0])


def read_columns(s: LocalSession, table: QualifiedName) -> dict[str, Column]:
    rows = s.fetchall("read columns", q.COLUMNS_QUERY, (table.schema, table.name))
    return {
        name: Column(name, type_sql, collation, not_null, parse_options(options))
        for name, type_sql, collation, not_null, options in rows
    }


def read_generated_columns(s: LocalSession, oid: int) -> frozenset[str]:
    return frozenset(c for (c,) in s.fetchall("read generated columns", q.GENERATED_COLUMNS_QUERY, (oid,)))


def read_table(s: LocalSession, name: QualifiedName, what: str, generated: bool = False) -> Table | None:
    relation = read_relation(s, name, what)
    if relation is None:
        return None
    gen = read_generated_columns(s, relation.oid) if generated else frozenset()
    return Table(relation, read_columns(s, name), gen)


def read_indexes(s: LocalSession, oid: int, what: str = "indexes") -> list[Index]:
    return [
        Index(name, indexdef, con, condef, unique, plain, tuple(columns), signature)
        for name, indexdef, con, condef, unique, plain, columns, signature in s.fetchall(
            f"read {what}", q.INDEXES_QUERY, (oid,)
        )
    ]


def read_persistence(s: LocalSession, oid: int) -> str:
    """``p`` permanent, ``u`` unlogged, ``t`` temporary."""
    return str(s.fetchvalue("read persistence", q.PERSISTENCE_QUERY, (oid,)))


def read_image_equal_columns(s: LocalSession, oid: int) -> list[str]:
    """Columns whose equal values have equal binary images (compared cheaply by an upsert)."""
    return [c for (c,) in s.fetchall("read column types", q.IMAGE_EQUAL_COLUMNS_QUERY, (oid,))]
