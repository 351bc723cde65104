"""Table DDL: create, rename, drop, constraints, indexes, grants, materialized views."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.sql.servers import collate_clause, column_type, options_clause


def create_materialized_view(view: QualifiedName, query: str) -> sql.Composed:
    """The user's query is SQL by nature (as in SQLExecuteQueryOperator); only the name is composed.
    Created empty (its query is not even planned: what it reads can be checked before a refresh); on a
    line of its own, so that a query ending in a ``--`` comment cannot comment it out."""
    return sql.SQL("CREATE MATERIALIZED VIEW {} AS {}\nWITH NO DATA").format(
        sql.Identifier(*view), sql.SQL(query.strip().rstrip(";"))
    )


def create_index(
    table: QualifiedName, index_name: str, columns: Sequence[str], unique: bool = False, using: str = "btree"
) -> sql.Composed:
    return sql.SQL("CREATE {}INDEX IF NOT EXISTS {} ON {} USING {} ({})").format(
        sql.SQL("UNIQUE " if unique else ""),
        sql.Identifier(index_name),
        sql.Identifier(*table),
        sql.Identifier(using),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
    )


def refresh_materialized_view(view: QualifiedName, concurrently: bool) -> sql.Composed:
    return sql.SQL("REFRESH MATERIALIZED VIEW {}{}").format(
        sql.SQL("CONCURRENTLY " if concurrently else ""), sql.Identifier(*view)
    )


def count_rows(table: QualifiedName) -> sql.Composed:
    return sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table))


def has_rows(table: QualifiedName) -> sql.Composed:
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(*table))


def column_list(columns: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, columns))


def column_definitions(columns: Sequence[tuple[str, str, str | None, bool]]) -> sql.Composable:
    """``name type [COLLATE c] [NOT NULL]`` for (name, format_type() text, collation, not_null)."""
    return sql.SQL(", ").join(
        sql.SQL("{} {}{}").format(
            sql.Identifier(name), column_type(type_sql, collation), sql.SQL(" NOT NULL" if not_null else "")
        )
        for name, type_sql, collation, not_null in columns
    )


def create_table(
    table: QualifiedName,
    columns: Sequence[tuple[str, str, str | None, bool]],
    primary_key: Sequence[str] | None = None,
    unlogged: bool = False,
) -> sql.Composed:
    pk = sql.SQL(", PRIMARY KEY ({})").format(column_list(primary_key)) if primary_key else sql.SQL("")
    return sql.SQL("CREATE {}TABLE {} ({}{})").format(
        sql.SQL("UNLOGGED " if unlogged else ""), sql.Identifier(*table), column_definitions(columns), pk
    )


def create_table_like(table: QualifiedName, like: QualifiedName, unlogged: bool = False) -> sql.Composed:
    return sql.SQL("CREATE {}TABLE {} (LIKE {} INCLUDING ALL)").format(
        sql.SQL("UNLOGGED " if unlogged else ""), sql.Identifier(*table), sql.Identifier(*like)
    )


def create_temp_foreign_table(
    name: str,
    server_name: str,
    columns: Sequence[tuple[str, str, str | None, dict[str, str]]],
    options: Mapping[str, str],
) -> sql.Composed:
    """A session-private foreign table (pg_temp) over the same remote table, with bulk-read options;
    ``columns``: (name, format_type() text, collation, column options). The collation is the declared
    one: conditions the local server evaluates compare as they would on the user's table."""
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}{}{}").format(  # a column's OPTIONS come before its COLLATE
            sql.Identifier(col),
            sql.SQL(type_sql),
            options_clause(col_options),
            collate_clause(collation),
        )
        for col, type_sql, collation, col_options in columns
    )
    return sql.SQL("CREATE FOREIGN TABLE pg_temp.{} ({}) SERVER {}{}").format(
        sql.Identifier(name), cols, sql.Identifier(server_name), options_clause(options)
    )


def drop_table(table: QualifiedName) -> sql.Composed:
    return sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(*table))


def rename_table(table: QualifiedName, new_name: str) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(*table), sql.Identifier(new_name))


def rename_index(schema: str, index: str, new_name: str) -> sql.Composed:
    return sql.SQL("ALTER INDEX {} RENAME TO {}").format(
        sql.Identifier(schema, index), sql.Identifier(new_name)
    )


