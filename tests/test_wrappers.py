"""The wrapper descriptions (airflow_provider_fdw/wrappers.py) agree with the installed wrappers."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from conftest import TARGET_DB, local

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.wrappers import FILE_FDW, MYSQL_FDW, POSTGRES_FDW, WRAPPERS, wrapper
from fdw_testing.mariadb import MariaDB
from fdw_testing.pgcluster import Pair

# A valid value per option name (everything else: a word).
SAMPLE = {
    "port": "3306",
    "fetch_size": "100",
    "max_blob_size": "1024",
    "secure_auth": "true",
    "use_remote_estimate": "false",
    "reconnect": "false",
    "format": "csv",
    "header": "true",
    "delimiter": ",",
    "quote": '"',
    "escape": '"',
    "encoding": "UTF8",
    "filename": "/tmp/none.csv",
    "import_default": "true",
    "import_not_null": "true",
    "import_enum_as_text": "true",
}


# -- unit: clear errors before any SQL -------------------------------------------------------------


def test_unknown_server_option_is_refused_naming_the_wrapper_and_the_allowed_options() -> None:
    with pytest.raises(
        FdwConfigError, match=r"'dbname' is not a mysql_fdw server option; allowed: .*fetch_size"
    ):
        MYSQL_FDW.check_server_options({"dbname": "shop"}, "Connection 'm'")


def test_user_mapping_option_in_server_options_is_refused() -> None:
    with pytest.raises(FdwConfigError, match=r"'password' belongs in the user mapping"):
        MYSQL_FDW.check_server_options({"password": "x"}, "options")
    with pytest.raises(FdwConfigError, match=r"'client_encoding' is set by postgres_fdw itself"):
        POSTGRES_FDW.check_server_options({"client_encoding": "UTF8"}, "options")


@pytest.mark.parametrize(
    ("w", "option", "value", "message"),
    [
        (MYSQL_FDW, "port", "33a6", "port number"),
        (MYSQL_FDW, "port", "3306,3307", "port number"),
        (MYSQL_FDW, "fetch_size", 0, "integer from 1"),
        (MYSQL_FDW, "reconnect", "maybe", "boolean"),
        (POSTGRES_FDW, "sslmode", "sometimes", "must be one of"),
    ],
)
def test_server_option_of_the_wrong_type_is_refused(w, option, value, message) -> None:
    with pytest.raises(FdwConfigError, match=message):
        w.check_server_options({option: value}, "options")


def test_file_fdw_table_options_are_checked_by_type() -> None:
    assert FILE_FDW.check_table_options(
        {"filename": "/data/a.csv", "format": "csv", "header": True}, "t"
    ) == {
        "filename": "/data/a.csv",
        "format": "csv",
        "header": "true",
    }
    with pytest.raises(FdwConfigError, match="absolute path"):
        FILE_FDW.check_table_options({"filename": "a.csv"}, "t")
    with pytest.raises(FdwConfigError, match="single one-byte character"):
        FILE_FDW.check_table_options({"filename": "/a.csv", "delimiter": ";;"}, "t")
    with pytest.raises(FdwConfigError, match="one of text, csv, binary"):
        FILE_FDW.check_table_options({"filename": "/a.csv", "format": "xlsx"}, "t")
    with pytest.raises(FdwConfigError, match="exactly one of filename or program"):
        FILE_FDW.check_table_options({"filename": "/a.csv", "program": "cat /a.csv"}, "t")
    with pytest.raises(FdwConfigError, match="exactly one of filename or program"):
        FILE_FDW.check_table_options({"format": "csv"}, "t")


def test_connection_login_and_password_become_each_wrappers_user_mapping_options() -> None:
    assert POSTGRES_FDW.user_mapping("reader", "pw") == {"user": "reader", "password": "pw"}
    assert MYSQL_FDW.user_mapping("app", "pw") == {"username": "app", "password": "pw"}
    assert FILE_FDW.user_mapping("x", "y") == {}


def test_remote_table_and_bulk_read_options_follow_each_wrapper() -> None:
    assert MYSQL_FDW.remote_table({"dbname": "shop"}, ("proxy", "orders")) == ("shop", "orders")
    assert POSTGRES_FDW.remote_table({"schema_name": "app", "table_name": "u"}, ("p", "users")) == (
        "app",
        "u",
    )
    assert FILE_FDW.remote_table({"filename": "/a.csv"}, ("p", "f")) is None
    assert MYSQL_FDW.bulk_read_options({"dbname": "shop", "table_name": "t"}, 5000) == {
        "dbname": "shop",
        "table_name": "t",
        "fetch_size": "5000",
    }
    assert FILE_FDW.bulk_read_options({"filename": "/a.csv", "format": "csv"}, 5000) == {
        "filename": "/a.csv",
        "format": "csv",
    }


def test_unsupported_wrapper_is_a_clear_error() -> None:
    with pytest.raises(FdwConfigError, match="'oracle_fdw' is not supported; supported: file_fdw, mysql_fdw"):
        wrapper("oracle_fdw")


# -- against the installed wrappers --------------------------------------------------------------


def _valid_options(pair: Pair, statement: str, **names: object) -> set[str]:
    """The option names the installed wrapper's validator lists in its hint for a bogus option."""
    conn = pair.target.connect(TARGET_DB)
    try:
        with pytest.raises(Exception) as err:
            conn.cursor().execute(sql.SQL(statement).format(**names))
    finally:
        conn.close()
    if "There are no valid options in this context" in str(err.value):
        return set()
    hint = re.search(r"Valid options in this context are: ([^\n]*)", str(err.value))
    assert hint, str(err.value)
    return {name.strip() for name in hint.group(1).split(",") if name.strip()}


