"""Pure functions that compose the SQL this provider runs.

Every identifier goes through ``sql.Identifier`` and every value through ``sql.Literal`` (or a
placeholder), so quoting cannot be forgotten. Nothing here touches a database; unit tests render
the statements and compare text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_fdw._driver import sql
from airflow_provider_fdw.names import ROLE_KEYWORDS, QualifiedName

FDW_NAME = "postgres_fdw"

# pg_class.relkind in words, for messages.
RELKIND_NAMES = {
    "r": "a table",
    "v": "a view",
    "m": "a materialized view",
    "f": "a foreign table",
    "p": "a partitioned table",
    "i": "an index",
    "S": "a sequence",
    "c": "a composite type",
}


def create_extension(name: str = FDW_NAME) -> sql.Composed:
    return sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name))


def create_server(server_name: str, options: Mapping[str, str]) -> sql.Composed:
    return sql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER {}{}").format(
        sql.Identifier(server_name), sql.Identifier(FDW_NAME), options_clause(options)
    )


def alter_server(
    server_name: str, current: Mapping[str, str], desired: Mapping[str, str]
) -> sql.Composed | None:
    """``ALTER SERVER … OPTIONS (SET/ADD/DROP …)`` turning ``current`` into ``desired``; None if equal."""
    changes = alter_options_clause(current, desired)
    if changes is None:
        return None
    return sql.SQL("ALTER SERVER {} {}").format(sql.Identifier(server_name), changes)


def create_user_mapping(server_name: str, local_user: str, options: Mapping[str, str]) -> sql.Composed:
    return sql.SQL("CREATE USER MAPPING FOR {} SERVER {}{}").format(
        role_spec(local_user), sql.Identifier(server_name), options_clause(options)
    )


def alter_user_mapping(
    server_name: str, local_user: str, current: Mapping[str, str], desired: Mapping[str, str]
) -> sql.Composed | None:
    changes = alter_options_clause(current, desired)
    if changes is None:
        return None
    return sql.SQL("ALTER USER MAPPING FOR {} SERVER {} {}").format(
        role_spec(local_user), sql.Identifier(server_name), changes
    )


def drop_server(server_name: str, cascade: bool = False) -> sql.Composed:
    return sql.SQL("DROP SERVER IF EXISTS {}{}").format(
        sql.Identifier(server_name), sql.SQL(" CASCADE" if cascade else "")
    )


def create_schema(schema: str) -> sql.Composed:
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


def drop_foreign_tables(schema: str, tables: Sequence[str]) -> sql.Composed:
    return sql.SQL("DROP FOREIGN TABLE IF EXISTS {}").format(
        sql.SQL(", ").join(sql.Identifier(schema, t) for t in tables)
    )


def import_foreign_schema(
    server_name: str,
    remote_schema: str,
    local_schema: str,
    limit_to: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    import_options: Mapping[str, str] | None = None,
) -> sql.Composed:
    restriction: sql.Composable = sql.SQL("")
    if limit_to:
        restriction = sql.SQL(" LIMIT TO ({})").format(sql.SQL(", ").join(map(sql.Identifier, limit_to)))
    elif exclude:
        restriction = sql.SQL(" EXCEPT ({})").format(sql.SQL(", ").join(map(sql.Identifier, exclude)))
    return sql.SQL("IMPORT FOREIGN SCHEMA {}{} FROM SERVER {} INTO {}{}").format(
        sql.Identifier(remote_schema),
        restriction,
        sql.Identifier(server_name),
        sql.Identifier(local_schema),
        options_clause(import_options or {}),
    )


def analyze(table: QualifiedName) -> sql.Composed:
    return sql.SQL("ANALYZE {}").format(sql.Identifier(*table))


def create_remote_probe(probe_table: str, server_name: str) -> sql.Composed:
    """A session-local foreign table over the remote ``pg_settings``: reading it proves the local
    server can reach the remote through the user mapping (not merely that Airflow can)."""
    return sql.SQL(
        "CREATE FOREIGN TABLE pg_temp.{} (name text, setting text) SERVER {} "
        "OPTIONS (schema_name 'pg_catalog', table_name 'pg_settings')"
    ).format(sql.Identifier(probe_table), sql.Identifier(server_name))


def read_remote_probe(probe_table: str) -> sql.Composed:
    return sql.SQL(
        "SELECT max(setting) FILTER (WHERE name = 'server_version'), "
        "max(setting) FILTER (WHERE name = 'server_version_num') FROM pg_temp.{}"
    ).format(sql.Identifier(probe_table))


def drop_remote_probe(probe_table: str) -> sql.Composed:
    return sql.SQL("DROP FOREIGN TABLE IF EXISTS pg_temp.{}").format(sql.Identifier(probe_table))


def disconnect(server_name: str | None) -> sql.Composed:
    if server_name is None:
        return sql.SQL("SELECT postgres_fdw_disconnect_all()").format()
    return sql.SQL("SELECT postgres_fdw_disconnect({})").format(sql.Literal(server_name))


def set_local(setting: str, value: str) -> sql.Composed:
    """``SET LOCAL`` for the current transaction only (``set_config(…, true)`` takes a value literal)."""
    return sql.SQL("SELECT set_config({}, {}, true)").format(sql.Literal(setting), sql.Literal(value))


def role_spec(local_user: str) -> sql.Composable:
    """A role keyword (CURRENT_USER, PUBLIC, …) stays a keyword; anything else is a quoted role name."""
    if local_user in ROLE_KEYWORDS:
        return sql.SQL(local_user)
    return sql.Identifier(local_user)


def options_clause(options: Mapping[str, str]) -> sql.Composable:
    """`` OPTIONS (name 'value', …)``, or nothing for no options."""
    if not options:
        return sql.SQL("")
    return sql.SQL(" OPTIONS ({})").format(
        sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(str(v))) for k, v in options.items()
        )
    )


def alter_options_clause(current: Mapping[str, str], desired: Mapping[str, str]) -> sql.Composed | None:
    """``OPTIONS (SET a 'x', ADD b 'y', DROP c)`` converging ``current`` to ``desired``, or None."""
    parts: list[sql.Composable] = []
    for name, value in desired.items():
        if name not in current:
            parts.append(sql.SQL("ADD {} {}").format(sql.Identifier(name), sql.Literal(str(value))))
        elif current[name] != str(value):
            parts.append(sql.SQL("SET {} {}").format(sql.Identifier(name), sql.Literal(str(value))))
    parts.extend(sql.SQL("DROP {}").format(sql.Identifier(name)) for name in current if name not in desired)
    if not parts:
        return None
    return sql.SQL("OPTIONS ({})").format(sql.SQL(", ").join(parts))


# Catalog queries. Parameters are passed separately, never spliced.

SERVER_OPTIONS_QUERY = sql.SQL(
    "SELECT s.srvoptions, w.fdwname FROM pg_foreign_server s "
    "JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw WHERE s.srvname = %s"
)

# pg_user_mappings shows umoptions to the mapped user and to superusers; others see NULL.
USER_MAPPING_QUERY = sql.SQL(
    "SELECT um.umoptions, um.umuser = 0 AS is_public FROM pg_user_mappings um "
    "WHERE um.srvname = %s AND um.umuser = CASE WHEN %s THEN 0 "
    "ELSE (SELECT oid FROM pg_roles WHERE rolname = %s) END"
)

ROLE_NAME_QUERY = sql.SQL(
    "SELECT CASE %s WHEN 'CURRENT_USER' THEN current_user::text "
    "WHEN 'CURRENT_ROLE' THEN current_role::text WHEN 'USER' THEN current_user::text "
    "WHEN 'SESSION_USER' THEN session_user::text ELSE %s END"
)

# Foreign tables of one server in one local schema, with the remote schema/table they point at.
FOREIGN_TABLES_QUERY = sql.SQL(
    "SELECT c.relname, s.srvname, "
    "  (SELECT substr(o, 13) FROM unnest(ft.ftoptions) o WHERE o LIKE 'schema_name=%%'), "
    "  (SELECT substr(o, 12) FROM unnest(ft.ftoptions) o WHERE o LIKE 'table_name=%%') "
    "FROM pg_foreign_table ft "
    "JOIN pg_class c ON c.oid = ft.ftrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_foreign_server s ON s.oid = ft.ftserver "
    "WHERE n.nspname = %s ORDER BY c.relname"
)

CONNECTIONS_QUERY = sql.SQL("SELECT server_name, valid FROM postgres_fdw_get_connections() ORDER BY 1")

EXTENSION_AVAILABLE_QUERY = sql.SQL(
    "SELECT (SELECT extversion FROM pg_extension WHERE extname = %s), "
    "EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = %s)"
)


# -- materialized views ----------------------------------------------------------------------


def create_materialized_view(view: QualifiedName, query: str) -> sql.Composed:
    """The user's query is SQL by nature (as in SQLExecuteQueryOperator); only the name is composed."""
    return sql.SQL("CREATE MATERIALIZED VIEW {} AS {} WITH DATA").format(
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


RELATION_KIND_QUERY = sql.SQL(
    "SELECT c.oid, c.relkind, c.relispopulated, "
    "  EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid "
    "          AND i.indpred IS NULL AND i.indexprs IS NULL) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
)

# Which of the given materialized views read which others, directly or through plain views.
MATVIEW_DEPENDENCIES_QUERY = sql.SQL(
    "WITH RECURSIVE refs(view_oid, ref_oid) AS ("
    "  SELECT r.ev_class, d.refobjid FROM pg_rewrite r"
    "  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid"
    "   AND d.refclassid = 'pg_class'::regclass"
    "  WHERE r.ev_class = ANY(%(oids)s::oid[]) AND d.refobjid <> r.ev_class"
    "  UNION"
    "  SELECT refs.view_oid, d.refobjid FROM refs"
    "  JOIN pg_class c ON c.oid = refs.ref_oid AND c.relkind = 'v'"
    "  JOIN pg_rewrite r ON r.ev_class = c.oid"
    "  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid"
    "   AND d.refclassid = 'pg_class'::regclass"
    "  WHERE d.refobjid <> r.ev_class"
    ") SELECT DISTINCT view_oid, ref_oid FROM refs"
    " WHERE ref_oid = ANY(%(oids)s::oid[]) AND ref_oid <> view_oid"
)


# -- converging foreign tables (re-import) ---------------------------------------------------


def drop_schema_cascade(schema: str) -> sql.Composed:
    return sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))


