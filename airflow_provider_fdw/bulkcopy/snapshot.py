"""One snapshot for every range of a direct copy (``pg_export_snapshot()``, as pgcopydb does).

A holder connection opens a REPEATABLE READ READ ONLY transaction on the remote and exports its
snapshot; every range's reader (the in-process relay's remote connection, each ``psql`` child)
imports it with ``SET TRANSACTION SNAPSHOT`` before its ``COPY … TO STDOUT``, so a parallel copy of
a live table is point-in-time. The holder stays open until every range has read (an exported
snapshot can only be imported while its transaction is open), and with ``verify`` it computes the
source's count/checksum in the same snapshot while the ranges load.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.bulkcopy.direct import pinned_locally
from airflow_provider_fdw.cancel import terminate_leftovers
from airflow_provider_fdw.compat import DriverError, error_fields
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.session import LocalSession


class SnapshotHolder:
    """The remote transaction whose exported snapshot each range reader imports."""

    def __init__(
        self,
        connect: Callable[..., Any],
        client_encoding: str,
        leftovers: str | None,
        log: Any,
        conn: Any = None,
    ) -> None:
        """``conn``: an open remote connection (pinned, in ``client_encoding``, outside a transaction)
        to hold the snapshot on instead of a new one; the holder closes it."""
        try:
            self.conn = conn if conn is not None else connect(client_encoding=client_encoding)
        except DriverError as exc:
            raise FdwError(
                f"Could not connect to the remote to export a snapshot: {error_fields(exc)['message']}",
                step="export snapshot",
            ) from None
        if leftovers:
            self._terminate_leftovers(leftovers, log)
        try:
            with self.conn.cursor() as cur:
                cur.execute(q.SNAPSHOT_ISOLATION)  # first statement of the driver's implicit transaction
                cur.execute(pinned_locally())  # the lent connection reads in this transaction
                cur.execute(q.EXPORT_SNAPSHOT)
                self.id: str = cur.fetchone()[0]
        except DriverError as exc:
            self.conn.close()
            raise FdwError(
                f"Could not export a snapshot on the remote: {error_fields(exc)['message']}",
                step="export snapshot",
            ) from None
        except BaseException:
            self.conn.close()
            raise
        self._thread: threading.Thread | None = None
        self._row: tuple[Any, ...] | None = None
        self._error: BaseException | None = None

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
        return [q.SNAPSHOT_ISOLATION, pinned_locally(), q.import_snapshot(self.id)]

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

    def __init__(self, snapshot_id: str) -> None:
        self.id = snapshot_id

    def reader_statements(self) -> list[Any]:
        return [q.SNAPSHOT_ISOLATION, pinned_locally(), q.import_snapshot(self.id)]
