"""The watermark of incremental copies (append/upsert), recorded in a small state table.

Reading ``max(watermark)`` from the target costs a scan of the whole target on every run (twice: for
the bound, and for the value reported after the merge). Instead each run records the watermark it
reached in ``<target schema>.fdw_copy_state``, in the SAME transaction as the merge: the recorded
value moves only when the copied rows committed, so a run that fails anywhere before that commit
leaves it where it was, and its retry reads the same rows again.

A recorded value is used only while it describes the target: the same table (oid), the same storage
(relfilenode, and those of its partitions or inheritance children: a TRUNCATE of any of them, or a
replace that swapped in a new table, changes it) and the same watermark column. Otherwise (the
first incremental run, a replaced target, a new watermark column) the run reads
``max(watermark)`` from the target as before, and records the value it reaches.
A replace forgets its source's record and restarts the other feeds' in its transaction
(:func:`replaced`; an in-place one keeps oid and relfilenode, a rename swap's table is new).

A record belongs to one feed of the target (:class:`Feed`: the source as the copy names it and its
server): two sources appending into one table each keep their own. The ``where`` is not part of it:
a filter templated per run (``created_at < '{{ data_interval_end }}'``) or edited is the same feed.
When other feeds have records of the table, a run without a valid record of its own does not read
max() (theirs): an empty target (TRUNCATE) is copied whole and the others restart; a rewritten one
(VACUUM FULL, a partition added or dropped) keeps the feed's record of the table; without one an
upsert starts from its first row (matched by key) and an append is refused with the statements
that hand a record over or start the feed (a record with target_oid 0, set by hand).
A record an earlier version made for the whole target (source_table '') is taken over by the first
feed that runs; its table is upgraded in place (:func:`ensure_feeds`).

The value is kept as text (one table serves watermarks of every type) written with
``DateStyle = ISO`` so that it reads back to the same value whatever a later session's settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.compat import Fragment, sql
from airflow_provider_fdw.exceptions import INSUFFICIENT_PRIVILEGE, FdwConfigError, FdwError
from airflow_provider_fdw.locks import lock_object
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.session import LocalSession

STATE_TABLE = "fdw_copy_state"


@dataclass(frozen=True)
class Bound:
    """Where an incremental run starts: ``value`` (the watermark reached), ``bound`` (lowered by the
    overlap), and whether it came from the state table (``recorded``) or from ``max()`` of the target."""

    value: Any
    bound: Any
    recorded: bool


@dataclass(frozen=True)
class WatermarkType:
    """The watermark column's type as a bound needs it: ``base``, the built-in type under its domains
    (None when it is not built in), and ``category`` (``pg_type.typcategory``: N numeric, D date/time,
    T interval …); ``oid`` and ``typmod``: that type's OID and modifier (the column's, or its
    innermost domain's), what a declared type keeps (bulkcopy/watermark_types.py)."""

    base: str | None
    category: str
    oid: int = 0
    typmod: int = -1

    @property
    def bound_type(self) -> str | None:
        """The type the bound is cast to. Numbers only: psycopg writes them untyped, so a real's bound
        would be compared as float8; dates and times it writes typed already, and text stays untyped
        (the remote reads it as the column's type)."""
        return self.base if self.category == "N" else None


def read_type(s: LocalSession, relation_oid: int, column: str) -> WatermarkType:
    row = s.fetchone("read watermark type", q.WATERMARK_TYPE_QUERY, ([relation_oid], column))
    if row is None:  # the column was read from the same catalog just before
        raise FdwError(f"watermark column {column} vanished from the catalog.", step="read watermark type")
    return WatermarkType(row[1], row[2], int(row[3]), int(row[4]))


# Interval text that is only a number: seconds to PostgreSQL, a number to whoever wrote it.
_PLAIN_NUMBER = re.compile(r"\s*\+?\d+(?:\.\d+)?\s*")


