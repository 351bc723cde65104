"""What a copy runs: predicates (range, watermark, user WHERE), INSERT ... SELECT, COPY, upsert."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_fdw.compat import Fragment, sql
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.sql.diff import key_match, row_text
from airflow_provider_fdw.sql.tables import column_list, table_ref


def where_clause(conditions: Sequence[sql.Composable]) -> sql.Composable:
    if not conditions:
        return sql.SQL("")
    return sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(sql.SQL("({})").format(c) for c in conditions))


def user_predicate(where: str) -> sql.Composable:
    """The user's ``where`` filter: SQL by nature (templated in the DAG, like SQLExecuteQueryOperator)."""
    return sql.SQL(where)


def applied_locally(condition: sql.Composable) -> sql.Composed:
    """``condition`` in one expression with ``now()``, which is not immutable: no wrapper sends such an
    expression to its remote (mysql_fdw and postgres_fdw check contain_mutable_functions), so the local
    server evaluates it, row by row (for a wrapper that would send its functions and operators by
    name). ``now()`` is never NULL: the CASE is the condition. (A sub-select naming no column of the
    row would be planned as an InitPlan and run once: ``random() < 0.1`` kept all rows or none.)"""
    return sql.SQL("CASE WHEN pg_catalog.now() IS NOT NULL THEN ({}) END").format(condition)


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


def delete_where(table: QualifiedName, condition: sql.Composable) -> sql.Composed:
    """``DELETE FROM table WHERE condition`` (a partitioned copy's range, removed before a retry)."""
    return sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(*table), condition)


def watermark_predicate(
    column: str, bound: Any, inclusive: bool, type_sql: str | None = None
) -> sql.Composable:
    """``column > bound`` (append) or ``column >= bound`` (upsert, bound already lowered by the overlap).

    ``type_sql``: the type the bound is written as (``CAST(bound AS type)``). A real's bound read
    back as a Python float and sent untyped is compared as float8 (``real > numeric`` resolves to
    ``float48gt``): the real 1.1 is then above 1.1 and the newest row passes its own bound again.
    A constant cast of a built-in type is folded by the planner: the wrappers still push it down.
    """
    value: sql.Composable = sql.Literal(bound)
    if type_sql is not None:
        value = sql.SQL("CAST({} AS {})").format(value, Fragment(type_sql))
    return sql.SQL("{} {} {}").format(sql.Identifier(column), sql.SQL(">=" if inclusive else ">"), value)


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


def select_rows(
    source: QualifiedName, columns: Sequence[str], conditions: Sequence[sql.Composable]
) -> sql.Composed:
    """The SELECT the direct path reads: copied by :func:`select_for_copy`, estimated by
    :func:`explain_select_json` (the same statement, so the estimate is of what is read)."""
    return sql.SQL("SELECT {} FROM {}{}").format(
        column_list(columns), sql.Identifier(*source), where_clause(conditions)
    )


def select_for_copy(
    source: QualifiedName, columns: Sequence[str], conditions: Sequence[sql.Composable], binary: bool
) -> sql.Composed:
    return sql.SQL("COPY ({}) TO STDOUT{}").format(
        select_rows(source, columns, conditions), sql.SQL(" (FORMAT binary)" if binary else "")
    )


def explain_select_json(
    source: QualifiedName, columns: Sequence[str], conditions: Sequence[sql.Composable]
) -> sql.Composed:
    """The planner's estimate (EXPLAIN, not run) of the SELECT :func:`select_for_copy` copies."""
    return sql.SQL("EXPLAIN (FORMAT json) {}").format(select_rows(source, columns, conditions))


def copy_from_stdin(
    table: QualifiedName, columns: Sequence[str], binary: bool, freeze: bool = False
) -> sql.Composed:
    """``freeze``: rows written frozen and all-visible (the table must be created or truncated in the
    same transaction): no later pass sets their hint bits or freezes them."""
    options = [sql.SQL(option) for option, on in (("FORMAT binary", binary), ("FREEZE", freeze)) if on]
    return sql.SQL("COPY {} ({}) FROM STDIN{}").format(
        sql.Identifier(*table),
        column_list(columns),
        sql.SQL(" ({})").format(sql.SQL(", ").join(options)) if options else sql.SQL(""),
    )


BEGIN = sql.SQL("BEGIN")  # for psql, which runs no implicit transaction
COMMIT = sql.SQL("COMMIT")


def truncate(table: QualifiedName) -> sql.Composed:
    return sql.SQL("TRUNCATE {}").format(sql.Identifier(*table))


# Rows the COPY FROM commands into a table have written so far (no lock on the table: a load
# that truncated it holds ACCESS EXCLUSIVE until it commits).
COPY_PROGRESS_QUERY = sql.SQL(
    "SELECT coalesce(sum(tuples_processed), 0) FROM pg_stat_progress_copy "
    "WHERE relid = %s AND command = 'COPY FROM'"
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
    # A key is never SET: the role needs no UPDATE on it and no trigger or foreign key on it fires.
    # So a key whose '=' is not identity keeps its old spelling (1.0 where the source now has 1.00).
    others = [c for c in columns if c not in key_columns]
    if not others:
        action: sql.Composable = sql.SQL("DO NOTHING")
    else:
        action = sql.SQL("DO UPDATE SET {} WHERE {}").format(
            sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others),
            upsert_changed("t", "excluded", others, image_equal),
        )
    # In key order: the staged rows come in the source's (watermark) order, and probing the unique
    # index and the heap in key order visits each of their pages once, in order.
    return sql.SQL("INSERT INTO {} AS t ({}) SELECT {} FROM {} ORDER BY {} ON CONFLICT ({}) {}").format(
        sql.Identifier(*target),
        column_list(columns),
        column_list(columns),
        sql.Identifier(*source),
        column_list(key_columns),
        column_list(key_columns),
        action,
    )


