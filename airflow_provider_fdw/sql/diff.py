"""The in-place replace: key-matched DELETE / UPDATE / INSERT from staging and its safety probes."""

from __future__ import annotations

from collections.abc import Sequence

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.sql.tables import column_list, table_ref


def key_match(
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
        table_ref(target, only), sql.Identifier(*staging), key_match("s", "t", keys)
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
        table_ref(target, only),
        sql.SQL(", ").join(sql.SQL("{0} = s.{0}").format(sql.Identifier(c)) for c in others),
        sql.Identifier(*staging),
        key_match("s", "t", keys),
        sql.SQL(" OR ").join(changed),
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
        table_ref(target, only),
        key_match("t", "s", keys),
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
        target=table_ref(target, only),
        plain_target=sql.Identifier(*target),
        staging=sql.Identifier(*staging),
        cols=column_list(columns),
        overriding=sql.SQL(" OVERRIDING SYSTEM VALUE" if overriding else ""),
    )


def duplicate_key_probe(table: QualifiedName, keys: Sequence[str], only: bool = False) -> sql.Composed:
    """One key value that occurs twice (NULL keys never match, so they are not duplicates)."""
    return sql.SQL("SELECT {} FROM {} WHERE {} GROUP BY {} HAVING count(*) > 1 LIMIT 1").format(
        column_list(keys),
        table_ref(table, only),
        sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(k)) for k in keys),
        column_list(keys),
    )


def orphan_probe(
    child: QualifiedName,
    child_columns: Sequence[str],
    staging: QualifiedName,
    parent_columns: Sequence[str],
    target: QualifiedName | None = None,
) -> sql.Composed:
    """One child row's reference that the new data no longer has (MATCH SIMPLE: NULLs reference
    nothing); with ``target``, only references to its rows (the key references a wider table)."""
    in_target: sql.Composable = sql.SQL("")
    if target is not None:
        in_target = sql.SQL(" AND EXISTS (SELECT 1 FROM {} AS t WHERE {})").format(
            sql.Identifier(*target), key_match("t", "c", parent_columns, child_columns)
        )
    return sql.SQL(
        "SELECT {} FROM {} AS c WHERE {}{} AND NOT EXISTS (SELECT 1 FROM {} AS s WHERE {}) LIMIT 1"
    ).format(
        sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(c)) for c in child_columns),
        sql.Identifier(*child),
        sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c in child_columns),
        in_target,
        sql.Identifier(*staging),
        key_match("s", "c", parent_columns, child_columns),
    )


def null_key_count(table: QualifiedName, keys: Sequence[str]) -> sql.Composed:
    """Rows with a NULL in any key column (they never match ``=`` nor ``ON CONFLICT``)."""
    return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
        sql.Identifier(*table),
        sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(k)) for k in keys),
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
        same_row = sql.SQL("{} AND {}").format(key_match("s", "t", key), key_match("s", "t", parent_columns))
    else:
        same_row = sql.SQL("{} = {}").format(row_text("s", columns), row_text("t", columns))
    return sql.SQL(
        "SELECT {} FROM {} AS c JOIN {} AS t ON {} WHERE NOT EXISTS (SELECT 1 FROM {} AS s WHERE {}) LIMIT 1"
    ).format(
        sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(c)) for c in child_columns),
        sql.Identifier(*child),
        table_ref(target, only),
        key_match("t", "c", parent_columns, child_columns),
        sql.Identifier(*staging),
        same_row,
    )


def rows_differing(
    target: QualifiedName, staging: QualifiedName, columns: Sequence[str], only: bool
) -> sql.Composed:
    """How many rows (by text form, with repeats) one of the two tables has and the other lacks."""
    t_rows = sql.SQL('SELECT {} COLLATE "C" FROM {} AS t').format(
        row_text("t", columns), table_ref(target, only)
    )
    s_rows = sql.SQL('SELECT {} COLLATE "C" FROM {} AS s').format(
        row_text("s", columns), sql.Identifier(*staging)
    )
    return sql.SQL(
        "SELECT (SELECT count(*) FROM ({0} EXCEPT ALL {1}) AS a) "
        "+ (SELECT count(*) FROM ({1} EXCEPT ALL {0}) AS b)"
    ).format(t_rows, s_rows)