@pytest.fixture
def wrapper_servers(pair: Pair) -> dict[str, str]:
    servers = {}
    for name in WRAPPERS:
        local(pair, "CREATE EXTENSION IF NOT EXISTS {e}", e=name)
        servers[name] = f"w_{name}_{uuid.uuid4().hex[:6]}"
        local(pair, "CREATE SERVER {s} FOREIGN DATA WRAPPER {w}", s=servers[name], w=name)
    yield servers
    for server in servers.values():
        local(pair, "DROP SERVER IF EXISTS {s} CASCADE", s=server)


@pytest.mark.parametrize("name", ["mysql_fdw", "file_fdw"])
def test_description_lists_exactly_the_options_the_installed_wrapper_accepts(
    pair: Pair, wrapper_servers: dict[str, str], name: str
) -> None:
    w, server = WRAPPERS[name], wrapper_servers[name]
    bogus = sql.Identifier("no_such_option")
    accepted_server = _valid_options(
        pair, "ALTER SERVER {s} OPTIONS (ADD {o} 'x')", s=sql.Identifier(server), o=bogus
    )
    accepted_table = _valid_options(
        pair,
        "CREATE FOREIGN TABLE public.{t} (a int) SERVER {s} OPTIONS ({o} 'x')",
        t=sql.Identifier(f"t_{uuid.uuid4().hex[:6]}"),
        s=sql.Identifier(server),
        o=bogus,
    )
    accepted_mapping = _valid_options(
        pair,
        "CREATE USER MAPPING FOR CURRENT_USER SERVER {s} OPTIONS ({o} 'x')",
        s=sql.Identifier(server),
        o=bogus,
    )
    if name == "file_fdw":
        # file_fdw's validator lists every option of every context (column options included).
        accepted_table -= {"force_not_null", "force_null", "on_error", "log_verbosity", "reject_limit"}
    assert set(w.server_options) == accepted_server
    assert set(w.table_options) == accepted_table
    assert set(w.user_mapping_options) == accepted_mapping


def test_postgres_fdw_description_accepts_everything_the_installed_postgres_fdw_accepts(
    pair: Pair, wrapper_servers: dict[str, str]
) -> None:
    server = sql.Identifier(wrapper_servers["postgres_fdw"])
    bogus = sql.Identifier("no_such_option")
    accepted = _valid_options(pair, "ALTER SERVER {s} OPTIONS (ADD {o} 'x')", s=server, o=bogus)
    ours = set(POSTGRES_FDW.server_options) | POSTGRES_FDW.managed_options | {"user", "password"}
    # Options of newer libpq versions are in ours; nothing the installed one takes is missing.
    assert accepted - ours - {"sslpassword", "sslkey", "sslcert", "requiressl", "gsslib"} == set()


