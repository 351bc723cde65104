"""file_fdw: a file means the same text to every read the provider makes, whatever the session's
client_encoding. file_fdw decodes a file whose table has no ``encoding`` option in the READING
session's client_encoding (as COPY FROM does), which a role's default (ALTER ROLE … SET
client_encoding) or the worker's PGCLIENTENCODING decides: a UTF-8 file copied by a WIN1252 session
loaded 'cafÃ©' and reported success (verify="count" too)."""

from __future__ import annotations

import logging
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import TARGET_DB, ident, local, python_json

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.hooks.fdw import FdwHook
from airflow_provider_fdw.operators.files import CreateFileForeignTableOperator
from fdw_testing.pgcluster import Pair
from fdw_testing.sample_data import postgres_connection

ROLE, PASSWORD = "enc_win1252", "Enc-Win1252-5e6f"
# 'Ł' is C5 81 in UTF-8: 0x81 has no character in WIN1252, so a WIN1252 read of the file fails there.
NAMES = [(1, "café"), (2, "Zoë"), (3, "Łódź"), (4, "plain")]
NO_ENCODING_LOG = "no encoding option"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    path.chmod(0o644)
    return path


def names_csv(directory: Path, rows=NAMES, header: str = "id,name", encoding: str = "utf-8") -> Path:
    body = "".join(f"{i},{n}\n" for i, n in rows)
    return write(directory / f"names_{uuid.uuid4().hex[:6]}.csv", f"{header}\n{body}", encoding)


def table_by_hand(
    pair: Pair, path: Path, columns: str = "id integer, name text", dbname: str = TARGET_DB, **options: str
) -> str:
    """A file_fdw table made without the operator (no ``encoding`` unless given)."""
    schema = f"enc_{uuid.uuid4().hex[:8]}"
    pair.target.execute("CREATE EXTENSION IF NOT EXISTS file_fdw", dbname=dbname)
    pair.target.execute(
        "DO $$ BEGIN CREATE SERVER files FOREIGN DATA WRAPPER file_fdw; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        dbname=dbname,
    )
    pair.target.execute(sql.SQL("CREATE SCHEMA {}").format(ident(schema)), dbname=dbname)
    opts = {"filename": str(path), "format": "csv", "header": "true", **options}
    pair.target.execute(
        sql.SQL("CREATE FOREIGN TABLE {} ({}) SERVER files OPTIONS ({})").format(
            ident(schema, "names"),
            sql.SQL(columns),
            sql.SQL(", ").join(sql.SQL("{} {}").format(ident(k), sql.Literal(v)) for k, v in opts.items()),
        ),
        dbname=dbname,
    )
    return f"{schema}.names"


