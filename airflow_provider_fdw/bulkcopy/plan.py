"""The plan of a bulk copy: its arguments checked once, before anything runs, and its result."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from airflow_provider_fdw.bulkcopy.apply import SWAPS
from airflow_provider_fdw.bulkcopy.direct import DEFAULT_TRANSPORT, TRANSPORTS
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.names import (
    QualifiedName,
    check_identifier,
    check_identifiers,
    parse_qualified_name,
)
from airflow_provider_fdw.predicate import check_where_text
from airflow_provider_fdw.refresh import lock_timeout_setting
from airflow_provider_fdw.timeouts import DEFAULT_SWAP_LOCK_TIMEOUT
from airflow_provider_fdw.validation import INT_MAX, check_interval

MODES = ("replace", "append", "upsert", "mirror")
VERIFY_MODES = ("off", "count", "checksum")
# Rows per postgres_fdw fetch: 1,000 to 200,000 cost the same here (docs/performance.md); a batch
# is held in the local backend's memory, so the smallest that is as fast.
DEFAULT_FETCH_SIZE = 10_000


# Through postgres_fdw (which does not push ctid conditions down) ranges are ranges of a column.
NO_SPLIT_COLUMN = (
    "parallelism > 1 through postgres_fdw splits by key ranges: pass key_columns or split_column "
    "(transport='copy' splits any table by ctid)."
)


@dataclass(frozen=True)
class CopyPlan:
    """Validated arguments of a bulk copy: made only by :func:`plan_copy`, passed down unchanged."""

    source: QualifiedName
    target: QualifiedName
    mode: str
    key_columns: tuple[str, ...] | None
    watermark_column: str | None
    where: str | None
    columns: tuple[str, ...] | None
    parallelism: int
    overlap: Any
    fetch_size: int
    lock_timeout: str | None
    split_column: str | None
    swap: str = "auto"
    verify: str | None = None  # None: the source's default (verify.choose_verifier)
    transport: str = DEFAULT_TRANSPORT
    # the user passed lock_timeout (kept as given); else the default, raised above deadlock_timeout
    lock_timeout_explicit: bool = False


def plan_copy(
    source_table: str,
    target_table: str,
    mode: str = "replace",
    key_columns: Sequence[str] | None = None,
    watermark_column: str | None = None,
    where: str | None = None,
    columns: Sequence[str] | None = None,
    parallelism: int = 1,
    overlap: Any = None,
    fetch_size: int | None = None,
    lock_timeout: float | str | None = None,
    split_column: str | None = None,
    swap: str = "auto",
    verify: str | None = None,
    transport: str = DEFAULT_TRANSPORT,
) -> CopyPlan:
    """Check every argument before anything runs; raise :class:`FdwConfigError` with a clear message."""
    source = parse_qualified_name(source_table, "source_table")
    target = parse_qualified_name(target_table, "target_table")
    if source == target:
        raise FdwConfigError("source_table and target_table are the same table.")
    if mode not in MODES:
        raise FdwConfigError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
    mirror_extras = [watermark_column, where, overlap, parallelism != 1, verify not in (None, "off")]
    if mode == "mirror" and (any(x not in (None, False) for x in mirror_extras) or swap != "auto"):
        raise FdwConfigError(
            "mode='mirror' compares checksums and applies the differences in one transaction (and "
            "checks itself): it takes key_columns, columns, transport and lock_timeout, not "
            "watermark_column, where, overlap, parallelism, verify or swap."
        )
    keys = check_identifiers(key_columns, "key_columns")
    cols = check_identifiers(columns, "columns")
    if watermark_column is not None:
        check_identifier(watermark_column, "watermark_column")
    if mode == "upsert" and not keys:
        raise FdwConfigError("mode='upsert' needs key_columns (the columns of the target's unique key).")
    if mode == "upsert" and not watermark_column:
        raise FdwConfigError("mode='upsert' needs watermark_column (e.g. updated_at) to find changed rows.")
    if mode == "replace" and watermark_column:
        raise FdwConfigError("watermark_column is for append/upsert; replace always copies everything.")
    if overlap is not None and mode != "upsert":
        raise FdwConfigError("overlap applies to mode='upsert' only.")
    if overlap is not None:
        overlap = check_overlap(overlap)
    if swap not in SWAPS:
        raise FdwConfigError(f"swap must be one of {', '.join(SWAPS)}; got {swap!r}.")
    if swap != "auto" and mode != "replace":
        raise FdwConfigError("swap applies to mode='replace' only.")
    if verify is not None and verify not in VERIFY_MODES:
        raise FdwConfigError(f"verify must be one of {', '.join(VERIFY_MODES)}; got {verify!r}.")
    if where is not None and (not isinstance(where, str) or not where.strip()):
        raise FdwConfigError("where must be a non-empty SQL condition, or None.")
    if where is not None:
        where = check_where_text(where)
    if transport not in TRANSPORTS:
        raise FdwConfigError(f"transport must be one of {', '.join(TRANSPORTS)}; got {transport!r}.")
    if not isinstance(parallelism, int) or isinstance(parallelism, bool) or not 1 <= parallelism <= 64:
        raise FdwConfigError(f"parallelism must be an integer from 1 to 64, got {parallelism!r}.")
    split = split_column or (keys[0] if keys else None)
    if split is not None:
        check_identifier(split, "split_column")
    if parallelism > 1 and split is None and transport == "fdw":
        raise FdwConfigError(NO_SPLIT_COLUMN)
    if fetch_size is not None and (
        isinstance(fetch_size, bool) or not isinstance(fetch_size, int) or not 1 <= fetch_size <= INT_MAX
    ):
        raise FdwConfigError(f"fetch_size must be an integer from 1 to {INT_MAX}, got {fetch_size!r}.")
    if cols is not None:
        missing = [
            c for c in [*(keys or ()), *([watermark_column] if watermark_column else [])] if c not in cols
        ]
        if missing:
            raise FdwConfigError(f"columns must include the key/watermark columns; missing {missing}.")
    return CopyPlan(
        source,
        target,
        mode,
        tuple(keys) if keys else None,
        watermark_column,
        where.strip() if where else None,
        tuple(cols) if cols else None,
        parallelism,
        overlap,
        fetch_size or DEFAULT_FETCH_SIZE,
        lock_timeout_setting(lock_timeout if lock_timeout is not None else DEFAULT_SWAP_LOCK_TIMEOUT),
        split,
        swap,
        verify,
        transport,
        lock_timeout is not None,
    )


def check_overlap(overlap: Any) -> Any:
    """``overlap`` as given (interval text stripped) when it is zero or more and finite.

    It lowers the bound (``watermark - overlap``) to re-read rows that committed late; a negative
    one raised the bound above the recorded watermark (rows just above it were never copied, then
    the record moved past them) and NaN made it NaN, above every value (nothing copied, ever). An
    interval with a negative part ('1 day -2 hours') is refused too: its sign depends on how long
    that day is, and one positive interval says the same. Whether it fits the watermark's type (a
    number for a numeric watermark, an interval for a date or time) is checked when the column's
    type is read (:func:`.watermark.overlap_for`), still before anything changes.
    """
    if isinstance(overlap, bool) or not isinstance(overlap, str | int | float | Decimal | timedelta):
        raise FdwConfigError("overlap must be an interval ('5 minutes', a timedelta) or a number.")
    if isinstance(overlap, str):
        overlap = check_interval(overlap, "overlap")
        if "-" in overlap:  # the only '-' the interval forms accept is a sign
            raise FdwConfigError(
                f"overlap lowers the watermark bound and must not be negative, nor have a negative part "
                f"(got {overlap!r}); write one positive interval, e.g. '22 hours' for '1 day -2 hours'."
            )
        return overlap
    if isinstance(overlap, timedelta):
        refused = overlap < timedelta(0)
    elif isinstance(overlap, Decimal):  # NaN compares false with everything: asked for by name
        refused = not overlap.is_finite() or overlap < 0
    else:
        refused = not math.isfinite(overlap) or overlap < 0
    if refused:
        raise FdwConfigError(
            "overlap lowers the watermark bound (watermark - overlap) to re-read rows that committed "
            f"late: it must be finite, zero or more; got {overlap!r}."
        )
    return overlap


@dataclass
class CopyResult:
    mode: str
    source: str
    target: str
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    watermark: Any = None
    path: str = "fdw"
    parallelism: int = 1
    swap: str | None = None
    inserted: int | None = None
    updated: int | None = None
    deleted: int | None = None
    unchanged: int | None = None
    verification: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step (bulkcopy.steps)

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "source": self.source,
            "target": self.target,
            "rows": self.rows,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "watermark": _json_safe(self.watermark),
            "previous_watermark": _json_safe(self.details.get("previous_watermark")),
            "path": self.path,
            "parallelism": self.parallelism,
            "swap": self.swap,
            "inserted": self.inserted,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "verify": self.verification,
            # rows a watermark bound cannot see (None: no watermark_column)
            "null_watermark_rows": self.details.get("null_watermark_rows"),
            "steps": self.steps,
        }


def _json_safe(value: Any) -> Any:
    if value is not None and not isinstance(value, int | float | str | bool):
        return str(value)  # datetimes, Decimals: JSON-safe for XCom
    return value
