"""FdwHook: the postgres_fdw objects of a LOCAL database, built from a REMOTE ``postgres_fdw`` connection.

The hook of the ``postgres_fdw`` connection type itself (form, Test button) is
:class:`~airflow_provider_fdw.hooks.postgres_fdw.PostgresFdwHook`; this hook reads the remote through it.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping, Sequence
from contextlib import suppress
from functools import cached_property
from typing import Any

from airflow.providers.postgres.hooks.postgres import PostgresHook

from airflow_provider_fdw import foreign_tables, servers
from airflow_provider_fdw.backfill import BackfillPlan, backfill
from airflow_provider_fdw.bulkcopy import BulkCopy, CopyPlan, endpoint
from airflow_provider_fdw.bulkcopy.direct import pinned_params
from airflow_provider_fdw.bulkcopy.wiring import copy_engine
from airflow_provider_fdw.cancel import APP_PREFIX, CancelScope
from airflow_provider_fdw.character_sets import server_character_set
from airflow_provider_fdw.compat import DriverError, error_fields, server_version, sql
from airflow_provider_fdw.connection import (
    LIBPQ_SERVER_OPTIONS,
    RemoteServer,
)
from airflow_provider_fdw.exceptions import (
    FdwConfigError,
    FdwError,
)
from airflow_provider_fdw.hooks.mysql_fdw import MySqlFdwHook, MySqlRemote
from airflow_provider_fdw.hooks.postgres_fdw import PostgresFdwHook
from airflow_provider_fdw.lineage import report_hook_lineage
from airflow_provider_fdw.names import (
    QualifiedName,
    check_identifier,
    check_identifiers,
    check_role,
    parse_qualified_name,
)
from airflow_provider_fdw.poolers import POOL_MODE, check_local_connection
from airflow_provider_fdw.privileges import PrivilegeHintingSession
from airflow_provider_fdw.refresh import MatviewPlan, plan_refresh, refresh_views
from airflow_provider_fdw.reimport import ImportPlan, import_schema, plan_import
from airflow_provider_fdw.session import LocalSession, remember_backend
from airflow_provider_fdw.timeouts import (
    DEFAULT_CHECK_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LOCK_RETRIES,
    DEFAULT_TARGET_LOCK_WAIT,
    with_network_defaults,
)
from airflow_provider_fdw.wrappers import MYSQL_FDW, POSTGRES_FDW, Wrapper


class FdwHook(PostgresHook):
    """Manage postgres_fdw servers, user mappings and foreign tables in the LOCAL database.

    The LOCAL database (where the FDW objects live) is an ordinary ``postgres`` connection
    (``conn_name_attr = "postgres_conn_id"``) and is what every inherited ``PostgresHook`` method
    (``get_conn``, ``run``, ``get_records``) talks to. The REMOTE database is a ``postgres_fdw``
    connection, read through :attr:`remote_hook` (a :class:`PostgresFdwHook`): its host/port/database
    and FDW fields become server options, its login/password the user mapping. Every method is
    idempotent: running it again converges to the same state and never fails because an object
    already exists.

    The hook keeps one local session for its lifetime (``postgres_fdw`` caches remote connections
    per session, which :meth:`get_connections` and :meth:`disconnect` act on); use it as a context
    manager or call :meth:`close`.

    Every connection it opens (local and remote) is bounded: libpq ``connect_timeout`` (default
    10 s, ``connect_timeout=`` to change), TCP keepalives and ``tcp_user_timeout`` unless the Airflow
    connection sets them (see :mod:`airflow_provider_fdw.timeouts`), and is recorded so that
    :meth:`cancel` (called by the operators' ``on_kill``) stops everything the hook started.

    The remote connection's type picks the wrapper (:mod:`airflow_provider_fdw.wrappers`): a
    ``postgres_fdw`` connection makes postgres_fdw servers, a ``mysql_fdw`` connection mysql_fdw
    servers (read through :class:`~airflow_provider_fdw.hooks.mysql_fdw.MySqlFdwHook`).

    :param fdw_conn_id: the ``postgres_fdw`` or ``mysql_fdw`` connection of the remote server.
    :param postgres_conn_id: the ``postgres`` connection of the local database.
    :param connect_timeout: seconds a login may take (default 10).
    """

    # conn_name_attr, default_conn_name and conn_type are PostgresHook's: the LOCAL connection.
    hook_name = "Postgres FDW objects (local database)"
    postgres_conn_id: str  # set by DbApiHook.__init__ from conn_name_attr

    def __init__(
        self,
        fdw_conn_id: str | None = None,
        postgres_conn_id: str = PostgresHook.default_conn_name,
        connect_timeout: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(postgres_conn_id=postgres_conn_id, **kwargs)
        self.fdw_conn_id: str = fdw_conn_id or PostgresFdwHook.default_conn_name
        self._session: LocalSession | None = None
        self.connect_timeout: int | None = connect_timeout
        # Set by the operators: which task instance this hook works for (marks its sessions).
        self.task_identity: tuple[str, ...] | None = None
        self.application_name = APP_PREFIX
        self.cancel_scope = CancelScope()

    @cached_property
    def remote_hook(self) -> PostgresFdwHook | MySqlFdwHook:
        """The hook of the remote connection's type (a missing connection: postgres_fdw's, which says so)."""
        try:
            conn_type = self.get_connection(self.fdw_conn_id).conn_type
        except Exception:  # no such connection: the error comes from the remote hook when it is read
            conn_type = None
        if conn_type == MySqlFdwHook.conn_type:
            return MySqlFdwHook(fdw_conn_id=self.fdw_conn_id)
        return PostgresFdwHook(fdw_conn_id=self.fdw_conn_id, connect_timeout=self.connect_timeout)

    @cached_property
    def remote(self) -> RemoteServer | MySqlRemote:
        """The validated remote connection (raises :class:`FdwConfigError` on a bad field)."""
        return self.remote_hook.remote

    @property
    def wrapper(self) -> Wrapper:
        """The foreign-data wrapper of the remote connection (postgres_fdw or mysql_fdw)."""
        return MYSQL_FDW if isinstance(self.remote_hook, MySqlFdwHook) else POSTGRES_FDW

    @property
    def session(self) -> LocalSession:
        if self._session is None:
            self._session = self._new_session()
        return self._session

    def _create_connection(self, conn_args: dict[str, Any]) -> Any:
        """Every connection of this hook: bounded (timeouts.py), marked, and cancellable by :meth:`cancel`."""
        # what the local connection's extra tells the provider, not libpq (poolers.py)
        args = with_network_defaults(
            {k: v for k, v in conn_args.items() if k != POOL_MODE}, self.connect_timeout
        )
        if not args.get("application_name"):
            args["application_name"] = self.application_name
        conn = self.cancel_scope.add_connection(super()._create_connection(args))
        prepare_session(conn)
        return conn

    def get_conn(self) -> Any:
        """The LOCAL connection (inherited methods too: run, get_records …): a replica role default undone."""
        conn = super().get_conn()
        try:
            undo_replica_role(conn)
        except FdwConfigError:
            conn.close()
            raise
        return conn

    def _local_conn(self) -> Any:
        """A connection for a local session: refused behind a pooler that may share its server."""
        conn = self.get_conn()
        try:
            check_local_connection(conn, self.connection.extra_dejson.get(POOL_MODE))
        except FdwConfigError:
            conn.close()
            raise
        return conn

    def cancel(self) -> None:
        """Cancel every statement this hook's sessions run and kill its child processes (``on_kill``)."""
        self.cancel_scope.cancel()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> FdwHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- extension ---------------------------------------------------------------------------

    def ensure_extension(self) -> bool:
        """``CREATE EXTENSION IF NOT EXISTS`` the wrapper's extension; True when it was created now."""
        return servers.ensure_extension(self.session, self.wrapper)

    # -- server ------------------------------------------------------------------------------

    def server_options(
        self, options: Mapping[str, Any] | None = None, server_name: str | None = None
    ) -> dict[str, str]:
        """The options the server should have: the connection's, overridden by ``options``; given
        ``server_name``, with the character set the local database's encoding needs, checked
        (:mod:`airflow_provider_fdw.character_sets`)."""
        desired = servers.server_options(self.remote, self.wrapper, options, self.connect_timeout)
        if server_name is None:
            return desired
        return server_character_set(self.session, self.wrapper, server_name, desired)

    def create_server(self, server_name: str, options: Mapping[str, Any] | None = None) -> bool:
        """Create the foreign server, or converge an existing one's options to the connection's.

        :return: whether anything changed.
        """
        check_identifier(server_name, "server_name")
        desired = self.server_options(options, server_name)  # the remote first: its password is a secret
        new_only: frozenset[str] = getattr(self.remote, "new_server_only", frozenset()) - set(options or {})
        return servers.create_server(self.session, self.wrapper, server_name, desired, new_only, self.log)

    def drop_server(self, server_name: str, cascade: bool = False) -> bool:
        """``DROP SERVER IF EXISTS`` (with its user mappings and, with ``cascade``, foreign tables).

        :return: whether the server existed.
        """
        check_identifier(server_name, "server_name")
        return servers.drop_server(self.session, server_name, cascade)

    # -- user mapping ------------------------------------------------------------------------

    def create_user_mapping(self, server_name: str, local_user: str = "CURRENT_USER") -> bool:
        """Create the user mapping from the connection's login/password, or update it (rotation).

        ``local_user`` is one of the keywords CREATE USER MAPPING accepts, spelled exactly
        (``CURRENT_USER``, ``CURRENT_ROLE``, ``SESSION_USER``, ``USER``, ``PUBLIC``/``public``) or a
        role name taken verbatim (a role named ``Public`` or ``user`` gets its own mapping).
        Options other than ``user``/``password`` that a DBA set by hand (``password_required``,
        ``sslcert`` …) are left as they are. The password never appears in a statement's text (so
        never in a log line nor in the server log, even when the statement fails): see
        :mod:`airflow_provider_fdw.secrets`.

        :return: whether anything changed.
        """
        check_identifier(server_name, "server_name")
        role = check_role(local_user)
        remote = self.remote  # before the session: its password is one of the session's secrets
        return servers.create_user_mapping(self.session, self.wrapper, remote, server_name, role, self.log)

    # -- foreign tables ----------------------------------------------------------------------

    def import_foreign_schema(self, plan: ImportPlan | str, /, *arguments: Any, **options: Any) -> list[str]:
        """Import the remote schema's tables as foreign tables into ``local_schema`` (created if needed).

        Takes the plan ``plan_import`` builds, or that function's arguments (``server_name``,
        ``remote_schema``, ``local_schema``, ``limit_to``, ``exclude``, ``import_options``, ``replace``,
        ``analyze``). With ``replace`` the foreign tables this server previously imported from
        ``remote_schema`` (within the same LIMIT TO / EXCEPT selection) are converged to the remote
        definitions in ONE transaction: new tables are added, changed columns altered, vanished tables
        dropped, and unchanged tables left untouched, so views and materialized views built on them keep
        working and concurrent queries never find a table missing. Without ``replace`` only tables not
        yet present are imported. With ``analyze`` each of them is then analyzed.

        :return: the names of the foreign tables now in ``local_schema`` for that selection.
        """
        if not isinstance(plan, ImportPlan):
            plan = plan_import(plan, *arguments, **options)
        tables = import_schema(self.session, plan, self.log)
        if plan.analyze:
            self.analyze_tables([QualifiedName(plan.local_schema, t) for t in tables])
        return tables

    def analyze_tables(self, tables: Sequence[QualifiedName]) -> None:
        """``ANALYZE`` each table (for foreign tables postgres_fdw samples the remote table)."""
        foreign_tables.analyze_tables(self.session, tables)

    def list_foreign_tables(self, local_schema: str) -> list[dict[str, str]]:
        """Foreign tables in ``local_schema``: name, server, remote schema and remote table."""
        check_identifier(local_schema, "local_schema")
        return foreign_tables.list_foreign_tables(self.session, local_schema)

    # -- materialized views ------------------------------------------------------------------

    def refresh_materialized_views(
        self, plan: MatviewPlan | str | Sequence[str], /, **arguments: Any
    ) -> list[dict[str, Any]]:
        """Create (with ``query``) and refresh materialized views; see ``RefreshMaterializedViewOperator``.

        Takes the plan ``plan_refresh`` builds, or that function's arguments (views first).
        """
        if not isinstance(plan, MatviewPlan):
            plan = plan_refresh(plan, **arguments)
        return refresh_views(self.session, plan, self.log)

    # -- bulk copy ---------------------------------------------------------------------------

    def bulk_copy(
        self,
        plan: CopyPlan,
        direct: bool | None = None,
        relay: str = "auto",
        target_lock_wait: float = DEFAULT_TARGET_LOCK_WAIT,
        lock_retries: int = DEFAULT_LOCK_RETRIES,
    ) -> dict[str, Any]:
        """Copy ``plan.source`` (a foreign table) into ``plan.target``; see ``BulkCopyOperator``.

        ``plan``: a :class:`~airflow_provider_fdw.bulkcopy.plan.CopyPlan` from ``plan_copy(...)``, which
        checked every argument of the copy; this method only adds how this worker runs it.

        ``plan.transport``: ``"fdw"`` moves rows server to server through postgres_fdw; ``"copy"``
        reads the remote table behind the foreign table with ``COPY`` over this hook's
        ``fdw_conn_id`` (refused, before anything changes, when that connection is not the foreign
        table's server); ``"auto"`` does so when it can and otherwise uses postgres_fdw, saying why in
        the log. Results are identical (see docs/bulk-copy.md, "The direct path"). ``direct=True`` is
        the older spelling of ``transport="copy"``. ``relay`` (direct path): ``"psql"`` pipes two
        ``psql`` processes, ``"python"`` relays in this process, ``"auto"`` uses psql when on the PATH.
        ``target_lock_wait``: seconds to wait for another copy of the same target (default 300)
        before failing. ``lock_retries``: attempts to take the target's lock when applying, each
        bounded by ``plan.lock_timeout`` (default 30 x 1 s, each raised above the server's
        ``deadlock_timeout`` so that it cancels a blocking autovacuum).

        Inside a task, the copy's sessions carry ``application_name``
        ``airflow_provider_fdw:<key>:<dag>.<task>:<target>``; a retry terminates the sessions of an
        earlier try of the same task instance (killed worker) before it starts.
        """
        opening = time.perf_counter()
        session = self.session  # opened here on first use (before the engine reads the catalog with it)
        connect_seconds = time.perf_counter() - opening
        copy = self.bulk_copy_engine(plan, direct, relay, target_lock_wait, lock_retries)
        summary = copy.run(session, connect_seconds=connect_seconds).summary()
        if summary["path"] == "direct":  # this hook read the remote itself: it reports the lineage
            report_hook_lineage(self, plan.source, plan.target)
        return summary

    def bulk_copy_engine(
        self,
        plan: CopyPlan,
        direct: bool | None = None,
        relay: str = "auto",
        target_lock_wait: float = DEFAULT_TARGET_LOCK_WAIT,
        lock_retries: int = DEFAULT_LOCK_RETRIES,
    ) -> BulkCopy:
        """The copy engine :meth:`bulk_copy` runs, wired to this hook's connections (also used, step
        by step, by the mapped partitions of :mod:`airflow_provider_fdw.bulkcopy.partitions`)."""
        return copy_engine(self, plan, direct, relay, target_lock_wait, lock_retries)

    def remote_connection(self) -> Any:
        """A new driver connection to the REMOTE database, as Airflow (not the local server) reaches it."""
        params = self._postgres_remote().libpq_params()
        try:
            return self._create_connection(params)
        except DriverError as exc:
            raise FdwError(
                f"connecting to the remote {endpoint(params)} failed: {error_fields(exc)['message']}",
                step="connect to remote",
            ) from None

    def direct_connection(self, client_encoding: str | None = None) -> Any:
        """A remote connection for the direct COPY path, its session pinned like postgres_fdw's."""
        return self._create_connection(pinned_params(self._postgres_remote().libpq_params(), client_encoding))

    def _postgres_remote(self) -> RemoteServer:
        """The remote connection, which must be PostgreSQL here (a driver connection to it)."""
        remote = self.remote
        if not isinstance(remote, RemoteServer):
            raise FdwConfigError(
                f"Connection {self.fdw_conn_id!r} is a {self.wrapper.name} connection: only a PostgreSQL "
                "remote is read directly."
            )
        return remote

    def _local_libpq_params(self) -> dict[str, Any]:
        conn = self.connection
        extra = {k: v for k, v in conn.extra_dejson.items() if k in LIBPQ_SERVER_OPTIONS}
        return {
            **extra,
            "host": conn.host,
            "port": conn.port,
            "dbname": conn.schema,
            "user": conn.login,
            "password": conn.password,
        }

    def _new_session(self) -> LocalSession:
        secrets = [self.remote.password] if self._remote_loaded() and self.remote.password else []
        session = PrivilegeHintingSession(self._local_conn(), self.log, secrets, self._remote_role)
        session.connect_timeout = self.connect_timeout or DEFAULT_CONNECT_TIMEOUT
        return session

    # -- embeddings --------------------------------------------------------------------------

    def backfill_embeddings(self, plan: BackfillPlan, embedder: Any, dimensions: int) -> dict[str, Any]:
        """Fill the embedding column where it is NULL; see ``EmbeddingBackfillOperator``."""
        return backfill(self.session, plan, embedder, dimensions, self.log)

    def copy_to_foreign_table(
        self, local_table: str, foreign_table: str, key_column: str, columns: Sequence[str]
    ) -> int:
        """Write rows of a local table to a (remote) foreign table, replacing the remote rows with the
        same keys, in ONE local transaction (postgres_fdw commits the remote side with it). Overlapping
        writes to the same foreign table (from this local database) take turns.

        :return: the rows written.
        """
        local = parse_qualified_name(local_table, "local_table")
        remote = parse_qualified_name(foreign_table, "foreign_table")
        check_identifier(key_column, "key_column")
        cols = check_identifiers(columns, "columns") or []
        if key_column not in cols:
            cols = [key_column, *cols]
        return foreign_tables.copy_to_foreign_table(self.session, local, remote, key_column, cols)

    # -- remote reachability -----------------------------------------------------------------

    def check_remote(self, server_name: str, timeout: float = DEFAULT_CHECK_TIMEOUT) -> dict[str, Any]:
        """Prove that the LOCAL server reaches the remote through the user mapping.

        Drops this session's cached remote connection, then creates a session-local foreign table
        over the remote ``pg_settings`` inside a transaction that is rolled back, and reads the
        remote version through it: a new remote login with the mapping's current credentials.

        The whole check is bounded by ``timeout`` seconds (``statement_timeout``); the remote login
        by the server's ``connect_timeout`` option.

        :raises FdwError: with the remote server's message (wrong password, unreachable port …).
        """
        check_identifier(server_name, "server_name")
        return servers.check_remote(self.session, self.wrapper, server_name, timeout, self.log)

    def get_connections(self) -> list[dict[str, Any]]:
        """Remote connections postgres_fdw holds open in this hook's local session."""
        return servers.get_connections(self.session)

    def disconnect(self, server_name: str | None = None) -> bool:
        """Close this session's remote connections to ``server_name`` (all servers when None).

        :return: whether any connection was closed.
        """
        if server_name is not None:
            check_identifier(server_name, "server_name")
        return servers.disconnect(self.session, server_name)

    # -- helpers -----------------------------------------------------------------------------

    def _remote_loaded(self) -> bool:
        return "remote" in self.__dict__

    def _remote_role(self) -> str | None:
        """The remote role of the connection, for permission hints (no lookup when not loaded)."""
        if self._remote_loaded():
            return self.remote.user
        try:
            return self.remote_hook.connection.login or None
        except Exception:  # no such connection: the hook is used for local work only
            return None


