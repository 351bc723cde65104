"""One snapshot for every range of a direct copy (``pg_export_snapshot()``, as pgcopydb does).

A holder connection opens a REPEATABLE READ READ ONLY transaction on the remote and exports its
snapshot; every range's reader (the in-process relay's remote connection, each ``psql`` child)
imports it with ``SET TRANSACTION SNAPSHOT`` before its ``COPY … TO STDOUT``, so a parallel copy of
a live table is point-in-time. The holder stays open until every range has read (an exported
snapshot can only be imported while its transaction is open), and with ``verify`` it computes the
source's count/checksum in the same snapshot while the ranges load.

An exported snapshot alone does not make the ranges one point in time: a reader opens the table only
when its COPY starts, and TRUNCATE (not MVCC-safe: the old snapshot sees the new, empty file) or a
rewrite (VACUUM FULL, CLUSTER, ALTER TABLE …: other ctids) committed before that is what it reads.
So the holder first takes ACCESS SHARE on the remote relation (:class:`SourceLock`: with its
partitions and inheritance children, or the tables a view reads, as pg_dump does) and only then
exports the snapshot: nothing that rewrites the relation can commit between the snapshot and the
last range's read. Each reader takes the same lock before it imports the snapshot, so a reader
queued behind an exclusive lock request (itself waiting for the holder) gives up after
``lock_timeout`` instead of reading the relation after it was rewritten. A relation LOCK does not
take (a materialized view or foreign table on the remote) or that the remote role may not lock (SELECT
granted on some columns only) is read unlocked, with a warning: a copy it could make before stays
possible, without the guarantee.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.bulkcopy.direct import pinned_locally
from airflow_provider_fdw.cancel import terminate_leftovers
from airflow_provider_fdw.compat import DriverError, error_fields
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.locks import describe_holders
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.timeouts import DEFAULT_LOCK_RETRIES, DEFAULT_SWAP_LOCK_TIMEOUT, with_lock_retries


@dataclass(frozen=True)
class SourceLock:
    """ACCESS SHARE on the remote relation every range reads, taken before the snapshot is exported
    or imported. Only ACCESS EXCLUSIVE conflicts with it (table-level SELECT is all it needs, and a
    hot standby grants it); each attempt waits at most ``timeout`` (the copy's lock_timeout). The
    holder and every reader decide alike from ``unlocked`` (read once, by plan_direct): a reader
    whose LOCK was refused would fail the copy the holder started."""

    table: QualifiedName
    unlocked: str  # why the relation is not locked (its kind, the role's privileges); "": it is
    timeout: str
    attempts: int = DEFAULT_LOCK_RETRIES  # the holder's; a reader tries once

    @property
    def lockable(self) -> bool:
        return not self.unlocked

    def statements(self) -> list[Any]:
        # the bound stays for the transaction: a reader's COPY waits no longer for a lock it lacks
        statements = [q.set_local_lock_timeout(self.timeout)]
        statements += [q.lock_access_share(self.table)] if self.lockable else []
        return [q.sql.SQL("; ").join(statements)]  # one round trip

    def refused(self, message: str) -> str:
        """The error of a reader whose lock waited ``timeout``, saying why and what to do."""
        return (
            f"{message}: another session waits for an exclusive lock on {self.table} (ALTER TABLE, "
            "TRUNCATE, VACUUM FULL, CLUSTER …) behind this copy's snapshot, and this range's read would "
            "have queued behind it; the copy gives way instead of reading the table after it changed. "
            "Retry once that session is done."
        )


def source_lock(copy: Any, run: Any) -> SourceLock:
    """The lock of a direct copy's remote relation (``copy``: a BulkCopy, ``run``: its CopyRun), with
    the copy's lock_timeout and lock_retries."""
    assert run.direct is not None and run.source.remote is not None
    return SourceLock(
        run.source.remote,
        run.direct.unlocked,
        copy.plan.lock_timeout or DEFAULT_SWAP_LOCK_TIMEOUT,
        copy.lock_retries,
    )


class SnapshotHolder:
    """The remote transaction whose exported snapshot each range reader imports."""

    def __init__(
        self,
        connect: Callable[..., Any],
        client_encoding: str,
        leftovers: str | None,
        log: Any,
        conn: Any = None,
        lock: SourceLock | None = None,
    ) -> None:
        """``conn``: an open remote connection (pinned, in ``client_encoding``, outside a transaction)
        to hold the snapshot on instead of a new one; the holder closes it. ``lock``: taken before
        the snapshot is exported (each attempt bounded by its timeout, retried as a swap is)."""
        try:
            self.conn = conn if conn is not None else connect(client_encoding=client_encoding)
        except DriverError as exc:
            raise FdwError(
                f"Could not connect to the remote to export a snapshot: {error_fields(exc)['message']}",
                step="export snapshot",
            ) from None
        self.lock = lock
        if leftovers:
            self._terminate_leftovers(leftovers, log)
        if lock is not None and not lock.lockable:
            log.warning(
                "%s is not locked on the remote (%s): a TRUNCATE, REFRESH or rewrite (VACUUM FULL, "
                "CLUSTER) of it committed before a range starts reading is what that range reads.",
                lock.table,
                lock.unlocked,
            )
        try:
            if lock is None:
                self.id: str = self._export()
            else:
                self.id = with_lock_retries(
                    self._export,
                    lock.attempts,
                    f"lock {lock.table} on the remote (ACCESS SHARE: every range reads one state of it)",
                    log,
                    self._exclusive_lockers,
                )
        except BaseException:
            self.conn.close()
            raise
        self._thread: threading.Thread | None = None
        self._row: tuple[Any, ...] | None = None
        self._error: BaseException | None = None

    def _export(self) -> str:
        """One attempt: lock (before any snapshot is taken), then export the transaction's snapshot."""
        try:
            with self.conn.cursor() as cur:
                cur.execute(q.SNAPSHOT_ISOLATION)  # first statement of the driver's implicit transaction
                cur.execute(pinned_locally())  # the lent connection reads in this transaction
                for statement in self.lock.statements() if self.lock is not None else []:
                    cur.execute(statement)
                cur.execute(q.EXPORT_SNAPSHOT)  # its first snapshot: after the lock was granted
                return str(cur.fetchone()[0])
        except DriverError as exc:
            fields = error_fields(exc)
            with suppress(DriverError):  # a lock time-out is retried in a new transaction
                self.conn.rollback()
            raise FdwError(
                f"Could not export a snapshot on the remote: {fields['message']}",
                step="export snapshot",
                sqlstate=fields["sqlstate"],
            ) from None

    def _exclusive_lockers(self) -> str:
        """Who holds or waits for an exclusive lock on the source (after a lock attempt timed out)."""
        assert self.lock is not None
        with self.conn.cursor() as cur:
            cur.execute(q.EXCLUSIVE_LOCKERS_QUERY, (str(self.lock.table),))
            rows = cur.fetchall()
        self.conn.rollback()
        return describe_holders([(pid, app, state) for pid, app, state in rows])

    def blocked(self) -> str:
        """The sessions whose lock request this transaction's locks keep waiting ("" when none)."""
        with self.conn.cursor() as cur:  # pg_locks is no table: reading it needs no new snapshot
            cur.execute(q.BLOCKED_BY_ME_QUERY)
            rows = cur.fetchall()
        return ", ".join(f"pid {pid} (waiting for {mode})" for pid, mode in rows)

    def _terminate_leftovers(self, prefix: str, log: Any) -> None:
        """A killed try's remote reads keep running in their own snapshot until they next write: end them."""
        try:
            terminate_leftovers(LocalSession(self.conn, log), prefix, log)
        except FdwError as exc:  # best effort: the copy itself does not need it
            log.warning("Could not end an earlier try's remote reads: %s", exc)

    def lend(self) -> Any:
        """The holder's own connection, for the one reader of a copy with no background count: it
        is already in the snapshot's transaction (no import, no second connection); not closed by it."""
        assert self._thread is None, "the background count uses the connection"
        return self.conn

    def reader_statements(self) -> list[Any]:
        """What a reader runs first, in its own transaction, to see exactly this snapshot."""
        return reader_statements(self.id, self.lock)

    def start_count(self, statement: Any) -> None:
        """Run ``statement`` (one row) in the snapshot, in the background while the ranges load."""

        def run() -> None:
            try:
                with self.conn.cursor() as cur:
                    cur.execute(statement)
                    self._row = cur.fetchone()
            except BaseException as exc:  # re-raised by counted()
                self._error = exc

        self._thread = threading.Thread(target=run, name="fdw-copy-verify-source", daemon=True)
        self._thread.start()

    def counted(self) -> tuple[Any, ...]:
        """The row of :meth:`start_count` (waits for it)."""
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            message = (
                error_fields(self._error)["message"]
                if isinstance(self._error, DriverError)
                else str(self._error)
            )
            raise FdwError(
                f"Counting the source in the copy's snapshot failed: {message}", step="verify"
            ) from None
        assert self._row is not None
        return self._row

    def close(self) -> None:
        """End the transaction (after every range read): a count still running is cancelled."""
        if self._thread is not None and self._thread.is_alive():
            with suppress(Exception):
                self.conn.cancel()
            self._thread.join()
        with suppress(Exception):  # closing ends the read-only transaction; nothing to keep
            self.conn.close()


class ImportedSnapshot:
    """A snapshot another process exported and holds (the partitioned copy's holder task): what a
    range's reader runs before its COPY; closing it is the holder's business."""

    def __init__(self, snapshot_id: str, lock: SourceLock | None = None) -> None:
        self.id = snapshot_id
        self.lock = lock

    def reader_statements(self) -> list[Any]:
        return reader_statements(self.id, self.lock)


def reader_statements(snapshot_id: str, lock: SourceLock | None) -> list[Any]:
    """A reader's first statements: the lock before the import, which then fails unless the holder
    (whose lock kept every rewrite out) is still there: the lock was held since before it ended."""
    locking = lock.statements() if lock is not None else []
    return [q.SNAPSHOT_ISOLATION, pinned_locally(), *locking, q.import_snapshot(snapshot_id)]