def overlap_for(overlap: Any, column: str, type_sql: str, kind: WatermarkType) -> Any:
    """``overlap`` (checked by :func:`.plan.check_overlap`) as the watermark's type subtracts it: a
    number for a numeric watermark (number text such as ``'10'`` becomes one), an interval for a
    date, time or interval one (a whole number of days also for a date); anything else is refused
    before anything changes (``'10'`` was cast to interval, and ``bigint - interval`` failed the
    second run)."""
    if overlap is None:
        return None
    is_number = isinstance(overlap, int | float | Decimal)
    if kind.category == "N":
        if is_number:
            return overlap
        if isinstance(overlap, str) and _PLAIN_NUMBER.fullmatch(overlap):
            return Decimal(overlap.strip())
        raise FdwConfigError(
            f"overlap {overlap!r} is an interval but watermark_column {column} is {type_sql}: give a "
            "number (e.g. overlap=10) to subtract from it."
        )
    if kind.category in ("D", "T"):
        if isinstance(overlap, timedelta) or (
            isinstance(overlap, str) and not _PLAIN_NUMBER.fullmatch(overlap)
        ):
            return overlap
        if kind.base == "date" and isinstance(overlap, int):  # date - integer: days
            return overlap
        raise FdwConfigError(
            f"overlap {overlap!r} is a number but watermark_column {column} is {type_sql}: give an "
            "interval with its unit (e.g. '10 minutes') or a timedelta."
        )
    raise FdwConfigError(
        f"overlap applies to a numeric, date or time watermark_column; {column} is {type_sql}."
    )


@dataclass(frozen=True)
class Feed:
    """One copy feeding a target: its source as the copy names it and that source's server ('' for a
    local one). A target's records are one per feed: two sources appending into one table each start
    from their own watermark."""

    source: str
    server: str

    @classmethod
    def of(cls, source: QualifiedName, server: str | None) -> Feed:
        return cls(str(source), server or "")

    def __str__(self) -> str:
        return f"{self.source} on server {self.server}" if self.server else self.source


def read_bound(
    s: LocalSession,
    target: QualifiedName,
    oid: int,
    column: str,
    type_sql: str,
    feed: Feed,
    overlap: Any = None,
    any_storage: bool = False,
) -> Bound | None:
    """The recorded watermark of ``feed`` into ``target`` when it still describes the target (or one
    an earlier version recorded for the whole target, which the first feed to run takes over, or a
    start set by hand: target_oid 0); None otherwise. ``any_storage``: a record of this table whatever
    its storage now (a target other feeds share, not empty: its rows were kept)."""
    state = state_table(target)
    if not usable(s, state, target):
        return None
    ensure_feeds(s, state)
    s.execute("set datestyle", SET_ISO, quiet=True)
    params = {"target": target.name, "column": column, "oid": oid, **feed_params(feed)}
    statement = read_statement(state, type_sql, overlap, any_storage)
    row = s.fetchone("read recorded watermark", statement, params)
    if row is None:
        return None
    return Bound(row[0], row[1], True)


def other_feeds(s: LocalSession, target: QualifiedName, oid: int, feed: Feed) -> list[Feed]:
    """The other feeds with a record of ``target`` (this table, whatever its storage now: a VACUUM
    FULL or CLUSTER keeps their rows; or a start set by hand): the target may hold their rows, so its
    max() is not this feed's watermark. Newest first."""
    state = state_table(target)
    if not usable(s, state, target):
        return []
    ensure_feeds(s, state)
    params = {"target": target.name, "oid": oid, **feed_params(feed)}
    rows = s.fetchall("read other feeds", others_statement(state), params)
    return [Feed(*row) for row in rows]


