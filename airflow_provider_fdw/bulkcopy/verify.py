"""Verify a copy: the rows it wrote equal the source snapshot it read (``verify="count"|"checksum"``).

postgres_fdw runs one REPEATABLE READ remote transaction per local transaction, so a ``count(*)`` /
``sum(row checksum)`` over the foreign table in the SAME local transaction as the load (one per key
range) sees exactly the snapshot the load read. The checksum uses only immutable built-in functions
over each value's binary send form (md5 of the text for text types), so it does not depend on
DateStyle, TimeZone, IntervalStyle or extra_float_digits, and postgres_fdw computes it on the remote
(checked with ``EXPLAIN VERBOSE`` before anything runs). The same expression is computed locally over
the staging table before the apply, and over the target inside the apply transaction: a mismatch
fails the copy and nothing is committed.

Other wrappers keep no remote snapshot across statements, so a count there is taken right after the
load, not in its snapshot. Left unset, ``verify`` is ``"count"`` where a wrapper is known to end a
read silently (:func:`choose_verifier`), else ``"off"``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.catalog import Table
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.wrappers import WRAPPERS


@dataclass
class Tally:
    rows: int = 0
    checksum: int | None = None

    def add(self, rows: int, checksum: Any) -> None:
        self.rows += int(rows)
        if checksum is not None:
            self.checksum = (self.checksum or 0) + int(checksum)


def early_end_columns(source: Table) -> list[str]:
    """The source's binary (``bytea``) columns when its wrapper can end a read silently, as if the
    table ended, at a binary value it cannot fetch whole (mysql_fdw); else none."""
    wrapper = WRAPPERS.get(source.relation.wrapper or "")
    if wrapper is None or not wrapper.ends_reads_at_big_binary_values:
        return []
    return [c for c, col in source.columns.items() if col.type_sql == "bytea"]


def choose_verifier(
    mode: str | None, early_end: Sequence[str], columns: Sequence[str], where: str | None, log: Any
) -> Verifier:
    """``verify`` as given, or left unset: ``"count"`` when the copy reads a column at which the
    source's wrapper can end a read early (the copy would swap in a table missing rows), else
    ``"off"``."""
    copied = [c for c in early_end if c in columns]
    if mode is None and copied:
        log.info(
            "verify='count' (the default when the copy reads %s: the source's wrapper ends a read "
            "silently, as if the table ended, at a binary value it cannot fetch whole); verify='off' "
            "skips it",
            ", ".join(copied),
        )
    # a count the remote does not compute reads the columns of ``where`` through the wrapper
    read_early_end = [c for c in early_end if where and _names(where, c)]
    return Verifier(mode or ("count" if copied else "off"), log, read_early_end)


def _names(where: str, column: str) -> bool:
    """Whether ``where`` may name ``column`` (conservative: a string literal spelling it counts)."""
    spelled = re.escape(column) if column != column.lower() else f"(?i:{re.escape(column)})"
    return re.search(rf'(?<![\w$]){spelled}(?![\w$])|"{re.escape(column)}"', where) is not None


class Verifier:
    """Collects the source's tally per loaded range, then checks the staging table and the target."""

    def __init__(self, mode: str, log: Any, read_early_end: Sequence[str] = ()) -> None:
        """``read_early_end``: columns ``where`` names at which the source's wrapper can end a read
        early: a count the remote does not compute is refused (:func:`choose_verifier`)."""
        self.mode = mode
        self.log = log
        self.columns: list[tuple[str, str | None]] | None = None
        self.not_covered: list[str] = []
        self.source = Tally()
        self.loaded: Tally | None = None
        self._lock = threading.Lock()
        self.read_early_end = list(read_early_end)

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def prepare(
        self,
        s: LocalSession,
        source_oid: int,
        source: QualifiedName,
        is_foreign: bool,
        columns: Sequence[str],
        conditions: Sequence[Any],
    ) -> None:
        """Choose the checksummed columns; check the remote computes the aggregate (before any change)."""
        if not self.enabled:
            return
        with s.transaction():
            if self.mode == "checksum":
                info = {
                    row[0]: row[1:]
                    for row in s.fetchall("read column types", q.CHECKSUM_COLUMNS_QUERY, (source_oid,))
                }
                self.columns = []
                for name in columns:
                    builtin, send, immutable, textlike, typname = info[name]
                    exact = typname not in q.OBJECT_REFERENCE_TYPES | q.UNNORMALISED_FLOAT_TYPES
                    if builtin and (immutable or textlike) and exact:
                        self.columns.append((name, None if textlike else send))
                    else:
                        self.not_covered.append(name)
                if self.not_covered:
                    self.log.warning(
                        "verify='checksum' covers %d of %d columns: %s cannot be checksummed on the remote "
                        "(types that are not built in, or whose binary form is not immutable or is not "
                        "their value: arrays, enums, domains, composites, regclass, line, path, polygon …); "
                        "they are verified by the row count only",
                        len(self.columns),
                        len(columns),
                        ", ".join(self.not_covered),
                    )
            if not is_foreign:
                return
            plan = [
                r[0]
                for r in s.fetchall(
                    "explain verification",
                    q.explain_verbose(q.verify_select(source, self.columns, conditions)),
                )
            ]
        if not plan[0].lstrip().startswith("Foreign Scan"):
            message = (
                f"verify='{self.mode}': the foreign-data wrapper would not compute the source's "
                f"count/checksum on the remote for {source} (the where condition or a column type "
                "cannot be sent to the remote)"
            )
            if self.mode == "checksum":
                raise FdwConfigError(f"{message}; use verify='count' or a condition the remote can evaluate.")
            if self.read_early_end:  # counting through the wrapper would stop where the load stopped
                columns = ", ".join(self.read_early_end)
                raise FdwConfigError(
                    f"{message}, and counting through the wrapper would read {columns}, at which it can "
                    "end a read early (the count would miss what the load missed): use verify='off', or "
                    "filter on the remote (in a view there: a wrapper that sends conditions by name gets "
                    "none of the where)."
                )
            self.log.warning("%s: counting through the wrapper instead (slower)", message)

    def add_source(self, s: LocalSession, table: QualifiedName, conditions: Sequence[Any]) -> None:
        """In the load's transaction: the source rows this range read (same remote snapshot)."""
        if not self.enabled:
            return
        rows, checksum = s.fetchrow("verify: read source", q.verify_select(table, self.columns, conditions))
        with self._lock:
            self.source.add(rows, checksum)

    def remote_select(
        self, table: QualifiedName, remote_name: Mapping[str, str], conditions: Sequence[Any]
    ) -> Any:
        """The direct path: the same count/checksum, run on the remote table (its column names)."""
        columns = None if self.columns is None else [(remote_name[c], send) for c, send in self.columns]
        return q.verify_select(table, columns, conditions)

    def add_counted(self, rows: int, checksum: Any) -> None:
        """The direct path: the source rows counted in the snapshot every range read."""
        with self._lock:
            self.source.add(rows, checksum)

    def check_loaded(self, s: LocalSession, staging: QualifiedName, what: str) -> None:
        """Before the apply: the staging table holds exactly the source snapshot's rows."""
        if not self.enabled:
            return
        with s.transaction():
            self.loaded = self._tally(s, staging)
        self._compare(
            self.loaded, self.source, f"the rows loaded for {what}", "the source snapshot the copy read"
        )
        self.log.info(
            "Verified (%s): %d rows%s equal to the source snapshot",
            self.mode,
            self.loaded.rows,
            "" if self.loaded.checksum is None else f", checksum {self.loaded.checksum}",
        )

    def check_target(
        self,
        s: LocalSession,
        target: QualifiedName,
        only: bool,
        matching: tuple[QualifiedName, Sequence[str]] | None = None,
    ) -> None:
        """Inside the apply transaction: the target now holds exactly the rows loaded (with
        ``matching=(staging, keys)``: its rows with the staged keys, for an upsert)."""
        if not self.enabled or self.loaded is None:
            return
        got = self._tally(s, target, only, matching)
        self._compare(got, self.loaded, f"{target} after the apply", "the rows loaded")

    def result(self) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        return {
            "mode": self.mode,
            "result": "match",
            "rows": self.source.rows,
            "checksum": None if self.source.checksum is None else str(self.source.checksum),
            "not_checksummed": self.not_covered,
        }

    def _tally(
        self,
        s: LocalSession,
        table: QualifiedName,
        only: bool = False,
        matching: tuple[QualifiedName, Sequence[str]] | None = None,
    ) -> Tally:
        tally = Tally()
        statement = q.verify_select(table, self.columns, (), only, matching)
        tally.add(*s.fetchrow("verify: read local rows", statement))
        return tally

    def _compare(self, got: Tally, expected: Tally, what: str, against: str) -> None:
        if got.rows != expected.rows or got.checksum != expected.checksum:
            raise FdwError(
                f"Verification failed: {what} are {got.rows} rows (checksum {got.checksum}), "
                f"{against} has {expected.rows} rows (checksum {expected.checksum}). "
                "Nothing was committed to the target.",
                step="verify",
            )
