"""Bad input changes nothing: every libpq and postgres_fdw option is checked by its documented type
before any SQL, and a failed reachability check rolls the server's changes back (issue 11, item 5)."""

from __future__ import annotations

import json

import pytest
from conftest import READER, READER_PASSWORD, SOURCE_DB, TARGET_DB

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.catalog import parse_options
from airflow_provider_fdw.connection import remote_server_from_connection
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.operators.server import CreateForeignServerOperator
from fdw_testing.pgcluster import free_port


class Conn:
    def __init__(self, extra, **fields):
        self.conn_id = "src"
        self.host = fields.get("host", "db.example")
        self.port = fields.get("port", 5432)
        self.schema = "production"
        self.login = "reader"
        self.password = "s3cret-pw"
        self.extra = extra if isinstance(extra, str) else json.dumps(extra)

    @property
    def extra_dejson(self):  # what Airflow does: malformed JSON becomes {}
        try:
            return json.loads(self.extra)
        except ValueError:
            return {}


BAD_SERVER_OPTIONS = [
    ({"connect_timeout": "abc"}, "connect_timeout must be an integer"),
    ({"connect_timeout": -1}, "connect_timeout must be an integer"),
    ({"keepalives": "perhaps"}, "keepalives must be 0 or 1"),
    ({"keepalives_idle": 1.5}, "keepalives_idle must be an integer"),
    ({"target_session_attrs": "sometimes"}, "target_session_attrs must be one of"),
    ({"sslmode": "nonsense"}, "sslmode must be one of"),
    ({"gssencmode": "always"}, "gssencmode must be one of"),
    ({"port": "54x"}, "port must be a port number"),
    ({"tcp_user_timeout": "soon"}, "tcp_user_timeout must be an integer"),
    ({"use_remote_estimate": "kinda"}, "use_remote_estimate must be a boolean"),
    ({"fdw_tuple_cost": "cheap"}, "fdw_tuple_cost must be a number"),
    ({"batch_size": 0}, "batch_size must be an integer from 1"),
    ({"fetch_size": 10**12}, "fetch_size must be an integer from 1 to 2147483647"),
    ({"fetch_size": True}, "fetch_size must be an integer"),
    ({"extensions": "vector; DROP"}, "extensions must be a comma-separated list"),
    ({"analyze_sampling": "sometimes"}, "analyze_sampling must be one of"),
]


@pytest.mark.parametrize(("options", "message"), BAD_SERVER_OPTIONS)
def test_bad_server_option_values_are_refused_before_any_sql(options, message):
    with pytest.raises(FdwConfigError, match=message):
        remote_server_from_connection(Conn({"server_options": options}))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"fetch_size": 10**12}, "fetch_size must be an integer from 1 to 2147483647"),
        ({"fetch_size": True}, "fetch_size must be an integer"),
        ("{not json", "extra is not valid JSON"),
        ('{"fetch_size": 100, "sslmode": "disable"', "extra is not valid JSON"),
    ],
)
def test_bad_extra_fields_are_refused(extra, message):
    with pytest.raises(FdwConfigError, match=message):
        remote_server_from_connection(Conn(extra))


def test_extensions_list_is_stored_as_a_comma_list():
    remote = remote_server_from_connection(Conn({"extensions": ["vector", "pg_trgm"]}))
    assert remote.server_options["extensions"] == "vector,pg_trgm"
    remote = remote_server_from_connection(Conn({"server_options": {"extensions": ["vector"]}}))
    assert remote.server_options["extensions"] == "vector"


def test_good_values_are_normalised_to_what_postgresql_stores():
    remote = remote_server_from_connection(
        Conn({"server_options": {"connect_timeout": 5, "keepalives": True, "use_remote_estimate": "on"}})
    )
    assert remote.server_options["connect_timeout"] == "5"
    assert remote.server_options["keepalives"] == "1"
    assert remote.server_options["use_remote_estimate"] == "true"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overlap": "garbage"}, "overlap must be an interval"),
        ({"overlap": "5 minutes; DROP TABLE x"}, "overlap must be an interval"),
        ({"fetch_size": 10**12}, "fetch_size must be an integer from 1"),
        ({"fetch_size": True}, "fetch_size must be an integer from 1"),
    ],
)
def test_bad_copy_arguments_are_refused_before_any_sql(kwargs, message):
    base = {"mode": "upsert", "key_columns": ["id"], "watermark_column": "updated_at"}
    with pytest.raises(FdwConfigError, match=message):
        plan_copy("proxy.users", "public.users", **base, **kwargs)


