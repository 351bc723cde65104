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
    target: QualifiedName, source: QualifiedName, columns: Sequence[str], key_columns: Sequence[str]
) -> sql.Composed:
    """Insert new keys, update changed rows only (unchanged rows of the overlap window are not rewritten)."""
    others = [c for c in columns if c not in key_columns]
    if not others:
        action: sql.Composable = sql.SQL("DO NOTHING")
    else:
        action = sql.SQL("DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})").format(
            sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others),
            sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in others),
            sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in others),
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

# Types of the columns: built-in (fixed OIDs, same on every server) or not (binary COPY needs built-in).
COLUMN_TYPE_OIDS_QUERY = sql.SQL(
    "SELECT a.attname, a.atttypid < 10000 FROM pg_attribute a WHERE a.attrelid = %s "
    "AND a.attnum > 0 AND NOT a.attisdropped"
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
