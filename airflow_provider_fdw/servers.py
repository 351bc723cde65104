"""The wrapper's extension, foreign servers, user mappings on the LOCAL database; the reachability check.

Each function takes the local session and the :class:`~airflow_provider_fdw.wrappers.Wrapper`; every one
is idempotent (running it again converges to the same state). :class:`~airflow_provider_fdw.hooks.fdw.FdwHook`
delegates to them.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.catalog import parse_options
from airflow_provider_fdw.connection import RemoteServer, render_option_value, validate_server_options
from airflow_provider_fdw.exceptions import DEPENDENT_OBJECTS_STILL_EXIST, INSUFFICIENT_PRIVILEGE, FdwError
from airflow_provider_fdw.hooks.mysql_fdw import MySqlRemote
from airflow_provider_fdw.locks import lock_object
from airflow_provider_fdw.remote_answers import check_servers_answer
from airflow_provider_fdw.secrets import execute_with_secret
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.timeouts import network_defaults
from airflow_provider_fdw.wrappers import Wrapper


def ensure_extension(s: LocalSession, wrapper: Wrapper) -> bool:
    """``CREATE EXTENSION IF NOT EXISTS`` the wrapper's extension; True when it was created now."""
    name = wrapper.extension
    with s.transaction():
        lock_object(s, "extension", name)  # IF NOT EXISTS alone races between sessions
        row = s.fetchone("check extension", q.EXTENSION_AVAILABLE_QUERY, (name, name))
        installed, available = row or (None, False)
        if installed:
            return False
        if not available:
            raise FdwError(
                f"{name} is not available on the local PostgreSQL server: install it on that host "
                f"(Debian: {wrapper.debian_package}).",
                step="ensure extension",
            )
        try:
            s.execute("ensure extension", q.create_extension(name))
        except FdwError as exc:
            if exc.sqlstate == INSUFFICIENT_PRIVILEGE:
                raise FdwError(
                    f"The local role may not create extension {name} ({exc}). Ask a superuser "
                    f"to run CREATE EXTENSION {name} and GRANT USAGE ON FOREIGN DATA WRAPPER "
                    f"{name} TO your role.",
                    step="ensure extension",
                    sqlstate=exc.sqlstate,
                ) from None
            raise
    return True


def server_options(
    remote: RemoteServer | MySqlRemote,
    wrapper: Wrapper,
    options: Mapping[str, Any] | None,
    connect_timeout: int | None,
) -> dict[str, str]:
    """The options the server should have: the connection's, overridden by ``options``."""
    desired = dict(remote.server_options)
    if options and not wrapper.remote_is_postgres:
        desired.update(wrapper.check_server_options(options, "options"))
    elif options:
        checked = validate_server_options(options, "options")
        desired.update({k: render_option_value(v) for k, v in checked.items()})
    # The local server's own connections to the remote are bounded too (timeouts.py; libpq options).
    if wrapper.remote_is_postgres:
        for name, value in network_defaults(connect_timeout).items():
            desired.setdefault(name, value)
    return desired


