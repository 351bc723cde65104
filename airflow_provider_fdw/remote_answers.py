"""Before the local server is made to dial a remote its wrapper waits for without a time-out, check
from the worker that the remote answers at all.

mysql_fdw sets no connect or read time-out on its MySQL connections, and the client library's default
is to wait for ever. A backend waiting in that library ignores ``statement_timeout``,
``pg_cancel_backend`` and ``pg_terminate_backend`` until the TCP connection ends: a MySQL address that
accepts connections and never answers (a dead server behind a live load balancer or proxy, a stopped
process, a full accept queue of a hung server) would hold the local backend, its locks and its
snapshot, for ever. A MySQL server speaks first (its greeting, before any login), so the worker opens
a connection of its own to the same address and waits for the first byte, as long as a login may
take (the hook's ``connect_timeout``, 10 s by default).

Only an address that accepts and stays silent is refused. The worker's network may not be the local
server's (another host, other routes, other names), so an address the worker cannot reach at all is
left to the local server, whose own connect then fails (refused, unreachable) or succeeds by itself.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.character_sets import check_character_sets
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.timeouts import FdwTimeoutError
from airflow_provider_fdw.wrappers import WRAPPERS, servers_read


def check_servers_read(s: LocalSession, servers: Iterable[tuple[str, str]], log: Any) -> None:
    """Before the local server reads through ``servers`` ((wrapper, server) pairs): their character set
    is the database's (mysql_fdw stores the remote's bytes unconverted), and they answer."""
    servers = list(servers)
    check_character_sets(s, servers)
    check_servers_answer(s, servers, log)


def check_servers_answer(s: LocalSession, servers: Iterable[tuple[str, str]], log: Any) -> None:
    """Refuse, before the local server connects to any of ``servers`` ((wrapper, server) pairs), one
    whose wrapper would wait for it for ever and whose address accepts a connection from this worker
    but sends nothing within the session's ``connect_timeout`` (other wrappers' servers cost nothing).

    :raises FdwTimeoutError: naming the server and its address; nothing was changed.
    """
    for wrapper, server, options in servers_read(s, servers, lambda w: w.greeting_address is not None):
        assert wrapper.greeting_address is not None
        address = wrapper.greeting_address(options)
        if address is None:
            continue
        host, port = address
        timeout = s.connect_timeout
        answer, where = first_answer(host, port, timeout)
        if answer == "silent":
            raise FdwTimeoutError(
                f"Server {server!r} ({wrapper.name}) at {host}:{port}{where} accepted a connection from "
                f"this worker and never answered within {timeout:g} s (a MySQL server greets first, before "
                f"any login). {wrapper.name} waits for its remote without any time-out, and a local "
                "backend waiting there cannot be cancelled, so the local server was not asked to "
                "connect. Nothing was changed.",
                step=f"check that server {server!r} answers",
            )
        if answer == "unreachable":
            log.info(
                "Server %r (%s) at %s:%s is not reachable from this worker; left to the local server, "
                "whose network may differ.",
                server,
                wrapper.name,
                host,
                port,
            )


def servers_to_check_exist(s: LocalSession) -> bool:
    """Whether this database has a server of a wrapper the check applies to (else there is nothing to
    look for, e.g. in what a copy's ``where`` reads)."""
    wrappers = [w.name for w in WRAPPERS.values() if w.greeting_address is not None]
    return bool(s.fetchvalue("read servers to check", q.SERVERS_OF_WRAPPERS_QUERY, (wrappers,)))


def first_answer(host: str, port: int, timeout: float) -> tuple[str, str]:
    """``"silent"`` when an address of ``host`` accepts a connection and sends nothing within
    ``timeout`` seconds (with which address, when the name has several), else ``"answered"`` (one
    sent something or closed) or ``"unreachable"`` (none accepted a connection from here).

    Every address is tried: the local server's client library connects to the first one that
    accepts, in the order its own lookup gives (DNS round robin may give another order)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return "unreachable", ""
    addresses = list(dict.fromkeys((family, address) for family, *_, address in found))
    answers = set()
    for family, address in addresses:  # the first silent one decides: one wait, not one per address
        answer = _answer(family, address, timeout)
        if answer == "silent":
            return "silent", f" (address {address[0]})" if len(addresses) > 1 else ""
        answers.add(answer)
    return ("answered" if "answered" in answers else "unreachable"), ""


def _answer(family: socket.AddressFamily, address: Any, timeout: float) -> str:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError:
            return "unreachable"
        try:
            sock.recv(1)
        except TimeoutError:
            return "silent"
        except OSError:  # reset: the local server's connect fails at once as well
            pass
    return "answered"