def shared_target_error(
    s: LocalSession, target: QualifiedName, feed: Feed, others: list[Feed], column: str
) -> str:
    """Why an append of a feed without a record of its own into a target other feeds write is
    refused, and the statements that let it go on."""
    state = state_table(target)
    other = others[0]
    hand_over = sql.SQL(
        "UPDATE {} SET source_table = {}, source_server = {} WHERE target_table = {} "
        "AND source_table = {} AND source_server = {}"
    ).format(
        sql.Identifier(*state),
        *(sql.Literal(v) for v in (feed.source, feed.server, target.name)),
        *(sql.Literal(v) for v in (other.source, other.server)),
    )
    start = sql.SQL(
        "INSERT INTO {} (target_table, source_table, source_server, watermark_column, "
        "target_oid, watermark) VALUES ({}, {}, {}, {}, 0, NULL)"
    ).format(
        sql.Identifier(*state),
        *(sql.Literal(v) for v in (target.name, feed.source, feed.server, column)),
    )
    names = "; ".join(str(f) for f in others)
    return (
        f"{target} is also fed by other copies, each with its own watermark ({names}), and this copy "
        f"({feed}) has none: max({column}) of {target} is theirs and would skip this copy's older "
        "rows, while appending all of them would append again any already there under another name. "
        "Nothing was changed. If this copy replaces one of them (a renamed or re-imported source, "
        f"another server), hand its record over:\n{s.render(hand_over)};\n"
        f"If its rows are not in {target} yet, start it from its first row (or write the value to "
        f"continue after instead of NULL):\n{s.render(start)};\nthen run it again."
    )


def read_target_bound(s: LocalSession, target: QualifiedName, column: str, overlap: Any = None) -> Bound:
    """``max(column)`` of the target and that value lowered by the overlap: one scan of the target."""
    statement = sql.SQL("SELECT m, {} FROM (SELECT max({}) AS m FROM {}) AS t").format(
        _lowered("m", overlap), sql.Identifier(column), sql.Identifier(*target)
    )
    value, bound = s.fetchrow("read watermark", statement)
    return Bound(value, bound, False)


def record(
    s: LocalSession,
    target: QualifiedName,
    oid: int,
    column: str,
    type_sql: str,
    previous: Any,
    staging: QualifiedName,
    feed: Feed,
) -> Any:
    """Record ``greatest(previous, max(column) of staging)`` for ``feed`` into ``target``; return it.
    A record an earlier version made for the whole target is dropped: this feed took it over.

    Call it inside the merge's transaction: the record commits (or rolls back) with the rows.
    """
    state = state_table(target)
    if not usable(s, state, target):
        # Two targets in one schema may create the table at once: IF NOT EXISTS alone is not enough.
        lock_object(s, "copy state", str(state))
        if not usable(s, state, target):  # else another run made it while this one waited
            s.execute(f"create {state}", create_statement(state))
            s.execute(f"create {state} key", feed_index_statement(state), quiet=True)
    ensure_feeds(s, state)
    s.execute("set datestyle", SET_ISO, quiet=True)
    value = s.fetchvalue(
        "record watermark",
        record_statement(state, type_sql, column, staging),
        {"target": target.name, "column": column, "oid": oid, "previous": previous, **feed_params(feed)},
    )
    s.execute(
        "drop the record of an earlier version",
        sql.SQL("DELETE FROM {} WHERE target_table = %s AND source_table = ''").format(
            sql.Identifier(*state)
        ),
        (target.name,),
        quiet=True,
    )
    return value


def restart_other_feeds(s: LocalSession, target: QualifiedName, oid: int | None, feed: Feed) -> None:
    """Every other feed's record of ``target`` (of the table ``oid``; None: of any table of that name)
    starts again from its first row (a start set by hand: target_oid 0), in the transaction of a run
    after which their rows are gone: one that found the target empty (a TRUNCATE), a replace."""
    state = state_table(target)
    if usable(s, state, target):
        s.execute(
            "restart other feeds",
            sql.SQL(
                "UPDATE {} SET target_oid = 0, target_filenode = NULL, watermark = NULL "
                "WHERE target_table = %(target)s "
                "AND (source_table, source_server) <> (%(source)s, %(server)s) "
                "AND (%(oid)s::oid IS NULL OR target_oid IN (0::oid, %(oid)s::oid))"
            ).format(sql.Identifier(*state)),
            {"target": target.name, "oid": oid, **feed_params(feed)},
            quiet=True,
        )