def move_foreign_table(table: QualifiedName, schema: str) -> sql.Composed:
    return sql.SQL("ALTER FOREIGN TABLE {} SET SCHEMA {}").format(
        sql.Identifier(*table), sql.Identifier(schema)
    )


def alter_foreign_table(table: QualifiedName, actions: Sequence[sql.Composable]) -> sql.Composed:
    return sql.SQL("ALTER FOREIGN TABLE {} {}").format(sql.Identifier(*table), sql.SQL(", ").join(actions))


def column_type(type_sql: str, collation: str | None) -> sql.Composable:
    """A column type as the server printed it with ``format_type()`` (already quoted by PostgreSQL)."""
    collate = sql.SQL(" COLLATE {}").format(sql.Identifier(collation)) if collation else sql.SQL("")
    return sql.SQL("{}{}").format(sql.SQL(type_sql), collate)


def add_column(
    name: str, type_sql: str, collation: str | None, not_null: bool, options: Mapping[str, str]
) -> sql.Composed:
    return sql.SQL("ADD COLUMN {} {}{}{}").format(
        sql.Identifier(name),
        column_type(type_sql, collation),
        options_clause(options),
        sql.SQL(" NOT NULL" if not_null else ""),
    )


def drop_column(name: str) -> sql.Composed:
    return sql.SQL("DROP COLUMN {}").format(sql.Identifier(name))


