"""Materialized views in the LOCAL database: create on first run, refresh in dependency order.

Each view is refreshed in its own transaction. PostgreSQL swaps the contents at commit, so a failed
or timed-out refresh leaves the previous contents intact; ``CONCURRENTLY`` additionally lets readers
keep querying the view while it runs (a plain refresh makes them wait, never see it empty).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from graphlib import TopologicalSorter
from typing import Any, Literal

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.catalog import refresh_reads
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.locks import LockTimeout, create_schema, lock_object
from airflow_provider_fdw.names import NAMEDATALEN, QualifiedName, check_identifier, parse_qualified_name
from airflow_provider_fdw.remote_answers import check_servers_read, servers_to_check_exist
from airflow_provider_fdw.session import LocalSession

Concurrently = bool | Literal["auto"]


@dataclass(frozen=True)
class IndexSpec:
    """An index the user wants on a materialized view (created IF NOT EXISTS on every run)."""

    columns: tuple[str, ...]
    unique: bool = False
    using: str = "btree"
    name: str | None = None

    def index_name(self, view: QualifiedName) -> str:
        if self.name:
            return self.name
        return bounded_name(view.name, *self.columns, "key" if self.unique else "idx")


@dataclass(frozen=True)
class MatviewPlan:
    """Validated arguments of a refresh: the views, and how to create them when missing."""

    views: tuple[QualifiedName, ...]
    concurrently: Concurrently
    query: str | None
    indexes: tuple[IndexSpec, ...]
    lock_timeout: str | None
    analyze: bool


def plan_refresh(
    views: str | Sequence[str],
    concurrently: Concurrently = "auto",
    query: str | None = None,
    unique_key: Sequence[str] | str | None = None,
    indexes: Sequence[Any] | None = None,
    lock_timeout: int | float | str | None = None,
    analyze: bool = True,
) -> MatviewPlan:
    """Check every argument (before any SQL runs) and return a plan."""
    names = [views] if isinstance(views, str) else list(views or [])
    if not names:
        raise FdwConfigError("views must name at least one materialized view ('schema.name').")
    parsed = tuple(parse_qualified_name(v, "views entry") for v in names)
    if len(set(parsed)) != len(parsed):
        raise FdwConfigError("views lists the same materialized view twice.")
    if concurrently not in (True, False, "auto"):
        raise FdwConfigError(f"concurrently must be True, False or 'auto', got {concurrently!r}.")
    if (unique_key or indexes) and not query:
        raise FdwConfigError("unique_key and indexes describe a view to create: pass query too.")
    if query is not None:
        if len(parsed) != 1:
            raise FdwConfigError("query creates one materialized view: pass exactly one name in views.")
        if not isinstance(query, str) or not query.strip():
            raise FdwConfigError("query must be a non-empty SELECT statement.")
    specs = [parse_index(i) for i in indexes or ()]
    if unique_key:
        key = [unique_key] if isinstance(unique_key, str) else list(unique_key)
        specs.insert(0, IndexSpec(tuple(check_identifier(c, "unique_key column") for c in key), unique=True))
    return MatviewPlan(parsed, concurrently, query, tuple(specs), lock_timeout_setting(lock_timeout), analyze)


def refresh_views(session: LocalSession, plan: MatviewPlan, log: Any) -> list[dict[str, Any]]:
    """Create (when ``plan.query`` is set and the view is missing) and refresh every view."""
    created: set[QualifiedName] = set()
    if plan.query is not None:
        view = plan.views[0]
        with session.transaction() as s:
            lock_object(s, "materialized view", str(view))  # two runs creating it: one creates, one waits
            if _state(s, view) is None:
                create_schema(s, view.schema)
                s.execute(f"create materialized view {view}", q.create_materialized_view(view, plan.query))
                check_servers_read(s, refresh_reads(s, view), log)
                s.execute(f"populate {view}", q.refresh_materialized_view(view, concurrently=False))
                created.add(view)
            for spec in plan.indexes:
                s.execute(
                    f"index {view}",
                    q.create_index(view, spec.index_name(view), spec.columns, spec.unique, spec.using),
                )
    results = []
    lock_timeout = LockTimeout(plan.lock_timeout, explicit=True)  # no default: unset waits as long as needed
    order = dependency_order(session, plan.views)
    with session.transaction() as s:
        if servers_to_check_exist(s):  # else no view can read from one: skip each view's catalog walk
            refreshed = [view for view in order if view not in created]
            check_servers_read(s, [read for view in refreshed for read in refresh_reads(s, view)], log)
    for view in order:
        if view in created:
            with session.transaction() as s:
                rows = s.fetchvalue("count rows", q.count_rows(view))
                if plan.analyze:
                    s.execute(f"analyze {view}", q.analyze(view))
            log.info("Created %s with %d rows", view, rows)
            results.append(
                {
                    "view": str(view),
                    "created": True,
                    "concurrently": False,
                    "rows_before": None,
                    "rows_after": rows,
                    "seconds": 0.0,
                }
            )
            continue
        results.append(_refresh_one(session, view, plan, lock_timeout, log))
    return results


def dependency_order(session: LocalSession, views: Sequence[QualifiedName]) -> list[QualifiedName]:
    """The views ordered so that each comes after the listed views it reads (read from the catalog)."""
    with session.transaction() as s:
        oids = {}
        for view in views:
            state = _state(s, view)
            if state is None:
                raise FdwError(
                    f"Materialized view {view} does not exist (pass query= to create it).",
                    step="resolve views",
                )
            oids[state["oid"]] = view
        edges = s.fetchall("read dependencies", q.MATVIEW_DEPENDENCIES_QUERY, {"oids": list(oids)})
    graph: dict[QualifiedName, set[QualifiedName]] = {view: set() for view in views}
    for view_oid, ref_oid in edges:
        graph[oids[view_oid]].add(oids[ref_oid])
    # static_order() keeps independent views in the user's order only by accident; prefer it explicitly.
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    order: list[QualifiedName] = []
    position = {view: i for i, view in enumerate(views)}
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(ready)
        sorter.done(*ready)
    return order


def _refresh_one(
    session: LocalSession, view: QualifiedName, plan: MatviewPlan, lock_timeout: LockTimeout, log: Any
) -> dict[str, Any]:
    started = time.monotonic()
    with session.transaction() as s:
        lock_object(s, "materialized view", str(view))  # overlapping runs refresh one after the other
        lock_timeout.set_local(s, log)  # first, so that every wait in this transaction is bounded
        state = _state(s, view)
        assert state is not None  # dependency_order checked existence
        use_concurrently = _decide_concurrently(view, state, plan.concurrently)
        try:
            rows_before = s.fetchvalue("count rows", q.count_rows(view)) if state["populated"] else None
            s.execute(f"refresh {view}", q.refresh_materialized_view(view, use_concurrently))
        except FdwError as exc:
            raise FdwError(
                f"Refreshing {view} failed; its previous contents are intact. {exc}",
                step="refresh",
                sqlstate=exc.sqlstate,
            ) from None
        rows_after = s.fetchvalue("count rows", q.count_rows(view))
    if plan.analyze:
        with session.transaction() as s:
            s.execute(f"analyze {view}", q.analyze(view))
    seconds = round(time.monotonic() - started, 3)
    log.info(
        "Refreshed %s%s: %s -> %d rows in %.2fs",
        view,
        " concurrently" if use_concurrently else "",
        rows_before,
        rows_after,
        seconds,
    )
    return {
        "view": str(view),
        "created": False,
        "concurrently": use_concurrently,
        "rows_before": rows_before,
        "rows_after": rows_after,
        "seconds": seconds,
    }


def _decide_concurrently(view: QualifiedName, state: Mapping[str, Any], wanted: Concurrently) -> bool:
    if wanted is False:
        return False
    reasons = []
    if not state["populated"]:
        reasons.append("it has never been populated")
    if not state["has_unique_index"]:
        reasons.append("it has no valid UNIQUE index on plain columns without a WHERE clause")
    if not reasons:
        return True
    if wanted is True:
        raise FdwConfigError(
            f"Cannot refresh {view} CONCURRENTLY: {' and '.join(reasons)}. Pass unique_key= when creating "
            "it (or create such an index), or use concurrently='auto'."
        )
    return False


def _state(s: LocalSession, view: QualifiedName) -> dict[str, Any] | None:
    row = s.fetchone("read view", q.RELATION_KIND_QUERY, (view.schema, view.name))
    if row is None:
        return None
    oid, relkind, populated, has_unique_index = row
    if relkind != "m":
        raise FdwConfigError(
            f"{view} is {q.RELKIND_NAMES.get(relkind, 'not a materialized view')}, not a materialized view."
        )
    return {"oid": oid, "populated": populated, "has_unique_index": has_unique_index}


def parse_index(value: Any) -> IndexSpec:
    """An ``indexes`` entry: a column, a list of columns, or ``{"columns", "unique", "using", "name"}``."""
    if isinstance(value, str):
        return IndexSpec((check_identifier(value, "index column"),))
    if isinstance(value, Mapping):
        unknown = set(value) - {"columns", "unique", "using", "name"}
        if unknown:
            raise FdwConfigError(f"Unknown index key(s) {sorted(unknown)}; use columns, unique, using, name.")
        columns = value.get("columns")
        columns = [columns] if isinstance(columns, str) else list(columns or [])
        if not columns:
            raise FdwConfigError(f"Index {dict(value)!r} has no columns.")
        name = value.get("name")
        return IndexSpec(
            tuple(check_identifier(c, "index column") for c in columns),
            unique=bool(value.get("unique", False)),
            using=check_identifier(value.get("using", "btree"), "index method"),
            name=check_identifier(name, "index name") if name is not None else None,
        )
    if isinstance(value, Sequence) and value:
        return IndexSpec(tuple(check_identifier(c, "index column") for c in value))
    raise FdwConfigError(f"Cannot read index {value!r}: give a column, a list of columns or a dict.")


def lock_timeout_setting(value: int | float | str | None) -> str | None:
    """Seconds (number) or a PostgreSQL duration string ('5s', '500ms') -> a lock_timeout value."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise FdwConfigError("lock_timeout must be seconds or a duration such as '5s'.")
    if isinstance(value, int | float):
        if value <= 0:
            raise FdwConfigError("lock_timeout must be positive.")
        return f"{int(value * 1000)}ms"
    text = str(value).strip()
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = text[len(number) :].strip()
    if not number or unit not in ("", "us", "ms", "s", "min", "h", "d"):
        raise FdwConfigError(f"lock_timeout {value!r} is not a duration such as '5s' or '500ms'.")
    try:
        if float(number) <= 0:
            raise FdwConfigError("lock_timeout must be positive.")
    except ValueError:
        raise FdwConfigError(f"lock_timeout {value!r} is not a duration such as '5s' or '500ms'.") from None
    return text


def bounded_name(*parts: str) -> str:
    """Join name parts with ``_``; shorten with a hash suffix when PostgreSQL would truncate it."""
    name = "_".join(parts)
    if len(name.encode()) < NAMEDATALEN:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    head = name.encode()[: NAMEDATALEN - 10].decode(errors="ignore")
    return f"{head}_{digest}"
