"""Whether a load read all the rows its remote had, for wrappers that end a read silently when their
connection is lost (:class:`RemoteSessionWatch`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.refresh import bounded_name
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.wrappers import WRAPPERS


@dataclass
class RemoteSessionWatch:
    """The remote session a load reads in, read before and after it (wrappers with a ``session_probe``).

    mysql_fdw takes an error while fetching (the MySQL connection killed, the server restarted or
    failed over, the network cut) for the end of the table: the load ends early and reports no error,
    and a replace would swap in the rows read so far. The connection it read on is this session's
    cached one: after the load, the probe fails when that connection is gone, or (server option
    ``reconnect``) reads another session's id. Either fails the load, before anything is applied.
    """

    s: LocalSession
    server: str
    source: QualifiedName
    wrapper: str
    probe: str
    read: sql.Composed
    before: Any
    drop: list[sql.Composed]

    @classmethod
    def start(
        cls,
        s: LocalSession,
        wrapper_name: str | None,
        server: str | None,
        source: QualifiedName,
        log: Any,
        reader: str | None = None,
    ) -> RemoteSessionWatch | None:
        """Read the remote session's id (None: the wrapper needs no watch, or the remote cannot say).

        ``reader``: the role whose user mapping the load reads ``server`` through when it is not the
        current user's (a view's owner): its cached connection is another one, so the probe is read
        through a session-local view that role owns, as the load's read is."""
        wrapper = WRAPPERS.get(wrapper_name or "")
        if wrapper is None or wrapper.session_probe is None or server is None:
            return None
        probe = bounded_name("fdw_session", server, source.name, *([reader] if reader else []))
        create, read = wrapper.session_probe(probe, server, {})
        s.execute("create remote session probe", create, quiet=True)
        drop = [q.drop_remote_probe(probe)]
        if reader is not None:
            table = bounded_name("fdw_session_t", server, source.name, reader)
            step = f"read the remote session as {reader}"

            statements = q.probe_read_as(probe, table, reader)

            def read_as() -> None:
                for statement in statements:
                    s.execute(step, statement, quiet=True)

            try:
                if not s.fetchvalue(step, q.PRIVILEGES_OF_ROLE_QUERY, (reader,)):
                    # ALTER ... OWNER TO takes any member (NOINHERIT too), who may then neither read
                    # the private view nor drop it
                    raise FdwError(f"it does not have the privileges of role {reader}", step=step)
                s.in_savepoint(step, read_as)
            except FdwError as exc:
                log.warning(
                    "%s reads server %r as %s (a view's owner), whose remote connection this role cannot "
                    "watch (%s); a connection lost during the load would end it silently "
                    "(verify='count' detects it).",
                    source,
                    server,
                    reader,
                    exc,
                )
                s.execute("drop remote session probe", drop[0], quiet=True)
                return None
            drop = q.drop_probe_read_as(probe, table)
        step = "read the remote session before the load"
        before, why = None, ""
        # Twice when the read fails: a connection dropped since its last use (wait_timeout, a
        # restart) fails it, and mysql_fdw then drops the connection; the load would run on the next
        # one, which the second read watches. Failing twice: a MySQL-like server without
        # information_schema.PROCESSLIST.
        for _ in range(2):
            try:
                before = s.in_savepoint(step, lambda: s.fetchvalue(step, read))
            except FdwError as exc:
                why = str(exc)
                continue
            why = "the remote did not report its session"  # no row names the read
            break
        if before is None:
            log.warning(
                "%s: %s; a connection lost during the load would end it silently (verify='count' "
                "detects it).",
                step,
                why,
            )
            for statement in drop:
                s.execute("drop remote session probe", statement, quiet=True)
            return None
        # A read the remote stops answering cannot be cancelled from the local server (mysql_fdw
        # waits without a time-out): ending this remote session is what frees it.
        log.info("%s is read from server %r in remote session %s.", source, server, before)
        return cls(s, server, source, wrapper.name, probe, read, before, drop)

    def check(self, rows: int) -> None:
        try:
            after = self.s.fetchvalue("read the remote session after the load", self.read)
        except FdwError as exc:
            raise self._lost(rows, f"the connection is gone ({exc})", exc.sqlstate) from None
        if after != self.before:
            raise self._lost(rows, f"remote session {self.before} was replaced by session {after}", None)
        for statement in self.drop:
            self.s.execute("drop remote session probe", statement, quiet=True)

    def _lost(self, rows: int, what: str, sqlstate: str | None) -> FdwError:
        return FdwError(
            f"The connection of server {self.server!r} was lost while {self.source} was read ({rows} rows "
            f"read): {what}. {self.wrapper} ends a read without an error when its connection is lost, so "
            "the rows read may be incomplete; nothing was applied (a retry reads them again).",
            step="load",
            sqlstate=sqlstate,
        )