def alter_column_type(name: str, type_sql: str, collation: str | None) -> sql.Composed:
    return sql.SQL("ALTER COLUMN {} TYPE {}").format(sql.Identifier(name), column_type(type_sql, collation))


def alter_column_not_null(name: str, not_null: bool) -> sql.Composed:
    return sql.SQL("ALTER COLUMN {} {} NOT NULL").format(
        sql.Identifier(name), sql.SQL("SET" if not_null else "DROP")
    )


def alter_column_options(
    name: str, current: Mapping[str, str], desired: Mapping[str, str]
) -> sql.Composed | None:
    changes = alter_options_clause(current, desired)
    if changes is None:
        return None
    return sql.SQL("ALTER COLUMN {} {}").format(sql.Identifier(name), changes)


# Columns of one relation: name, type, collation when not the type's default, NOT NULL, FDW options.
COLUMNS_QUERY = sql.SQL(
    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
    "  CASE WHEN a.attcollation <> t.typcollation THEN co.collname END, a.attnotnull, a.attfdwoptions "
    "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid "
    "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
    "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)

RELATIONS_IN_SCHEMA_QUERY = sql.SQL(
    "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'f', 'p', 'S', 'c')"
)


# -- bulk copy ---------------------------------------------------------------------------------


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
    columns: Sequence[tuple[str, str, dict[str, str]]],
    options: Mapping[str, str],
) -> sql.Composed:
    """A session-private foreign table (pg_temp) over the same remote table, with bulk-read options."""
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}{}").format(sql.Identifier(col), sql.SQL(type_sql), options_clause(col_options))
        for col, type_sql, col_options in columns
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


def grant(privilege: str, table: QualifiedName, grantee: str | None, grantable: bool) -> sql.Composed:
    """One privilege from ``aclexplode()`` (``grantee`` None = PUBLIC)."""
    return sql.SQL("GRANT {} ON TABLE {} TO {}{}").format(
        sql.SQL(privilege),  # one of the fixed privilege keywords aclexplode() returns
        sql.Identifier(*table),
        sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
        sql.SQL(" WITH GRANT OPTION" if grantable else ""),
    )


def comment_on_table(table: QualifiedName, comment: str) -> sql.Composed:
    return sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(*table), sql.Literal(comment))


def where_clause(conditions: Sequence[sql.Composable]) -> sql.Composable:
    if not conditions:
        return sql.SQL("")
    return sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(sql.SQL("({})").format(c) for c in conditions))


def user_predicate(where: str) -> sql.Composable:
    """The user's ``where`` filter: SQL by nature (templated in the DAG, like SQLExecuteQueryOperator)."""
    return sql.SQL(where)


def range_predicate(column: str, low: Any, high: Any, include_nulls: bool) -> sql.Composable:
    """``low <= column < high`` (open ends for None), plus NULL keys in exactly one range."""
    parts: list[sql.Composable] = []
    if low is not None:
        parts.append(sql.SQL("{} >= {}").format(sql.Identifier(column), sql.Literal(low)))
    if high is not None:
        parts.append(sql.SQL("{} < {}").format(sql.Identifier(column), sql.Literal(high)))
    condition: sql.Composable = sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")
    if include_nulls:
        condition = sql.SQL("({}) OR {} IS NULL").format(condition, sql.Identifier(column))
    return condition


def watermark_predicate(column: str, bound: Any, inclusive: bool) -> sql.Composable:
    """``column > bound`` (append) or ``column >= bound`` (upsert, bound already lowered by the overlap)."""
    return sql.SQL("{} {} {}").format(
        sql.Identifier(column), sql.SQL(">=" if inclusive else ">"), sql.Literal(bound)
    )


def insert_select(
    target: QualifiedName,
    columns: Sequence[str],
    source: QualifiedName,
    conditions: Sequence[sql.Composable] = (),
) -> sql.Composed:
    return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}{}").format(
        sql.Identifier(*target),
        column_list(columns),
        column_list(columns),
        sql.Identifier(*source),
        where_clause(conditions),
    )


def select_for_copy(
    source: QualifiedName, columns: Sequence[str], conditions: Sequence[sql.Composable], binary: bool
) -> sql.Composed:
    return sql.SQL("COPY (SELECT {} FROM {}{}) TO STDOUT{}").format(
        column_list(columns),
        sql.Identifier(*source),
        where_clause(conditions),
        sql.SQL(" (FORMAT binary)" if binary else ""),
    )


def copy_from_stdin(table: QualifiedName, columns: Sequence[str], binary: bool) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN{}").format(
        sql.Identifier(*table), column_list(columns), sql.SQL(" (FORMAT binary)" if binary else "")
    )


def upsert_from(
    target: QualifiedName,
    source: QualifiedName,
    columns: Sequence[str],
    key_columns: Sequence[str],
    image_equal: Sequence[str] = (),
) -> sql.Composed:
    """Insert new keys, update changed rows only (unchanged rows of the overlap window are not rewritten).

    Changed as in :func:`diff_update`: ``image_equal`` columns by ``IS DISTINCT FROM``, the others by
    text form (``json`` has no ``=``; ``1.0`` → ``1.00`` and ``0`` → ``-0`` are changes).
    """
    others = [c for c in columns if c not in key_columns]
    if not others:
        action: sql.Composable = sql.SQL("DO NOTHING")
    else:
        typed = [c for c in others if c in image_equal]
        as_text = [c for c in others if c not in image_equal]
        changed: list[sql.Composable] = []
        if typed:
            changed.append(
                sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(
                    sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in typed),
                    sql.SQL(", ").join(sql.SQL("excluded.{}").format(sql.Identifier(c)) for c in typed),
                )
            )
        if as_text:
            changed.append(
                sql.SQL("{} IS DISTINCT FROM {}").format(
                    row_text("t", as_text), row_text("excluded", as_text)
                )
            )
        action = sql.SQL("DO UPDATE SET {} WHERE {}").format(
            sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others),
            sql.SQL(" OR ").join(changed),
        )
    return sql.SQL("INSERT INTO {} AS t ({}) SELECT {} FROM {} ON CONFLICT ({}) {}").format(
        sql.Identifier(*target),
        column_list(columns),
        column_list(columns),
        sql.Identifier(*source),
        column_list(key_columns),
        action,
    )