def replaced(s: LocalSession, target: QualifiedName, feed: Feed) -> None:
    """In a replace's transaction: ``target`` now holds exactly ``feed``'s rows. Its own record (and an
    earlier version's of the whole target) is dropped: its next run reads max(), its rows'. Another
    feed's rows are gone: its record starts again. (A rename swap's new table has another oid, which
    no record names: a feed behind read the replaced feed's max() and never copied its rows again.)"""
    if forget(s, target, feed):
        restart_other_feeds(s, target, None, feed)


def forget(s: LocalSession, target: QualifiedName, feed: Feed) -> bool:
    """Drop ``feed``'s record of ``target`` (and an earlier version's of the whole target, whose state
    table is first given a record per feed, as every run using it does); False: no state table."""
    state = state_table(target)
    if not usable(s, state, target):
        return False
    ensure_feeds(s, state)
    s.execute(
        "forget recorded watermark",
        sql.SQL(
            "DELETE FROM {} WHERE target_table = %(target)s AND (source_table = '' OR "
            "(source_table, source_server) = (%(source)s, %(server)s))"
        ).format(sql.Identifier(*state)),
        {"target": target.name, **feed_params(feed)},
        quiet=True,
    )
    return True


@dataclass(frozen=True)
class TableFiles:
    """A table's oid and the filenode of it and of each descendant (partitions, inheritance children
    at any depth) as (relid, filenode) pairs: what a TRUNCATE, VACUUM FULL or CLUSTER changes."""

    oid: int
    files: tuple[tuple[int, int | None], ...]

    def rewritten_in(self, now: TableFiles) -> bool:
        """Whether ``now`` is another table, or one of these relations has another filenode in it
        (emptied or rewritten). Relations added since (a partition made for new rows, a child a
        routing trigger creates) or gone (a partition dropped by retention) do not count."""
        current = dict(now.files)
        return now.oid != self.oid or any(
            relid in current and current[relid] != node for relid, node in self.files
        )

    def to_json(self) -> list[Any]:
        return [self.oid, [list(f) for f in self.files]]

    @classmethod
    def from_json(cls, data: Any) -> TableFiles:
        return cls(int(data[0]), tuple((int(relid), node) for relid, node in data[1]))


TABLE_FILES_QUERY = sql.SQL(
    "WITH RECURSIVE tree(relid) AS (SELECT %(oid)s::oid UNION "
    "SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.relid) "
    "SELECT relid::bigint, pg_catalog.pg_relation_filenode(relid)::bigint FROM tree ORDER BY 1"
)


def table_files(s: LocalSession, oid: int) -> TableFiles:
    rows = s.fetchall("read target files", TABLE_FILES_QUERY, {"oid": oid})
    return TableFiles(oid, tuple((int(relid), node) for relid, node in rows))


def check_not_rewritten(s: LocalSession, target: QualifiedName, oid: int, start: TableFiles) -> None:
    """Refuse to record a run whose start was read from another table than the one it wrote into, or
    from one of its relations since emptied or rewritten: rows below the start were in it, a TRUNCATE
    took them away, and recorded now the next run would start where this one ended and never copy
    them again. Call it after the write: its lock keeps the table (a TRUNCATE of the table, of a
    partition, waits for it)."""
    if start.rewritten_in(table_files(s, oid)):
        raise FdwError(
            f"{target} (or one of its partitions or children) was emptied or rewritten (TRUNCATE, VACUUM "
            "FULL, CLUSTER, or the table made again) while this copy ran, after it read where to start. "
            "Nothing was changed; the next run starts from the table as it is then.",
            step="check target storage",
        )


