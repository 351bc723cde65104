"""The postgres_fdw connection type: form declaration and validation of every field (no database)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import jsonschema
import pytest

from airflow_provider_fdw import get_provider_info
from airflow_provider_fdw.connection import EXTRA_FIELDS, remote_server_from_connection
from airflow_provider_fdw.exceptions import FdwConfigError


def conn(**kw):
    base = {
        "conn_id": "src",
        "host": "db.internal",
        "port": 5432,
        "schema": "prod",
        "login": "reader",
        "password": "s3cret-pw",
        "extra": "{}",
    }
    base.update(kw)
    if isinstance(base["extra"], dict):
        base["extra"] = json.dumps(base["extra"])
    ns = SimpleNamespace(**base)
    ns.extra_dejson = json.loads(ns.extra)
    return ns


def test_provider_info_declares_the_connection_type_the_airflow_3_2_way():
    info = get_provider_info()
    (entry,) = info["connection-types"]
    assert entry["connection-type"] == "postgres_fdw"
    assert entry["hook-name"] == "Postgres FDW remote server"
    assert entry["hook-class-name"] == "airflow_provider_fdw.hooks.postgres_fdw.PostgresFdwHook"
    fields = entry["conn-fields"]
    assert set(fields) == {
        "fetch_size",
        "batch_size",
        "sslmode",
        "use_remote_estimate",
        "keep_connections",
        "extensions",
        "updatable",
        "server_options",
    }
    assert fields["fetch_size"]["schema"] == {"type": ["integer", "null"], "minimum": 1}
    assert entry["ui-field-behaviour"]["relabeling"]["schema"] == "Database"
    for field in fields.values():  # every schema is a valid JSON schema the UI can validate with
        jsonschema.Draft7Validator.check_schema(field["schema"])


def test_form_schemas_accept_what_validation_accepts():
    schemas = {f.name: f.json_schema() for f in EXTRA_FIELDS}
    jsonschema.validate(10000, schemas["fetch_size"])
    jsonschema.validate("require", schemas["sslmode"])
    jsonschema.validate(None, schemas["sslmode"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(0, schemas["fetch_size"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("sometimes", schemas["sslmode"])


def test_connection_becomes_server_and_mapping_options():
    remote = remote_server_from_connection(
        conn(
            extra={
                "fetch_size": "50000",
                "use_remote_estimate": "true",
                "keep_connections": False,
                "extensions": "vector",
                "server_options": '{"connect_timeout": 5}',
            }
        )
    )
    assert remote.server_options == {
        "host": "db.internal",
        "port": "5432",
        "dbname": "prod",
        "fetch_size": "50000",
        "use_remote_estimate": "true",
        "keep_connections": "false",
        "extensions": "vector",
        "connect_timeout": "5",
    }
    assert remote.user_mapping_options() == {"user": "reader", "password": "s3cret-pw"}
    assert "s3cret-pw" not in repr(remote)


def test_prefixed_extra_keys_from_older_forms_are_accepted():
    remote = remote_server_from_connection(conn(extra={"extra__postgres_fdw__fetch_size": 7}))
    assert remote.server_options["fetch_size"] == "7"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"fetch_sise": 10}, "unknown extra field 'fetch_sise'"),
        ({"fetch_size": 0}, "fetch_size must be at least 1"),
        ({"fetch_size": "lots"}, "fetch_size must be an integer"),
        ({"batch_size": True}, "batch_size must be an integer"),
        ({"sslmode": "sometimes"}, "sslmode must be one of"),
        ({"updatable": "maybe"}, "updatable must be a boolean"),
        ({"server_options": "{not json"}, "server_options is not valid JSON"),
        ({"server_options": "[1, 2]"}, "must be a JSON object"),
        ({"server_options": {"password": "x"}}, "belongs in the user mapping"),
        ({"server_options": {"client_encoding": "latin1"}}, "set by postgres_fdw itself"),
        ({"server_options": {"fetchsize": 1}}, "'fetchsize' is not a postgres_fdw server option"),
        ({"server_options": {"connect_timeout": [1]}}, "must be a string, number or boolean"),
        ({"fetch_size": 5, "server_options": {"fetch_size": 6}}, "which another field already sets"),
    ],
)
def test_bad_fields_are_refused_with_a_clear_message(extra, message):
    with pytest.raises(FdwConfigError, match=message) as info:
        remote_server_from_connection(conn(extra=extra))
    assert "'src'" in str(info.value)
    assert "s3cret-pw" not in str(info.value)


def test_host_is_required():
    with pytest.raises(FdwConfigError, match="host is required"):
        remote_server_from_connection(conn(host=None))