def min_max(table: QualifiedName, column: str, conditions: Sequence[sql.Composable] = ()) -> sql.Composed:
    return sql.SQL("SELECT min({0}), max({0}) FROM {1}{2}").format(
        sql.Identifier(column), sql.Identifier(*table), where_clause(conditions)
    )


def max_text_of(table: QualifiedName, column: str) -> sql.Composed:
    """``max(column)`` as text: infinity and NaN have no Python value to read them into."""
    return sql.SQL("SELECT max({})::text FROM {}").format(sql.Identifier(column), sql.Identifier(*table))


def max_of(table: QualifiedName, column: str, minus: Any = None) -> sql.Composed:
    """``max(column)``, optionally lowered by ``minus`` (interval text such as '5 minutes', or a number)."""
    if minus is None:
        return sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(column), sql.Identifier(*table))
    # '5 minutes' is text to the driver: say it is an interval (timedelta and numbers adapt themselves).
    window = (
        sql.SQL("CAST({} AS interval)").format(sql.Literal(minus))
        if isinstance(minus, str)
        else sql.Literal(minus)
    )
    return sql.SQL("SELECT max({}) - {} FROM {}").format(
        sql.Identifier(column), window, sql.Identifier(*table)
    )


# Remote catalogs the primary-key probe reads (pg_catalog: readable by any role, unlike
# information_schema.table_constraints, which hides constraints from roles that may only SELECT).
PK_PROBES = (
    ("fdw_remote_con", "pg_constraint", 'conrelid oid, contype "char", conkey int2[]'),
    ("fdw_remote_class", "pg_class", "oid oid, relname name, relnamespace oid"),
    ("fdw_remote_ns", "pg_namespace", "oid oid, nspname name"),
    ("fdw_remote_att", "pg_attribute", "attrelid oid, attnum int2, attname name"),
)


def create_pk_probes(server_name: str) -> list[sql.Composed]:
    """Session-private foreign tables over the remote catalogs, to read a table's primary key."""
    return [
        sql.SQL(
            "CREATE FOREIGN TABLE pg_temp.{} ({}) SERVER {} OPTIONS (schema_name 'pg_catalog', table_name {})"
        ).format(sql.Identifier(name), sql.SQL(columns), sql.Identifier(server_name), sql.Literal(catalog))
        for name, catalog, columns in PK_PROBES
    ]


REMOTE_PK_QUERY = sql.SQL(
    "SELECT a.attname FROM pg_temp.fdw_remote_con c "
    "JOIN pg_temp.fdw_remote_class r ON r.oid = c.conrelid "
    "JOIN pg_temp.fdw_remote_ns n ON n.oid = r.relnamespace "
    "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY k(attnum, ord) "
    "JOIN pg_temp.fdw_remote_att a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
    "WHERE c.contype = 'p' AND n.nspname = %s AND r.relname = %s ORDER BY k.ord"
)

RELATION_SIZE_QUERY = sql.SQL("SELECT pg_total_relation_size(%s)")

RELATION_QUERY = sql.SQL(
    "SELECT c.oid, c.relkind, pg_get_userbyid(c.relowner), obj_description(c.oid, 'pg_class'), "
    "  (SELECT s.srvname FROM pg_foreign_table ft JOIN pg_foreign_server s ON s.oid = ft.ftserver "
    "   WHERE ft.ftrelid = c.oid), "
    "  (SELECT ft.ftoptions FROM pg_foreign_table ft WHERE ft.ftrelid = c.oid) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
)

INDEXES_QUERY = sql.SQL(
    "SELECT ic.relname, pg_get_indexdef(i.indexrelid), con.conname, pg_get_constraintdef(con.oid), "
    "  i.indisunique, i.indpred IS NULL AND i.indexprs IS NULL, "
    "  ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
    "        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord)::text[], "
    # what the index is, independent of its own and its table's name: matches an index to its copy
    "  concat_ws('|', i.indisunique, i.indisprimary, am.amname, i.indclass::text, i.indoption::text, "
    "    i.indcollation::text, pg_get_expr(i.indexprs, i.indrelid), pg_get_expr(i.indpred, i.indrelid), "
    "    (SELECT string_agg(coalesce(a.attname, '#' || k.attnum), ',' ORDER BY k.ord) "
    "     FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
    "     LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)) "
    "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam "
    "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid "
    "WHERE i.indrelid = %s ORDER BY ic.relname"
)

FOREIGN_KEYS_QUERY = sql.SQL(
    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s AND contype = 'f' "
    "ORDER BY conname"
)