def create_server(
    s: LocalSession,
    wrapper: Wrapper,
    server_name: str,
    desired: Mapping[str, str],
    new_server_only: Collection[str] = (),
    log: Any = None,
) -> bool:
    """Create the foreign server, or converge an existing one's options; whether anything changed.

    ``new_server_only``: options of ``desired`` that are defaults for a new server, not added to an
    existing server without them (a warning says so): mysql_fdw's ``init_command`` sets the sessions'
    time zone, and adding it to a server in use shifts every TIMESTAMP value it reads, so a watermark
    taken before compares with values shown in another zone (rows skipped or copied again).
    """
    with s.transaction():
        lock_object(s, "server", server_name)
        row = s.fetchone("read server", q.SERVER_OPTIONS_QUERY, (server_name,))
        if row is None:
            s.execute(f"create server {server_name!r}", wrapper.create_server(server_name, dict(desired)))
            return True
        current_options, wrapper_name = row
        if wrapper_name != wrapper.name:
            raise FdwError(
                f"Server {server_name!r} exists but uses foreign-data wrapper {wrapper_name!r}, "
                f"not {wrapper.name}.",
                step="read server",
            )
        current = parse_options(current_options)
        kept = {k: v for k, v in desired.items() if k in new_server_only and k not in current}
        if kept:
            desired = {k: v for k, v in desired.items() if k not in kept}
            if log is not None:
                log.warning(
                    "Server %r has no %s: left so. The default (%s) is given to new servers only: on a "
                    "server in use it would change the time zone its sessions show TIMESTAMP values in, "
                    "and an incremental copy's watermark with them (rows skipped or copied again). Set "
                    "it in the connection (or options=) once such copies are re-based.",
                    server_name,
                    ", ".join(kept),
                    ", ".join(f"{k} {v!r}" for k, v in kept.items()),
                )
        statement = q.alter_server(server_name, current, dict(desired))
        if statement is None:
            return False
        s.execute(f"converge server {server_name!r}", statement)
    return True


def drop_server(s: LocalSession, server_name: str, cascade: bool) -> bool:
    """``DROP SERVER IF EXISTS`` (its user mappings; with ``cascade``, foreign tables); whether it existed."""
    with s.transaction():
        lock_object(s, "server", server_name)
        existed = s.fetchone("read server", q.SERVER_OPTIONS_QUERY, (server_name,)) is not None
        try:
            s.execute(f"drop server {server_name!r}", q.drop_server(server_name, cascade))
        except FdwError as exc:
            if exc.sqlstate == DEPENDENT_OBJECTS_STILL_EXIST:
                raise FdwError(
                    f"Server {server_name!r} still has foreign tables; drop them first or pass cascade=True.",
                    step="drop server",
                    sqlstate=exc.sqlstate,
                ) from None
            raise
    return existed


def create_user_mapping(
    s: LocalSession,
    wrapper: Wrapper,
    remote: RemoteServer | MySqlRemote,
    server_name: str,
    role: str,
    log: Any,
) -> bool:
    """Create the user mapping of ``role`` (checked) from the remote's login/password, or update it.

    Options other than the wrapper's login/password are left as they are; the password never appears
    in a statement's text (:mod:`airflow_provider_fdw.secrets`). :return: whether anything changed.
    """
    managed = remote.user_mapping_options()
    s.secrets.update(v for k, v in managed.items() if k == "password")
    step = f"user mapping for {role} on server {server_name!r}"

    def set_mapping(step: str, statement_for: Callable[[dict[str, str]], Any]) -> None:
        password = managed.get("password")
        if not password:
            s.execute(step, statement_for(managed))
            return
        execute_with_secret(
            s, step, lambda placeholder: statement_for({**managed, "password": placeholder}), password, log
        )

    with s.transaction():
        lock_object(s, "server", server_name)
        is_public = role == "PUBLIC"
        (role_name,) = s.fetchone("resolve role", q.ROLE_NAME_QUERY, (role, role)) or (role,)
        row = s.fetchone("read user mapping", q.USER_MAPPING_QUERY, (server_name, is_public, role_name))
        if row is None:
            set_mapping(f"create {step}", lambda m: q.create_user_mapping(server_name, role, m))
            return True
        current_raw, _ = row
        if current_raw is None:
            if not managed:  # nothing of ours to set (a mapping without options reads as NULL too)
                return False
            # Options hidden from us (another role's mapping on a server we own): set ours in place,
            # keeping a DBA's others; whether they already had these values cannot be known.
            set_hidden_options(s, step, server_name, role, list(managed), set_mapping)
            return True
        current = parse_options(current_raw)
        credentials = (wrapper.login_option, wrapper.password_option)
        desired = {k: v for k, v in current.items() if k not in credentials} | managed
        if q.alter_user_mapping(server_name, role, current, desired) is None:
            return False
        set_mapping(
            f"update {step}", lambda m: q.alter_user_mapping(server_name, role, current, {**desired, **m})
        )
    return True


