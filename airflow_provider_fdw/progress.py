"""Progress lines of a bulk copy: rows so far, percent of the source's estimated size, rate and ETA.

The estimate is ``pg_class.reltuples`` of the REMOTE table (read through the foreign server, or the
direct connection when the copy has one), read once when the copy starts; ``reltuples < 0`` means
the remote never analyzed the table, and the lines say the total is unknown. A line is logged at
most every ``PROGRESS_EVERY_SECONDS`` while rows flow, and once more when the load ends, so even a
copy shorter than the interval logs one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.wrappers import reads_postgres

PROGRESS_EVERY_SECONDS = 10.0
ESTIMATE_WAIT_SECONDS = 5.0  # how long the last line waits for a slow estimate before going without


@dataclass(frozen=True)
class RowEstimate:
    """The planner's idea of a table's size: ``rows`` is None when the table was never analyzed."""

    rows: float | None
    bytes: int | None = None  # heap bytes (relpages x block size), to turn staged bytes into rows


class Progress:
    """Rows loaded so far across workers; every ``every`` seconds logs rows, percent, rate and ETA.

    ``probe`` returns bytes staged so far, for loads that report rows only at the end (INSERT …
    SELECT): rows are then estimated from the bytes, with the remote's bytes per row. ``counter``
    returns the rows written so far as the server counts them (a COPY run by psql). ``finish``
    logs the last line with the exact count once the load is done.
    ``estimate`` returns the source's :class:`RowEstimate`; it runs in the reporting thread, so a
    slow catalog read never delays the copy.
    """

    def __init__(
        self,
        log: Any,
        source: str,
        target: str,
        every: float | None = None,
        probe: Callable[[], int] | None = None,
        estimate: Callable[[], RowEstimate] | None = None,
        counter: Callable[[], int] | None = None,
    ) -> None:
        self.log, self.source, self.target, self.probe = log, source, target, probe
        self.counter = counter
        self.every = PROGRESS_EVERY_SECONDS if every is None else every
        self.estimate_source = estimate
        self.total = RowEstimate(None)
        self.unknown_total = ""  # why there is no estimate, when one was asked for
        self.rows = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._report, name="fdw-copy-progress", daemon=True)
        # Its own thread: a slow catalog read delays neither the copy nor its end.
        self._estimator = threading.Thread(target=self._estimate, name="fdw-copy-estimate", daemon=True)

    def add(self, rows: int) -> None:
        with self._lock:
            self.rows += max(rows, 0)

    def __enter__(self) -> Progress:
        if self.estimate_source is not None:
            self._estimator.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def finish(self, rows: int) -> None:
        """Log the last line with the exact row count (every copy logs at least this one)."""
        with self._lock:
            self.rows = rows
        if self._estimator.is_alive():
            self._estimator.join(ESTIMATE_WAIT_SECONDS)
        self.log.info("%s", self.line(final=True))

    def _estimate(self) -> None:
        if self.estimate_source is None:
            return
        try:
            self.total = self.estimate_source()
            self.unknown_total = "the source table was never analyzed"
        except Exception as exc:  # the copy goes on without a percentage
            self.unknown_total = "could not read it"
            self.log.warning("Could not read the estimated size of %s: %s", self.source, exc)

    def _report(self) -> None:
        while not self._stop.wait(self.every):
            if self._estimator.is_alive() and time.monotonic() - self._started < ESTIMATE_WAIT_SECONDS:
                continue  # lines with a percentage, once the estimate is in (it usually takes ms)
            try:
                self.log.info("%s", self.line())
            except FdwError:
                continue  # the staging table could not be measured this time

    def line(self, final: bool = False) -> str:
        """One progress line: ``Copying a -> b: 1,200 of ~10,000 rows (12%), 300 rows/s, ETA 29s, …``."""
        elapsed = max(time.monotonic() - self._started, 1e-6)
        total = self.total.rows
        rows: float | None = self.rows
        approx, staged = "", None
        # Loads that report rows only at the end: psql's counted by the server, INSERT … SELECT's
        # estimated from the staged bytes.
        if self.counter is not None and not final:
            counted = self.counter()  # 0 again once the COPY has ended: never count backwards
            with self._lock:
                self.rows = rows = max(self.rows, counted)
        elif self.probe is not None and not final:
            staged = self.probe()
            per_byte = total / self.total.bytes if total and self.total.bytes else None
            rows, approx = (staged * per_byte, "~") if per_byte else (None, "")
        if rows is None:
            done = f"{(staged or 0) / 1e6:.1f} MB staged"
        elif total:
            done = f"{approx}{rows:,.0f} of ~{total:,.0f} rows ({min(100.0, 100.0 * rows / total):.0f}%)"
        else:
            done = f"{approx}{rows:,.0f} rows"
        if total is None and self.unknown_total:
            done += f" (estimated total unknown: {self.unknown_total})"
        elif rows is None and total is not None:
            done += f" of ~{total:,.0f} rows"
        elif staged is not None and rows is not None:
            done += f" ({staged / 1e6:.1f} MB staged)"
        parts = [f"{'Loaded' if final else 'Copying'} {self.source} -> {self.target}: {done}"]
        if rows is None:
            parts.append(f"{(staged or 0) / 1e6 / elapsed:.1f} MB/s")
        else:
            parts.append(f"{rows / elapsed:,.0f} rows/s")
            if not final and total and rows > 0:
                parts.append(f"ETA {format_seconds(max(total - rows, 0) * elapsed / rows)}")
        parts.append(f"{format_seconds(elapsed)} elapsed")
        return ", ".join(parts)


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short enough to scan in a log line."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# pg_class of the remote through the foreign server: pg_catalog is readable by any role.
_ESTIMATE_PROBES = (
    ("fdw_estimate_class", "pg_class", "relname name, relnamespace oid, reltuples real, relpages integer"),
    ("fdw_estimate_ns", "pg_namespace", "oid oid, nspname name"),
)
_ESTIMATE_QUERY = sql.SQL(
    "SELECT c.reltuples, c.relpages::bigint * current_setting('block_size')::bigint FROM {} c "
    "JOIN {} n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
)


def estimate_source_rows(
    new_session: Callable[[], Any],
    source: tuple[str, str],
    server_name: str | None = None,
    remote: tuple[str, str] | None = None,
    remote_connect: Callable[[], Any] | None = None,
    wrapper: str | None = None,
) -> RowEstimate:
    """``reltuples`` of the table the rows come from: the remote table of a foreign table (over the
    direct connection if the copy has one, else through session-private foreign tables on the
    remote's catalogs, rolled back), or the local table itself. ``wrapper``: the foreign table's
    foreign-data wrapper (read with its relation): a remote that is not PostgreSQL has no estimate."""
    catalogs: tuple[sql.Composable, ...] = (
        sql.SQL("pg_catalog.pg_class"),
        sql.SQL("pg_catalog.pg_namespace"),
    )
    if remote is not None and remote_connect is not None:
        conn = remote_connect()
        try:
            cur = conn.cursor()
            cur.execute(_ESTIMATE_QUERY.format(*catalogs), tuple(remote))
            return _estimate(cur.fetchone())
        finally:
            conn.close()
    s = new_session()
    try:
        if remote is not None and not reads_postgres(wrapper):
            return RowEstimate(None)  # a MySQL table or a file: no pg_catalog to read reltuples from
        if remote is not None:
            if server_name is None:  # the probes are foreign tables on that server
                raise ValueError("estimate_source_rows: a remote table needs its server_name.")
            for name, catalog, columns in _ESTIMATE_PROBES:
                s.execute(
                    "read remote size estimate",
                    sql.SQL(
                        "CREATE FOREIGN TABLE pg_temp.{} ({}) SERVER {} "
                        "OPTIONS (schema_name 'pg_catalog', table_name {})"
                    ).format(
                        sql.Identifier(name),
                        sql.SQL(columns),
                        sql.Identifier(server_name),
                        sql.Literal(catalog),
                    ),
                    quiet=True,
                )
            catalogs = tuple(sql.Identifier("pg_temp", name) for name, _, _ in _ESTIMATE_PROBES)
        return _estimate(
            s.fetchone("read size estimate", _ESTIMATE_QUERY.format(*catalogs), tuple(remote or source))
        )
    finally:
        s.rollback()  # the probe tables were created in this transaction: gone with it
        s.close()


def _estimate(row: tuple[Any, ...] | None) -> RowEstimate:
    if row is None or row[0] is None or row[0] < 0:
        return RowEstimate(None)
    return RowEstimate(float(row[0]), int(row[1]) if row[1] else None)