def distrust(s: LocalSession, state: QualifiedName, target: QualifiedName) -> str | None:
    """Why the existing ``state`` table may not be used for ``target`` (:data:`TRUST_QUERY`), or None."""
    return state_trust(s, state, target)[1]


def state_trust(s: LocalSession, state: QualifiedName, target: QualifiedName) -> tuple[bool, str | None]:
    """Whether ``state`` exists, and why it may not be used for ``target`` (None: it may), in one
    query: :data:`TRUST_QUERY` returns no row when it does not exist."""
    row = s.fetchone("check state table", TRUST_QUERY, {"state": str(state), "target": str(target)})
    if row is None:
        return False, None
    owned, writable, plain, owner = row
    if not owned:
        return True, (
            f"it belongs to {owner}: not this role, a role it belongs to, a superuser, nor the owner of "
            f"{target} or a role with that owner's privileges"
        )
    if not writable:
        return True, "this role may not SELECT, INSERT, UPDATE and DELETE its rows"
    if not plain:
        return True, "it is not a plain table (it has triggers, rules or row security of its own)"
    return True, None


def usable(s: LocalSession, state: QualifiedName, target: QualifiedName) -> bool:
    """Whether ``state`` exists; an existing one this run may not use stops it, before any change:
    a run that went on without it would leave its record behind the target, and a later run that
    may use it would copy rows again."""
    exists, reason = state_trust(s, state, target)
    if not exists:
        return False
    if reason is not None:
        raise FdwConfigError(
            f"{state} records where incremental copies into {state.schema} start, and this run may not "
            f"use it: {reason}. Nothing was changed; give it to this role (ALTER TABLE … OWNER TO, "
            "GRANT), drop its triggers or rules, or drop it (the next run reads max() of the target)."
        )
    return True


def ensure_feeds(s: LocalSession, state: QualifiedName) -> None:
    """Give a state table an earlier version made (one record per target) a record per feed: its
    records are kept as the whole target's (source_table ''), taken over by the first feed that runs."""
    if s.fetchvalue("check copy state", FEEDS_QUERY, (str(state),)):
        return
    lock_object(s, "copy state", str(state))
    if s.fetchvalue("check copy state", FEEDS_QUERY, (str(state),)):  # another run did it meanwhile
        return
    key = s.fetchvalue("read copy state key", PRIMARY_KEY_QUERY, (str(state),))
    statements = upgrade_statements(state, key)
    try:
        for statement in statements:
            s.execute(f"upgrade {state}", statement)
    except FdwError as exc:
        if exc.sqlstate != INSUFFICIENT_PRIVILEGE:
            raise
        script = ";\n".join(s.render(statement) for statement in statements)
        raise FdwConfigError(
            f"{state} was made by an earlier version (one record per target) and this role may not "
            f"change it to one record per copy feeding a target ({exc}). Nothing was changed; its owner "
            f"can run:\n{script};"
        ) from None


def state_table(target: QualifiedName) -> QualifiedName:
    return QualifiedName(target.schema, STATE_TABLE)


# -- statements ---------------------------------------------------------------------------------------

