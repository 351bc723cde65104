"""Servers, user mappings, IMPORT FOREIGN SCHEMA and converging imported foreign tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.names import ROLE_KEYWORDS, QualifiedName

FDW_NAME = "postgres_fdw"


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


def probe_read_as(probe_table: str, foreign_table: str, role: str) -> list[sql.Composed]:
    """Turn the session-local probe ``probe_table`` into a view of that name owned by ``role`` over the
    foreign table (renamed ``foreign_table``): a read of it goes through ``role``'s user mapping, as a
    read of a view ``role`` owns does."""
    probe, table, owner = sql.Identifier(probe_table), sql.Identifier(foreign_table), sql.Identifier(role)
    return [
        sql.SQL("ALTER FOREIGN TABLE pg_temp.{} RENAME TO {}").format(probe, table),
        sql.SQL("CREATE VIEW pg_temp.{} AS SELECT * FROM pg_temp.{}").format(probe, table),
        sql.SQL("GRANT SELECT ON pg_temp.{} TO {}").format(table, owner),
        sql.SQL("ALTER VIEW pg_temp.{} OWNER TO {}").format(probe, owner),
    ]


# Whether the current user has the privileges of a role (%s): a member of it without INHERIT may make
# it an object's owner, but then neither read nor drop that object.
PRIVILEGES_OF_ROLE_QUERY = sql.SQL("SELECT pg_catalog.pg_has_role(%s, 'USAGE')")


def drop_probe_read_as(probe_table: str, foreign_table: str) -> list[sql.Composed]:
    return [
        sql.SQL("DROP VIEW IF EXISTS pg_temp.{}").format(sql.Identifier(probe_table)),
        drop_remote_probe(foreign_table),
    ]


def disconnect(server_name: str | None) -> sql.Composed:
    if server_name is None:
        return sql.SQL("SELECT postgres_fdw_disconnect_all()").format()
    return sql.SQL("SELECT postgres_fdw_disconnect({})").format(sql.Literal(server_name))


def set_session(setting: str, value: str) -> sql.Composed:
    """``SET`` for the rest of the session (``set_config(…, false)``)."""
    return sql.SQL("SELECT set_config({}, {}, false)").format(sql.Literal(setting), sql.Literal(value))


CURRENT_SETTING_QUERY = sql.SQL("SELECT pg_catalog.current_setting(%s)")


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


# Whether any server of the foreign-data wrappers named in %s (an array) exists in this database.
SERVERS_OF_WRAPPERS_QUERY = sql.SQL(
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_foreign_server s "
    "JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw WHERE w.fdwname = ANY(%s))"
)
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


# The remote role the foreign table reads as: postgres_fdw takes the current role's user mapping, else
# PUBLIC's. Whether its options are visible (NULL to a role that may not see them), and its user.
MAPPED_USER_QUERY = sql.SQL(
    "SELECT um.umoptions IS NOT NULL, "
    "  (SELECT substr(o, 6) FROM pg_catalog.unnest(um.umoptions) AS o WHERE o LIKE 'user=%%') "
    "FROM pg_catalog.pg_user_mappings um WHERE um.srvname = %s AND (um.umuser = 0 "
    "  OR um.umuser = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)) "
    "ORDER BY um.umuser = 0 LIMIT 1"
)


ROLE_NAME_QUERY = sql.SQL(
    "SELECT CASE %s WHEN 'CURRENT_USER' THEN current_user::text "
    "WHEN 'CURRENT_ROLE' THEN current_role::text WHEN 'USER' THEN current_user::text "
    "WHEN 'SESSION_USER' THEN session_user::text ELSE %s END"
)


# Foreign tables of one server in one local schema, with the remote schema/table they point at
# (postgres_fdw's schema_name, or mysql_fdw's dbname: a MySQL database is what IMPORT calls a schema).
FOREIGN_TABLES_QUERY = sql.SQL(
    "SELECT c.relname, s.srvname, "
    "  coalesce((SELECT substr(o, 13) FROM unnest(ft.ftoptions) o WHERE o LIKE 'schema_name=%%'), "
    "    (SELECT substr(o, 8) FROM unnest(ft.ftoptions) o WHERE o LIKE 'dbname=%%')), "
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
    return sql.SQL("{}{}").format(sql.SQL(type_sql), collate_clause(collation))


def collate_clause(collation: str | None) -> sql.Composable:
    """`` COLLATE c``, or nothing; ``collation`` qualified and quoted by the server (catalog.Column)."""
    return sql.SQL(" COLLATE {}").format(sql.SQL(collation)) if collation else sql.SQL("")


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


# Remote catalogs the primary-key probe reads (pg_catalog: readable by any role, unlike
# information_schema.table_constraints, which hides constraints from roles that may only SELECT).
PK_PROBES = (
    ("fdw_remote_con", "pg_constraint", 'conrelid oid, contype "char", conkey int2[]'),
    ("fdw_remote_class", "pg_class", "oid oid, relname name, relnamespace oid"),
    ("fdw_remote_ns", "pg_namespace", "oid oid, nspname name"),
    ("fdw_remote_att", "pg_attribute", "attrelid oid, attnum int2, attname name"),
)


def catalog_reads(probes: Sequence[tuple[str, str, str]], through_fdw: bool) -> list[sql.Identifier]:
    """What a query over remote catalogs reads, in the order of ``probes``: through postgres_fdw the
    probes :func:`create_pk_probes` makes of them, on a direct connection the catalogs themselves."""
    return [
        sql.Identifier("pg_temp", probe) if through_fdw else sql.Identifier("pg_catalog", catalog)
        for probe, catalog, _ in probes
    ]


def create_pk_probes(
    server_name: str, probes: Sequence[tuple[str, str, str]] = PK_PROBES
) -> list[sql.Composed]:
    """Session-private foreign tables over the remote catalogs, to read a table's primary key (or,
    with ``probes``, what those catalogs say)."""
    return [
        sql.SQL(
            "CREATE FOREIGN TABLE pg_temp.{} ({}) SERVER {} OPTIONS (schema_name 'pg_catalog', table_name {})"
        ).format(sql.Identifier(name), sql.SQL(columns), sql.Identifier(server_name), sql.Literal(catalog))
        for name, catalog, columns in probes
    ]


# The remote catalogs that say which columns of a remote table have a nondeterministic collation
# (PostgreSQL 12 and later), whatever the foreign table declares.
COLLATION_PROBES = (
    (
        "fdw_coll_att",
        "pg_attribute",
        "attrelid oid, attnum int2, attname name, attcollation oid, attisdropped bool",
    ),
    ("fdw_coll_class", "pg_class", "oid oid, relname name, relnamespace oid"),
    ("fdw_coll_ns", "pg_namespace", "oid oid, nspname name"),
    ("fdw_coll", "pg_collation", "oid oid, collisdeterministic bool"),
)


def remote_nondeterministic_query(through_fdw: bool) -> sql.Composed:
    """The columns of a remote table (parameters: schema, table) whose collation is nondeterministic;
    through postgres_fdw it reads the probes of :data:`COLLATION_PROBES`, on a direct connection the
    catalogs themselves."""
    att, cls, ns, coll = catalog_reads(COLLATION_PROBES, through_fdw)
    return sql.SQL(
        "SELECT a.attname FROM {att} a JOIN {cls} r ON r.oid = a.attrelid "
        "JOIN {ns} n ON n.oid = r.relnamespace JOIN {coll} c ON c.oid = a.attcollation "
        "WHERE n.nspname = %s AND r.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "AND NOT c.collisdeterministic"
    ).format(att=att, cls=cls, ns=ns, coll=coll)


# The remote catalogs that say which columns of a remote table are bpchar (or a domain over it),
# whatever type the foreign table declares.
BPCHAR_PROBES = (
    (
        "fdw_pad_att",
        "pg_attribute",
        "attrelid oid, attnum int2, attname name, atttypid oid, attisdropped bool",
    ),
    ("fdw_pad_class", "pg_class", "oid oid, relname name, relnamespace oid"),
    ("fdw_pad_ns", "pg_namespace", "oid oid, nspname name"),
    ("fdw_pad_type", "pg_type", 'oid oid, typname name, typnamespace oid, typtype "char", typbasetype oid'),
)


def remote_bpchar_query() -> sql.Composed:
    """The columns of a remote table (parameters: schema, table) of type bpchar, directly or through
    domains, read through postgres_fdw by the probes of :data:`BPCHAR_PROBES` (11: pg_catalog)."""
    att, cls, ns, typ = catalog_reads(BPCHAR_PROBES, True)
    return sql.SQL(
        "WITH RECURSIVE col AS (SELECT a.attname, a.atttypid AS typid FROM {att} a "
        "  JOIN {cls} r ON r.oid = a.attrelid JOIN {ns} n ON n.oid = r.relnamespace "
        "  WHERE n.nspname = %s AND r.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "  UNION ALL SELECT col.attname, t.typbasetype FROM col JOIN {typ} t ON t.oid = col.typid "
        "  WHERE t.typtype = 'd') "
        "SELECT col.attname FROM col JOIN {typ} t ON t.oid = col.typid "
        "WHERE t.typname = 'bpchar' AND t.typnamespace = 11"
    ).format(att=att, cls=cls, ns=ns, typ=typ)


# The catalogs that say in which collation a column compares (a text watermark's bound is max()
# here and compared there: bulkcopy/inspect.py). collcollate and datcollate are name before
# PostgreSQL 15: read as text. Which provider sorts a database's "default" (and with which locale) is
# in columns that came in 15 (datlocprovider, daticulocale) and were renamed in 17 (datlocale), and
# through postgres_fdw a column the remote lacks fails the whole read: the probes are chosen by the
# server's version, read first (pg_settings is in every version).
COLLATION_VERSION_PROBE = "fdw_wmc_version"


def watermark_collation_probes(version: int) -> tuple[tuple[str, str, str], ...]:
    """The probes :func:`column_collation_query` reads on a server of ``version`` (server_version_num)."""
    database = "datname name, datcollate text"
    collation = 'oid oid, collname name, collprovider "char", collcollate text'
    if version >= 150000:
        database += (
            ', datlocprovider "char", ' + ("datlocale" if version >= 170000 else "daticulocale") + " text"
        )
    if version >= 170000:  # the builtin provider's locale ("C", "C.UTF-8", …)
        collation += ", colllocale text"
    return (
        ("fdw_wmc_att", "pg_attribute", "attrelid oid, attname name, attcollation oid, attisdropped bool"),
        ("fdw_wmc_class", "pg_class", "oid oid, relname name, relnamespace oid"),
        ("fdw_wmc_ns", "pg_namespace", "oid oid, nspname name"),
        ("fdw_wmc_coll", "pg_collation", collation),
        ("fdw_wmc_db", "pg_database", database),
    )


def column_collation_query(through_fdw: bool, version: int) -> sql.Composed:
    """How a column's values sort on a server of ``version`` (parameters: the database, schema,
    table, column): "libc <locale>", "icu <collation>", "icu <locale> (database default)", "builtin
    <locale>"; NULL when not collatable or unknown (the database's row not found). Through
    postgres_fdw it reads the probes of :func:`watermark_collation_probes`, locally the catalogs."""
    att, cls, ns, coll, db = catalog_reads(watermark_collation_probes(version), through_fdw)
    default: sql.Composable
    if version >= 150000:  # the database's provider: libc, ICU (15) or builtin (17)
        locale = sql.SQL("d.datlocale" if version >= 170000 else "d.daticulocale")
        default = sql.SQL(
            "CASE d.datlocprovider WHEN 'c' THEN 'libc ' || d.datcollate "
            "WHEN 'i' THEN 'icu ' || {l} || ' (database default)' WHEN 'b' THEN 'builtin ' || {l} "
            "ELSE 'provider ' || d.datlocprovider::text || ' ' || {l} END"
        ).format(l=locale)
    else:
        default = sql.SQL("'libc ' || d.datcollate")
    builtin = sql.SQL(
        "WHEN c.collprovider = 'b' THEN 'builtin ' || c.colllocale " if version >= 170000 else ""
    )
    return sql.SQL(
        "SELECT CASE WHEN a.attcollation = 0 THEN NULL "
        "WHEN c.collname = 'default' THEN {default} "
        "WHEN c.collprovider = 'c' THEN 'libc ' || c.collcollate {builtin}"
        "ELSE CASE WHEN c.collprovider = 'i' THEN 'icu ' "
        "ELSE 'provider ' || c.collprovider::text || ' ' END || c.collname::text END "
        "FROM {att} a JOIN {cls} r ON r.oid = a.attrelid JOIN {ns} n ON n.oid = r.relnamespace "
        "LEFT JOIN {coll} c ON c.oid = a.attcollation LEFT JOIN {db} d ON d.datname = %s "
        "WHERE n.nspname = %s AND r.relname = %s AND a.attname = %s AND NOT a.attisdropped"
    ).format(att=att, cls=cls, ns=ns, coll=coll, db=db, default=default, builtin=builtin)


REMOTE_PK_QUERY = sql.SQL(
    "SELECT a.attname FROM pg_temp.fdw_remote_con c "
    "JOIN pg_temp.fdw_remote_class r ON r.oid = c.conrelid "
    "JOIN pg_temp.fdw_remote_ns n ON n.oid = r.relnamespace "
    "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY k(attnum, ord) "
    "JOIN pg_temp.fdw_remote_att a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
    "WHERE c.contype = 'p' AND n.nspname = %s AND r.relname = %s ORDER BY k.ord"
)
