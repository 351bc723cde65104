"""Row checksums for verification, and EXPLAIN VERBOSE to see what reaches the remote."""

from __future__ import annotations

from collections.abc import Sequence

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.sql.copy import where_clause
from airflow_provider_fdw.sql.diff import key_match
from airflow_provider_fdw.sql.tables import table_ref

# Per copied column: is its type built in, its binary send function ('-' for none), whether that is
# immutable (NULL without one), whether it is text-like, and the type's name.
CHECKSUM_COLUMNS_QUERY = sql.SQL(
    "SELECT a.attname, a.atttypid < 10000, t.typsend::regproc::text, p.provolatile = 'i', "
    "  t.typsend IN ('textsend'::regproc, 'varcharsend'::regproc, 'bpcharsend'::regproc), t.typname "
    "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_proc p ON p.oid = t.typsend "
    "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped"
)

# Built-in types whose value is an object's name, sent as the object's OID (another one on each
# server): their send form is not their value.
OBJECT_REFERENCE_TYPES = frozenset(
    {
        "regclass",
        "regcollation",
        "regconfig",
        "regdictionary",
        "regnamespace",
        "regoper",
        "regoperator",
        "regproc",
        "regprocedure",
        "regrole",
        "regtype",
    }
)


# Built-in types made of float8 values that cannot be taken apart by immutable functions postgres_fdw
# ships (a line's coefficients, a path's or a polygon's points): a NaN among them cannot be given one
# form, so their send form is not their value (postgres_fdw copies the text form).
UNNORMALISED_FLOAT_TYPES = frozenset({"line", "path", "polygon"})


def _one_nan(value: sql.Composable) -> sql.Composable:
    """A float8 ``value`` with one NaN whatever its bits."""
    return sql.SQL("CASE WHEN {0} = 'NaN' THEN 'NaN'::float8 ELSE {0} END").format(value)


def _point_has_nan(point: sql.Composable) -> sql.Composable:
    return sql.SQL("(({0})[0] = 'NaN' OR ({0})[1] = 'NaN')").format(point)


def _one_nan_point(point: sql.Composable) -> sql.Composable:
    """A point expression (a column, ``v[0]`` of a box, ``center(v)``) rebuilt with one NaN."""
    return sql.SQL("pg_catalog.point({}, {})").format(
        _one_nan(sql.SQL("({})[0]").format(point)), _one_nan(sql.SQL("({})[1]").format(point))
    )


def send_form(column: sql.Composable, send: str) -> sql.Composable:
    """``send(column)``, with one NaN whatever its bits: a NaN's bits vary ('Infinity' - 'Infinity'
    sets the sign bit) while its text form, which postgres_fdw copies, does not. The geometric types
    are float8 coordinates: a point, a segment's or a box's two points, a circle's center and radius
    (see :data:`UNNORMALISED_FLOAT_TYPES` for the others)."""
    value = column
    if send in ("float4send", "float8send"):
        value = sql.SQL("CASE WHEN {0} = 'NaN' THEN 'NaN' ELSE {0} END").format(column)
    elif send == "point_send":  # two float8 coordinates: the same NaN in each
        value = sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(
            _point_has_nan(column), _one_nan_point(column), column
        )
    elif send in ("lseg_send", "box_send"):  # two points ([0], [1]), rebuilt in the same order
        ends = [sql.SQL("{}[{}]").format(column, sql.SQL(i)) for i in ("0", "1")]
        value = sql.SQL("CASE WHEN {} OR {} THEN {}({}, {}) ELSE {} END").format(
            _point_has_nan(ends[0]),
            _point_has_nan(ends[1]),
            sql.Identifier("pg_catalog", send.removesuffix("_send")),
            _one_nan_point(ends[0]),
            _one_nan_point(ends[1]),
            column,
        )
    elif send == "circle_send":  # a center and a radius
        center = sql.SQL("pg_catalog.center({})").format(column)
        radius = sql.SQL("pg_catalog.radius({})").format(column)
        value = sql.SQL("CASE WHEN {} OR {} = 'NaN' THEN pg_catalog.circle({}, {}) ELSE {} END").format(
            _point_has_nan(center), radius, _one_nan_point(center), _one_nan(radius), column
        )
    return sql.SQL("{}({})").format(sql.Identifier("pg_catalog", send), value)


def _column_bytes(column: str, send: str | None) -> sql.Composable:
    """A column's value as bytes independent of every setting: its binary send form, or md5 of text."""
    if send is None:
        return sql.SQL("decode(md5({}), 'hex')").format(sql.Identifier(column))
    return send_form(sql.Identifier(column), send)


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
                sql.Identifier(*staging), key_match("s", "t", keys)
            ),
        ]
    return sql.SQL("SELECT count(*), {} FROM {}{}{}").format(
        checksum,
        table_ref(table, only),
        sql.SQL(" AS t" if matching is not None else ""),  # the user's where may name the table itself
        where_clause(conditions),
    )


def explain_verbose(statement: sql.Composable) -> sql.Composed:
    """The plan with each node's remote SQL (shows whether postgres_fdw pushes an aggregate down)."""
    return sql.SQL("EXPLAIN (VERBOSE) {}").format(statement)