# Whether a state table may be used. Its owner: this role; a superuser; the target's owner or a role
# with the owner's privileges (who could as well put a trigger on the target, which fires as the
# role that copies: its columns' defaults and checks give such an owner nothing more); or, for a role
# that is not a superuser (a superuser belongs to every role), a role it belongs to. Not a table
# another role with CREATE on the schema made first, with code that would run as this role or move
# the watermark. Writable by this role, and with no trigger, rule or row security of its own.
TRUST_QUERY = sql.SQL(
    "SELECT c.relowner = r.oid OR o.rolsuper OR c.relowner = t.relowner "
    "  OR pg_catalog.pg_has_role(c.relowner, t.relowner, 'USAGE') "
    "  OR (pg_catalog.pg_has_role(c.relowner, 'MEMBER') AND NOT r.rolsuper), "
    "  pg_catalog.has_table_privilege(c.oid, 'SELECT') AND pg_catalog.has_table_privilege(c.oid, 'INSERT') "
    "  AND pg_catalog.has_table_privilege(c.oid, 'UPDATE') "
    "  AND pg_catalog.has_table_privilege(c.oid, 'DELETE'), "
    "  c.relkind = 'r' AND NOT c.relhasrules AND NOT c.relrowsecurity AND NOT EXISTS ("
    "    SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal), "
    "  o.rolname "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles o ON o.oid = c.relowner "
    "JOIN pg_catalog.pg_roles r ON r.rolname = current_user "
    "LEFT JOIN pg_catalog.pg_class t ON t.oid = to_regclass(%(target)s) "
    "WHERE c.oid = to_regclass(%(state)s)"
)


def storage(table_oid: sql.Composable) -> sql.Composed:
    """What changes when the table's rows are replaced wholesale (TRUNCATE, VACUUM FULL, a swap): its
    relfilenode; for a table with descendants, a hash of its own and every descendant's (partitions and
    inheritance children at any depth, from pg_inherits: pg_partition_tree does not follow plain
    inheritance, where a trigger may route every row to a child). A partitioned table has none of its
    own, so its value is its leaves' hash, as before."""
    return sql.SQL(
        "coalesce((WITH RECURSIVE tree(relid) AS (SELECT {0} UNION "
        "SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.relid) "
        "SELECT (pg_catalog.hashtext(pg_catalog.string_agg("
        "pg_catalog.pg_relation_filenode(tree.relid)::text, ',' ORDER BY tree.relid))::bigint "
        "& 4294967295)::oid FROM tree HAVING count(*) > 1), "
        "pg_catalog.pg_relation_filenode({0}))"
    ).format(table_oid)


# ISO output reads back to the same value under any DateStyle (and timestamptz keeps its offset).
SET_ISO = sql.SQL("SET LOCAL datestyle = 'ISO, YMD'")


def create_statement(state: QualifiedName) -> sql.Composed:
    """One record per feed of a target (:class:`Feed`); the key is :func:`feed_index_statement`."""
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (target_table text NOT NULL, source_table text NOT NULL DEFAULT '', "
        "source_server text NOT NULL DEFAULT '', "
        "watermark_column text NOT NULL, target_oid oid NOT NULL, target_filenode oid, watermark text, "
        "recorded_at timestamptz NOT NULL DEFAULT now())"
    ).format(sql.Identifier(*state))


def feed_index_statement(state: QualifiedName) -> sql.Composed:
    return sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})").format(
        sql.Identifier(f"{STATE_TABLE}_feed"), sql.Identifier(*state), FEED_KEY
    )


def upgrade_statements(state: QualifiedName, key: str | None) -> list[sql.Composed]:
    """An earlier version's table (target_table its primary key ``key``) to one record per feed."""
    table = sql.Identifier(*state)
    statements = [
        sql.SQL(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS source_table text NOT NULL DEFAULT '', "
            "ADD COLUMN IF NOT EXISTS source_server text NOT NULL DEFAULT ''"
        ).format(table)
    ]
    if key is not None:
        statements.append(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, sql.Identifier(key)))
    statements.append(feed_index_statement(state))
    return statements


# The key of a record: the target and the feed (ON CONFLICT names the same expressions).
FEED_KEY = sql.SQL("target_table, source_table, source_server")
# Whether the state table has one record per feed (an earlier version's has one per target).
FEEDS_QUERY = sql.SQL(
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass(%s) "
    "AND attname = 'source_server' AND NOT attisdropped)"
)
PRIMARY_KEY_QUERY = sql.SQL(
    "SELECT (SELECT conname FROM pg_catalog.pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p')"
)
# The record's target and storage still describe the target, or target_oid 0: a start set by hand.
_DESCRIBES = (
    "(target_oid = 0::oid OR (target_oid = %(oid)s::oid AND target_filenode IS NOT DISTINCT FROM {storage}))"
)


