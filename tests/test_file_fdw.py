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


# -- the header line: file_fdw skips it unread and maps values by position ----------------------------


def copy(source: str, target: str, **kwargs: object) -> dict:
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.hooks.fdw import FdwHook

    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(source, target, **kwargs))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)
    return path


PAIRS = {"low": "integer", "high": "integer"}


def test_a_header_naming_the_columns_in_another_order_is_refused_before_anything_changes(
    pair: Pair, server_readable_dir: Path
) -> None:
    """Before: the table was created and read high's values as low's (both integers), silently."""
    path = write(server_readable_dir / "swapped.csv", "high,low\n9,1\n8,2\n")
    op = file_table(path, columns=PAIRS)
    with pytest.raises(
        FdwConfigError, match=r"names the columns in another order.*'high' is field 1, column 2"
    ):
        op.execute({})
    assert local(pair, "SELECT to_regclass(%s)", (op.table,)) == [(None,)]
    # Header names other than the column names are taken as they are (a header is not required to match).
    write(path, "Upper,Lower\n9,1\n")
    op.execute({})
    assert local(pair, "SELECT low, high FROM {t}", t=op.table) == [(9, 1)]


@pytest.mark.parametrize("mode", ["replace", "append", "upsert"])
def test_a_copy_from_a_file_rewritten_with_its_columns_in_another_order_changes_nothing(
    pair: Pair, server_readable_dir: Path, mode: str
) -> None:
    """The file is re-exported with its columns reordered after the table was made: before, the copy
    reported success with every value of one column in the other."""
    path = write(server_readable_dir / "pairs.csv", "low,high\n1,9\n2,8\n")
    op = file_table(path, columns=PAIRS)
    op.execute({})
    target = f"public.pairs_{uuid.uuid4().hex[:8]}"
    assert copy(op.table, target)["rows"] == 2
    local(pair, "ALTER TABLE {t} ADD PRIMARY KEY (low)", t=target)
    write(path, "high,low\n9,1\n8,2\n7,3\n")
    extra = {"watermark_column": "low"} | ({"key_columns": ["low"]} if mode == "upsert" else {})
    with pytest.raises(FdwConfigError, match="names the columns in another order"):
        copy(op.table, target, mode=mode, **(extra if mode != "replace" else {}))
    assert local(pair, "SELECT low, high FROM {t} ORDER BY low", t=target) == [(1, 9), (2, 8)]


@pytest.mark.parametrize("reader", ["view", "view-of-a-view", "partitioned"])
@pytest.mark.parametrize("mode", ["replace", "append", "upsert"])
def test_a_copy_through_a_view_or_partitioned_table_checks_the_files_it_reads(
    pair: Pair, server_readable_dir: Path, mode: str, reader: str
) -> None:
    """The header and 0-byte checks of a copy looked at the source only when it was the file table
    itself: through a view over it (or a partitioned table with it as a partition), a file re-exported
    with its columns in another order loaded them swapped, and an empty file emptied the target, with
    success (review round 3, 2026-12-07)."""
    path = write(server_readable_dir / "pairs.csv", "low,high\n1,9\n2,8\n")
    op = file_table(path, columns=PAIRS)
    op.execute({})
    source = f"public.reads_file_{uuid.uuid4().hex[:8]}"
    if reader == "partitioned":
        local(pair, "CREATE TABLE {p} (low integer, high integer) PARTITION BY RANGE (low)", p=source)
        local(pair, "ALTER TABLE {p} ATTACH PARTITION {t} FOR VALUES FROM (0) TO (100)", p=source, t=op.table)
    else:
        local(pair, "CREATE VIEW {v} AS SELECT * FROM {t}", v=source, t=op.table)
        if reader == "view-of-a-view":
            local(pair, "CREATE VIEW {w} AS SELECT low, high FROM {v}", w=source + "_2", v=source)
            source += "_2"
    target = f"public.pairs_{uuid.uuid4().hex[:8]}"
    assert copy(source, target)["rows"] == 2
    local(pair, "ALTER TABLE {t} ADD PRIMARY KEY (low)", t=target)
    extra = {"watermark_column": "low"} | ({"key_columns": ["low"]} if mode == "upsert" else {})
    kwargs = {"mode": mode, **(extra if mode != "replace" else {})}
    write(path, "high,low\n9,1\n8,2\n7,3\n")
    with pytest.raises(FdwConfigError, match="names the columns in another order"):
        copy(source, target, **kwargs)
    assert local(pair, "SELECT low, high FROM {t} ORDER BY low", t=target) == [(1, 9), (2, 8)]
    if mode == "replace":
        write(path, "")
        with pytest.raises(FdwConfigError, match="0 bytes"):
            copy(source, target, **kwargs)
        assert local(pair, "SELECT low, high FROM {t} ORDER BY low", t=target) == [(1, 9), (2, 8)]
    write(path, "low,high\n1,9\n2,8\n3,7\n")
    assert copy(source, target, **kwargs)["rows"] == {"replace": 3, "append": 1, "upsert": 2}[mode]
    assert local(pair, "SELECT low, high FROM {t} ORDER BY low", t=target) == [(1, 9), (2, 8), (3, 7)]


