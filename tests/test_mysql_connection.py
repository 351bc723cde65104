"""The mysql_fdw connection type: form declaration, validation of every field, the Test button."""

from __future__ import annotations

import json
from types import SimpleNamespace

import jsonschema
import pytest

from airflow_provider_fdw import get_provider_info
from airflow_provider_fdw.connection_form import MYSQL_EXTRA_FIELDS as EXTRA_FIELDS
from airflow_provider_fdw.connection_form import MYSQL_FDW, conn_fields
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.hooks.mysql_fdw import MySqlFdwHook, mysql_remote_from_connection, server_greeting
from fdw_testing.mariadb import MariaDB
from fdw_testing.pgcluster import free_port


def conn(**kw):
    base = {
        "conn_id": "shop",
        "host": "mysql.internal",
        "port": 3306,
        "schema": "shop",
        "login": "app",
        "password": "my-s3cret",
        "extra": "{}",
    }
    base.update(kw)
    if isinstance(base["extra"], dict):
        base["extra"] = json.dumps(base["extra"])
    return SimpleNamespace(**base)


def test_connection_becomes_mysql_fdw_server_and_mapping_options():
    remote = mysql_remote_from_connection(
        conn(extra={"fetch_size": "5000", "ssl_ca": "/etc/ssl/ca.pem", "reconnect": True, "init_command": ""})
    )
    assert remote.server_options == {
        "host": "mysql.internal",
        "port": "3306",
        "fetch_size": "5000",
        "ssl_ca": "/etc/ssl/ca.pem",
        "reconnect": "true",  # no character_set: the local database's encoding decides (character_sets.py)
        "init_command": "SET time_zone = '+00:00', lock_wait_timeout = 300",
    }
    assert remote.user_mapping_options() == {"username": "app", "password": "my-s3cret"}
    assert remote.database == "shop"
    assert "my-s3cret" not in repr(remote)


def test_port_defaults_to_3306_and_character_set_can_be_chosen():
    remote = mysql_remote_from_connection(
        conn(port=None, extra={"extra__mysql_fdw__character_set": "latin1"})
    )
    assert remote.server_options["port"] == "3306"
    assert remote.server_options["character_set"] == "latin1"


IN_UTC_LOCKS_BOUNDED = "SET time_zone = '+00:00', lock_wait_timeout = 300"


def test_mysql_sessions_read_timestamps_in_utc_unless_the_connection_says_otherwise():
    """MySQL shows a TIMESTAMP in the session time zone, the server's when nothing sets it: the
    provider pins mysql_fdw's sessions to UTC (a DST zone repeats an hour; a changed server zone
    shifts every value). A connection's own init_command replaces it."""
    assert mysql_remote_from_connection(conn()).server_options["init_command"] == IN_UTC_LOCKS_BOUNDED
    own = mysql_remote_from_connection(conn(extra={"init_command": "SET time_zone = 'Europe/Amsterdam'"}))
    assert own.server_options["init_command"] == "SET time_zone = 'Europe/Amsterdam'"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"extra": {"dbname": "shop"}}, "unknown extra field 'dbname'"),
        ({"extra": {"fetch_size": 0}}, "fetch_size must be an integer from 1"),
        ({"extra": {"fetch_size": "lots"}}, "fetch_size must be an integer"),
        ({"extra": {"secure_auth": "perhaps"}}, "secure_auth must be a boolean"),
        ({"port": 70000}, "port must be a port number"),
        ({"extra": "{not json"}, "extra is not valid JSON"),
        ({"extra": "[1]"}, "extra must be a JSON object"),
        ({"host": ""}, "host is required"),
        # mysql_fdw doubles the backslashes of the constants it pushes down: 'C:\\dir' would match nothing
        ({"extra": {"sql_mode": "ANSI_QUOTES, no_backslash_escapes"}}, "NO_BACKSLASH_ESCAPES is refused"),
        # MariaDB reads the empty string constants it pushes down as NULL: note = '' would match nothing
        ({"extra": {"sql_mode": "empty_string_is_null"}}, "EMPTY_STRING_IS_NULL is refused"),
        # mysql_fdw pastes it into SET sql_mode = '…'
        (
            {"extra": {"sql_mode": "ANSI_QUOTES', time_zone = '+05:00"}},
            "comma-separated list of MySQL sql_mode",
        ),
    ],
)
def test_bad_fields_are_refused_with_a_clear_message_naming_the_connection(fields, message):
    with pytest.raises(FdwConfigError, match=rf"Connection 'shop'.*{message}"):
        mysql_remote_from_connection(conn(**fields))


def test_every_form_field_is_a_mysql_fdw_server_option_and_its_schema_accepts_valid_values():
    fields = conn_fields(EXTRA_FIELDS)
    assert set(fields) == {f.name for f in EXTRA_FIELDS}
    for f in EXTRA_FIELDS:
        value = {int: 100, bool: True, str: "x"}[f.kind]
        jsonschema.validate(value, fields[f.name]["schema"])
        mysql_remote_from_connection(conn(extra={f.name: value}))
    entry = MYSQL_FDW.provider_info()
    assert entry["connection-type"] == "mysql_fdw" == MySqlFdwHook.conn_type
    assert entry["hook-class-name"] == f"{MySqlFdwHook.__module__}.{MySqlFdwHook.__name__}"
    assert entry in get_provider_info()["connection-types"]


def _set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "mysql_fdw", **fields}))


def test_test_button_reads_the_mysql_greeting_and_never_shows_the_password(mariadb: MariaDB, monkeypatch):
    _set_connection(
        monkeypatch,
        "mysql_button",
        host=mariadb.host,
        port=mariadb.port,
        login=mariadb.user,
        password=mariadb.password,
    )
    ok, message = MySqlFdwHook(fdw_conn_id="mysql_button").test_connection()
    assert ok, message
    assert "MariaDB" in message and mariadb.password not in message
    assert "MariaDB" in server_greeting(mariadb.host, mariadb.port)


def test_test_button_reports_an_unreachable_port_and_bad_fields(monkeypatch):
    _set_connection(
        monkeypatch, "mysql_closed", host="127.0.0.1", port=free_port(), login="a", password="pw-closed"
    )
    ok, message = MySqlFdwHook(fdw_conn_id="mysql_closed").test_connection()
    assert not ok and "refused" in message.lower()
    _set_connection(
        monkeypatch,
        "mysql_badfield",
        host="127.0.0.1",
        port=3306,
        login="a",
        password="pw",
        extra=json.dumps({"ssl": 1}),
    )
    ok, message = MySqlFdwHook(fdw_conn_id="mysql_badfield").test_connection()
    assert not ok and "unknown extra field 'ssl'" in message