# Objects that hold on to the table's OID and would be lost by swapping in a new table.
DEPENDANTS_QUERY = sql.SQL(
    "SELECT 'view ' || v.oid::regclass FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
    "  JOIN pg_class v ON v.oid = r.ev_class "
    "  WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %(oid)s AND r.ev_class <> %(oid)s "
    "UNION SELECT 'foreign key ' || conname || ' of ' || conrelid::regclass FROM pg_constraint "
    "  WHERE confrelid = %(oid)s AND contype = 'f' AND conrelid <> %(oid)s "
    "UNION SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgrelid = %(oid)s AND NOT tgisinternal "
    "UNION SELECT 'policy ' || polname FROM pg_policy WHERE polrelid = %(oid)s "
    "UNION SELECT 'publication ' || p.pubname FROM pg_publication_rel pr "
    "  JOIN pg_publication p ON p.oid = pr.prpubid WHERE pr.prrelid = %(oid)s "
    "UNION SELECT 'inheritance child ' || inhrelid::regclass FROM pg_inherits WHERE inhparent = %(oid)s "
    "UNION SELECT 'inheritance parent ' || inhparent::regclass FROM pg_inherits WHERE inhrelid = %(oid)s"
)

GRANTS_QUERY = sql.SQL(
    "SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, "
    "  a.is_grantable FROM pg_class c, aclexplode(c.relacl) a "
    "WHERE c.oid = %s AND a.grantee <> c.relowner ORDER BY 2, 1"
)


# -- replace: in-place diff apply, staging markers, verification ------------------------------------


def _table(table: QualifiedName, only: bool) -> sql.Composable:
    """``ONLY table`` for plain tables (inheritance children keep their rows), ``table`` otherwise."""
    return sql.SQL("{}{}").format(sql.SQL("ONLY " if only else ""), sql.Identifier(*table))


def _key_match(
    left: str, right: str, keys: Sequence[str], right_keys: Sequence[str] | None = None
) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(
            sql.Identifier(left), sql.Identifier(a), sql.Identifier(right), sql.Identifier(b)
        )
        for a, b in zip(keys, right_keys or keys, strict=True)
    )


def row_text(alias: str, columns: Sequence[str]) -> sql.Composable:
    """The row's text form: equal exactly when every value prints the same (no equality operator needed)."""
    return sql.SQL("ROW({})::text").format(
        sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c)) for c in columns)
    )


def diff_delete(
    target: QualifiedName, staging: QualifiedName, keys: Sequence[str], only: bool
) -> sql.Composed:
    """Delete the target rows whose key is not in the new data."""
    return sql.SQL("DELETE FROM {} AS t WHERE NOT EXISTS (SELECT 1 FROM {} AS s WHERE {})").format(
        _table(target, only), sql.Identifier(*staging), _key_match("s", "t", keys)
    )


def diff_update(
    target: QualifiedName,
    staging: QualifiedName,
    keys: Sequence[str],
    columns: Sequence[str],
    only: bool,
    image_equal: Sequence[str] = (),
) -> sql.Composed:
    """Update the rows whose non-key values differ.

    ``image_equal`` columns (types whose ``=`` means identical bytes: integers, text with a
    deterministic collation, timestamps …) compare with ``IS DISTINCT FROM``; the others by text
    form, so ``json``/``point`` work and ``1.0`` → ``1.00`` or ``0`` → ``-0`` count as changes.
    """
    # Keys whose '=' is not identity (1.0 = 1.00, -0 = 0, 'abc' = 'ABC' under a case-insensitive
    # collation) match the row yet may print differently: they are compared and set like the others.
    loose_keys = [k for k in keys if k not in image_equal]
    others = [c for c in columns if c not in keys]
    typed = [c for c in others if c in image_equal]
    as_text = [c for c in others if c not in image_equal] + loose_keys
    others += loose_keys
    changed: list[sql.Composable] = []
    if typed:
        changed.append(
            sql.SQL("({}) IS DISTINCT FROM ({})").format(
                sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in typed),
                sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in typed),
            )
            if len(typed) > 1
            else sql.SQL("t.{0} IS DISTINCT FROM s.{0}").format(sql.Identifier(typed[0]))
        )
    if as_text:
        changed.append(
            sql.SQL("{} IS DISTINCT FROM {}").format(row_text("t", as_text), row_text("s", as_text))
        )
    return sql.SQL("UPDATE {} AS t SET {} FROM {} AS s WHERE {} AND ({})").format(
        _table(target, only),
        sql.SQL(", ").join(sql.SQL("{0} = s.{0}").format(sql.Identifier(c)) for c in others),
        sql.Identifier(*staging),
        _key_match("s", "t", keys),
        sql.SQL(" OR ").join(changed),
    )


# Columns whose type's equality is byte identity (PostgreSQL's "equalimage" types), so IS DISTINCT
# FROM sees every change; text types only under a deterministic collation.
IMAGE_EQUAL_COLUMNS_QUERY = sql.SQL(
    "SELECT a.attname FROM pg_attribute a LEFT JOIN pg_collation c ON c.oid = a.attcollation "
    "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND coalesce(c.collisdeterministic, true) "
    "AND a.atttypid = ANY (ARRAY['int2', 'int4', 'int8', 'oid', 'bool', 'text', 'varchar', "
    "'name', 'uuid', 'date', 'time', 'timestamp', 'timestamptz', 'bytea']::regtype[])"
)


def diff_insert(
    target: QualifiedName,
    staging: QualifiedName,
    keys: Sequence[str],
    columns: Sequence[str],
    only: bool,
    overriding: bool,
) -> sql.Composed:
    """Insert the rows whose key is new (``OVERRIDING SYSTEM VALUE`` for GENERATED ALWAYS identities)."""
    return sql.SQL(
        "INSERT INTO {} ({}){} SELECT {} FROM {} AS s WHERE NOT EXISTS (SELECT 1 FROM {} AS t WHERE {})"
    ).format(
        sql.Identifier(*target),
        column_list(columns),
        sql.SQL(" OVERRIDING SYSTEM VALUE" if overriding else ""),
        sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in columns),
        sql.Identifier(*staging),
        _table(target, only),
        _key_match("t", "s", keys),
    )