def check_remote(
    s: LocalSession, wrapper: Wrapper, server_name: str, timeout: float, log: Any
) -> dict[str, Any]:
    """Prove that the LOCAL server reaches the remote through the user mapping (``FdwHook.check_remote``)."""
    probe = f"fdw_probe_{uuid.uuid4().hex[:12]}"
    step = f"query server {server_name!r} through its user mapping"
    check_servers_answer(s, [(wrapper.name, server_name)], log)
    # Inside a caller's transaction (CreateForeignServerOperator): keep its changes, drop the probe.
    with s.undone("check remote"):
        try:
            s.execute(
                "bound the check", q.set_local("statement_timeout", f"{int(timeout * 1000)}ms"), quiet=True
            )
            if wrapper.remote_is_postgres:
                # A cached remote session would prove nothing about the current mapping: start afresh.
                s.execute("drop cached remote connection", q.disconnect(server_name), quiet=True)
                s.execute("create remote probe", q.create_remote_probe(probe, server_name), quiet=True)
                row = s.fetchone(step, q.read_remote_probe(probe))
            else:
                if wrapper.probe is None:
                    raise FdwError(f"{wrapper.name} has no remote to reach.", step="check remote")
                # mysql_fdw drops its cached connection when the user mapping changes.
                create, read = wrapper.probe(probe, server_name, {})
                s.execute("create remote probe", create, quiet=True)
                row = (*s.fetchrow(step, read), None)
        except FdwError as exc:
            raise FdwError(
                f"Server {server_name!r} is not reachable from the local database: {exc}",
                step="check remote",
                sqlstate=exc.sqlstate,
            ) from None
    version, version_num = row or (None, None)
    log.info("Server %r reached through its user mapping: %s %s", server_name, wrapper.name, version)
    return {"server": server_name, "remote_version": version, "remote_version_num": int(version_num or 0)}


# ALTER … OPTIONS: SET of an option the mapping lacks, ADD of one it has.
OPTION_MISSING, OPTION_PRESENT = "42704", "42710"


def set_hidden_options(
    s: LocalSession,
    step: str,
    server_name: str,
    role: str,
    names: list[str],
    set_mapping: Callable[[str, Callable[[dict[str, str]], Any]], None],
) -> None:
    """``ALTER USER MAPPING … OPTIONS`` setting ``names`` in a mapping whose options we may not read:
    each option is SET or ADDed, so every combination is tried (a savepoint each; the mapping
    usually has them all, tried first) until one matches the options it has."""

    def update(present: Mapping[str, str]) -> Callable[[], None]:
        return lambda: set_mapping(
            f"update {step}", lambda m: q.alter_user_mapping(server_name, role, present, m)
        )

    for has in itertools.product((True, False), repeat=len(names)):
        # NUL is never a value: alter_options_clause SETs the options taken as present, ADDs the others
        present = {name: "\0" for name, there in zip(names, has, strict=True) if there}
        try:
            s.in_savepoint(step, update(present))
            return
        except FdwError as exc:
            if exc.sqlstate not in (OPTION_MISSING, OPTION_PRESENT) or not any(has):
                raise


def get_connections(s: LocalSession) -> list[dict[str, Any]]:
    """Remote connections postgres_fdw holds open in this local session."""
    with s.transaction():
        rows = s.fetchall("get connections", q.CONNECTIONS_QUERY)
    return [{"server_name": name, "valid": valid} for name, valid in rows]


def disconnect(s: LocalSession, server_name: str | None) -> bool:
    """Close this session's remote connections to ``server_name`` (all when None); whether any closed."""
    with s.transaction():
        row = s.fetchone("disconnect", q.disconnect(server_name))
    return bool(row and row[0])
