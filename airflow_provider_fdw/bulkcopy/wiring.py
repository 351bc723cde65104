"""The copy engine wired to an :class:`~airflow_provider_fdw.hooks.fdw.FdwHook`'s connections.

Picks the transport the source's wrapper allows, the relay (psql or in-process), and the identity of
the remote the direct path reads, and marks the copy's sessions with the task instance's name.
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import TYPE_CHECKING

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.bulkcopy.direct import pinned_params
from airflow_provider_fdw.bulkcopy.engine import BulkCopy
from airflow_provider_fdw.bulkcopy.plan import CopyPlan
from airflow_provider_fdw.bulkcopy.relay import PsqlRelay
from airflow_provider_fdw.cancel import application_name, application_prefix
from airflow_provider_fdw.connection import RemoteServer
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.timeouts import with_network_defaults
from airflow_provider_fdw.wrappers import reads_postgres, source_wrapper

if TYPE_CHECKING:
    from airflow_provider_fdw.hooks.fdw import FdwHook


def copy_engine(
    hook: FdwHook,
    plan: CopyPlan,
    direct: bool | None,
    relay: str,
    target_lock_wait: float,
    lock_retries: int,
) -> BulkCopy:
    """The :class:`BulkCopy` of ``plan`` on ``hook``'s connections (see ``FdwHook.bulk_copy_engine``)."""
    if relay not in ("auto", "psql", "python"):
        raise FdwConfigError(f"relay must be auto, psql or python; got {relay!r}.")
    if direct:
        plan = dataclasses.replace(plan, transport="copy")
    leftovers = None
    if hook.task_identity is not None:
        hook.application_name = application_name(hook.task_identity, str(plan.target))
        leftovers = application_prefix(hook.task_identity, str(plan.target))
        if hook._session is not None:  # opened before: it loads a one-range copy, so a retry must find it
            with hook._session.transaction():
                hook._session.execute(
                    "mark session", q.set_session("application_name", hook.application_name), quiet=True
                )
    plan = transport_for_wrapper(hook, plan)
    remote = hook.remote if plan.transport != "fdw" else None
    assert remote is None or isinstance(remote, RemoteServer)  # transport_for_wrapper refused the others
    psql_relay = None
    # A passfile cannot hold a line break: such a password is relayed in-process instead.
    passwords = (remote.password if remote else None, hook.connection.password)
    if remote and relay == "auto" and any("\n" in (p or "") or "\r" in (p or "") for p in passwords):
        relay = "python"
    if remote and relay != "python":
        psql = shutil.which("psql")
        if psql is None and relay == "psql":
            raise FdwConfigError("relay='psql' needs the psql client on this worker's PATH.")
        if psql is not None:
            marks = {"application_name": hook.application_name}
            timeout = hook.connect_timeout
            psql_relay = PsqlRelay(
                psql,
                with_network_defaults({**pinned_params(remote.libpq_params()), **marks}, timeout),
                with_network_defaults({**hook._local_libpq_params(), **marks}, timeout),
                scope=hook.cancel_scope,
                monitor=hook.get_conn,
            )
    identity = {k: v for k, v in remote.libpq_params().items() if k != "password"} if remote else None
    return BulkCopy(
        plan,
        hook._new_session,
        hook.log,
        hook.direct_connection if remote else None,
        psql_relay,
        remote_identity=identity,
        scope=hook.cancel_scope,
        target_lock_wait=target_lock_wait,
        leftovers=leftovers,
        lock_retries=lock_retries,
        small_loads_in_process=relay == "auto",  # an explicit relay="psql" is always psql
    )


def transport_for_wrapper(hook: FdwHook, plan: CopyPlan) -> CopyPlan:
    """The direct COPY path reads a PostgreSQL remote: a source of another wrapper (mysql_fdw, file_fdw),
    or a hook whose remote connection is not PostgreSQL, copies through the FDW path, and
    ``transport="copy"`` is refused before any change."""
    if plan.transport == "fdw":  # every wrapper's path: nothing to read
        return plan
    s = hook.session
    with s.transaction():
        name = source_wrapper(s, plan.source)
    if name is None or reads_postgres(name):
        if plan.transport == "fdw" or isinstance(hook.remote, RemoteServer):
            return plan
        why = f"connection {hook.fdw_conn_id!r} is a {hook.wrapper.name} connection"
    else:
        why = f"{plan.source} is a {name} foreign table"
    if plan.transport == "copy":
        raise FdwConfigError(
            f"transport='copy' reads the remote table with COPY, which needs a PostgreSQL remote; "
            f"{why}: use transport='fdw' (or 'auto')."
        )
    if plan.transport != "fdw":
        hook.log.info("%s: copying through the FDW path.", why)
    return dataclasses.replace(plan, transport="fdw")
