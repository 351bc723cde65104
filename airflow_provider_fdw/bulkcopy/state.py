"""What one copy learns as it runs: created in :meth:`BulkCopy.run`, passed to every step."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.bulkcopy.direct import DirectRead
from airflow_provider_fdw.bulkcopy.plan import CopyResult
from airflow_provider_fdw.bulkcopy.snapshot import ImportedSnapshot, SnapshotHolder
from airflow_provider_fdw.bulkcopy.steps import StepTimes
from airflow_provider_fdw.bulkcopy.verify import Verifier
from airflow_provider_fdw.bulkcopy.watermark import Bound, Feed, TableFiles, WatermarkType
from airflow_provider_fdw.catalog import Index, Table
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.wrappers import Wrapper


@dataclass
class CopyRun:
    """The per-run state of a bulk copy (the engine itself holds only its configuration)."""

    source: Table
    target: Table | None  # None: the copy creates the target
    columns: list[str]  # the copied columns, in order
    result: CopyResult
    verifier: Verifier
    feed: Feed  # the source as the copy names it and its server: whose watermark record the run keeps
    direct: DirectRead | None = None  # set: rows are read with COPY over the direct connection
    conditions: list[Any] = field(default_factory=list)  # the user's filter and the watermark bound
    # the wrappers of the foreign tables a read of the source reaches (catalog.foreign_reads)
    wrappers: list[Wrapper] = field(default_factory=list)
    # the client_encoding every read of the source runs in: the local database's encoding when it
    # reads a file_fdw table without an `encoding` option (file_tables.read_encoding), else None
    file_encoding: str | None = None
    staging: QualifiedName | None = None
    # append/upsert: the columns this run's staging table declares NOT NULL (it made the table)
    staging_not_null: frozenset[str] = frozenset()
    in_place: bool = False  # replace applies the difference in place instead of swapping
    deferred_indexes: list[Index] = field(default_factory=list)  # built on staging after the load
    # replace by rename: the target's definition the staging table was made like (apply.read_definition)
    definition: str | None = None
    snapshot: SnapshotHolder | ImportedSnapshot | None = None  # direct path: what every range reads
    watermark_type: WatermarkType | None = None  # append/upsert with a watermark_column
    overlap: Any = None  # upsert: the plan's overlap as the watermark's type subtracts it
    start: Bound | None = None  # append/upsert: the watermark this run starts from (recorded or max())
    restarts_other_feeds: bool = False  # it found a target other feeds share empty: they start again
    # append/upsert into an existing target: its files when the start was read (the merge checks
    # them: a TRUNCATE meanwhile would leave the rows below the start uncopied for good)
    start_files: TableFiles | None = None
    steps: StepTimes = field(default_factory=StepTimes)  # seconds per step, logged when the run ends
    # direct path: the remote connection that planned the path, reused by the watermark step and then
    # taken by the snapshot holder (one connection instead of three)
    remote: Any = None
    estimated_rows: int | None = None  # direct incremental runs: the remote's estimate of the rows read
    relay_in_process: bool = False  # direct path: this load is relayed in-process although psql is there
    sole_reader: bool = False  # direct path: one range and no background count: it reads on the holder
    # direct path, one range into the table a replace swaps in: loaded frozen (COPY FREEZE)
    freeze: bool = False

    @property
    def time_zone(self) -> str | None:
        """The zone a read of the source runs in (a wrapper's date-time text is wall-clock time in it)."""
        return next((w.time_zone for w in self.wrappers if w.time_zone), None)

    @contextmanager
    def reading_source(self, s: LocalSession) -> Iterator[None]:
        """A transaction of ``s`` that reads the source (every read of it: the load and its count,
        the NULL count, the ceiling, so that a where, a bound and the rows mean the same in each): in
        :attr:`time_zone` and in :attr:`file_encoding`."""
        with s.transaction(client_encoding=self.file_encoding):
            if self.time_zone is not None:
                s.execute("set time zone", q.set_local("TimeZone", self.time_zone), quiet=True)
            yield

    def take_remote(self) -> Any:
        """The kept remote connection (or None), which the caller now owns."""
        remote, self.remote = self.remote, None
        return remote

    def close_remote(self) -> None:
        remote = self.take_remote()
        if remote is not None:
            with suppress(Exception):  # only a connection left over: nothing of the copy depends on it
                remote.close()

    @property
    def staging_table(self) -> QualifiedName:
        assert self.staging is not None, "the staging table is created before the load"
        return self.staging