def rename_constraint(table: QualifiedName, constraint: str, new_name: str) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
        sql.Identifier(*table), sql.Identifier(constraint), sql.Identifier(new_name)
    )


def drop_index(schema: str, index: str) -> sql.Composed:
    return sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, index))


def drop_constraint(table: QualifiedName, constraint: str) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
        sql.Identifier(*table), sql.Identifier(constraint)
    )


def server_ddl(statement: str) -> sql.Composable:
    """DDL text PostgreSQL itself produced (``pg_get_indexdef``) for the same table: already quoted."""
    return sql.SQL(statement)


def add_constraint(table: QualifiedName, name: str, definition: str) -> sql.Composed:
    """``definition`` is ``pg_get_constraintdef()`` output, produced and quoted by the server."""
    return sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
        sql.Identifier(*table), sql.Identifier(name), sql.SQL(definition)
    )


def add_primary_key(table: QualifiedName, name: str, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
        sql.Identifier(*table), sql.Identifier(name), column_list(columns)
    )


def lock_table(table: QualifiedName) -> sql.Composed:
    return sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(*table))


def owner_to(table: QualifiedName, owner: str) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(*table), sql.Identifier(owner))


def _grantee(grantee: str | None) -> sql.Composable:
    return sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC")


def grant(
    privileges: Sequence[str], table: QualifiedName, grantee: str | None, grantable: bool
) -> sql.Composed:
    """Privileges from ``aclexplode()`` (``grantee`` None = PUBLIC)."""
    return sql.SQL("GRANT {} ON TABLE {} TO {}{}").format(
        # the fixed privilege keywords aclexplode() returns
        sql.SQL(", ").join(sql.SQL(p) for p in privileges),
        sql.Identifier(*table),
        _grantee(grantee),
        sql.SQL(" WITH GRANT OPTION" if grantable else ""),
    )


def revoke_all(table: QualifiedName, grantees: Sequence[str | None]) -> sql.Composed:
    """``REVOKE ALL`` from each of ``grantees`` (None = PUBLIC)."""
    return sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(
        sql.Identifier(*table), sql.SQL(", ").join(_grantee(g) for g in grantees)
    )


def comment_on_table(table: QualifiedName, comment: str) -> sql.Composed:
    return sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(*table), sql.Literal(comment))


def table_ref(table: QualifiedName, only: bool) -> sql.Composable:
    """``ONLY table`` for plain tables (inheritance children keep their rows), ``table`` otherwise."""
    return sql.SQL("{}{}").format(sql.SQL("ONLY " if only else ""), sql.Identifier(*table))


def catch_up_sequence(sequence_oid: int, table: QualifiedName, column: str, only: bool) -> sql.Composed:
    """Move an ascending sequence up to ``max(column)`` only when it is behind; never down."""
    return sql.SQL(
        "SELECT setval(ps.seqrelid, m.v) FROM (SELECT max({})::bigint AS v FROM {}) AS m, pg_sequence ps "
        "WHERE ps.seqrelid = {} AND ps.seqincrement > 0 AND m.v IS NOT NULL "
        "AND m.v >= coalesce(pg_sequence_last_value(ps.seqrelid) + 1, ps.seqstart)"
    ).format(sql.Identifier(column), table_ref(table, only), sql.Literal(sequence_oid))


DEFER_CONSTRAINTS = sql.SQL("SET CONSTRAINTS ALL DEFERRED")
# After an apply: deferred checks and constraint triggers run now, before what was written is checked.
IMMEDIATE_CONSTRAINTS = sql.SQL("SET CONSTRAINTS ALL IMMEDIATE")


def lock_table_in(table: QualifiedName, mode: str) -> sql.Composed:
    """``LOCK TABLE … IN <mode> MODE`` for one of the fixed lock mode keywords."""
    if mode not in ("EXCLUSIVE", "ACCESS EXCLUSIVE", "SHARE ROW EXCLUSIVE"):
        raise ValueError(f"unexpected lock mode {mode!r}")
    return sql.SQL("LOCK TABLE {} IN {} MODE").format(sql.Identifier(*table), sql.SQL(mode))


def uncomment_table(table: QualifiedName) -> sql.Composed:
    return sql.SQL("COMMENT ON TABLE {} IS NULL").format(sql.Identifier(*table))
