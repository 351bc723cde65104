"""Step 3 of a copy, append and upsert (replace is :mod:`.apply`), and what replace's staging needs
after the load: the target's indexes, or the source's primary key for a new target."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.bulkcopy import watermark
from airflow_provider_fdw.bulkcopy.apply import catch_up_sequences, check_no_null_key
from airflow_provider_fdw.bulkcopy.state import CopyRun
from airflow_provider_fdw.bulkcopy.writes import INSERT, UPDATE, Written, skipped, skipping_writers, unchosen
from airflow_provider_fdw.catalog import (
    Table,
    read_image_equal_columns,
    read_indexes,
    read_relation,
)
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.refresh import bounded_name
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.wrappers import reads_postgres

if TYPE_CHECKING:
    from airflow_provider_fdw.bulkcopy.engine import BulkCopy

NON_FINITE = ("infinity", "-infinity", "nan")
LEAVE_OUT = "or, if it only sets a column, leave that column out of the copy (columns=)"


def merge(copy: BulkCopy, run: CopyRun, s: LocalSession) -> None:
    """Append or upsert the staging table into the target in one transaction, then drop it."""
    p, staging, result = copy.plan, run.staging_table, run.result
    keys = p.key_columns or ()  # plan_copy: upsert always has key_columns
    with s.transaction():
        copy.lock_timeout.set_local(s, copy.log)
        if run.target is None:
            defs = column_defs(run.source, run.columns)
            s.execute(f"create {p.target}", q.create_table(p.target, defs, primary_key=p.key_columns))
        # created just now, or read at the start: the relation as it is inside this transaction
        target = read_relation(s, p.target, "target")
        if target is None:
            raise FdwError(
                f"{p.target} was dropped while the copy ran; nothing was changed.", step="read target"
            )
        only = target.relkind == "r"
        routed = 0  # append: rows a trigger on the target wrote into its inheritance children instead
        before = Written.read(s, target.oid)
        if p.mode == "append":
            cur = s.execute(f"append to {p.target}", q.insert_select(p.target, run.columns, staging))
            inserted, updated = int(cur.rowcount), 0
            if inserted != result.rows:  # else the watermark would move past rows never written
                statement = q.appended_rows_missing(p.target, staging, run.columns)
                if s.fetchvalue(f"check the rows appended to {p.target}", statement):
                    raise skipped(
                        p.target,
                        "Append",
                        f"it inserted {inserted} of the {result.rows} rows it staged",
                        skipping_writers(s, target.oid, INSERT),
                        LEAVE_OUT,
                    )
                copy.log.info(
                    "%s: %d of the %d rows went to tables inheriting from it (a trigger routes them)",
                    p.target,
                    result.rows - inserted,
                    result.rows,
                )
                routed = result.rows - inserted
            written = Written.after(s, target.oid, before)
        else:
            check_unique_key(s, target.oid, p.target, keys)
            # a key this run's staging table declares NOT NULL cannot hold a NULL (a partitioned
            # copy applies staging another run made: checked, the source may have changed since)
            if not run.staging_not_null.issuperset(keys):
                check_no_null_key(
                    s, staging, keys, f"rows to upsert into {p.target}", "ON CONFLICT never matches"
                )
            image_equal = read_image_equal_columns(s, target.oid)
            upsert = q.upsert_from(p.target, staging, run.columns, keys, image_equal)
            if target.relkind == "p":  # RETURNING cannot read xmax there: the counts tell them apart
                total = s.fetchvalue(f"upsert into {p.target}", q.written_upsert(upsert))
                written = Written.after(s, target.oid, before)
                inserted = written.inserted if written.counting else total
                updated = total - inserted
            else:
                inserted, updated = s.execute(f"upsert into {p.target}", q.counted_upsert(upsert)).fetchone()
                written = Written.after(s, target.oid, before)
            # Without a BEFORE trigger or rule, a staged row neither inserted nor updated is one the
            # target already held; with one, it may have been skipped: the staged keys are read back.
            writers = skipping_writers(s, target.oid, INSERT | UPDATE)
            if writers:
                statement = q.upserted_rows_missing(p.target, staging, run.columns, keys, image_equal, only)
                missing = s.fetchvalue(f"check the rows upserted into {p.target}", statement)
                if missing:
                    raise skipped(
                        p.target,
                        "Upsert",
                        f"after the upsert {p.target} lacks {missing} of the {result.rows} staged rows "
                        "(no row with their key, or other values)",
                        writers,
                        LEAVE_OUT,
                    )
        if run.start_files is not None:  # after the write, whose lock keeps the table as it is now
            watermark.check_not_rewritten(s, p.target, target.oid, run.start_files)
        if written.foreign:
            copy.log.info(
                "%s has foreign partitions, whose rows no count shows: what triggers wrote is not checked",
                p.target,
            )
        elif written.counting:
            # No fallback: the rows this run did not stage cannot be compared with anything.
            error = unchosen(p.target, written, inserted, updated, 0, p.mode.capitalize())
            if error is not None:
                raise error
        else:
            copy.log.info("track_counts is off: what triggers on %s wrote besides is not checked", p.target)
        inserted += routed  # the counts above are the table's own; the rows are all written
        result.details["applied_rows"] = inserted + updated
        result.inserted, result.updated, result.deleted = inserted, updated, 0
        # upsert: rows of the overlap window already equal
        result.unchanged = result.rows - inserted - updated
        if p.mode == "upsert":  # the staged keys now hold exactly the staged rows
            run.verifier.check_target(s, p.target, only, (staging, keys))
        catch_up_sequences(s, p.target, target.oid, only)
        if p.watermark_column:  # in the merge's transaction: it moves only if these rows commit
            if run.restarts_other_feeds:
                watermark.restart_other_feeds(s, p.target, target.oid, run.feed)
            result.watermark = watermark.record(
                s,
                p.target,
                target.oid,
                p.watermark_column,
                run.source.columns[p.watermark_column].type_sql,
                run.start.value if run.start else None,
                staging,
                run.feed,
            )
        s.execute("drop staging table", q.drop_table(staging), quiet=True)


def build_indexes(copy: BulkCopy, run: CopyRun, s: LocalSession) -> None:
    """After the load: the target's indexes and constraints (or the source's primary key)."""
    p, staging = copy.plan, run.staging_table
    new_target = run.target is None
    with run.steps.step("catalog"):
        keys = (p.key_columns or tuple(remote_primary_key(s, run.source, copy.log))) if new_target else ()
    with s.transaction(), run.steps.step("index"):
        for index in run.deferred_indexes:
            if index.constraint:
                assert index.constraintdef is not None  # a constraint always has a definition
                s.execute(
                    f"add constraint {index.constraint}",
                    q.add_constraint(staging, index.constraint, index.constraintdef),
                )
            else:
                s.execute("create index", q.server_ddl(index.indexdef))
        if keys:
            # Named for the table it will become (constraints keep their names across the rename).
            s.execute(
                "add primary key", q.add_primary_key(staging, bounded_name(p.target.name, "pkey"), keys)
            )
        with run.steps.step("analyze"):  # inside "index": counted apart
            s.execute(f"analyze {staging}", q.analyze(staging))


def remote_primary_key(s: LocalSession, source: Table, log: Any) -> list[str]:
    """The remote table's primary key, read through the same server (information_schema views)."""
    if not source.is_foreign or source.remote is None or source.server_name is None:
        return []
    if not reads_postgres(source.relation.wrapper):
        return []  # the probes read information_schema through postgres_fdw table options
    with s.undone("read remote primary key"):
        try:
            for statement in q.create_pk_probes(source.server_name):
                s.execute("read remote primary key", statement, quiet=True)
            rows = s.fetchall("read remote primary key", q.REMOTE_PK_QUERY, source.remote)
        except FdwError as exc:
            log.warning("Could not read the primary key of %s on the remote: %s", source.remote, exc)
            return []
    remote_to_local = {col.remote_name: name for name, col in source.columns.items()}
    return [remote_to_local.get(r[0], r[0]) for r in rows]


