"""The direct COPY path: whether it may be used for a copy, and in which COPY format.

The direct path reads the remote table behind a foreign table with ``COPY … TO STDOUT`` over the
``postgres_fdw`` connection instead of through postgres_fdw. It must give exactly the rows the FDW
path gives, so before it is used:

1. **Same table.** The connection's ``host``/``hostaddr``/``port``/``dbname`` must equal the foreign
   server's options, and the table read is the foreign table's ``schema_name``/``table_name`` (and
   each column's ``column_name``). A connection to another database is never read.
2. **Same values.** postgres_fdw pins ``search_path``, ``TimeZone``, ``DateStyle``, ``IntervalStyle``
   and ``extra_float_digits`` in its remote sessions and converts the text it receives with the
   input functions of the foreign table's DECLARED types, in the local session. The direct remote
   session is pinned the same way (libpq ``options``; ``client_encoding`` = the local database's
   encoding, as postgres_fdw sets it), and:

   - **binary** COPY is used only when every column's remote type is exactly the declared type
     (same built-in type OID and type modifier): binary values then carry the same bits;
   - otherwise **text** COPY: the remote prints with the pinned settings and the local session's
     input functions of the declared types read the text, which is what postgres_fdw does;
   - the **FDW path** is used (``transport="auto"``, said in the log) or the copy refused
     (``transport="copy"``) when neither reproduces the FDW path: a ``where`` with
     ``transport="auto"`` (the FDW path evaluates it locally, the direct path on the remote), or
     conditions on columns whose remote type or name differs from the declared one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.catalog import parse_options
from airflow_provider_fdw.compat import DriverError, error_fields, parameter_status, sql
from airflow_provider_fdw.exceptions import INSUFFICIENT_PRIVILEGE, FdwConfigError, FdwError
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.predicate import parse_where
from airflow_provider_fdw.session import LocalSession

TRANSPORTS = ("fdw", "copy", "auto")
DEFAULT_TRANSPORT = "fdw"

# What postgres_fdw's connection.c (configure_remote_session) sets in every remote session.
PINNED_SETTINGS = (
    ("search_path", "pg_catalog"),
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
)
FIRST_NON_BUILTIN_OID = 10000  # types below keep their OID on every server (binary COPY embeds OIDs)


# Built-in types whose VALUES are OIDs of objects (q.OBJECT_REFERENCE_TYPES: an object's name in
# text, its OID in binary): the remote's OIDs are not the local objects', so they travel as text
# (printed under the pinned search_path, read by the local input function), as postgres_fdw reads
# them. Arrays of them too. So do built-in types without a binary form (aclitem: "no binary output
# function available"; an array of them is sent by array_send, which fails the same way).
TEXT_ONLY_TYPES = frozenset({"aclitem"})


def binary_safe(type_oid: int, qualified_name: str) -> bool:
    """Whether a value of this local type carries the same meaning in binary on any server."""
    schema, _, name = qualified_name.partition(".")
    element = name.removeprefix("_")
    text_only = schema == "pg_catalog" and (element in q.OBJECT_REFERENCE_TYPES or element in TEXT_ONLY_TYPES)
    return type_oid < FIRST_NON_BUILTIN_OID and not text_only


_LIBPQ_DEFAULTS = {"port": "5432"}
LOCKABLE_RELKINDS = ("r", "p", "v")  # what LOCK TABLE accepts (not a materialized or foreign table)


@dataclass(frozen=True)
class DirectRead:
    """How the direct path reads: COPY format and the encoding both sessions speak."""

    binary: bool
    client_encoding: str
    # why the snapshot holder cannot lock the remote relation (snapshot.py); "": it can
    unlocked: str = ""


def pinned_locally() -> sql.Composed:
    """The pinned settings as ``SET LOCAL`` statements, for every transaction that reads the remote.

    libpq ``options`` set them for the session, which a pooler drops (PgBouncer with
    ``ignore_startup_parameters = options``: the role's IntervalStyle then printed intervals the
    target misread) or does not carry to the next transaction. ``SET`` takes no snapshot, so they may
    come before ``SET TRANSACTION SNAPSHOT``."""
    return sql.SQL("; ").join(
        sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(value))
        for name, value in PINNED_SETTINGS
    )


def pinned_params(params: Mapping[str, Any], client_encoding: str | None = None) -> dict[str, Any]:
    """libpq parameters for the direct remote session: pinned like postgres_fdw's remote sessions."""
    pinned = " ".join(f"-c {name}={value}" for name, value in PINNED_SETTINGS)
    existing = str(params.get("options") or "").strip()
    out = {**params, "options": f"{existing} {pinned}".strip()}
    if client_encoding:
        out["client_encoding"] = client_encoding
    return out


