"""Mirror mode reading the source over the direct connection (``transport="copy"`` or ``"auto"``).

Through postgres_fdw the remote plans the per-bucket ``GROUP BY`` with its own settings and sorts every
row to build a few buckets per thousand rows. Over the direct connection (the one the direct COPY
path reads) the mirror's remote transaction groups by hash instead, so one pass over each side, side
by side, yields fine buckets (holding about :data:`~.mirror_compare.FIRST_LEVEL_ROWS` rows: reading
the rows of a differing bucket costs more per bucket than per row).

- A single integer key: a bucket is a range of key values. Then the key and row hash of every row of
  the differing buckets (each range read through the key's index, on both sides), and only the rows
  that differ are fetched, by key, with binary COPY.
- Any other key: a bucket is a hash of the key. Every source row of the differing buckets is fetched
  with binary COPY (one filtered pass over the source) and the apply compares them.

Every source read is in one remote transaction, ``REPEATABLE READ, READ ONLY``: one snapshot, as
through postgres_fdw. Taken when every mirrored column has its declared type on the remote.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.bulkcopy.apply import duplicate_key
from airflow_provider_fdw.bulkcopy.direct import pinned_locally, plan_direct
from airflow_provider_fdw.bulkcopy.mirror_apply import Differences, mismatch
from airflow_provider_fdw.bulkcopy.mirror_compare import Buckets, bucket_number, hash_aggregate
from airflow_provider_fdw.catalog import Table
from airflow_provider_fdw.compat import DriverError, copy_between, sql
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.sql import mirror as mq

if TYPE_CHECKING:
    from airflow_provider_fdw.bulkcopy.mirror import MirrorPlan


class DirectSource:
    """The source side of a direct mirror: every read in one remote transaction (one snapshot)."""

    def __init__(self, conn: Any, table: Table, columns: Sequence[str], log: Any) -> None:
        assert table.remote is not None
        self.session = LocalSession(conn, log)
        self.table: QualifiedName = table.remote
        self.names = {c: table.columns[c].remote_name for c in columns}
        self.columns = {c.remote_name: name for name, c in table.columns.items()}
        try:
            # the first statements of the driver's implicit transaction
            self.session.execute("start the source snapshot", q.SNAPSHOT_ISOLATION, quiet=True)
            self.session.execute("pin the source session", pinned_locally(), quiet=True)
            hash_aggregate(self.session)
        except BaseException:
            self.close()
            raise

    def copy_into(
        self, s: LocalSession, staging: QualifiedName, columns: list[str], out: sql.Composable
    ) -> int:
        """Relay ``out`` (a binary ``COPY … TO STDOUT`` of ``columns``) into ``staging``; the rows."""
        try:
            return copy_between(
                self.session.conn, s.conn, out, q.copy_from_stdin(staging, columns, True), _ignore
            )
        except DriverError as exc:  # either side's
            raise s.error("fetch the differing source rows", exc) from None

    def nondeterministic(self) -> frozenset[str]:
        """The source's columns (local names) whose remote collation is nondeterministic."""
        rows = self.session.fetchall(
            "read the remote columns' collations",
            q.remote_nondeterministic_query(through_fdw=False),
            self.table,
        )
        return frozenset(self.columns[r] for (r,) in rows if r in self.columns)

    def close(self) -> None:
        self.session.close()  # ends the read-only transaction: nothing to keep


def open_direct_source(
    s: LocalSession,
    plan: MirrorPlan,
    source: Table,
    columns: list[str],
    connect: Callable[..., Any] | None,
    identity: Mapping[str, Any] | None,
    log: Any,
    new_session: Callable[[], LocalSession] | None = None,
) -> DirectSource | None:
    """The run's direct source, or None for the FDW path (why is logged; an error with
    ``transport="copy"``, before anything changes)."""
    if plan.transport == "fdw":
        return None
    kept: list[Any] = []
    direct = plan_direct(s, plan, source, columns, connect, identity, log, kept.append, new_session)
    if direct is None:
        return None
    if not direct.binary:  # the remote's hashes of other types would not match the target's
        kept[0].close()
        reason = "a mirrored column has another type on the remote"
        if plan.transport == "copy":
            raise FdwConfigError(f"mode='mirror' with transport='copy' cannot read {plan.source}: {reason}.")
        log.info("Mirror of %s reads through postgres_fdw: %s.", plan.source, reason)
        return None
    return DirectSource(kept[0], source, columns, log)


