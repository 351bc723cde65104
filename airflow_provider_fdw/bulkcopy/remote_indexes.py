"""Whether an index on the source serves the watermark filter, read from the remote's catalogs.

Through postgres_fdw the remote catalogs are read by session-private foreign tables over them (created
in a savepoint that is rolled back: nothing stays); on the direct connection they are read as they are.
The probe says whether any index of the remote table leads with a column (the watermark filter's
advice, bulkcopy/watermark.py), and that column's type (what a declared type is compared with:
bulkcopy/watermark_types.py).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.session import LocalSession

# Session-private foreign tables over the remote catalogs the probe reads (the FDW path).
INDEX_PROBES = (
    ("fdw_wm_index", "pg_index", "indrelid oid, indkey int2vector"),
    ("fdw_wm_class", "pg_class", 'oid oid, relname name, relnamespace oid, relkind "char"'),
    ("fdw_wm_ns", "pg_namespace", "oid oid, nspname name"),
    ("fdw_wm_att", "pg_attribute", "attrelid oid, attnum int2, attname name, atttypid oid, atttypmod int4"),
)


def index_probe_query(through_fdw: bool) -> sql.Composed:
    """(relkind, whether an index leads with the column, the column's type OID and modifier: NULL
    without such a column) of the remote table; parameters: the column, the schema, the table.
    Through the FDW it reads the probes of ``INDEX_PROBES``."""
    index, cls, ns, att = q.catalog_reads(INDEX_PROBES, through_fdw)
    return sql.SQL(
        "SELECT r.relkind, EXISTS (SELECT 1 FROM {index} i JOIN {att} a ON a.attrelid = i.indrelid "
        "AND a.attnum = i.indkey[0] WHERE i.indrelid = r.oid AND a.attname = c.attname), "
        "c.atttypid, c.atttypmod "
        "FROM {cls} r JOIN {ns} n ON n.oid = r.relnamespace "
        "LEFT JOIN {att} c ON c.attrelid = r.oid AND c.attname = %s "
        "WHERE n.nspname = %s AND r.relname = %s"
    ).format(index=index, att=att, cls=cls, ns=ns)


def probe_through_fdw(
    s: LocalSession, server_name: str, remote: QualifiedName, column: str
) -> tuple[Any, ...] | None:
    """:func:`index_probe_query`'s row for ``column`` (its remote name) of ``remote``, read through
    postgres_fdw (None: no such table); raises FdwError when the remote catalogs cannot be read."""
    with s.undone("read remote indexes"):
        for statement in q.create_pk_probes(server_name, INDEX_PROBES):
            s.execute("read remote indexes", statement, quiet=True)
        return s.fetchone("read remote indexes", index_probe_query(through_fdw=True), (column, *remote))
