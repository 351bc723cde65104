"""What one copy learns as it runs: created in :meth:`BulkCopy.run`, passed to every step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_provider_fdw.bulkcopy.direct import DirectRead
from airflow_provider_fdw.bulkcopy.plan import CopyResult
from airflow_provider_fdw.bulkcopy.snapshot import SnapshotHolder
from airflow_provider_fdw.bulkcopy.verify import Verifier
from airflow_provider_fdw.catalog import Index, Table
from airflow_provider_fdw.names import QualifiedName


@dataclass
class CopyRun:
    """The per-run state of a bulk copy (the engine itself holds only its configuration)."""

    source: Table
    target: Table | None  # None: the copy creates the target
    columns: list[str]  # the copied columns, in order
    result: CopyResult
    verifier: Verifier
    direct: DirectRead | None = None  # set: rows are read with COPY over the direct connection
    conditions: list[Any] = field(default_factory=list)  # the user's filter and the watermark bound
    staging: QualifiedName | None = None
    in_place: bool = False  # replace applies the difference in place instead of swapping
    deferred_indexes: list[Index] = field(default_factory=list)  # built on staging after the load
    snapshot: SnapshotHolder | None = None  # direct path: the snapshot every range reads

    @property
    def staging_table(self) -> QualifiedName:
        assert self.staging is not None, "the staging table is created before the load"
        return self.staging
