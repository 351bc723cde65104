"""Catalog queries. Parameters are passed separately, never spliced."""

from __future__ import annotations

from airflow_provider_fdw.compat import sql

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


# Columns of one relation: name, type, collation when not the type's default (schema-qualified and
# quoted, as format_type() quotes the type: a collation outside the search_path is found), NOT NULL,
# FDW options.
COLUMNS_QUERY = sql.SQL(
    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
    "  CASE WHEN a.attcollation <> t.typcollation "
    "    THEN pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) END, "
    "  a.attnotnull, a.attfdwoptions "
    "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid "
    "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
    "LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace "
    "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)

# The relations a read of a relation (the first %s) reads: itself, or those a view reads (through other
# views; not a materialized view, which reads its own rows) and the partitions or inheritance children
# of a table (foreign partitions included).
_NAMED_BY_RULE = (
    "SELECT r.ev_class, d.refobjid FROM pg_catalog.pg_rewrite r "
    "JOIN pg_catalog.pg_depend d "
    "  ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid "
    "  AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> r.ev_class "
)
_READ_EDGES = (
    "WITH RECURSIVE edge(parent, child) AS ("
    + _NAMED_BY_RULE
    + "  JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind = 'v' "
    "  UNION ALL SELECT i.inhparent, i.inhrelid FROM pg_catalog.pg_inherits i), "
)
_READ_RELATIONS = (
    _READ_EDGES + "rel(oid) AS (SELECT %s::pg_catalog.oid "
    "UNION SELECT e.child FROM rel JOIN edge e ON e.parent = rel.oid) "
)
_SERVERS_OF_REL = (
    "SELECT DISTINCT w.fdwname, s.srvname FROM rel "
    "JOIN pg_catalog.pg_foreign_table f ON f.ftrelid = rel.oid "
    "JOIN pg_catalog.pg_foreign_server s ON s.oid = f.ftserver "
    "JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw ORDER BY 1, 2"
)
# The foreign-data wrappers and servers of the foreign tables a relation reads, as (wrapper, server).
FOREIGN_READS_QUERY = sql.SQL(_READ_RELATIONS + _SERVERS_OF_REL)
# The same for a refresh of a materialized view (%s): what its query names, and what those read.
REFRESH_FOREIGN_READS_QUERY = sql.SQL(
    _READ_EDGES + "named(ev_class, child) AS (" + _NAMED_BY_RULE + "WHERE r.ev_class = %s), "
    "rel(oid) AS (SELECT child FROM named UNION SELECT e.child FROM rel JOIN edge e ON e.parent = rel.oid) "
    + _SERVERS_OF_REL
)
# The foreign-data wrappers and servers a read of a relation (%s) reads, each with the role whose user
# mapping it reads through (NULL: the current user's): a view reads the relations it names as its
# owner (not a security_invoker view), a partition or child as its parent is read.
# The OID of this session's temporary relation named %s.
TEMPORARY_RELATION_QUERY = sql.SQL(
    "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relnamespace = pg_catalog.pg_my_temp_schema() "
    "AND c.relname = %s"
)


def create_temporary_view(name: str, query: sql.Composable) -> sql.Composed:
    """A view private to this session (created, not planned)."""
    return sql.SQL("CREATE TEMPORARY VIEW {} AS {}").format(sql.Identifier(name), query)


FOREIGN_READERS_QUERY = sql.SQL(
    "WITH RECURSIVE edge(parent, child, reader) AS ("
    "  SELECT r.ev_class, d.refobjid, CASE WHEN coalesce((SELECT o.option_value::boolean "
    "    FROM pg_catalog.pg_options_to_table(v.reloptions) o WHERE o.option_name = 'security_invoker'), "
    "    false) THEN NULL ELSE v.relowner END "
    "  FROM pg_catalog.pg_rewrite r "
    "  JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind = 'v' "
    "  JOIN pg_catalog.pg_depend d "
    "    ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid "
    "    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> r.ev_class "
    "  UNION ALL SELECT i.inhparent, i.inhrelid, NULL::pg_catalog.oid FROM pg_catalog.pg_inherits i), "
    "rel(oid, reader) AS (SELECT %s::pg_catalog.oid, NULL::pg_catalog.oid "
    "  UNION SELECT e.child, coalesce(e.reader, rel.reader) FROM rel JOIN edge e ON e.parent = rel.oid) "
    "SELECT DISTINCT w.fdwname, s.srvname, "
    "  NULLIF(pg_catalog.pg_get_userbyid(rel.reader), CURRENT_USER)::text FROM rel "
    "JOIN pg_catalog.pg_foreign_table f ON f.ftrelid = rel.oid "
    "JOIN pg_catalog.pg_foreign_server s ON s.oid = f.ftserver "
    "JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw ORDER BY 1, 2, 3"
)
# (schema, name) of each foreign table that a read of the relation (the first %s) reads whose
# foreign-data wrapper is the second %s.
WRAPPER_TABLES_READ_QUERY = sql.SQL(
    _READ_RELATIONS + "SELECT n.nspname, c.relname FROM rel "
    "JOIN pg_catalog.pg_foreign_table f ON f.ftrelid = rel.oid "
    "JOIN pg_catalog.pg_foreign_server s ON s.oid = f.ftserver "
    "JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw "
    "JOIN pg_catalog.pg_class c ON c.oid = rel.oid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE w.fdwname = %s ORDER BY 1, 2"
)

# Whether one column's type is collatable (text, varchar, char, a domain or an array of them …).
COLLATABLE_COLUMN_QUERY = sql.SQL(
    "SELECT a.attcollation <> 0 FROM pg_catalog.pg_attribute a WHERE a.attrelid = %s AND a.attname = %s"
)


# Of one column of each of the relations (parameters: their OIDs, the column), per relation: the
# built-in type under the column's domains (no typmod: a lowered bound must not overflow or round to
# it) and its category, NULL name for a type that is not built in (no other server knows it); and that
# type's OID and the modifier it has there (the column's, or its innermost domain's:
# bulkcopy/watermark_types.py decodes them).
WATERMARK_TYPE_QUERY = sql.SQL(
    "WITH RECURSIVE d(rel, oid, typmod, depth) AS ("
    "  SELECT a.attrelid, a.atttypid, a.atttypmod, 0 FROM pg_catalog.pg_attribute a "
    "  WHERE a.attrelid = ANY(%s::pg_catalog.oid[]) AND a.attname = %s AND NOT a.attisdropped "
    "  UNION ALL SELECT d.rel, t.typbasetype, t.typtypmod, d.depth + 1 FROM d "
    "  JOIN pg_catalog.pg_type t ON t.oid = d.oid WHERE t.typtype = 'd') "
    "SELECT DISTINCT ON (d.rel) d.rel, CASE WHEN t.oid < 10000 THEN pg_catalog.format_type(t.oid, NULL) END, "
    "  t.typcategory, t.oid, d.typmod "
    "FROM d JOIN pg_catalog.pg_type t ON t.oid = d.oid ORDER BY d.rel, d.depth DESC"
)


RELATIONS_IN_SCHEMA_QUERY = sql.SQL(
    "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'f', 'p', 'S', 'c')"
)


RELATION_SIZE_QUERY = sql.SQL("SELECT pg_total_relation_size(%s)")


RELATION_QUERY = sql.SQL(
    "SELECT c.oid, c.relkind, pg_get_userbyid(c.relowner), obj_description(c.oid, 'pg_class'), "
    "  (SELECT s.srvname FROM pg_foreign_table ft JOIN pg_foreign_server s ON s.oid = ft.ftserver "
    "   WHERE ft.ftrelid = c.oid), "
    "  (SELECT ft.ftoptions FROM pg_foreign_table ft WHERE ft.ftrelid = c.oid), "
    "  (SELECT w.fdwname FROM pg_foreign_table ft JOIN pg_foreign_server s ON s.oid = ft.ftserver "
    "   JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw WHERE ft.ftrelid = c.oid) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
)

# The OID alone (a relation's other details cost a few subqueries each time).
OID_QUERY = sql.SQL(
    "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s"
)


INDEXES_QUERY = sql.SQL(
    "SELECT ic.relname, pg_get_indexdef(i.indexrelid), con.conname, pg_get_constraintdef(con.oid), "
    "  i.indisunique, i.indpred IS NULL AND i.indexprs IS NULL, "
    # its key columns (not INCLUDE's: ON CONFLICT names only those)
    "  ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
    "        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
    "        WHERE k.ord <= i.indnkeyatts ORDER BY k.ord)::text[], "
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


# The swapped-in table's ACL made exactly the target's: revoke whatever the new table got (the copying
# role's ALTER DEFAULT PRIVILEGES) from every grantee, the owner too, then grant the target's entries
# in their ACL order, one statement per grantee and grant option (a NULL ACL: the owner's defaults).
# Nothing when neither has an ACL. Grants by other grantors never get here (an in-place reason).
ACL_RESTORE_QUERY = sql.SQL(
    "WITH t AS (SELECT relowner, relacl FROM pg_class WHERE oid = %(target)s), "
    "  n AS (SELECT relowner, relacl FROM pg_class WHERE oid = %(new)s) "
    # a NULL ACL still gives the new table's owner every privilege: revoked too
    "SELECT false, CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, "
    "  NULL::text[], false FROM n, t, aclexplode(coalesce(n.relacl, acldefault('r', n.relowner))) a "
    "  WHERE n.relacl IS NOT NULL OR t.relacl IS NOT NULL GROUP BY a.grantee "
    "UNION ALL (SELECT true, CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, "
    "  array_agg(a.privilege_type ORDER BY a.n), a.is_grantable "
    "  FROM t, aclexplode(coalesce(t.relacl, acldefault('r', t.relowner))) "
    "    WITH ORDINALITY a(grantor, grantee, privilege_type, is_grantable, n) "
    "  WHERE t.relacl IS NOT NULL OR (SELECT relacl FROM n) IS NOT NULL "
    "  GROUP BY a.grantee, a.is_grantable ORDER BY min(a.n))"
)


# Columns whose type's equality is byte identity (PostgreSQL's "equalimage" types), so IS DISTINCT
# FROM sees every change; text types only under a deterministic collation.
IMAGE_EQUAL_COLUMNS_QUERY = sql.SQL(
    "SELECT a.attname FROM pg_attribute a LEFT JOIN pg_collation c ON c.oid = a.attcollation "
    "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND coalesce(c.collisdeterministic, true) "
    "AND a.atttypid = ANY (ARRAY['int2', 'int4', 'int8', 'oid', 'bool', 'text', 'varchar', "
    "'name', 'uuid', 'date', 'time', 'timestamp', 'timestamptz', 'bytea']::regtype[])"
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


PERSISTENCE_QUERY = sql.SQL("SELECT relpersistence FROM pg_class WHERE oid = %s")


# Generated (STORED) columns: computed by the target itself, never written by a copy.
GENERATED_COLUMNS_QUERY = sql.SQL(
    "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
    "AND attgenerated <> ''"
)


# Why a table cannot be swapped by rename (beyond DEPENDANTS_QUERY): what the swap would lose or change.
IN_PLACE_REASONS_QUERY = sql.SQL(
    "SELECT 'sequence ' || d.objid::regclass || ' owned by column ' || a.attname FROM pg_depend d "
    "  JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
    "  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
    "  WHERE d.classid = 'pg_class'::regclass AND d.refobjid = %(oid)s AND d.deptype IN ('a', 'i') "
    "UNION ALL SELECT 'function ' || d.objid::regprocedure FROM pg_depend d "
    "  WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_class'::regclass "
    "  AND d.refobjid = %(oid)s "
    "UNION ALL SELECT 'rule ' || rulename FROM pg_rewrite WHERE ev_class = %(oid)s AND rulename <> '_RETURN' "
    "UNION ALL SELECT 'row level security' FROM pg_class WHERE oid = %(oid)s "
    "  AND (relrowsecurity OR relforcerowsecurity) "
    "UNION ALL SELECT 'partitioned table' FROM pg_class WHERE oid = %(oid)s AND relkind = 'p' "
    "UNION ALL SELECT 'partition of ' || inhparent::regclass FROM pg_inherits i JOIN pg_class c "
    "  ON c.oid = i.inhrelid WHERE i.inhrelid = %(oid)s AND c.relispartition "
    "UNION ALL SELECT 'typed table (OF ' || reloftype::regtype || ')' FROM pg_class "
    "  WHERE oid = %(oid)s AND reloftype <> 0 "
    "UNION ALL SELECT 'storage options' FROM pg_class WHERE oid = %(oid)s AND reloptions IS NOT NULL "
    "UNION ALL SELECT 'TOAST storage options' FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid "
    "  WHERE c.oid = %(oid)s AND t.reloptions IS NOT NULL "
    "UNION ALL SELECT 'replica identity' FROM pg_class WHERE oid = %(oid)s AND relreplident NOT IN ('d') "
    # the staging table and its indexes are created in the default tablespace
    "UNION ALL SELECT 'tablespace ' || ts.spcname || ' of ' || c.oid::regclass FROM pg_class c "
    "  JOIN pg_tablespace ts ON ts.oid = c.reltablespace "
    "  WHERE c.oid = %(oid)s OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = %(oid)s) "
    # ... or in this session's default_tablespace, when that is not where the target is
    "UNION ALL SELECT 'default_tablespace ' || pg_catalog.current_setting('default_tablespace') "
    "  || ' of this session' FROM pg_class c WHERE c.oid = %(oid)s AND c.reltablespace = 0 "
    "  AND (SELECT oid FROM pg_tablespace WHERE spcname = pg_catalog.current_setting('default_tablespace')) "
    "  IS DISTINCT FROM coalesce((SELECT dattablespace FROM pg_database "
    "    WHERE datname = pg_catalog.current_database()), 0) "
    "  AND pg_catalog.current_setting('default_tablespace') <> '' "
    # LIKE does not copy the access method: the staging table has the session's default one
    "UNION ALL SELECT 'table access method ' || am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam "
    "  WHERE c.oid = %(oid)s AND am.amname <> pg_catalog.current_setting('default_table_access_method') "
    # LIKE copies neither per-column statistics targets nor column options (n_distinct …)
    "UNION ALL SELECT 'statistics target of column ' || attname FROM pg_attribute "
    "  WHERE attrelid = %(oid)s AND attnum > 0 AND NOT attisdropped AND attstattarget >= 0 "
    # (by name: some builds keep internal entries in attoptions)
    "UNION ALL SELECT o.option_name || ' of column ' || a.attname "
    "  FROM pg_attribute a, pg_options_to_table(a.attoptions) o WHERE a.attrelid = %(oid)s "
    "  AND a.attnum > 0 AND NOT a.attisdropped AND o.option_name IN ('n_distinct', 'n_distinct_inherited') "
    # indexes and key constraints are built after the load, foreign keys re-added: without comments
    "UNION ALL SELECT 'comment on index ' || indexrelid::regclass FROM pg_index "
    "  WHERE indrelid = %(oid)s AND obj_description(indexrelid, 'pg_class') IS NOT NULL "
    "UNION ALL SELECT 'comment on constraint ' || conname FROM pg_constraint "
    "  WHERE conrelid = %(oid)s AND contype IN ('p', 'u', 'x', 'f') "
    "  AND obj_description(oid, 'pg_constraint') IS NOT NULL "
    "UNION ALL SELECT 'clustered on index ' || indexrelid::regclass FROM pg_index "
    "  WHERE indrelid = %(oid)s AND indisclustered "
    # LIKE … INCLUDING STATISTICS names them after the staging table
    "UNION ALL SELECT 'extended statistics ' || stxname FROM pg_statistic_ext WHERE stxrelid = %(oid)s "
    # the swap's grants are made by the copying role: a grant chain (REVOKE … CASCADE) would be lost
    "UNION ALL SELECT DISTINCT 'grants made by ' || pg_get_userbyid(a.grantor) "
    "  FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %(oid)s AND a.grantor <> c.relowner "
    # FOR ALL TABLES / FOR TABLES IN SCHEMA publications would also publish the staging table
    "UNION ALL SELECT 'publication ' || pt.pubname FROM pg_publication_tables pt "
    "  JOIN pg_namespace n ON n.nspname = pt.schemaname "
    "  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename WHERE c.oid = %(oid)s "
    "UNION ALL SELECT 'column privileges' FROM pg_attribute WHERE attrelid = %(oid)s AND attacl IS NOT NULL "
    "  HAVING count(*) > 0"
)


# All of the above in one round trip (taken before the swap's lock and again under it).
RENAME_BLOCKERS_QUERY = sql.SQL(" UNION ALL ").join(
    sql.SQL("({})").format(query)
    for query in (DEPENDANTS_QUERY, IN_PLACE_REASONS_QUERY, OTHER_DEPENDANTS_QUERY)
)


# What the staging table of a rename swap copies from the target (``LIKE … INCLUDING ALL``, and its
# persistence): read before the staging table is created and again under the swap's lock, so a change
# made meanwhile (a migration adding a column, an index, a constraint …) is never undone. Foreign keys,
# owner, grants and the table comment are read under the lock anyway; the rest is an in-place reason.
DEFINITION_QUERY = sql.SQL(
    # row constructors as text: a NULL field never reads like an empty or a shifted one
    "SELECT ROW(c.relkind, c.relpersistence, "
    "  (SELECT array_agg(ROW(a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
    "     a.attcollation, a.attidentity, a.attgenerated, a.attstorage, "
    "     to_jsonb(a) ->> 'attcompression', "  # PostgreSQL 14+ (NULL on 13)
    "     pg_get_expr(ad.adbin, ad.adrelid), col_description(a.attrelid, a.attnum))::text ORDER BY a.attnum) "
    "   FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum "
    "   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), "
    "  (SELECT array_agg(ROW(conname, pg_get_constraintdef(oid), "
    "     obj_description(oid, 'pg_constraint'))::text ORDER BY conname) "
    "   FROM pg_constraint WHERE conrelid = c.oid AND contype <> 'f'), "
    "  (SELECT array_agg(pg_get_indexdef(indexrelid) ORDER BY pg_get_indexdef(indexrelid)) FROM pg_index "
    "   WHERE indrelid = c.oid))::text "
    "FROM pg_class c WHERE c.oid = %s"
)


# Candidate keys: the primary key first, then unique plain indexes over NOT NULL columns. Only an
# index's first indnkeyatts columns are its key: the INCLUDE columns after them are not unique.
KEY_CANDIDATES_QUERY = sql.SQL(
    "SELECT ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
    "    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
    "    WHERE k.ord <= i.indnkeyatts ORDER BY k.ord)::text[], "
    "  (SELECT bool_and(a.attnotnull) FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
    "   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE k.ord <= i.indnkeyatts) "
    "FROM pg_index i WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indimmediate "
    "  AND i.indpred IS NULL AND i.indexprs IS NULL AND NOT 0 = ANY(i.indkey) "
    "ORDER BY i.indisprimary DESC, i.indnkeyatts, i.indexrelid"
)


# Foreign keys of OTHER tables (and the target itself) that point at the target.
# Each foreign key as declared (conparentid = 0: not its copies on partitions) that deleting a row of the
# target fires: one referencing the target, one of its partitions, or a partitioned table the target is
# a partition of (``wider``: that one also references rows outside the target).
REFERENCED_RELATIONS = (  # (the partition functions list nothing for a table outside any partitioning)
    "(SELECT %(oid)s::oid UNION SELECT relid FROM pg_catalog.pg_partition_tree(%(oid)s::oid) "
    "UNION SELECT relid FROM pg_catalog.pg_partition_ancestors(%(oid)s::oid))"
)
REFERENCING_KEYS_QUERY = sql.SQL(
    "SELECT con.conname, n.nspname, c.relname, "
    "  ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, ord) "
    "    JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord)::text[], "
    "  ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(attnum, ord) "
    "    JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.ord)::text[], "
    "  con.confrelid IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(%(oid)s::oid) "
    "    WHERE relid <> %(oid)s::oid), "
    # referencing a partition below the target: the partition key columns of the levels from the
    # target down to it (a row whose values there change moves out of the partition: a delete
    # there, which fires the key's action); '' for a key expression
    "  CASE WHEN con.confrelid <> %(oid)s::oid AND con.confrelid IN "
    "    (SELECT relid FROM pg_catalog.pg_partition_tree(%(oid)s::oid)) THEN "
    "    ARRAY(SELECT coalesce(a.attname::text, '') FROM pg_catalog.pg_partition_ancestors(con.confrelid) l "
    "      JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = l.relid "
    "      CROSS JOIN unnest(pt.partattrs::int2[]) AS k(attnum) "
    "      LEFT JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = k.attnum "
    "      WHERE l.relid <> con.confrelid "
    "      AND l.relid IN (SELECT relid FROM pg_catalog.pg_partition_tree(%(oid)s::oid))) END, "
    "  con.confrelid::regclass::text "
    "FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE con.confrelid IN " + REFERENCED_RELATIONS + " AND con.contype = 'f' AND con.conparentid = 0 "
    "ORDER BY con.conname"
)


# What can make a statement skip (or rewrite) a row it chose on the locked table, for the events in
# the %(events)s mask (pg_trigger.tgtype bits: INSERT 4, DELETE 8, UPDATE 16): an enabled BEFORE ROW
# trigger (ROW 1 | BEFORE 2) on the table or a leaf partition, or a rule (rules apply to the table
# a statement names only; ev_type '2' UPDATE, '3' INSERT, '4' DELETE).
SKIPPING_WRITERS_QUERY = sql.SQL(
    "SELECT 'trigger ' || pg_catalog.quote_ident(t.tgname) || ' on ' || t.tgrelid::regclass "
    "FROM pg_catalog.pg_trigger t WHERE t.tgrelid IN (SELECT %(oid)s::oid "
    "  UNION SELECT relid FROM pg_catalog.pg_partition_tree(%(oid)s::oid) WHERE isleaf) "
    "AND NOT t.tgisinternal AND t.tgenabled <> 'D' AND t.tgtype & 3 = 3 AND t.tgtype & %(events)s <> 0 "
    "UNION ALL SELECT 'rule ' || pg_catalog.quote_ident(r.rulename) || ' on ' || r.ev_class::regclass "
    "FROM pg_catalog.pg_rewrite r WHERE r.ev_class = %(oid)s::oid "
    "AND CASE r.ev_type WHEN '2' THEN 16 WHEN '3' THEN 4 WHEN '4' THEN 8 ELSE 0 END & %(events)s <> 0 "
    "ORDER BY 1"
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


# Sequences a column's values come from: owned by the column (serial, identity), or its default is
# exactly ``nextval('s')`` (a shared or hand-made sequence; an expression around it, ``'A' || nextval``,
# says nothing about max(column)). They must survive and never go back.
SEQUENCES_QUERY = sql.SQL(
    "SELECT d.objid::int8, a.attname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
    "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
    "WHERE d.classid = 'pg_class'::regclass AND d.refobjid = %(oid)s AND d.deptype IN ('a', 'i') "
    "UNION SELECT d.refobjid::int8, a.attname FROM pg_attrdef ad "
    "JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid "
    "  AND d.refclassid = 'pg_class'::regclass "
    "JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S' "
    "JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum AND NOT a.attisdropped "
    "WHERE ad.adrelid = %(oid)s "
    "  AND pg_get_expr(ad.adbin, ad.adrelid) "
    "    = 'nextval(' || quote_literal(s.oid::regclass::text) || '::regclass)' "
    "ORDER BY 2, 1"
)


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
# The relation's kind and whether this role may lock it close each row: whether the snapshot holder
# can take ACCESS SHARE on it (bulkcopy/snapshot.py). LOCK checks table-level privileges only (a role
# with column-level SELECT reads the columns but cannot lock the table): SELECT up to PostgreSQL 15;
# from 16 INSERT, UPDATE, DELETE or TRUNCATE permit it too. Read here, in its own transaction: a
# SELECT in the holder's transaction would take its snapshot before the lock.
_LOCK_PRIVILEGE = (
    "pg_catalog.has_table_privilege(c.oid, CASE WHEN "
    "pg_catalog.current_setting('server_version_num')::int >= 160000 "
    "THEN 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE' ELSE 'SELECT' END)"
)
REMOTE_COLUMN_TYPES_QUERY = sql.SQL(
    _TYPE_COLUMNS.replace(
        " FROM pg_catalog.pg_attribute",
        f", c.relkind::text, {_LOCK_PRIVILEGE} FROM pg_catalog.pg_attribute",
        1,
    )
    + "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)


SERVER_ENCODING_QUERY = sql.SQL("SELECT pg_catalog.current_setting('server_encoding')")