def column_defs(source: Table, columns: list[str]) -> list[tuple[str, str, str | None, bool]]:
    """(name, type, collation, NOT NULL) of the copied columns, as the source declares them."""
    return [
        (c, source.columns[c].type_sql, source.columns[c].collation, source.columns[c].not_null)
        for c in columns
    ]


def check_unique_key(s: LocalSession, oid: int, target: QualifiedName, keys: Sequence[str]) -> None:
    for index in read_indexes(s, oid, "target indexes"):
        if index.unique and index.plain and sorted(index.columns) == sorted(keys):
            return
    raise FdwConfigError(
        f"upsert needs a unique index or primary key on {list(keys)} in {target} "
        "(ON CONFLICT uses it); create one or adjust key_columns."
    )


def check_finite_watermark(s: LocalSession, table: QualifiedName, column: str, what: str = "") -> None:
    """A watermark at infinity (or NaN, which sorts above every number) lets no later row through."""
    top = s.fetchvalue("read watermark", q.max_text_of(table, column))
    if top is not None and top.strip().lower() in NON_FINITE:
        raise FdwError(
            f"{what or table} has {column} = {top!r}: a watermark bound there would let no later row "
            "through, so every following run would copy nothing. Nothing was changed; leave such rows "
            f"out with where= (e.g. {column} < 'infinity'), fix them, or copy with mode='replace'.",
            step="check watermark",
        )
