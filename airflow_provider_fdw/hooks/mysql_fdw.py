"""The ``mysql_fdw`` connection type: its hook (form, Test button) and how a connection becomes options.

A ``mysql_fdw`` connection describes a MySQL or MariaDB server as the LOCAL PostgreSQL server reaches
it: host and port become server options, login and password the user mapping (``username``,
``password``), the form's fields the mysql_fdw server options of the same names, and the schema field
the default database to import from. Every value is checked by the rules of
:data:`airflow_provider_fdw.wrappers.MYSQL_FDW` before any SQL runs; an empty character set becomes the
one of the LOCAL database's encoding when the server is made (:mod:`airflow_provider_fdw.character_sets`).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from airflow_provider_fdw.connection import extra_of
from airflow_provider_fdw.connection_form import (
    DEFAULT_INIT_COMMAND,
    MYSQL_EXTRA_FIELDS,
    MYSQL_FDW,
    MYSQL_UI_FIELD_BEHAVIOUR,
)
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.wrappers import MYSQL_FDW as MYSQL_WRAPPER
from airflow_provider_fdw.wrappers import Wrapper

_FIELDS = {f.name for f in MYSQL_EXTRA_FIELDS}
_PREFIX = f"extra__{MYSQL_FDW.conn_type}__"
DEFAULT_PORT = 3306


@dataclass(frozen=True)
class MySqlRemote:
    """What a ``mysql_fdw`` connection says about the remote server (password never in repr)."""

    server_options: dict[str, str]
    user: str | None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    wrapper: Wrapper = field(default=MYSQL_WRAPPER, repr=False)
    # Defaults given to a new server only: an existing server without them keeps its sessions as they
    # are (init_command's time zone: adding it shifts every TIMESTAMP value, and a watermark with them).
    new_server_only: frozenset[str] = frozenset()

    def user_mapping_options(self) -> dict[str, str]:
        return self.wrapper.user_mapping(self.user, self.password)


def mysql_remote_from_connection(conn: Any) -> MySqlRemote:
    """Validate a ``mysql_fdw`` connection and turn it into server and user-mapping options.

    :raises FdwConfigError: naming the connection and the offending field, before any SQL runs.
    """
    conn_id = getattr(conn, "conn_id", None) or "<unnamed>"
    where = f"Connection {conn_id!r}"
    if not conn.host:
        raise FdwConfigError(f"{where}: host is required (the MySQL server's address).")
    options: dict[str, Any] = {"host": str(conn.host), "port": conn.port or DEFAULT_PORT}
    for raw_key, value in extra_of(conn_id, conn).items():
        key = raw_key.removeprefix(_PREFIX)
        if key not in _FIELDS:
            raise FdwConfigError(
                f"{where}: unknown extra field {key!r}; allowed: {', '.join(sorted(_FIELDS))}."
            )
        if value is None or value == "":
            continue
        options[key] = value
    # TIMESTAMP values (and the watermark bounds compared with them) in UTC, whatever the server's zone
    new_server_only = frozenset() if "init_command" in options else frozenset({"init_command"})
    options.setdefault("init_command", DEFAULT_INIT_COMMAND)
    return MySqlRemote(
        server_options=MYSQL_WRAPPER.check_server_options(options, where),
        user=conn.login or None,
        password=conn.password or None,
        database=conn.schema or None,
        new_server_only=new_server_only,
    )


class MySqlFdwHook(BaseHook):
    """The ``mysql_fdw`` connection type: its form, its validation and the Test button.

    FDW objects are made in the LOCAL database by ``FdwHook``; this hook only reads and checks the
    remote connection. The Test button validates every field and reads the MySQL server's greeting
    at host:port (its version) from where Airflow runs; the credentials are proven from the LOCAL
    server, through the user mapping, by ``CreateForeignServerOperator``'s check.

    :param fdw_conn_id: the ``mysql_fdw`` connection of the remote server.
    """

    conn_name_attr = "fdw_conn_id"
    default_conn_name = "mysql_fdw_default"
    conn_type = MYSQL_FDW.conn_type
    hook_name = MYSQL_FDW.hook_name

    def __init__(self, fdw_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fdw_conn_id = fdw_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return MYSQL_UI_FIELD_BEHAVIOUR

    @cached_property
    def connection(self) -> Any:
        """The ``mysql_fdw`` Airflow connection."""
        return self.get_connection(self.fdw_conn_id)

    @cached_property
    def remote(self) -> MySqlRemote:
        """The validated remote connection (raises :class:`FdwConfigError` on a bad field)."""
        remote = mysql_remote_from_connection(self.connection)
        if remote.password:
            mask_secret(remote.password)
        return remote

    def test_connection(self) -> tuple[bool, str]:
        secret = ""
        try:
            conn = self.connection
            secret = conn.password or ""
            remote = mysql_remote_from_connection(conn)
            host, port = remote.server_options["host"], int(remote.server_options["port"])
            version = server_greeting(host, port)
        except (FdwConfigError, OSError) as exc:
            message = str(exc)
            return False, message.replace(secret, "***") if secret else message
        return True, (
            f"Reached MySQL {version} at {host}:{port}; fields are valid. The credentials are checked "
            "from the local PostgreSQL server by CreateForeignServerOperator."
        )


def server_greeting(host: str, port: int, timeout: float = 10.0) -> str:
    """The server version from a MySQL/MariaDB server's initial handshake packet (no login).

    :raises OSError: unreachable, or not a MySQL server, or the server refused this client's address.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        header = _read_exactly(sock, 4)
        length = struct.unpack("<I", header[:3] + b"\x00")[0]
        payload = _read_exactly(sock, min(length, 1 << 16))
    if payload[:1] == b"\xff":  # an ERR packet: e.g. "Host '…' is not allowed to connect"
        raise OSError(
            f"MySQL at {host}:{port} refused the connection: {payload[3:].decode(errors='replace')}"
        )
    if payload[:1] != b"\x0a":
        raise OSError(f"{host}:{port} did not answer with a MySQL handshake (protocol 10).")
    return payload[1:].split(b"\x00", 1)[0].decode(errors="replace")


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("the server closed the connection during the handshake.")
        data += chunk
    return data