def new_target() -> str:
    return f"public.enc_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def win1252_role(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> str:
    """A local superuser whose client_encoding default is WIN1252; connection ``enc_win1252``."""
    pair.target.execute(
        "DO $$ BEGIN CREATE ROLE " + ROLE + " SUPERUSER LOGIN PASSWORD '" + PASSWORD + "'; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    pair.target.execute(sql.SQL("ALTER ROLE {} SET client_encoding = 'WIN1252'").format(ident(ROLE)))
    monkeypatch.setenv(
        "AIRFLOW_CONN_ENC_WIN1252", postgres_connection(pair.target, TARGET_DB, ROLE, PASSWORD)
    )
    return "enc_win1252"


@pytest.fixture(params=["role default", "PGCLIENTENCODING"])
def win1252_session(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """A connection whose sessions start in WIN1252, by the role's default or by the worker's libpq
    environment (postgres_default); and that environment."""
    if request.param == "PGCLIENTENCODING":
        return "postgres_default", {"PGCLIENTENCODING": "WIN1252"}
    return str(request.getfixturevalue("win1252_role")), {}


@contextmanager
def hook_in(session: tuple[str, dict[str, str]]) -> Iterator[FdwHook]:
    """A hook whose sessions start in that encoding (the test's own connections do not)."""
    conn_id, env = session
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with FdwHook(postgres_conn_id=conn_id) as hook:
            hook._log = logging.getLogger("test_file_encoding")  # a stdlib logger: caplog sees it
            yield hook


def names_of(hook: FdwHook, table: str) -> list[tuple]:
    """Read back on the copy's own session (psycopg decodes in whatever encoding the session is in
    now); without 'Łódź', which WIN1252 cannot hold."""
    statement = sql.SQL("SELECT id, name FROM {} WHERE id <> 3 ORDER BY id").format(ident(*table.split(".")))
    return [tuple(r) for r in hook.session.fetchall("read back", statement)]


# -- the reviewer's case: the operator's table -------------------------------------------------------


def test_a_file_copy_reads_the_file_as_the_file_table_does_whatever_the_roles_client_encoding(
    pair: Pair, server_readable_dir: Path, win1252_role: str
) -> None:
    path = names_csv(server_readable_dir, NAMES[:2])
    op = CreateFileForeignTableOperator(
        task_id="f",
        server_name="files",
        table=f"files_{uuid.uuid4().hex[:8]}.names",
        columns={"id": "integer", "name": "text"},
        options={"filename": str(path), "format": "csv", "header": True},
    )
    op.execute({})
    assert local(pair, "SELECT id, name FROM {t} ORDER BY id", t=op.table) == NAMES[:2]
    target = new_target()
    with FdwHook(postgres_conn_id=win1252_role) as hook:
        result = hook.bulk_copy(plan_copy(op.table, target, mode="replace", verify="count"))
    assert local(pair, "SELECT id, name FROM {t} ORDER BY id", t=target) == NAMES[:2], result


# -- a table made by hand, without `encoding` --------------------------------------------------------


@pytest.mark.parametrize("mode", ["replace", "append", "upsert"])
def test_a_copy_of_a_file_table_without_encoding_reads_it_in_the_databases_encoding(
    pair: Pair,
    server_readable_dir: Path,
    win1252_session: tuple[str, dict[str, str]],
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every read of the copy (the header and empty-file checks, the NULL-watermark count, the load
    and its count, a where holding non-ASCII text) runs in the database's encoding; the session is in
    its own again afterwards, and psycopg decodes what it reads there right."""
    source = table_by_hand(pair, names_csv(server_readable_dir))
    target = new_target()
    kwargs: dict = {"mode": mode, "verify": "count", "where": "name <> 'Zoë'"}
    if mode != "replace":
        kwargs["watermark_column"] = "id"
    if mode == "upsert":
        kwargs["key_columns"] = ["id"]
    expected = [r for r in NAMES if r[1] != "Zoë"]
    with caplog.at_level(logging.INFO), hook_in(win1252_session) as hook:
        result = hook.bulk_copy(plan_copy(source, target, **kwargs))
        assert result["rows"] == len(expected)
        assert names_of(hook, target) == [r for r in expected if r[0] != 3]
        setting, literal = hook.session.fetchrow(
            "read back", sql.SQL("SELECT current_setting('client_encoding'), 'é'")
        )
    assert literal == "é"
    if hook.session.conn.__class__.__module__.startswith("psycopg."):
        assert setting == "WIN1252"  # SET LOCAL: the session's own encoding again
    assert local(pair, "SELECT id, name FROM {t} ORDER BY id", t=target) == expected
    said = [r.getMessage() for r in caplog.records if NO_ENCODING_LOG in r.getMessage()]
    assert len(said) == 1 and "WIN1252" in said[0] and "UTF8" in said[0], said


def test_a_header_with_non_ascii_names_in_another_order_is_refused_in_any_client_encoding(
    pair: Pair, server_readable_dir: Path, win1252_session: tuple[str, dict[str, str]]
) -> None:
    """The header check reads the header line as the load reads the rows: decoded in WIN1252, 'prénom'
    was 'prÃ©nom', named no column, and the swapped columns loaded silently."""
    path = write(server_readable_dir / f"swap_{uuid.uuid4().hex[:6]}.csv", "prénom,größe\nZoë,groß\n")
    source = table_by_hand(pair, path, columns='"größe" text, "prénom" text')
    target = new_target()
    with pytest.raises(FdwConfigError, match="another order"), hook_in(win1252_session) as hook:
        hook.bulk_copy(plan_copy(source, target, mode="replace"))
    assert local(pair, "SELECT to_regclass(%s)", (target,)) == [(None,)]


def test_a_file_table_with_an_encoding_option_is_read_in_it(
    pair: Pair,
    server_readable_dir: Path,
    win1252_session: tuple[str, dict[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A LATIN1 file whose table says encoding 'LATIN1' is read as LATIN1 (nothing pinned, nothing
    logged), whatever the session's client_encoding."""
    rows = [(1, "café"), (2, "Zoë"), (4, "naïve")]
    source = table_by_hand(pair, names_csv(server_readable_dir, rows, encoding="latin-1"), encoding="LATIN1")
    target = new_target()
    with caplog.at_level(logging.INFO), hook_in(win1252_session) as hook:
        hook.bulk_copy(plan_copy(source, target, mode="replace", verify="count"))
        assert names_of(hook, target) == rows
    assert local(pair, "SELECT id, name FROM {t} ORDER BY id", t=target) == rows
    assert not [r for r in caplog.records if NO_ENCODING_LOG in r.getMessage()]


PSYCOPG2_COPY = textwrap.dedent(
    """
    import json, sys
    sys.modules["psycopg"] = None  # as on an install without psycopg 3: PostgresHook uses psycopg2
    from airflow_provider_fdw.bulkcopy import plan_copy
    from airflow_provider_fdw.compat import USE_PSYCOPG3, sql
    from airflow_provider_fdw.hooks.fdw import FdwHook
    source, target = sys.argv[1], sys.argv[2]
    plan = plan_copy(source, target, mode="replace", verify="count", where="name <> 'Zoë'")
    with FdwHook(postgres_conn_id="enc_win1252") as hook:
        hook.bulk_copy(plan)
        schema, name = target.split(".")
        statement = sql.SQL("SELECT id, name, 'é' FROM {} ORDER BY id").format(sql.Identifier(schema, name))
        rows = [list(r) for r in hook.session.fetchall("read back", statement)]
    print(json.dumps({"psycopg3": USE_PSYCOPG3, "rows": rows}))
    """
)


def test_a_copy_of_a_file_table_without_encoding_on_psycopg2(
    pair: Pair, server_readable_dir: Path, win1252_role: str
) -> None:
    """psycopg2 does not follow a SET LOCAL client_encoding (it would encode the where and decode the
    header in WIN1252): the session is switched with its set_client_encoding, before the transaction."""
    source = table_by_hand(pair, names_csv(server_readable_dir))
    target = new_target()
    out = python_json(PSYCOPG2_COPY, source, target)
    expected = [[i, n, "é"] for i, n in NAMES if n != "Zoë"]
    assert (out["psycopg3"], out["rows"]) == (False, expected)
    assert local(pair, "SELECT id, name FROM {t} ORDER BY id", t=target) == [tuple(r[:2]) for r in expected]


# -- the operator writes the encoding ----------------------------------------------------------------


def ftoptions(pair: Pair, table: str, dbname: str = TARGET_DB) -> dict[str, str]:
    rows = pair.target.execute(
        "SELECT ftoptions FROM pg_foreign_table WHERE ftrelid = %s::regclass", (table,), dbname=dbname
    )
    return dict(o.split("=", 1) for o in rows[0][0])


def test_the_operator_writes_the_databases_encoding_when_none_is_given(
    pair: Pair, server_readable_dir: Path
) -> None:
    path = names_csv(server_readable_dir, NAMES[:2])
    options = {"filename": str(path), "format": "csv", "header": True}
    op = CreateFileForeignTableOperator(
        task_id="f",
        server_name="files",
        table=f"files_{uuid.uuid4().hex[:8]}.names",
        columns={"id": "integer", "name": "text"},
        options=options,
    )
    assert op.execute({})["changed"] is True
    assert ftoptions(pair, op.table)["encoding"] == "UTF8"
    assert op.execute({})["changed"] is False  # the default is part of the definition: converged
    # a table made without it (by hand, or by an earlier version of the operator) gets it
    by_hand = table_by_hand(pair, path)
    again = CreateFileForeignTableOperator(
        task_id="g",
        server_name="files",
        table=by_hand,
        columns={"id": "integer", "name": "text"},
        options=options,
    )
    assert again.execute({})["changed"] is True
    assert ftoptions(pair, by_hand)["encoding"] == "UTF8"
    # one given is kept
    latin = names_csv(server_readable_dir, NAMES[:2], encoding="latin-1")
    given = CreateFileForeignTableOperator(
        task_id="h",
        server_name="files",
        table=op.table,
        columns={"id": "integer", "name": "text"},
        options={**options, "filename": str(latin), "encoding": "LATIN1"},
    )
    assert given.execute({})["changed"] is True
    assert ftoptions(pair, op.table)["encoding"] == "LATIN1"
    assert local(pair, "SELECT id, name FROM {t} ORDER BY id", t=op.table) == NAMES[:2]


# -- other database encodings ------------------------------------------------------------------------


@pytest.fixture
def database(pair: Pair, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[str]:
    """A local database in ``request.param`` (C locale), connection ``enc_db``; its name."""
    name = f"enc_{uuid.uuid4().hex[:6]}"
    pair.target.execute(
        sql.SQL("CREATE DATABASE {} ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0").format(
            ident(name), sql.Literal(request.param)
        )
    )
    monkeypatch.setenv("AIRFLOW_CONN_ENC_DB", postgres_connection(pair.target, name))
    yield name
    pair.target.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident(name)))


@pytest.mark.parametrize("database", ["LATIN1"], indirect=True)
def test_a_latin1_database_reads_a_file_table_without_encoding_as_latin1(
    pair: Pair, server_readable_dir: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a LATIN1 database a session in UTF8 (PGCLIENTENCODING) copies a LATIN1 file as LATIN1, and
    reads the result back as text."""
    rows = [(1, "café"), (2, "Zoë"), (3, "naïve")]
    path = names_csv(server_readable_dir, rows, header="id,prénom", encoding="latin-1")
    source = table_by_hand(pair, path, columns='id integer, "prénom" text', dbname=database)
    monkeypatch.setenv("PGCLIENTENCODING", "UTF8")
    target = new_target()
    with FdwHook(postgres_conn_id="enc_db") as hook:
        hook.bulk_copy(plan_copy(source, target, mode="replace", verify="count"))
        statement = sql.SQL('SELECT id, "prénom" FROM {} ORDER BY id').format(ident(*target.split(".")))
        assert [tuple(r) for r in hook.session.fetchall("read back", statement)] == rows
    monkeypatch.delenv("PGCLIENTENCODING")
    back = pair.target.execute(
        sql.SQL("SELECT convert_to(\"prénom\", 'UTF8') FROM {} ORDER BY id").format(
            ident(*target.split("."))
        ),
        dbname=database,
    )
    assert [bytes(b[0]).decode() for b in back] == [n for _, n in rows]


@pytest.mark.parametrize("database", ["SQL_ASCII"], indirect=True)
def test_a_sql_ascii_database_stores_a_files_bytes_as_they_are(
    pair: Pair, server_readable_dir: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQL_ASCII converts nothing: a file table's bytes are stored as they are whatever the
    client_encoding, so nothing is pinned (a pinned SQL_ASCII would have psycopg 3 return text as
    bytes); the operator writes encoding 'SQL_ASCII' (the bytes as they are)."""
    path = names_csv(server_readable_dir)
    source = table_by_hand(pair, path, dbname=database)
    monkeypatch.setenv("PGCLIENTENCODING", "WIN1252")
    target = new_target()
    with FdwHook(postgres_conn_id="enc_db") as hook:
        hook.bulk_copy(plan_copy(source, target, mode="replace", verify="count"))
    monkeypatch.delenv("PGCLIENTENCODING")
    back = pair.target.execute(
        sql.SQL("SELECT name::bytea FROM {} ORDER BY id").format(ident(*target.split("."))), dbname=database
    )
    assert [bytes(b[0]) for b in back] == [n.encode() for _, n in NAMES]
    # (a session in SQL_ASCII, such a database's default, gets text as bytes from psycopg 3, which the
    # provider's catalog reads do not take: not this test's subject)
    monkeypatch.setenv("PGCLIENTENCODING", "UTF8")
    op = CreateFileForeignTableOperator(
        task_id="f",
        server_name="files",
        table=source,
        columns={"id": "integer", "name": "text"},
        options={"filename": str(path), "format": "csv", "header": True},
        postgres_conn_id="enc_db",
    )
    op.execute({})
    assert ftoptions(pair, source, dbname=database)["encoding"] == "SQL_ASCII"
