"""Foreign tables on the LOCAL database: list them, analyze them, write local rows through one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.catalog import relation_reads
from airflow_provider_fdw.locks import lock_object
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.remote_answers import check_servers_answer
from airflow_provider_fdw.session import LocalSession


def analyze_tables(s: LocalSession, tables: Sequence[QualifiedName]) -> None:
    """``ANALYZE`` each table, one transaction each (for foreign tables postgres_fdw samples the remote)."""
    for table in tables:
        with s.transaction():
            check_servers_answer(s, relation_reads(s, table, "table to analyze"), s.log)
            s.execute(f"analyze {table}", q.analyze(table))


class ForeignTable(NamedTuple):
    """A foreign table of a local schema and the remote table it reads."""

    table: str
    server: str
    remote_schema: str
    remote_table: str


def read_foreign_tables(s: LocalSession, local_schema: str) -> list[ForeignTable]:
    """Foreign tables in ``local_schema`` (checked), in the caller's transaction."""
    rows = s.fetchall("list foreign tables", q.FOREIGN_TABLES_QUERY, (local_schema,))
    # Without a schema_name / table_name option the wrappers read the local schema's / table's name.
    return [
        ForeignTable(name, server, rschema or local_schema, rtable or name)
        for name, server, rschema, rtable in rows
    ]


def list_foreign_tables(s: LocalSession, local_schema: str) -> list[dict[str, str]]:
    """Foreign tables in ``local_schema`` (checked): name, server, remote schema and remote table."""
    with s.transaction():
        return [t._asdict() for t in read_foreign_tables(s, local_schema)]


def copy_to_foreign_table(
    s: LocalSession, local: QualifiedName, remote: QualifiedName, key_column: str, columns: Sequence[str]
) -> int:
    """Replace the rows of foreign table ``remote`` with ``local``'s of the same keys in ONE transaction
    (names checked; ``columns`` include ``key_column``); the rows written."""
    with s.transaction():
        reads = [*relation_reads(s, remote, "foreign table"), *relation_reads(s, local, "local table")]
        check_servers_answer(s, reads, s.log)
        # Overlapping runs take turns: each then sees the other's rows (remote snapshot taken after).
        lock_object(s, "foreign table write", str(remote))
        s.execute(
            f"delete replaced rows of {remote}",
            q.sql.SQL("DELETE FROM {} WHERE {} = ANY (ARRAY(SELECT {} FROM {}))").format(
                q.sql.Identifier(*remote),
                q.sql.Identifier(key_column),
                q.sql.Identifier(key_column),
                q.sql.Identifier(*local),
            ),
        )
        cur = s.execute(f"write {remote}", q.insert_select(remote, list(columns), local))
        return cur.rowcount
