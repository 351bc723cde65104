"""The local database behind a connection pooler (PgBouncer, pgcat, RDS Proxy …).

The provider keeps state in its local session from one transaction to the next: the run lock two
copies of one target take turns on (a session advisory lock), the settings of :func:`prepare_session
<airflow_provider_fdw.hooks.fdw.prepare_session>`, temporary tables. A pool in transaction or
statement mode hands each transaction to whichever server is free, so another client's run could find
the lock already "held" by its server and proceed at the same time, and the unlock could land on
another server and leave the lock behind.

A pooler shows itself at connect time: it reports its own process id to the client (the key of its
cancel requests) instead of the server's. Such a connection is refused before anything changes
unless its Airflow connection says the pool pins each client to one server (``{"pool_mode":
"session"}`` in its extra). Every transaction of such a session also checks it runs in the server process
the session was prepared on (session.py), which catches a pool that is not what it was said to be.

The source side needs none of this: the direct path pins its settings in each reading transaction and
reads in transactions of their own (bulkcopy/direct.py), and postgres_fdw's connections are its own.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.session import pooled

POOL_MODE = "pool_mode"  # the connection extra that says how a pooler in front of it pools
SESSION = "session"


def check_local_connection(conn: Any, pool_mode: Any) -> None:
    """Refuse a local connection (prepared by prepare_session) through a pooler that may share its
    server between clients."""
    pids = pooled(conn)
    if pids is None or pool_mode == SESSION:
        return
    server_pid, reported = pids
    raise FdwConfigError(
        "The local database is reached through a connection pooler or proxy: the server process is "
        f"{server_pid}, the connection reports {reported} (PgBouncer, pgcat or RDS Proxy report their "
        "own). The provider keeps a session's run lock, settings and temporary tables from one "
        "transaction to the next, which a pool in transaction or statement mode shares with other "
        "clients: two copies of one target could run at once. Connect directly, or, if the pool gives "
        f'each client a server of its own (PgBouncer pool_mode = session), add {{"{POOL_MODE}": '
        f'"{SESSION}"}} to the connection\'s extra. Nothing was changed.'
    )