# Rows of the differing buckets compared one by one (key and row hash, on both sides, held in memory
# here: about 200 bytes a row); beyond, all their source rows are staged and the apply compares them.
ROWS_COMPARED_MAX = 1_000_000
KEYS_PER_FETCH = 50_000  # keys per COPY statement (an array literal: about 10 bytes a key)


def batches(values: list[int], size: int) -> list[list[int]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def unused_alias(names: Sequence[str]) -> str:
    """A name no column of ``names`` has (the bucket number next to the row hash's columns)."""
    alias = "fdw_range"
    while alias in names:
        alias += "_"
    return alias


def bucket_arrays(s: LocalSession, statement: sql.Composable, side: str) -> tuple[Buckets, str | None]:
    """Bucket -> (rows, sum of row hashes as text), and the sum of all the sums (``statement``:
    :func:`.sql.mirror.bucket_checksum_arrays`).

    The sums stay text: equal numbers have equal text, and converting 150,000 of them costs a
    tenth of a second (see :func:`numeric_sums` for the few that are compared again)."""
    buckets, rows, sums, total = s.fetchrow(f"checksum {side} buckets", statement)
    numbers = [bucket_number(b) for b in buckets or []]
    return dict(zip(numbers, zip(rows or [], sums or [], strict=True), strict=True)), total


def numeric_sums(buckets: Buckets, numbers: list[int]) -> Buckets:
    """``numbers`` of ``buckets`` with their sums as numbers (as the apply's recount reads them);
    a bucket missing from ``buckets`` has no rows."""

    def value(b: int) -> tuple[int, Any]:
        n, c = buckets.get(b, (0, None))
        return n, None if c is None else int(c)

    return {b: value(b) for b in numbers}


def row_hashes(
    s: LocalSession, statement: sql.Composable, buckets: list[int], table: QualifiedName, key: str, side: str
) -> dict[int, int]:
    """Key -> row hash of the rows of ``buckets`` (``statement``: :func:`.sql.mirror.rows_in_ranges`);
    a key held by two rows of ``table`` is refused (one of them would go unseen).

    Without JIT: compiling takes longer than reading these few rows through the index."""
    s.execute("read rows without JIT", q.set_local("jit", "off"), quiet=True)
    keys, hashes = s.fetchrow(f"read the {side} rows of the differing buckets", statement, [buckets])
    rows = dict(zip(keys or [], hashes or [], strict=True))
    if len(rows) != len(keys or []):
        raise duplicate_key(str(table), [key], [next(k for k, n in Counter(keys).items() if n > 1)])
    return rows


def row_differences(
    s: LocalSession,
    src: DirectSource,
    p: MirrorPlan,
    only: bool,
    key: str,
    columns: list[str],
    row_hash: sql.Composable,
    source_rows: dict[int, int],
    target_rows: dict[int, int],
    rows_before: int,
) -> Differences:
    """The direct path's differences: the keys whose row hash differs (or that one side lacks);
    the source rows of those keys are fetched by binary COPY.

    Checked by reading the written keys' row hashes back (what else the apply wrote:
    :func:`.mirror_apply.check_only_chosen_rows_written`)."""
    changed = sorted(k for k, h in source_rows.items() if target_rows.get(k) != h)
    vanished = sorted(k for k in target_rows if k not in source_rows)
    touched = changed + vanished
    if not touched:  # the buckets differed: the rows cannot all be equal
        raise mismatch(p, 1, "the differing buckets' rows are equal one by one")
    remote_columns = [src.names[c] for c in columns]

    def fetch(staging: QualifiedName) -> int:
        return sum(
            src.copy_into(
                s, staging, columns, mq.copy_rows_by_key(src.table, remote_columns, src.names[key], batch)
            )
            for batch in batches(changed, KEYS_PER_FETCH)
        )

    def verify() -> None:
        statement = mq.rows_by_key(p.target, only, key, row_hash)
        after = {int(k): int(h) for k, h in s.fetchall("check the written rows", statement, [touched])}
        wrong = [k for k in touched if after.get(k) != source_rows.get(k)]
        if wrong:
            raise mismatch(p, len(wrong), f"{key} = {wrong[0]}")

    return Differences(mq.key_in(key), [touched], p.source, fetch, verify, rows_before, row_hash)


def _ignore(rows: int) -> None:
    """No progress is reported for the few rows a mirror fetches."""
