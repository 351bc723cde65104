"""file_fdw: a foreign table over a CSV file on the local server, and a bulk copy from it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from conftest import local

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.operators.files import CreateFileForeignTableOperator
from fdw_testing.pgcluster import Pair

COLUMNS = {"id": "integer", "name": "text", "price": "numeric(10,2)", "seen": "date"}
CSV = (
    "id,name,price,seen\n"
    "1,apple,1.50,2024-01-01\n"
    '2,"pear, green",2.00,2024-02-29\n'
    "3,,,\n"
    '4,"say ""hi""",0.10,1999-12-31\n'
)
ROWS = [
    (1, "apple", "1.50", "2024-01-01"),
    (2, "pear, green", "2.00", "2024-02-29"),
    (3, None, None, None),
    (4, 'say "hi"', "0.10", "1999-12-31"),
]


@pytest.fixture
def csv_file(server_readable_dir: Path) -> Path:
    path = server_readable_dir / "items.csv"
    path.write_text(CSV)
    path.chmod(0o644)
    return path


def file_table(csv: Path, **overrides: object) -> CreateFileForeignTableOperator:
    kwargs = {
        "task_id": "file_table",
        "server_name": "files",
        "table": f"files_{uuid.uuid4().hex[:8]}.items",
        "columns": COLUMNS,
        "options": {"filename": str(csv), "format": "csv", "header": True},
    }
    return CreateFileForeignTableOperator(**{**kwargs, **overrides})


def read(pair: Pair, table: str) -> list[tuple]:
    return local(pair, "SELECT id, name, price::text, seen::text FROM {t} ORDER BY id", t=table)


def test_file_table_is_created_once_and_reads_the_csv(pair: Pair, csv_file: Path) -> None:
    op = file_table(csv_file)
    first = op.execute({})
    assert first["changed"] is True
    assert read(pair, op.table) == ROWS
    assert op.execute({}) == {**first, "changed": False}  # a re-run converges: nothing to do


def test_changed_options_redefine_the_table_in_place(pair: Pair, csv_file: Path) -> None:
    op = file_table(csv_file)
    op.execute({})
    tsv = csv_file.with_name("items.tsv")
    tsv.write_text("id\tname\tprice\tseen\n7\tplum\t3.25\t2023-05-05\n")
    tsv.chmod(0o644)
    again = file_table(tsv, table=op.table, options={"filename": str(tsv), "format": "text", "header": True})
    assert again.execute({})["changed"] is True
    assert read(pair, op.table) == [(7, "plum", "3.25", "2023-05-05")]


def test_missing_file_fails_with_nothing_created(pair: Pair, csv_file: Path) -> None:
    server = f"files_{uuid.uuid4().hex[:8]}"
    op = file_table(csv_file.with_name("missing.csv"), server_name=server)
    with pytest.raises(FdwError, match=r"cannot read its file: .*could not open file"):
        op.execute({})
    assert local(pair, "SELECT 1 FROM pg_foreign_server WHERE srvname = %s", (server,)) == []
    schema = op.table.split(".")[0]
    assert local(pair, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"options": {"filename": "items.csv"}}, "absolute path"),
        ({"options": {"filename": "/x.csv", "sheet": "1"}}, "'sheet' is not a file_fdw foreign-table option"),
        ({"options": {"format": "csv"}}, "exactly one of filename or program"),
        ({"columns": {"id": "int); DROP TABLE x; --"}}, "must be a type name"),
        ({"columns": {}}, "at least one column"),
        ({"table": "no_schema"}, "table"),
    ],
)
def test_bad_arguments_are_refused_when_the_dag_is_parsed(
    csv_file: Path, overrides: dict, message: str
) -> None:
    with pytest.raises(FdwConfigError, match=message):
        file_table(csv_file, **overrides)


def test_unknown_type_is_refused_before_anything_changes(pair: Pair, csv_file: Path) -> None:
    server = f"files_{uuid.uuid4().hex[:8]}"
    op = file_table(csv_file, server_name=server, columns={"id": "integr"})
    with pytest.raises(FdwConfigError, match="type 'integr' does not exist"):
        op.execute({})
    assert local(pair, "SELECT 1 FROM pg_foreign_server WHERE srvname = %s", (server,)) == []


def test_an_existing_table_of_that_name_is_never_dropped(pair: Pair, csv_file: Path) -> None:
    schema = f"files_{uuid.uuid4().hex[:8]}"
    local(pair, "CREATE SCHEMA {s}", s=schema)
    local(pair, "CREATE TABLE {t} (id int)", t=f"{schema}.items")
    with pytest.raises(FdwConfigError, match="is not a foreign table of server 'files'"):
        file_table(csv_file, table=f"{schema}.items").execute({})
    assert local(
        pair, "SELECT relkind::text FROM pg_class WHERE oid = {t}::regclass", t=sql.Literal(f"{schema}.items")
    ) == [("r",)]


def test_direct_copy_path_is_refused_for_a_file_table_before_anything_changes(
    pair: Pair, csv_file: Path
) -> None:
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.hooks.fdw import FdwHook

    op = file_table(csv_file)
    op.execute({})
    target = f"public.file_copy_{uuid.uuid4().hex[:8]}"
    with (
        FdwHook(fdw_conn_id="fdw_source") as hook,
        pytest.raises(
            FdwConfigError,
            match=r"transport='copy' reads the remote table with COPY.*is a file_fdw foreign table",
        ),
    ):
        hook.bulk_copy(plan_copy(op.table, target, transport="copy"))
    assert local(pair, "SELECT to_regclass(%s)", (target,)) == [(None,)]