def multiset_diff(
    target: QualifiedName, staging: QualifiedName, columns: Sequence[str], only: bool, overriding: bool
) -> sql.Composed:
    """Without a key: delete the surplus copies of each row, insert the missing copies; returns the counts.

    Rows are matched by text form and copy number (``row_number()`` among equal rows), in one statement
    so both sides are read from the same snapshot.
    """
    return sql.SQL(
        "WITH t AS (SELECT t.rel, t.tid, r, row_number() OVER (PARTITION BY r) AS n "
        '  FROM (SELECT tableoid AS rel, ctid AS tid, {t_row} COLLATE "C" AS r FROM {target} AS t) AS t), '
        "s AS (SELECT s.*, row_number() OVER (PARTITION BY r) AS n "
        '  FROM (SELECT {s_cols}, {s_row} COLLATE "C" AS r FROM {staging} AS s) AS s), '
        # ctid alone repeats across partitions: (tableoid, ctid) names one row
        "del AS (DELETE FROM {target} WHERE (tableoid, ctid) IN "
        "  (SELECT rel, tid FROM t WHERE NOT EXISTS (SELECT 1 FROM s WHERE s.r = t.r AND s.n = t.n)) "
        "  RETURNING 1), "
        "ins AS (INSERT INTO {plain_target} ({cols}){overriding} SELECT {cols} FROM s "
        "  WHERE NOT EXISTS (SELECT 1 FROM t WHERE t.r = s.r AND t.n = s.n) RETURNING 1) "
        "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM del)"
    ).format(
        t_row=row_text("t", columns),
        s_row=row_text("s", columns),
        s_cols=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in columns),
        target=_table(target, only),
        plain_target=sql.Identifier(*target),
        staging=sql.Identifier(*staging),
        cols=column_list(columns),
        overriding=sql.SQL(" OVERRIDING SYSTEM VALUE" if overriding else ""),
    )


def duplicate_key_probe(table: QualifiedName, keys: Sequence[str], only: bool = False) -> sql.Composed:
    """One key value that occurs twice (NULL keys never match, so they are not duplicates)."""
    return sql.SQL("SELECT {} FROM {} WHERE {} GROUP BY {} HAVING count(*) > 1 LIMIT 1").format(
        column_list(keys),
        _table(table, only),
        sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(k)) for k in keys),
        column_list(keys),
    )


def orphan_probe(
    child: QualifiedName, child_columns: Sequence[str], staging: QualifiedName, parent_columns: Sequence[str]
) -> sql.Composed:
    """One child row's reference that the new data no longer has (MATCH SIMPLE: NULLs reference nothing)."""
    return sql.SQL(
        "SELECT {} FROM {} AS c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS s WHERE {}) LIMIT 1"
    ).format(
        sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(c)) for c in child_columns),
        sql.Identifier(*child),
        sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c in child_columns),
        sql.Identifier(*staging),
        _key_match("s", "c", parent_columns, child_columns),
    )


# Anything else that depends on the table, its row type or that type's array (a function taking the
# row type, a column of it, a policy of another table reading it …): dropping the renamed-away table
# would fail, so the replace goes in place. Parts of the table itself and what DEPENDANTS_QUERY
# names (views and rules, foreign keys) are left out.
OTHER_DEPENDANTS_QUERY = sql.SQL(
    "WITH types AS (SELECT reltype AS oid FROM pg_class WHERE oid = %(oid)s "
    "  UNION SELECT t.typarray FROM pg_type t JOIN pg_class c ON t.oid = c.reltype WHERE c.oid = %(oid)s) "
    "SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d "
    "WHERE d.deptype = 'n' AND ((d.refclassid = 'pg_class'::regclass AND d.refobjid = %(oid)s) "
    "  OR (d.refclassid = 'pg_type'::regclass AND d.refobjid IN (SELECT oid FROM types))) "
    "AND d.classid NOT IN ('pg_rewrite'::regclass, 'pg_constraint'::regclass) "
    "AND NOT (d.classid = 'pg_class'::regclass AND d.objid = %(oid)s) "
    "AND NOT EXISTS (SELECT 1 FROM pg_depend own WHERE own.classid = d.classid AND own.objid = d.objid "
    "  AND own.refclassid = 'pg_class'::regclass AND own.refobjid = %(oid)s AND own.deptype IN ('a', 'i'))"
)


def null_key_count(table: QualifiedName, keys: Sequence[str]) -> sql.Composed:
    """Rows with a NULL in any key column (they never match ``=`` nor ``ON CONFLICT``)."""
    return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
        sql.Identifier(*table),
        sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(k)) for k in keys),
    )


PERSISTENCE_QUERY = sql.SQL("SELECT relpersistence FROM pg_class WHERE oid = %s")


# Generated (STORED) columns: computed by the target itself, never written by a copy.
GENERATED_COLUMNS_QUERY = sql.SQL(
    "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
    "AND attgenerated <> ''"
)


def moved_parent_probe(
    child: QualifiedName,
    child_columns: Sequence[str],
    target: QualifiedName,
    parent_columns: Sequence[str],
    staging: QualifiedName,
    key: Sequence[str],
    columns: Sequence[str],
    only: bool,
) -> sql.Composed:
    """One child row's reference to a target row that the diff would delete or change, although the
    value may still be in the new data (under another ``key``, or, without a key, in a changed row):
    deleting or updating that row would fire the foreign key's ON DELETE / ON UPDATE action."""
    if key:
        same_row = sql.SQL("{} AND {}").format(
            _key_match("s", "t", key), _key_match("s", "t", parent_columns)
        )
    else:
        same_row = sql.SQL("{} = {}").format(row_text("s", columns), row_text("t", columns))
    return sql.SQL(
        "SELECT {} FROM {} AS c JOIN {} AS t ON {} WHERE NOT EXISTS (SELECT 1 FROM {} AS s WHERE {}) LIMIT 1"
    ).format(
        sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(c)) for c in child_columns),
        sql.Identifier(*child),
        _table(target, only),
        _key_match("t", "c", parent_columns, child_columns),
        sql.Identifier(*staging),
        same_row,
    )