def test_a_view_over_a_file_table_is_copied_by_a_role_that_may_only_read_the_view(
    pair: Pair, server_readable_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view reads its file table as its owner: a role granted SELECT on the view alone copies it.
    The checks of the files a view reads (which need a private table over the file) are skipped, with
    a warning, for a role that may not make one, rather than failing a copy that reads nothing more."""
    from conftest import postgres_connection

    from fdw_testing.sample_data import TARGET_DB

    path = write(server_readable_dir / "pairs.csv", "low,high\n1,9\n2,8\n")
    op = file_table(path, columns=PAIRS)
    op.execute({})
    role, schema = (f"{p}_{uuid.uuid4().hex[:8]}" for p in ("viewer", "viewer"))
    local(pair, "CREATE ROLE {r} LOGIN PASSWORD 'Viewer-Secret-3b1d'", r=role)
    local(pair, "CREATE SCHEMA {s} AUTHORIZATION {r}", s=schema, r=role)
    view = f"{schema}.over_file"
    local(pair, "CREATE VIEW {v} AS SELECT * FROM {t}", v=view, t=op.table)
    local(pair, "GRANT SELECT ON {v} TO {r}", v=view, r=role)
    monkeypatch.setenv(
        "AIRFLOW_CONN_FILE_VIEWER", postgres_connection(pair.target, TARGET_DB, role, "Viewer-Secret-3b1d")
    )
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.hooks.fdw import FdwHook

    with FdwHook(postgres_conn_id="file_viewer", fdw_conn_id="fdw_source") as hook:
        assert hook.bulk_copy(plan_copy(view, f"{schema}.copied"))["rows"] == 2
    assert local(pair, "SELECT low, high FROM {t} ORDER BY low", t=f"{schema}.copied") == [(1, 9), (2, 8)]


def test_header_match_has_every_read_check_the_header(pair: Pair, server_readable_dir: Path) -> None:
    """``header 'match'`` (PostgreSQL 15): COPY checks the header's names and count on every read, so
    a reordered, widened or half-written file fails the copy. Before: refused as not a boolean."""
    path = write(server_readable_dir / "pairs.csv", "low,high\n1,9\n2,8\n")
    op = file_table(path, columns=PAIRS, options={"filename": str(path), "format": "csv", "header": "match"})
    op.execute({})
    target = f"public.pairs_{uuid.uuid4().hex[:8]}"
    assert copy(op.table, target)["rows"] == 2
    for text, message in [
        ("high,low\n9,1\n", 'column name mismatch in header line field 1: got "high", expected "low"'),
        ("low,high,mid\n1,9\n", "wrong number of fields in header line"),
        ("low,", "column name mismatch in header line field 2"),  # an export still being written
    ]:
        write(path, text)
        with pytest.raises(FdwError, match=message):
            copy(op.table, target)
        assert local(pair, "SELECT low, high FROM {t} ORDER BY low", t=target) == [(1, 9), (2, 8)]
    write(path, "")  # 0 bytes: still refused, as with header true
    with pytest.raises(FdwConfigError, match="0 bytes"):
        copy(op.table, target)
    write(path, "low,high\n")
    assert copy(op.table, target)["rows"] == 0


def test_file_fdw_limits_of_a_header_true_are_as_documented(pair: Pair, server_readable_dir: Path) -> None:
    """With header true the header line is skipped unread: a header with another number of fields is
    not noticed (header 'match' refuses it), and a header line repeated in the middle of the file
    (concatenated exports) is a row when the types accept it (no header option can tell)."""
    path = write(server_readable_dir / "wide.csv", "low,high,mid\n1,9\n")
    assert local(
        pair, "SELECT low, high FROM {t}", t=file_table(path, columns=PAIRS).execute({})["table"]
    ) == [(1, 9)]
    path = write(server_readable_dir / "twice.csv", "low,high\n1,9\nlow,high\n2,8\n")
    op = file_table(path, columns={"low": "text", "high": "text"})
    op.execute({})
    assert local(pair, "SELECT low, high FROM {t}", t=op.table) == [("1", "9"), ("low", "high"), ("2", "8")]


@pytest.fixture
def file_reader(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A non-superuser role holding pg_read_server_files (what file_fdw requires), USAGE on a file_fdw
    server and its own schema; connection ``file_reader``. (its server, its schema)"""
    from conftest import postgres_connection

    from fdw_testing.sample_data import TARGET_DB

    role, server, schema = (f"{p}_{uuid.uuid4().hex[:8]}" for p in ("reader", "files", "files"))
    password = "Reader-Secret-7f1c"
    local(
        pair,
        "CREATE ROLE {r} LOGIN PASSWORD {p} IN ROLE pg_read_server_files",
        r=role,
        p=sql.Literal(password),
    )
    local(pair, "CREATE EXTENSION IF NOT EXISTS file_fdw")
    local(pair, "CREATE SERVER {s} FOREIGN DATA WRAPPER file_fdw", s=server)
    local(pair, "GRANT USAGE ON FOREIGN SERVER {s} TO {r}", s=server, r=role)
    local(pair, "CREATE SCHEMA {s} AUTHORIZATION {r}", s=schema, r=role)
    local(pair, "GRANT CREATE ON DATABASE {d} TO {r}", d=TARGET_DB, r=role)
    monkeypatch.setenv(
        "AIRFLOW_CONN_FILE_READER", postgres_connection(pair.target, TARGET_DB, role, password)
    )
    return server, schema


def test_a_replace_by_a_role_without_pg_stat_file_checks_the_file_and_runs(
    pair: Pair, server_readable_dir: Path, file_reader: tuple[str, str]
) -> None:
    """A role with pg_read_server_files but not superuser may not run pg_stat_file. Before: every
    replace from a file with a header failed with "permission denied for function pg_stat_file" (the
    privilege of a function is checked when the statement starts, not when a CASE reaches it), so the
    0-byte check documented as skipped for such a role made the copy impossible."""
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.hooks.fdw import FdwHook

    server, schema = file_reader
    path = write(server_readable_dir / "pairs.csv", "low,high\n1,9\n2,8\n")
    op = file_table(
        path, columns=PAIRS, server_name=server, table=f"{schema}.pairs", postgres_conn_id="file_reader"
    )
    op.execute({})
    target = f"{schema}.copied"

    def replace() -> dict:
        with FdwHook(postgres_conn_id="file_reader", fdw_conn_id="fdw_source") as hook:
            return hook.bulk_copy(plan_copy(op.table, target, mode="replace"))

    assert replace()["rows"] == 2
    write(path, "")
    with pytest.raises(FdwConfigError, match="0 bytes"):
        replace()
    assert local(pair, "SELECT low, high FROM {t} ORDER BY low", t=target) == [(1, 9), (2, 8)]
    # The first line is read raw: a backslash sequence in it is not decoded (text format would read
    # \xff as a byte that is not UTF-8 and fail the check).
    write(path, "low,high\\xff\n3,7\n")
    assert replace()["rows"] == 1


def test_a_copy_of_a_file_in_several_ranges_is_refused_before_anything_changes(
    pair: Pair, server_readable_dir: Path
) -> None:
    """Each range read the whole file again, at another moment: a file replaced between two range
    reads loaded some rows from one export and the rest from the next. Before: such a copy (here a
    program whose output changes after its first two reads, as a file renamed into place would)
    reported success with a target mixing two exports."""
    d = server_readable_dir
    d.chmod(0o777)  # the server (another OS user) records its reads here
    for name, tag in (("old.csv", "old"), ("new.csv", "new")):
        write(d / name, "id,v\n" + "".join(f"{i},{tag}\n" for i in range(1, 101)))
    program = (
        f"if mkdir {d}/read1 2>/dev/null || mkdir {d}/read2 2>/dev/null; "
        f"then cat {d}/old.csv; else cat {d}/new.csv; fi"
    )
    op = file_table(
        d / "unused",
        columns={"id": "integer", "v": "text"},
        options={"program": program, "format": "csv", "header": True},
    )
    op.execute({})
    (d / "read1").rmdir()
    target = f"public.mixed_{uuid.uuid4().hex[:8]}"
    with pytest.raises(FdwConfigError, match=r"a copy in 2 ranges would read the whole file once per range"):
        copy(op.table, target, parallelism=2, split_column="id")
    assert local(pair, "SELECT to_regclass(%s)", (target,)) == [(None,)]
    # A view over the file table reads it as often.
    view = f"public.over_file_{uuid.uuid4().hex[:8]}"
    local(pair, "CREATE VIEW {v} AS SELECT * FROM {t}", v=view, t=op.table)
    with pytest.raises(FdwConfigError, match=r"a copy in 2 ranges would read the whole file once per range"):
        copy(view, target, parallelism=2, split_column="id")
    assert local(pair, "SELECT to_regclass(%s)", (target,)) == [(None,)]
    # The same for a partitioned copy (one range per Airflow task): refused when it is prepared.
    from airflow_provider_fdw.bulkcopy import partitions as parts
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.hooks.fdw import FdwHook

    with FdwHook(fdw_conn_id="fdw_source") as hook, pytest.raises(FdwConfigError, match="in 2 ranges"):
        parts.prepare(
            hook.bulk_copy_engine(plan_copy(op.table, target, split_column="id")), hook.session, "d/r", 2
        )
    assert local(
        pair, "SELECT count(*) FROM pg_class WHERE relname LIKE %s", (target.split(".")[1] + "%",)
    ) == [(0,)]
    assert copy(op.table, target)["rows"] == 100
    assert local(pair, "SELECT v, count(*) FROM {t} GROUP BY v", t=target) == [("old", 100)]


@pytest.mark.parametrize(
    ("fmt", "text"),
    [("csv", "low,high\n1,9\n\\.\n2,8\n"), ("text", "low\thigh\n1\t9\n\\.\n2\t8\n")],
)
def test_a_backslash_dot_line_ends_a_file_fdw_read(
    pair: Pair, server_readable_dir: Path, fmt: str, text: str
) -> None:
    """PostgreSQL 15's COPY FROM, hence file_fdw, takes a line holding only ``\\.`` for the end of the
    data: the rows after it are not read and nothing reports it (documented in docs/wrappers.md)."""
    path = write(server_readable_dir / f"dot.{fmt}", text)
    op = file_table(path, columns=PAIRS, options={"filename": str(path), "format": fmt, "header": True})
    op.execute({})
    target = f"public.dot_{uuid.uuid4().hex[:8]}"
    assert copy(op.table, target)["rows"] == 1
    assert local(pair, "SELECT low, high FROM {t}", t=target) == [(1, 9)]


def test_a_file_missing_at_the_next_run_fails_the_copy_and_keeps_the_target(
    pair: Pair, server_readable_dir: Path
) -> None:
    path = write(server_readable_dir / "pairs.csv", "low,high\n1,9\n")
    op = file_table(path, columns=PAIRS)
    op.execute({})
    target = f"public.gone_{uuid.uuid4().hex[:8]}"
    assert copy(op.table, target)["rows"] == 1
    path.unlink()
    for mode in ("replace", "append"):
        with pytest.raises(FdwError, match="could not open file"):
            copy(op.table, target, mode=mode, **({"watermark_column": "low"} if mode == "append" else {}))
        assert local(pair, "SELECT low, high FROM {t}", t=target) == [(1, 9)]


def test_an_append_reads_a_last_line_still_being_written_as_it_is(
    pair: Pair, server_readable_dir: Path
) -> None:
    """file_fdw reads a last line without its newline as a complete row: an append that runs while a
    writer is half-way through a line loads the part written so far, and its watermark then skips
    the completed line (documented in docs/wrappers.md: write to another name and rename)."""
    path = write(server_readable_dir / "log.csv", "low,name\n1,ann\n2,jo")
    op = file_table(path, columns={"low": "integer", "name": "text"})
    op.execute({})
    target = f"public.log_{uuid.uuid4().hex[:8]}"
    assert copy(op.table, target)["rows"] == 2
    with path.open("a") as fh:
        fh.write("hn\n3,max\n")
    assert copy(op.table, target, mode="append", watermark_column="low")["rows"] == 1
    assert local(pair, "SELECT low, name FROM {t} ORDER BY low", t=target) == [
        (1, "ann"),
        (2, "jo"),
        (3, "max"),
    ]