@pytest.mark.parametrize("name", ["mysql_fdw", "file_fdw"])
def test_every_option_of_the_description_is_stored_by_the_installed_wrapper(
    pair: Pair, wrapper_servers: dict[str, str], name: str
) -> None:
    """Each option with a value its rule accepts is accepted by the real validator, one at a time."""
    w, server = WRAPPERS[name], wrapper_servers[name]
    for option in w.server_options:
        value = w.check_server_options({option: SAMPLE.get(option, "x")}, "test")[option]
        local(pair, "ALTER SERVER {s} OPTIONS (ADD {o} {v})", s=server, o=option, v=sql.Literal(value))
        local(pair, "ALTER SERVER {s} OPTIONS (DROP {o})", s=server, o=option)
    for option in w.table_options:
        if option in ("quote", "escape") or (name == "file_fdw" and option == "filename"):
            continue  # need format csv / are the mandatory source: covered together below
        base = {"filename": "/tmp/none.csv"} if name == "file_fdw" and option != "program" else {}
        table = f"t_{uuid.uuid4().hex[:6]}"
        checked = w.check_table_options({**base, option: SAMPLE.get(option, "x")}, "test")
        local(
            pair,
            "CREATE FOREIGN TABLE public.{t} (a int) SERVER {s}{o}",
            t=table,
            s=server,
            o=_options(checked),
        )
        local(pair, "DROP FOREIGN TABLE public.{t}", t=table)
    if name == "file_fdw":
        table = f"t_{uuid.uuid4().hex[:6]}"
        checked = w.check_table_options(
            {"filename": "/tmp/none.csv", "format": "csv", "quote": "'", "escape": "\\"}, "test"
        )
        local(
            pair,
            "CREATE FOREIGN TABLE public.{t} (a int) SERVER {s}{o}",
            t=table,
            s=server,
            o=_options(checked),
        )
        local(pair, "DROP FOREIGN TABLE public.{t}", t=table)
    for option in w.user_mapping_options:
        checked = w.check_user_mapping_options({option: "x"}, "test")
        local(pair, "CREATE USER MAPPING FOR CURRENT_USER SERVER {s}{o}", s=server, o=_options(checked))
        local(pair, "DROP USER MAPPING FOR CURRENT_USER SERVER {s}", s=server)


def _options(options: dict[str, str]) -> sql.Composable:
    from airflow_provider_fdw import sql as q

    return q.options_clause(options)


# -- reachability probes ---------------------------------------------------------------------------


def _probe(pair: Pair, w, server: str, options: dict[str, str] | None = None) -> str:
    create, read = w.probe(f"probe_{uuid.uuid4().hex[:6]}", server, options or {})
    conn = pair.target.connect(TARGET_DB, autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute(create)
        cur.execute(read)
        return cur.fetchone()[0]
    finally:
        conn.rollback()
        conn.close()


def test_mysql_probe_logs_in_with_the_mapping_and_fails_with_a_wrong_password(
    pair: Pair, mariadb: MariaDB, wrapper_servers: dict[str, str]
) -> None:
    server = wrapper_servers["mysql_fdw"]
    options = MYSQL_FDW.check_server_options({"host": mariadb.host, "port": mariadb.port}, "test")
    local(
        pair,
        "ALTER SERVER {s} OPTIONS (ADD host {h}, ADD port {p})",
        s=server,
        h=sql.Literal(options["host"]),
        p=sql.Literal(options["port"]),
    )
    mapping = MYSQL_FDW.user_mapping(mariadb.user, "wrong-password")
    local(pair, "CREATE USER MAPPING FOR CURRENT_USER SERVER {s}{o}", s=server, o=_options(mapping))
    with pytest.raises(Exception, match="Access denied"):
        _probe(pair, MYSQL_FDW, server)
    local(
        pair,
        "ALTER USER MAPPING FOR CURRENT_USER SERVER {s} OPTIONS (SET password {p})",
        s=server,
        p=sql.Literal(mariadb.password),
    )
    assert re.fullmatch(r"MySQL: \d+ databases visible", _probe(pair, MYSQL_FDW, server))


def test_postgres_probe_reads_the_remote_version(pair: Pair, wrapper_servers: dict[str, str]) -> None:
    from conftest import READER, READER_PASSWORD, SOURCE_DB

    server = wrapper_servers["postgres_fdw"]
    src = pair.source
    local(
        pair,
        "ALTER SERVER {s} OPTIONS (ADD host {h}, ADD port {p}, ADD dbname {d})",
        s=server,
        h=sql.Literal(src.fdw_host),
        p=sql.Literal(str(src.fdw_port)),
        d=sql.Literal(SOURCE_DB),
    )
    local(
        pair,
        "CREATE USER MAPPING FOR CURRENT_USER SERVER {s}{o}",
        s=server,
        o=_options(POSTGRES_FDW.user_mapping(READER, READER_PASSWORD)),
    )
    assert _probe(pair, POSTGRES_FDW, server).startswith("PostgreSQL ")


def test_file_probe_reads_the_file_and_names_a_missing_one(
    pair: Pair, wrapper_servers: dict[str, str], server_readable_dir: Path
) -> None:
    tmp_path = server_readable_dir
    csv = tmp_path / "a.csv"
    csv.write_text("id,name\n1,x\n")
    csv.chmod(0o644)
    server = wrapper_servers["file_fdw"]
    assert _probe(pair, FILE_FDW, server, {"filename": str(csv), "format": "csv"}) == "file: 1 line(s) read"
    with pytest.raises(Exception, match="could not open file"):
        _probe(pair, FILE_FDW, server, {"filename": str(tmp_path / "missing.csv")})