def catch_up_sequence(sequence_oid: int, table: QualifiedName, column: str, only: bool) -> sql.Composed:
    """Move an ascending sequence up to ``max(column)`` only when it is behind; never down."""
    return sql.SQL(
        "SELECT setval(ps.seqrelid, m.v) FROM (SELECT max({})::bigint AS v FROM {}) AS m, pg_sequence ps "
        "WHERE ps.seqrelid = {} AND ps.seqincrement > 0 AND m.v IS NOT NULL "
        "AND m.v >= coalesce(pg_sequence_last_value(ps.seqrelid) + 1, ps.seqstart)"
    ).format(sql.Identifier(column), _table(table, only), sql.Literal(sequence_oid))


DEFER_CONSTRAINTS = sql.SQL("SET CONSTRAINTS ALL DEFERRED")


def lock_table_in(table: QualifiedName, mode: str) -> sql.Composed:
    """``LOCK TABLE … IN <mode> MODE`` for one of the fixed lock mode keywords."""
    if mode not in ("EXCLUSIVE", "ACCESS EXCLUSIVE", "SHARE ROW EXCLUSIVE"):
        raise ValueError(f"unexpected lock mode {mode!r}")
    return sql.SQL("LOCK TABLE {} IN {} MODE").format(sql.Identifier(*table), sql.SQL(mode))


def uncomment_table(table: QualifiedName) -> sql.Composed:
    return sql.SQL("COMMENT ON TABLE {} IS NULL").format(sql.Identifier(*table))


# Why a table cannot be swapped by rename (beyond DEPENDANTS_QUERY): what the swap would lose.
IN_PLACE_REASONS_QUERY = sql.SQL(
    "SELECT 'sequence ' || d.objid::regclass || ' owned by column ' || a.attname FROM pg_depend d "
    "  JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
    "  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
    "  WHERE d.classid = 'pg_class'::regclass AND d.refobjid = %(oid)s AND d.deptype IN ('a', 'i') "
    "UNION ALL SELECT 'function ' || d.objid::regprocedure FROM pg_depend d "
    "  WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_class'::regclass "
    "  AND d.refobjid = %(oid)s "
    "UNION ALL SELECT 'rule ' || rulename FROM pg_rewrite WHERE ev_class = %(oid)s AND rulename <> '_RETURN' "
    "UNION ALL SELECT 'row level security' FROM pg_class WHERE oid = %(oid)s AND relrowsecurity "
    "UNION ALL SELECT 'partitioned table' FROM pg_class WHERE oid = %(oid)s AND relkind = 'p' "
    "UNION ALL SELECT 'partition of ' || inhparent::regclass FROM pg_inherits i JOIN pg_class c "
    "  ON c.oid = i.inhrelid WHERE i.inhrelid = %(oid)s AND c.relispartition "
    "UNION ALL SELECT 'storage options' FROM pg_class WHERE oid = %(oid)s AND reloptions IS NOT NULL "
    "UNION ALL SELECT 'replica identity' FROM pg_class WHERE oid = %(oid)s AND relreplident NOT IN ('d') "
    # FOR ALL TABLES / FOR TABLES IN SCHEMA publications would also publish the staging table
    "UNION ALL SELECT 'publication ' || pt.pubname FROM pg_publication_tables pt "
    "  JOIN pg_namespace n ON n.nspname = pt.schemaname "
    "  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename WHERE c.oid = %(oid)s "
    "UNION ALL SELECT 'column privileges' FROM pg_attribute WHERE attrelid = %(oid)s AND attacl IS NOT NULL "
    "  HAVING count(*) > 0"
)

# Candidate keys: the primary key first, then unique plain indexes over NOT NULL columns.
KEY_CANDIDATES_QUERY = sql.SQL(
    "SELECT ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
    "    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord)::text[], "
    "  (SELECT bool_and(a.attnotnull) FROM pg_attribute a "
    "   WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) "
    "FROM pg_index i WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indimmediate "
    "  AND i.indpred IS NULL AND i.indexprs IS NULL AND NOT 0 = ANY(i.indkey) "
    "ORDER BY i.indisprimary DESC, i.indnatts, i.indexrelid"
)

# Foreign keys of OTHER tables (and the target itself) that point at the target.
REFERENCING_KEYS_QUERY = sql.SQL(
    "SELECT con.conname, n.nspname, c.relname, "
    "  ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord) "
    "    JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord)::text[], "
    "  ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord) "
    "    JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.ord)::text[] "
    "FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE con.confrelid = %s AND con.contype = 'f' AND con.conparentid = 0 ORDER BY con.conname"
)

# Columns that are GENERATED ALWAYS AS IDENTITY (inserting explicit values needs OVERRIDING SYSTEM VALUE).
ALWAYS_IDENTITY_QUERY = sql.SQL(
    "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attidentity = 'a' AND NOT attisdropped"
)

# The provider's own staging/retired tables of one target, found by their marker comment.
MARKED_TABLES_QUERY = sql.SQL(
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND obj_description(c.oid, 'pg_class') = %s "
    "ORDER BY 1"
)

# Sequences owned by a column of the table (serial, identity): they must survive and never go back.
OWNED_SEQUENCES_QUERY = sql.SQL(
    "SELECT d.objid::int8, a.attname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
    "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
    "WHERE d.classid = 'pg_class'::regclass AND d.refobjid = %s AND d.deptype IN ('a', 'i') ORDER BY 2"
)


def counted_upsert(upsert: sql.Composable) -> sql.Composed:
    """Run an ``upsert_from`` statement and return (inserted, updated): a new row version has xmax 0."""
    return sql.SQL(
        "WITH applied AS ({} RETURNING (t.xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM applied"
    ).format(upsert)