class EarlyConnect:
    """The remote connection of the direct path, opened in a thread while the run reads the local
    catalog (the two are independent: a TCP and authentication round trip against a few catalog
    reads). Called as ``connect(client_encoding=...)`` by :func:`plan_direct`, it hands over that
    connection, or raises what connecting raised; with another encoding it connects anew. No table
    is read over it before :func:`plan_direct` has checked that it reaches the foreign table's
    server. Single use: :meth:`close` (right after the path is chosen) closes it when the run did not
    take it, so a run that reads through postgres_fdw holds no second remote session.
    """

    def __init__(self, connect: Callable[..., Any], client_encoding: str | None) -> None:
        self._connect = connect
        self._encoding = client_encoding
        self._pending: Future[Any] | None = Future()
        # A daemon thread: a connect that outlives the run (bounded by connect_timeout) never holds
        # up the worker's exit.
        threading.Thread(
            target=_settle,
            args=(self._pending, connect, client_encoding),
            name="fdw-remote-connect",
            daemon=True,
        ).start()

    @classmethod
    def start(cls, connect: Callable[..., Any] | None, plan: Any, s: LocalSession) -> EarlyConnect | None:
        """Start connecting when the run may read directly (not for ``transport="auto"`` with a
        ``where``, which reads through postgres_fdw); the local database's encoding is what
        :func:`plan_direct` asks for (the server reported it when the session connected)."""
        if connect is None or plan.transport == "fdw" or (plan.transport == "auto" and plan.where):
            return None
        return cls(connect, parameter_status(s.conn, "server_encoding"))

    def __call__(self, client_encoding: str | None = None) -> Any:
        pending, self._pending = self._pending, None
        if pending is not None and client_encoding == self._encoding:
            return pending.result()
        if pending is not None:
            _close_when_done(pending)
        return self._connect(client_encoding=client_encoding)

    def close(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            _close_when_done(pending)

    def __enter__(self) -> EarlyConnect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _settle(future: Future[Any], connect: Callable[..., Any], client_encoding: str | None) -> None:
    try:
        future.set_result(connect(client_encoding=client_encoding))
    except BaseException as exc:  # handed to the caller of EarlyConnect, as connecting would raise it
        future.set_exception(exc)


def _close_when_done(pending: Future[Any]) -> None:
    def close(done: Future[Any]) -> None:
        if done.exception() is None:
            done.result().close()

    pending.add_done_callback(close)


def server_mismatches(server_options: Mapping[str, str], params: Mapping[str, Any]) -> list[str]:
    """Where the connection and the foreign server disagree on which database they reach."""
    problems = []
    for key in ("host", "hostaddr", "port", "dbname"):
        default = _LIBPQ_DEFAULTS.get(key)
        server_value = server_options.get(key) or default
        conn_value = params.get(key)
        conn_value = str(conn_value) if conn_value not in (None, "") else default
        if key == "dbname" and server_value is None:
            server_value = server_options.get("user")  # libpq's default database is the user name
        if key == "host":
            server_value = server_value.lower() if server_value else None
            conn_value = conn_value.lower() if conn_value else None
        if server_value != conn_value:
            problems.append(f"{key} {conn_value!r} (connection) vs {server_value!r} (server)")
    return problems


def mapped_user(mapping: tuple[Any, ...] | None) -> str | None:
    """The remote user of the user mapping (a row of MAPPED_USER_QUERY) when its options say it; None
    when they do not or are hidden (PUBLIC's mapping from a role that does not own the server)."""
    return None if mapping is None or not mapping[0] else mapping[1]


# The roles the remote role has (including itself): read as the foreign table reads (through
# postgres_fdw, a session-private foreign table over information_schema.enabled_roles) and over the
# direct connection. Equal sets mean one role: two roles cannot each be a member of the other.
ROLE_PROBE = QualifiedName("pg_temp", "fdw_mapped_roles")
ENABLED_ROLES_QUERY = sql.SQL("SELECT role_name::text FROM information_schema.enabled_roles")
ROLE_COUNT_QUERY = sql.SQL("SELECT count(*) FROM pg_catalog.pg_roles")


def login_role_differs(cur: Any, mapped_roles: frozenset[str]) -> str | None:
    """Why the direct connection (``cur``) may not be the user mapping's remote role, whose roles
    :func:`fdw_roles` read; None when it is."""
    cur.execute(ENABLED_ROLES_QUERY)
    if frozenset(r for (r,) in cur.fetchall()) != mapped_roles:
        return "(another role)"
    cur.execute(ROLE_COUNT_QUERY)
    if len(mapped_roles) == cur.fetchone()[0]:  # superusers have every role: two look alike
        return "(a role that has every role, a superuser: it cannot be told apart)"
    return None


def probe_mapped_roles(
    s: LocalSession, server_name: str, new_session: Callable[[], LocalSession] | None
) -> frozenset[str] | None:
    """:func:`fdw_roles` in a transaction that ends at once: postgres_fdw keeps its remote transaction
    open until the local one ends, so inside a run's transaction (a mirror's) it reads in another
    session (``new_session``; None when there is none)."""
    if not s.in_transaction_block:
        return fdw_roles(s, server_name)
    if new_session is None:
        return None
    other = new_session()
    try:
        return fdw_roles(other, server_name)
    finally:
        other.close()


def fdw_roles(s: LocalSession, server_name: str) -> frozenset[str] | None:
    """The remote role's roles as postgres_fdw logs in for the current role (None when that fails:
    no usable user mapping); the probe table is gone afterwards (:meth:`LocalSession.undone`)."""
    step = "read the mapping's remote role"
    with s.undone(step):
        try:
            s.execute(
                step,
                q.create_temp_foreign_table(
                    ROLE_PROBE.name,
                    server_name,
                    [("role_name", "text", None, {})],
                    {"schema_name": "information_schema", "table_name": "enabled_roles"},
                ),
                quiet=True,
            )
            select = sql.SQL("SELECT role_name FROM {}").format(sql.Identifier(*ROLE_PROBE))
            return frozenset(r for (r,) in s.fetchall(step, select))
        except FdwError:
            return None


def same_type(remote: tuple[Any, ...], local: tuple[Any, ...]) -> bool:
    """(oid, typmod, format_type, qualified name) of two columns: is it the same type on both servers?

    Built-in types have the same OID everywhere; others (enums, domains, composites) are matched by
    their schema-qualified name, so they count as the same type but never travel in binary.
    """
    if remote[1] != local[1]:
        return False
    if remote[0] < FIRST_NON_BUILTIN_OID or local[0] < FIRST_NON_BUILTIN_OID:
        return remote[0] == local[0]
    return remote[3] == local[3]


def plan_direct(
    s: LocalSession,
    plan: Any,
    source: Any,
    columns: list[str],
    connect: Callable[..., Any] | None,
    identity: Mapping[str, Any] | None,
    log: Any,
    keep: Callable[[Any], None] | None = None,
    new_session: Callable[[], LocalSession] | None = None,
) -> DirectRead | None:
    """Decide the path: a :class:`DirectRead`, or None for the FDW path (why is logged).

    With ``transport="copy"`` every reason not to read directly is a :class:`FdwConfigError`
    raised before anything changed. ``keep``: given the remote connection opened here (outside a
    transaction) instead of closing it, so the run reuses it; the caller then closes it.
    ``new_session``: another local session, for learning the user mapping's remote role when ``s``
    is inside a run's transaction.
    """
    transport = plan.transport
    if transport == "fdw":
        return None
    if connect is None or identity is None:
        raise FdwConfigError(f"transport={transport!r} reads the remote directly: pass fdw_conn_id.")

    def fall_back(reason: str) -> DirectRead | None:
        if transport == "copy":
            raise FdwConfigError(f"transport='copy' cannot read {plan.source} directly: {reason}.")
        log.info("Direct COPY not used for %s (%s): copying through postgres_fdw.", plan.source, reason)
        return None

    if not source.is_foreign:
        return fall_back(f"{plan.source} is not a foreign table")
    with s.transaction():
        row = s.fetchone("read foreign server", q.SERVER_OPTIONS_QUERY, (source.server_name,))
        server_options = parse_options(row[0] if row else None)
        local_types = {
            r[0]: tuple(r[1:])
            for r in s.fetchall("read column types", q.LOCAL_COLUMN_TYPES_QUERY, (source.oid,))
        }
        encoding = s.fetchvalue("read encoding", q.SERVER_ENCODING_QUERY)
        mapping = s.fetchone("read user mapping", q.MAPPED_USER_QUERY, (source.server_name,))
    mismatches = server_mismatches(server_options, identity)
    if mismatches:
        return fall_back(
            f"the connection does not reach the server {source.server_name} of the foreign table "
            f"({'; '.join(mismatches)})"
        )
    # It must also read as the same remote role: two roles may see other rows (policies) and columns.
    login, user = identity.get("user"), mapped_user(mapping)
    other_role = f"the connection logs in as {login!r}, the foreign table reads as its user mapping's"
    if mapping is None:
        return fall_back("the current role has no user mapping for the foreign table's server")
    if user is not None and user != login:
        return fall_back(f"{other_role} {user!r}")
    mapped_roles = None
    if user is None:  # its options are hidden or name no user: ask the remote who it is
        mapped_roles = probe_mapped_roles(s, source.server_name, new_session)
        if mapped_roles is None:
            return fall_back("the foreign table's user mapping could not be used to learn its remote role")
    condition_columns = {
        c for c in (plan.watermark_column, plan.split_column if plan.parallelism > 1 else None) if c
    }
    if plan.where and transport == "auto":
        return fall_back(
            "where is evaluated locally on the FDW path; transport='copy' evaluates it on the remote"
        )
    # Conditions are written with local column names and evaluated on the remote table: where can
    # name any column, so then every column must keep its name (and, below, its type).
    filtered = set(source.columns) if plan.where else condition_columns
    remote_name = {name: col.options.get("column_name", name) for name, col in source.columns.items()}
    renamed = sorted(c for c in filtered if remote_name[c] != c)
    if renamed:
        return fall_back(f"conditions name columns the remote calls differently: {renamed}")
    try:
        remote = connect(client_encoding=encoding)
    except DriverError as exc:
        if transport == "copy":
            raise FdwError(
                f"Could not connect to the remote for the direct copy: {error_fields(exc)['message']}",
                step="connect to remote",
            ) from None
        return fall_back(f"the remote is not reachable from this worker: {error_fields(exc)['message']}")
    kept = False
    try:
        with remote.cursor() as cur:
            cur.execute(q.REMOTE_COLUMN_TYPES_QUERY, tuple(source.remote))
            rows = cur.fetchall()
            remote_types = {r[0]: tuple(r[1:5]) for r in rows}
            relkind, may_lock = (rows[0][5], rows[0][6]) if rows else (None, False)
            if relkind == "v" and may_lock:  # a security_invoker view's tables are checked as this role
                may_lock = lock_allowed(cur, source.remote)
            another = None if mapped_roles is None else login_role_differs(cur, mapped_roles)
        remote.rollback()
        if another:
            return fall_back(f"{other_role} {another}")
        if remote_types and plan.where:
            parse_where(remote, source.remote, plan.where)
        if keep is not None:
            keep(remote)
            kept = True
    finally:
        if not kept:
            remote.close()
    if not remote_types:
        return fall_back(f"the remote table {source.remote} is not visible over the connection")
    missing = sorted(remote_name[c] for c in columns if remote_name[c] not in remote_types)
    if missing:
        return fall_back(f"the remote table {source.remote} has no column(s) {missing}")
    differ = {
        c: (remote_types[remote_name[c]][2], local_types[c][2])
        for c in {*columns, *filtered}
        if remote_name[c] in remote_types and not same_type(remote_types[remote_name[c]], local_types[c])
    }
    unequal = sorted(c for c in differ if c in filtered)
    if unequal:
        return fall_back(
            "conditions are evaluated on the remote, where these columns have other types: "
            + ", ".join(f"{c} is {differ[c][0]} there, {differ[c][1]} here" for c in unequal)
        )
    binary = not differ and all(binary_safe(local_types[c][0], local_types[c][3]) for c in columns)
    if binary:
        log.info("Direct COPY of %s: binary (every remote type is the declared type).", plan.source)
    else:
        why = [f"{c} is {differ[c][0]} remotely, declared {differ[c][1]}" for c in sorted(differ)]
        why += [
            f"{c} is {local_types[c][2]}"
            for c in columns
            if c not in differ and not binary_safe(local_types[c][0], local_types[c][3])
        ]
        log.info(
            "Direct COPY of %s: text, read by the declared types' input functions like postgres_fdw (%s).",
            plan.source,
            "; ".join(why),
        )
    return DirectRead(binary, encoding, lock_refusal(relkind, may_lock))


def lock_allowed(cur: Any, relation: QualifiedName) -> bool:
    """Whether this role may LOCK ``relation`` (a view: PostgreSQL checks the tables of a
    security_invoker one as the caller, which the catalog does not say), tried without waiting in a
    savepoint and undone at once; a lock someone else holds still means it may."""
    cur.execute(q.LOCK_PROBE)
    try:
        cur.execute(q.lock_access_share(relation, nowait=True))
    except DriverError as exc:
        cur.execute(q.LOCK_PROBE_UNDO)
        return error_fields(exc)["sqlstate"] != INSUFFICIENT_PRIVILEGE
    cur.execute(q.LOCK_PROBE_UNDO)
    return True


def lock_refusal(relkind: str | None, may_lock: bool) -> str:
    """Why LOCK TABLE … IN ACCESS SHARE MODE cannot be taken on the remote relation ("": it can)."""
    if relkind not in LOCKABLE_RELKINDS:
        return "it is not a table or view: LOCK TABLE takes no materialized view or foreign table"
    if not may_lock:
        return (
            "the remote role has no table-level privilege LOCK accepts on it (or, for a security_invoker "
            "view, on the tables it reads), SELECT on some columns only"
        )
    return ""