def test_good_overlaps_are_accepted():
    base = {"mode": "upsert", "key_columns": ["id"], "watermark_column": "updated_at"}
    for overlap in ("5 minutes", "1 hour 30 min", "00:05:00", "2 days", "100"):
        assert plan_copy("proxy.users", "public.users", **base, overlap=overlap).overlap == overlap


# -- against the real pair: a working server is unchanged after each bad input ----------------


def working_server(target, server_name, monkeypatch) -> dict[str, str]:
    op = CreateForeignServerOperator(task_id="server", server_name=server_name, fdw_conn_id="fdw_source")
    op.execute({})
    return state(target, server_name)


def state(target, server_name) -> dict[str, object]:
    server = target.execute(
        "SELECT srvoptions FROM pg_foreign_server WHERE srvname = %s", (server_name,), dbname=TARGET_DB
    )
    mappings = target.execute(
        "SELECT usename, umoptions FROM pg_user_mappings WHERE srvname = %s ORDER BY 1",
        (server_name,),
        dbname=TARGET_DB,
    )
    return {"server": parse_options(server[0][0]), "mappings": mappings}


def connection(pair, **overrides) -> str:
    fields = {
        "conn_type": "postgres_fdw",
        "host": pair.source.fdw_host,
        "port": pair.source.fdw_port,
        "schema": SOURCE_DB,
        "login": READER,
        "password": READER_PASSWORD,
        "extra": {"fetch_size": 10000, "sslmode": "disable"},
    }
    return json.dumps({**fields, **overrides})


@pytest.mark.parametrize(
    "bad",
    [
        {"extra": {"server_options": {"connect_timeout": "abc"}}},
        {"extra": {"server_options": {"keepalives": "perhaps"}}},
        {"extra": {"server_options": {"target_session_attrs": "sometimes"}}},
        {"extra": {"server_options": {"sslmode": "nonsense"}}},
        {"extra": '{"fetch_size": 10000, "sslmode": "disable"'},  # malformed JSON: not read as {}
        {"extra": {"fetch_size": 10**12}},
        {"port": 1},  # valid values, unreachable: the check fails and rolls the change back
        {"password": "Wrong-Password-77"},
    ],
    ids=[
        "connect_timeout",
        "keepalives",
        "target_session_attrs",
        "sslmode",
        "malformed",
        "fetch_size",
        "port",
        "password",
    ],
)
def test_bad_input_leaves_a_working_server_unchanged(pair, target, server_name, monkeypatch, bad):
    monkeypatch.setenv("AIRFLOW_CONN_FDW_SOURCE", connection(pair))
    before = working_server(target, server_name, monkeypatch)
    if "port" in bad:
        bad = {"port": free_port()}
    monkeypatch.setenv("AIRFLOW_CONN_FDW_SOURCE", connection(pair, **bad))
    op = CreateForeignServerOperator(task_id="server", server_name=server_name, fdw_conn_id="fdw_source")
    with pytest.raises(FdwError):
        op.execute({})
    assert state(target, server_name) == before
    # ... and it still works.
    monkeypatch.setenv("AIRFLOW_CONN_FDW_SOURCE", connection(pair))
    assert op.execute({})["changed"] is False


def test_bad_operator_options_change_nothing(pair, target, server_name, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_FDW_SOURCE", connection(pair))
    before = working_server(target, server_name, monkeypatch)
    for options in ({"fetch_size": True}, {"connect_timeout": "abc"}, {"sslmode": "nonsense"}):
        with pytest.raises(FdwConfigError):
            CreateForeignServerOperator(
                task_id="server", server_name=server_name, fdw_conn_id="fdw_source", options=options
            ).execute({})
    assert state(target, server_name) == before