# Per copied column: is its type built in, its binary send function, and whether that is immutable.
CHECKSUM_COLUMNS_QUERY = sql.SQL(
    "SELECT a.attname, a.atttypid < 10000, t.typsend::regproc::text, p.provolatile = 'i', "
    "  t.typsend IN ('textsend'::regproc, 'varcharsend'::regproc, 'bpcharsend'::regproc) "
    "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_proc p ON p.oid = t.typsend "
    "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped"
)


def _column_bytes(column: str, send: str | None) -> sql.Composable:
    """A column's value as bytes independent of every setting: its binary send form, or md5 of text."""
    if send is None:
        return sql.SQL("decode(md5({}), 'hex')").format(sql.Identifier(column))
    return sql.SQL("{}({})").format(sql.Identifier("pg_catalog", send), sql.Identifier(column))


def row_checksum(columns: Sequence[tuple[str, str | None]]) -> sql.Composable:
    """A 64-bit hash of the row (NULL-aware, length-prefixed), from immutable built-ins only, so
    postgres_fdw can push ``sum()`` of it to the remote (CASE, not coalesce: only CASE is shipped)."""
    parts = sql.SQL(" || ").join(
        sql.SQL(
            "CASE WHEN {0} IS NULL THEN '\\x00'::bytea "
            "ELSE '\\x01'::bytea || int4send(octet_length({1})) || {1} END"
        ).format(sql.Identifier(name), _column_bytes(name, send))
        for name, send in columns
    )
    digest = sql.SQL("sha256({})").format(parts)
    return sql.SQL(" | ").join(
        sql.SQL("(get_byte({}, {})::int8 << {})").format(digest, sql.Literal(i), sql.Literal(56 - 8 * i))
        for i in range(8)
    )


def verify_select(
    table: QualifiedName,
    checksum_columns: Sequence[tuple[str, str | None]] | None,
    conditions: Sequence[sql.Composable] = (),
    only: bool = False,
    matching: tuple[QualifiedName, Sequence[str]] | None = None,
) -> sql.Composed:
    """``count(*)`` and (with columns) ``sum(row checksum)`` of the rows matching ``conditions``
    (and, with ``matching=(staging, keys)``, only the rows whose key the staging table has)."""
    checksum = (
        sql.SQL("sum({})").format(row_checksum(checksum_columns)) if checksum_columns else sql.SQL("NULL")
    )
    if matching is not None:
        staging, keys = matching
        conditions = [
            *conditions,
            sql.SQL("EXISTS (SELECT 1 FROM {} AS s WHERE {})").format(
                sql.Identifier(*staging), _key_match("s", "t", keys)
            ),
        ]
    return sql.SQL("SELECT count(*), {} FROM {}{}{}").format(
        checksum,
        _table(table, only),
        sql.SQL(" AS t" if matching is not None else ""),  # the user's where may name the table itself
        where_clause(conditions),
    )


def explain_verbose(statement: sql.Composable) -> sql.Composed:
    """The plan with each node's remote SQL (shows whether postgres_fdw pushes an aggregate down)."""
    return sql.SQL("EXPLAIN (VERBOSE) {}").format(statement)


# -- direct COPY path: what the remote really holds, and the checks before reading it --------

# Declared types of a local relation's columns (type OID and modifier: what binary COPY must match).
# The qualified name identifies a non-built-in type (enum, domain, composite) across the two servers.
_TYPE_COLUMNS = (
    "SELECT a.attname, a.atttypid::int, a.atttypmod, pg_catalog.format_type(a.atttypid, a.atttypmod), "
    "pg_catalog.quote_ident(tn.nspname) || '.' || pg_catalog.quote_ident(t.typname) "
    "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
    "JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace "
)
LOCAL_COLUMN_TYPES_QUERY = sql.SQL(
    _TYPE_COLUMNS + "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)

# Run on the REMOTE over the direct connection: the table behind the foreign table and its column types.
REMOTE_COLUMN_TYPES_QUERY = sql.SQL(
    _TYPE_COLUMNS + "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)

SERVER_ENCODING_QUERY = sql.SQL("SELECT pg_catalog.current_setting('server_encoding')")

# One snapshot for every range of a direct copy (as pgcopydb): a holder exports it, each reader imports it.
SNAPSHOT_ISOLATION = sql.SQL("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
BEGIN_SNAPSHOT_READ = sql.SQL("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")  # psql: no implicit BEGIN
EXPORT_SNAPSHOT = sql.SQL("SELECT pg_catalog.pg_export_snapshot()")


def import_snapshot(snapshot_id: str) -> sql.Composed:
    """First statement of a reader's transaction: read exactly what the holder's snapshot sees."""
    return sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id))


def where_probe(table: QualifiedName, where: str) -> sql.Composed:
    """Parsed (never run) to prove ``where`` is one boolean expression over ``table``'s columns."""
    return sql.SQL("SELECT 1 FROM {} WHERE ({}) LIMIT 0").format(sql.Identifier(*table), sql.SQL(where))


def null_watermark_count(
    table: QualifiedName, column: str, conditions: Sequence[sql.Composable]
) -> sql.Composed:
    """Rows whose watermark is NULL (a ``>`` bound never matches them)."""
    return sql.SQL("SELECT count(*) FROM {}{}").format(
        sql.Identifier(*table),
        where_clause([*conditions, sql.SQL("{} IS NULL").format(sql.Identifier(column))]),
    )


def or_null(condition: sql.Composable, column: str) -> sql.Composed:
    """``(condition) OR column IS NULL``: upsert also re-reads the rows a watermark bound cannot see."""
    return sql.SQL("({}) OR {} IS NULL").format(condition, sql.Identifier(column))