def feed_params(feed: Feed) -> dict[str, str]:
    return {"source": feed.source, "server": feed.server}


def read_statement(state: QualifiedName, type_sql: str, overlap: Any, any_storage: bool) -> sql.Composed:
    """(value, value - overlap) of the feed's record (else an earlier version's record of the whole
    target), when it is for this table, storage (unless ``any_storage``) and column."""
    describes = "target_oid IN (0::oid, %(oid)s::oid)" if any_storage else _DESCRIBES
    return sql.SQL(
        "SELECT v, {lowered} FROM (SELECT CAST(watermark AS {type}) AS v FROM {state} "
        "WHERE target_table = %(target)s AND watermark_column = %(column)s AND " + describes + " "
        "AND (source_table, source_server) IN ((%(source)s, %(server)s), ('', '')) "
        "ORDER BY source_table = '' LIMIT 1) AS r"
    ).format(
        lowered=_lowered("v", overlap),
        type=Fragment(type_sql),
        state=sql.Identifier(*state),
        storage=storage(sql.SQL("target_oid")),
    )


def others_statement(state: QualifiedName) -> sql.Composed:
    return sql.SQL(
        "SELECT source_table, source_server FROM {state} WHERE target_table = %(target)s "
        "AND source_table <> '' AND (source_table, source_server) "
        "<> (%(source)s, %(server)s) AND target_oid IN (0::oid, %(oid)s::oid) ORDER BY recorded_at DESC"
    ).format(state=sql.Identifier(*state))


def record_statement(
    state: QualifiedName, type_sql: str, column: str, staging: QualifiedName
) -> sql.Composed:
    """Upsert the feed's record: the greater of the previous value and the newest staged row's;
    returns it."""
    return sql.SQL(
        "INSERT INTO {state} AS s (target_table, source_table, source_server, "
        "watermark_column, target_oid, target_filenode, watermark, recorded_at) "
        "SELECT %(target)s, %(source)s, %(server)s, %(column)s, %(oid)s::oid, {storage}, "
        "greatest(CAST(%(previous)s AS {type}), max({column}))::text, pg_catalog.now() FROM {staging} "
        "ON CONFLICT ({key}) DO UPDATE SET watermark_column = excluded.watermark_column, "
        "target_oid = excluded.target_oid, target_filenode = excluded.target_filenode, "
        "watermark = excluded.watermark, recorded_at = now() "
        "RETURNING CAST(s.watermark AS {type})"
    ).format(
        state=sql.Identifier(*state),
        type=Fragment(type_sql),
        column=sql.Identifier(column),
        staging=sql.Identifier(*staging),
        storage=storage(sql.SQL("%(oid)s::oid")),
        key=FEED_KEY,
    )


def _lowered(name: str, overlap: Any) -> sql.Composable:
    """``name - overlap`` (as :func:`overlap_for` made it); interval text such as '5 minutes' must be
    said to be an interval."""
    if overlap is None:
        return sql.Identifier(name)
    if isinstance(overlap, str):
        return sql.SQL("{} - CAST({} AS interval)").format(sql.Identifier(name), sql.Literal(overlap))
    return sql.SQL("{} - {}").format(sql.Identifier(name), sql.Literal(overlap))


# -- the source side: an index that serves the watermark filter ---------------------------------------


def index_advice(remote: QualifiedName, column: str, row: tuple[Any, ...] | None) -> sql.Composed | None:
    """The CREATE INDEX to run on the source when no index leads with ``column`` (tables only;
    ``row``: bulkcopy/remote_indexes.py's probe)."""
    if row is None or row[0] not in ("r", "p", "m") or row[1]:
        return None
    return sql.SQL("CREATE INDEX ON {} ({})").format(sql.Identifier(*remote), sql.Identifier(column))