# search_path without its explicit pg_catalog entries: pg_catalog is then searched first, as by default,
# and the first schema listed is still where unqualified objects are created. (Operators qualified:
# the role's own search_path resolves this statement.)
PG_CATALOG_IMPLICIT = sql.SQL(
    "pg_catalog.set_config('search_path', pg_catalog.array_to_string(ARRAY("
    "  SELECT e FROM pg_catalog.unnest(pg_catalog.string_to_array("
    "    pg_catalog.current_setting('search_path'), ',')) WITH ORDINALITY AS u(e, n) "
    # an unquoted name folds to lower case; blanks are spaces, tabs, line breaks (SplitIdentifierString)
    "  WHERE pg_catalog.lower(pg_catalog.btrim(e, E' \\t\\n\\r\\f')) OPERATOR(pg_catalog.<>) 'pg_catalog' "
    "    AND pg_catalog.btrim(e, E' \\t\\n\\r\\f') OPERATOR(pg_catalog.<>) '\"pg_catalog\"' "
    "  ORDER BY n), ','), false)"
)
# Connections whose session started with another session_replication_role than origin (role default).
STARTED_AS_REPLICA: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def prepare_session(conn: Any) -> None:
    """Settings of every session of the provider, in one round trip:

    - dates and floats print as postgres_fdw prints them to its remote (ISO, round-trip digits),
      whatever the role's defaults: other wrappers (mysql_fdw) send a pushed-down constant, a
      watermark bound or a ``where`` literal, as this session prints it, and MySQL reads
      ``05.03.2024`` (German) as a zero date. ``DateStyle = 'ISO'`` keeps the role's field order for
      reading date literals; IntervalStyle is left alone, since it also decides how interval
      literals read (``'-1 2:00:00'`` under ``sql_standard``) and mysql_fdw sends no intervals;
    - transactions are READ COMMITTED whatever the role's or database's default: a copy or mirror
      reads the target after locking it, and under ``repeatable read`` its snapshot would date from
      before the lock, hiding a write committed in between (a mirror or an in-place replace would
      keep a row the source does not have);
    - PostgreSQL 14+: the server checks every 2 s during a statement that this client is still
      there, so a killed worker's statements (a load, a remote read) stop instead of running on;
    - ``pg_catalog`` is searched first (an explicit entry in a role's ``search_path`` default is
      removed, which is where it is searched without one): the provider's statements call built-ins
      by their bare names (``hashtext``, ``count``, ``=``), which a function of the same signature in
      a schema listed before it would otherwise replace;
    - a ``session_replication_role`` other than ``origin`` is noted, for the local sessions to undo
      (:func:`undo_replica_role`);
    - the server process is remembered: behind a pooler every transaction of the session checks it
      runs there (session.py), which a pool in transaction mode does not guarantee; and psycopg 3 never
      prepares statements (a pooler would share their names with other clients).
    """
    if hasattr(conn, "prepare_threshold"):
        conn.prepare_threshold = None
    settings = [
        ("DateStyle", "ISO"),
        ("extra_float_digits", "3"),
        ("default_transaction_isolation", "read committed"),
    ]
    if server_version(conn) >= 140000:
        settings.append(("client_connection_check_interval", "2000"))
    statement = sql.SQL(
        "SELECT {}, {}, pg_catalog.pg_backend_pid(), pg_catalog.current_setting('session_replication_role')"
    ).format(
        sql.SQL(", ").join(
            sql.SQL("pg_catalog.set_config({}, {}, false)").format(sql.Literal(k), sql.Literal(v))
            for k, v in settings
        ),
        PG_CATALOG_IMPLICIT,
    )
    with conn.cursor() as cur:
        cur.execute(statement)
        *_, pid, role_setting = cur.fetchone()
    conn.commit()
    remember_backend(conn, pid)
    if role_setting != "origin":
        with suppress(TypeError):
            STARTED_AS_REPLICA[conn] = role_setting


def undo_replica_role(conn: Any) -> None:
    """A local session writes the target: a ``session_replication_role`` default of ``replica``
    (given to ETL roles to skip triggers on bulk loads) would disable its foreign keys and row
    triggers, and a copy commit rows violating them. Set back to ``origin``, or refused when the
    role may not (a remote session only reads: left as it is)."""
    try:
        role_setting = STARTED_AS_REPLICA.get(conn)
    except TypeError:
        return
    if role_setting is None:
        return
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SET session_replication_role = origin"))
        conn.commit()
        del STARTED_AS_REPLICA[conn]
    except DriverError as exc:
        conn.rollback()
        raise FdwConfigError(
            f"This session starts with session_replication_role = {role_setting} (a role or "
            "database default), which disables foreign keys and triggers of the tables a copy "
            f"writes, and it may not set it back to origin: {error_fields(exc)['message']}. "
            "Nothing was changed; reset the default (ALTER ROLE … RESET session_replication_role)."
        ) from None