def upsert_changed(old: str, new: str, columns: Sequence[str], image_equal: Sequence[str]) -> sql.Composable:
    """Whether row ``old`` differs from ``new`` in ``columns`` (non-empty), as an upsert decides it."""
    typed = [c for c in columns if c in image_equal]
    as_text = [c for c in columns if c not in image_equal]
    changed: list[sql.Composable] = []
    if typed:
        changed.append(
            sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(
                sql.SQL(", ").join(
                    sql.SQL("{}.{}").format(sql.Identifier(old), sql.Identifier(c)) for c in typed
                ),
                sql.SQL(", ").join(
                    sql.SQL("{}.{}").format(sql.Identifier(new), sql.Identifier(c)) for c in typed
                ),
            )
        )
    if as_text:
        changed.append(
            sql.SQL("{} IS DISTINCT FROM {}").format(row_text(old, as_text), row_text(new, as_text))
        )
    return sql.SQL(" OR ").join(changed)


def upserted_rows_missing(
    target: QualifiedName,
    staging: QualifiedName,
    columns: Sequence[str],
    key_columns: Sequence[str],
    image_equal: Sequence[str],
    only: bool,
) -> sql.Composed:
    """How many staged rows the target does not hold after an upsert (no row with their key, or one
    whose other values differ as :func:`upsert_from` decides it): one key lookup per staged row."""
    others = [c for c in columns if c not in key_columns]
    same = (
        sql.SQL(" AND NOT ({})").format(upsert_changed("t", "s", others, image_equal))
        if others
        else sql.SQL("")
    )
    return sql.SQL("SELECT count(*) FROM {} AS s WHERE NOT EXISTS (SELECT 1 FROM {} AS t WHERE {}{})").format(
        sql.Identifier(*staging), table_ref(target, only), key_match("t", "s", key_columns), same
    )


def appended_rows_missing(
    target: QualifiedName, staging: QualifiedName, columns: Sequence[str]
) -> sql.Composed:
    """How many staged rows this transaction did not write into the target or any table inheriting
    from it (a BEFORE trigger may route rows to the children: the append's own count is then 0)."""
    cols = column_list(columns)
    return sql.SQL(
        # As text: every type has text equality (json has none of its own). Written by this
        # transaction or one of its subtransactions (a trigger's EXCEPTION block): a visible row whose
        # xmin is still in progress can only be this transaction's. Only normal xmins at or after this
        # transaction's own id (modulo 2^32, within 2^31) are widened to 64 bits and asked about.
        "SELECT count(*) FROM (SELECT ROW({cols})::text FROM {staging} "
        "EXCEPT ALL SELECT ROW({cols})::text FROM {target} AS t, "
        "  (SELECT pg_catalog.pg_current_xact_id()::text::int8 AS r) AS x, "
        "  LATERAL (SELECT (t.xmin::text::int8 - (x.r & 4294967295)) & 4294967295 AS d) AS ahead "
        "WHERE t.xmin::text::int8 >= 3 AND ahead.d < 2147483648 "
        "  AND pg_catalog.pg_xact_status((x.r + ahead.d)::text::xid8) = 'in progress') AS missing"
    ).format(cols=cols, staging=sql.Identifier(*staging), target=sql.Identifier(*target))


def min_max(table: QualifiedName, column: str, conditions: Sequence[sql.Composable] = ()) -> sql.Composed:
    return sql.SQL("SELECT min({0}), max({0}) FROM {1}{2}").format(
        sql.Identifier(column), sql.Identifier(*table), where_clause(conditions)
    )


def max_text_of(table: QualifiedName, column: str, conditions: Sequence[sql.Composable] = ()) -> sql.Composed:
    """``max(column)`` as text: infinity and NaN have no Python value to read them into."""
    return sql.SQL("SELECT max({})::text FROM {}{}").format(
        sql.Identifier(column), sql.Identifier(*table), where_clause(conditions)
    )


def watermark_ceiling(column: str, top: str | None, type_sql: str) -> sql.Composable:
    """``column <= CAST(top AS type)`` (``top``: the column's text, read back as the same value), or
    ``false`` when there was no top (no row had a watermark). An untyped literal cast is a constant
    at parse time: postgres_fdw sends it to the remote."""
    if top is None:
        return sql.SQL("false")
    return sql.SQL("{} <= CAST({} AS {})").format(
        sql.Identifier(column), sql.Literal(top), Fragment(type_sql)
    )


def counted_upsert(upsert: sql.Composable) -> sql.Composed:
    """Run an ``upsert_from`` statement and return (inserted, updated): a new row version has xmax 0."""
    return sql.SQL(
        "WITH applied AS ({} RETURNING (t.xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM applied"
    ).format(upsert)


def written_upsert(upsert: sql.Composable) -> sql.Composed:
    """Run an ``upsert_from`` statement into a partitioned table (whose RETURNING cannot read xmax)
    and return the rows it inserted or updated."""
    return sql.SQL("WITH applied AS ({} RETURNING 1) SELECT count(*) FROM applied").format(upsert)


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
