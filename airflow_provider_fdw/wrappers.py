"""What the provider knows about each foreign-data wrapper it drives: postgres_fdw, mysql_fdw, file_fdw.

A :class:`Wrapper` is plain data: the options its server, user mapping, foreign tables and
``IMPORT FOREIGN SCHEMA`` accept (each with the rule that checks its value before any SQL runs),
how an Airflow connection's fields become server and user-mapping options, which table options name
the remote table, how to prove the local server reaches the remote (a session-local probe table),
and whether the remote is PostgreSQL (only then do the engine's pg_catalog probes and the direct
``COPY`` path apply). :func:`wrapper` looks one up by name; everything else asks the description
instead of testing ``== "postgres_fdw"``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.catalog import parse_options, read_relation
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.connection import FDW_SERVER_OPTIONS, LIBPQ_SERVER_OPTIONS
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.names import QualifiedName
from airflow_provider_fdw.validation import RULES, boolean, choice, integer, text

Rule = Callable[[str, Any], str]

# A probe: (probe table name, server name, the foreign table's options) -> (CREATE, SELECT) statements.
Probe = Callable[[str, str, Mapping[str, str]], tuple[sql.Composed, sql.Composed]]


@dataclass(frozen=True)
class Wrapper:
    """One foreign-data wrapper as the provider drives it.

    :param name: the foreign-data wrapper (and its extension) name.
    :param conn_type: the Airflow connection type for its remote, or None (file_fdw needs none).
    :param server_options: option name -> value rule, for ``CREATE SERVER``.
    :param user_mapping_options: option name -> rule, for ``CREATE USER MAPPING``.
    :param table_options: option name -> rule, for ``CREATE FOREIGN TABLE``.
    :param import_options: option name -> rule, for ``IMPORT FOREIGN SCHEMA … OPTIONS``.
    :param connection_server_fields: Airflow connection attribute -> server option it becomes.
    :param login_option: the user-mapping option the connection's login becomes.
    :param password_option: the user-mapping option the connection's password becomes.
    :param remote_table_options: the table options naming the remote (schema or database, table).
    :param fetch_size_option: the table option that sets rows per remote fetch, if any.
    :param managed_options: server options the wrapper sets itself (refused with a clear message).
    :param table_source_options: a foreign table names exactly one of these (file_fdw: filename or
        program); empty when the wrapper has no such rule.
    :param remote_is_postgres: the remote is PostgreSQL: pg_catalog probes and direct COPY apply.
    :param ends_reads_at_big_binary_values: a read can end silently, as if the table ended, at a
        binary value (``bytea``) the wrapper cannot fetch whole (mysql_fdw: over 8 KiB); a copy with
        binary columns then counts the source by default (``verify="count"``).
    :param rounded_types: imported types whose values arrive rounded (type -> why): a watermark of such
        a type is refused, its bound not being a value the remote holds (rows skipped or copied again).
    :param rounded_remote_types: remote column types (as the remote's catalog names them, lower case)
        whose values arrive rounded whatever type the foreign table declares (type -> why), read by
        ``column_type_probe``: a watermark of such a column is refused as for ``rounded_types``.
    :param column_type_probe: composes a session-local foreign table and a read of the remote type of
        one column (options ``dbname``: the remote database or schema, ``table_name``,
        ``column_name``), or None: rows of (type name, numeric scale, fractional-second digits,
        interval fields). A watermark column whose declared type holds fewer distinct values than
        the remote's is refused (bulkcopy/watermark_types.py).
    :param remote_type_names: the remote's type names (lower case, as ``column_type_probe`` reads them)
        -> the PostgreSQL type holding the same values (information_schema's ``data_type`` names);
        empty when the remote is PostgreSQL (the same names).
    :param session_probe: composes a session-local foreign table and a read of the id of the remote
        session the wrapper's cached connection is in, or None. Given when a read ends silently, as if
        the table ended, when the remote connection is lost mid-read (mysql_fdw takes a fetch error
        for the end of the rows): the id is read before and after each load, and a load whose
        connection is gone (the read fails) or was replaced (``reconnect``: another id) fails.
    :param compares_text_in_its_collation: a condition on a character column is evaluated by the remote
        in the remote column's collation (mysql_fdw: MySQL's, case-insensitive and blind to trailing
        spaces by default), not PostgreSQL's; a watermark on such a column is refused.
    :param sends_conditions_by_name: the wrapper sends a condition's built-in functions and operators
        to the remote by name and drops its casts (mysql_fdw 2.8), so the remote evaluates them with its
        own meaning (MySQL: ``||`` is OR, ``/`` divides as decimal, ``length`` counts bytes); a copy's
        ``where``, and a watermark bound on a view's column, are then applied by the local server.
    :param time_zone: the zone of the remote's date-time text (mysql_fdw: UTC, the ``init_command`` of
        the servers the provider makes), which a copy reading it runs in: a column declared
        ``timestamptz`` reads that text as an instant, and a ``timestamptz`` constant is printed for
        the remote in it (MySQL ignores an offset).
    :param probe: composes the reachability probe, or None when there is nothing remote to reach.
    :param greeting_address: the (host, port) the wrapper's client connects to for a server's options,
        when that client waits for the remote without any time-out (mysql_fdw: the connect, the
        greeting and every read), or None for an address the worker cannot dial as the local server
        does; the worker then checks that address answers before the local server is made to connect
        (:mod:`airflow_provider_fdw.remote_answers`). None (the field): the wrapper bounds its own waits
        (postgres_fdw: libpq's connect_timeout, given to every server) or has no remote.
    :param remote_tables_probe: composes a session-local foreign table and a read of the (schema, name)
        of the tables and views of one remote schema (option ``dbname``, compared exactly by the
        caller), for a wrapper whose ``IMPORT FOREIGN SCHEMA`` leaves out some tables the remote has
        without an error (``skips_on_import`` says which); or None: a table an import does not bring
        back is gone from the remote.
    :param skips_on_import: which tables the wrapper's import leaves out, and how it tells.
    :param character_set_option: the server option naming the character set the remote sends text in,
        when the wrapper stores those bytes without converting them to the local database's encoding
        (mysql_fdw's ``character_set``), or None (postgres_fdw converts: it sets client_encoding itself).
    :param character_sets: PostgreSQL server encoding -> the remote character set whose bytes are the
        same (:mod:`airflow_provider_fdw.character_sets`); an encoding missing here has none.
    :param connection_character_set: the character set the wrapper's connection uses, lower case, for a
        value of ``character_set_option`` (None: absent) in a database of an encoding; None when that
        cannot be known from the database. None (the field): the option's value.
    :param docs_url: the wrapper's own documentation.
    :param debian_package: the Debian package that installs it (for error messages).
    """

    name: str
    conn_type: str | None
    server_options: Mapping[str, Rule]
    user_mapping_options: Mapping[str, Rule]
    table_options: Mapping[str, Rule]
    import_options: Mapping[str, Rule]
    connection_server_fields: Mapping[str, str] = field(default_factory=dict)
    login_option: str | None = None
    password_option: str | None = None
    remote_table_options: tuple[str, str] | None = None
    fetch_size_option: str | None = None
    managed_options: frozenset[str] = frozenset()
    table_source_options: tuple[str, ...] = ()
    remote_is_postgres: bool = False
    ends_reads_at_big_binary_values: bool = False
    compares_text_in_its_collation: bool = False
    sends_conditions_by_name: bool = False
    time_zone: str | None = None
    rounded_types: Mapping[str, str] = field(default_factory=dict)
    rounded_remote_types: Mapping[str, str] = field(default_factory=dict)
    column_type_probe: Probe | None = None
    remote_type_names: Mapping[str, str] = field(default_factory=dict)
    session_probe: Probe | None = None
    probe: Probe | None = None
    greeting_address: Callable[[Mapping[str, str]], tuple[str, int] | None] | None = None
    remote_tables_probe: Probe | None = None
    skips_on_import: str = ""
    character_set_option: str | None = None
    character_sets: Mapping[str, str] = field(default_factory=dict)
    connection_character_set: Callable[[str | None, str], str | None] | None = None
    docs_url: str = ""
    debian_package: str = ""

    @property
    def extension(self) -> str:
        """The extension that provides the wrapper (same name for every wrapper described here)."""
        return self.name

    def check_server_options(self, options: Mapping[str, Any], where: str) -> dict[str, str]:
        """The text PostgreSQL will store for each server option, or :class:`FdwConfigError`."""
        for name in options:
            if name in self.user_mapping_options:
                raise FdwConfigError(
                    f"{where}: {name!r} belongs in the user mapping (the connection's login/password)."
                )
            if name in self.managed_options:
                raise FdwConfigError(f"{where}: {name!r} is set by {self.name} itself and cannot be changed.")
        return _check(self.server_options, options, where, f"a {self.name} server option")

    def check_user_mapping_options(self, options: Mapping[str, Any], where: str) -> dict[str, str]:
        return _check(self.user_mapping_options, options, where, f"a {self.name} user-mapping option")

    def check_table_options(self, options: Mapping[str, Any], where: str) -> dict[str, str]:
        if self.table_source_options and sum(o in options for o in self.table_source_options) != 1:
            raise FdwConfigError(
                f"{where}: a {self.name} foreign table needs exactly one of "
                f"{' or '.join(self.table_source_options)}."
            )
        return _check(self.table_options, options, where, f"a {self.name} foreign-table option")

    def check_import_options(self, options: Mapping[str, Any], where: str) -> dict[str, str]:
        return _check(self.import_options, options, where, f"an IMPORT FOREIGN SCHEMA option of {self.name}")

    def create_server(self, server_name: str, options: Mapping[str, str]) -> sql.Composed:
        """``CREATE SERVER … FOREIGN DATA WRAPPER <this wrapper> OPTIONS (…)``."""
        return sql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER {}{}").format(
            sql.Identifier(server_name), sql.Identifier(self.name), q.options_clause(options)
        )

    def user_mapping(self, login: str | None, password: str | None) -> dict[str, str]:
        """The user-mapping options for a connection's login and password (the password is secret)."""
        options: dict[str, str] = {}
        if login and self.login_option:
            options[self.login_option] = login
        if password and self.password_option:
            options[self.password_option] = password
        return options

    def remote_table(
        self, table_options: Mapping[str, str], local_name: tuple[str, str]
    ) -> tuple[str, str] | None:
        """(remote schema or database, remote table) a foreign table reads; None for a non-table source."""
        if self.remote_table_options is None:
            return None
        schema_option, table_option = self.remote_table_options
        schema, name = local_name
        return table_options.get(schema_option, schema), table_options.get(table_option, name)

    def bulk_read_options(self, table_options: Mapping[str, str], fetch_size: int) -> dict[str, str]:
        """Options of a private copy of a foreign table that reads in bulk: the same source, with the
        wrapper's fetch size (when it has one) raised to ``fetch_size``."""
        options = dict(table_options)
        if self.fetch_size_option:
            options[self.fetch_size_option] = str(fetch_size)
        return options


def wrapper(name: str) -> Wrapper:
    """The description of foreign-data wrapper ``name``; a clear error for one the provider does not drive."""
    try:
        return WRAPPERS[name]
    except KeyError:
        raise FdwConfigError(
            f"foreign-data wrapper {name!r} is not supported; supported: {', '.join(sorted(WRAPPERS))}."
        ) from None


def wrapper_for_conn_type(conn_type: str) -> Wrapper | None:
    """The wrapper whose remote an Airflow connection of ``conn_type`` describes (None: not an FDW type)."""
    return next((w for w in WRAPPERS.values() if w.conn_type == conn_type), None)


# -- helpers -----------------------------------------------------------------------------------


def _check(rules: Mapping[str, Rule], options: Mapping[str, Any], where: str, what: str) -> dict[str, str]:
    if not isinstance(options, Mapping):
        raise FdwConfigError(f"{where} must be a mapping of option names to values.")
    result: dict[str, str] = {}
    for name, value in options.items():
        rule = rules.get(name)
        if rule is None:
            allowed = ", ".join(sorted(rules)) or "none"
            raise FdwConfigError(f"{where}: {name!r} is not {what}; allowed: {allowed}.")
        try:
            result[name] = rule(name, value)
        except FdwConfigError as exc:
            raise FdwConfigError(f"{where}: {exc}") from None
    return result


def _single_port(name: str, value: Any) -> str:
    digits = str(value).strip() if not isinstance(value, bool) else ""
    if not re.fullmatch(r"\d+", digits) or not 1 <= int(digits) <= 65535:
        raise FdwConfigError(f"{name} must be a port number from 1 to 65535, got {value!r}.")
    return str(int(digits))


def _single_char(name: str, value: Any) -> str:
    checked = text(name, value)
    if len(checked.encode()) != 1:
        raise FdwConfigError(f"{name} must be a single one-byte character, got {value!r}.")
    return checked


def _header(name: str, value: Any) -> str:
    """A boolean, or ``match`` (PostgreSQL 15+): the header line must name the columns, in order."""
    if isinstance(value, str) and value.strip().lower() == "match":
        return "match"
    try:
        return boolean(name, value)
    except FdwConfigError:
        raise FdwConfigError(f"{name} must be a boolean (true/false) or 'match', got {value!r}.") from None


def _absolute_path(name: str, value: Any) -> str:
    checked = text(name, value)
    if not checked.startswith("/"):
        raise FdwConfigError(f"{name} must be an absolute path on the LOCAL database server, got {value!r}.")
    return checked


def _sql_mode(name: str, value: Any) -> str:
    """A comma-separated list of MySQL sql_mode names; the modes that change what a pushed-down string
    constant means refused (:data:`_REFUSED_SQL_MODES`). mysql_fdw also pastes the value into
    ``SET sql_mode = '…'`` as it is: anything but mode names is refused.

    No combination mode includes a refused one (MariaDB 10.11: ORACLE, MSSQL, DB2, MAXDB, POSTGRESQL,
    ANSI, TRADITIONAL, MYSQL323, MYSQL40; MySQL 8: ANSI, TRADITIONAL), so the names given are checked.
    """
    checked = text(name, value)
    if not checked.strip():
        return ""
    modes = [mode.strip() for mode in checked.split(",")]
    if not all(re.fullmatch(r"[A-Za-z0-9_]+", mode) for mode in modes):
        raise FdwConfigError(f"{name} must be a comma-separated list of MySQL sql_mode names, got {value!r}.")
    for mode in modes:
        why = _REFUSED_SQL_MODES.get(mode.upper())
        if why:
            raise FdwConfigError(f"{name}: {mode.upper()} is refused: {why}")
    return ",".join(modes)


# sql_mode names that change what a string constant mysql_fdw sends to MySQL (a where literal, a
# watermark bound) means, so that a condition selects other rows than PostgreSQL's would, silently.
_REFUSED_SQL_MODES = {
    "NO_BACKSLASH_ESCAPES": "mysql_fdw doubles the backslashes of the string constants it sends to "
    "MySQL (where literals, watermark bounds), so under this mode a value holding a backslash would "
    "match no row.",
    "EMPTY_STRING_IS_NULL": "MariaDB then reads the empty string constants mysql_fdw sends (where "
    "literals, watermark bounds) as NULL, so a condition such as note = '' would match no row.",
}


def _rules(names: frozenset[str] | set[str], default: Rule = text) -> dict[str, Rule]:
    return {name: RULES.get(name, default) for name in sorted(names)}


# -- postgres_fdw ----------------------------------------------------------------------------------


def _postgres_probe(probe: str, server: str, options: Mapping[str, str]) -> tuple[sql.Composed, sql.Composed]:
    """A session-local foreign table over the remote ``pg_settings``: the remote version."""
    create = sql.SQL(
        "CREATE FOREIGN TABLE pg_temp.{} (name text, setting text) SERVER {} "
        "OPTIONS (schema_name 'pg_catalog', table_name 'pg_settings')"
    ).format(sql.Identifier(probe), sql.Identifier(server))
    read = sql.SQL(
        "SELECT 'PostgreSQL ' || max(setting) FILTER (WHERE name = 'server_version') FROM pg_temp.{}"
    ).format(sql.Identifier(probe))
    return create, read


def _information_schema_column_probe(
    probe: str,
    server: str,
    options: Mapping[str, str],
    columns: sql.Composable,
    table_options: sql.Composable,
    select: sql.Composable,
) -> tuple[sql.Composed, sql.Composed]:
    """A session-local foreign table ``probe`` over a remote's information_schema columns view (its
    wrapper's ``table_options``, ``columns`` besides the schema, table and column names) and the read
    (``select``) of the row of the column ``options`` names (``dbname``, ``table_name``, ``column_name``)."""
    create = sql.SQL(
        "CREATE FOREIGN TABLE pg_temp.{} (table_schema text, table_name text, column_name text, {}) "
        "SERVER {} OPTIONS ({})"
    ).format(sql.Identifier(probe), columns, sql.Identifier(server), table_options)
    read = sql.SQL(
        "SELECT {} FROM pg_temp.{} WHERE table_schema = {} AND table_name = {} AND column_name = {}"
    ).format(
        select,
        sql.Identifier(probe),
        sql.Literal(options["dbname"]),
        sql.Literal(options["table_name"]),
        sql.Literal(options["column_name"]),
    )
    return create, read


def _postgres_column_type_probe(
    probe: str, server: str, options: Mapping[str, str]
) -> tuple[sql.Composed, sql.Composed]:
    """A session-local foreign table over the remote ``information_schema.columns`` and a read of the
    type of the column ``options`` names (``dbname``: the remote schema, ``table_name``,
    ``column_name``): data_type (a domain's base type), numeric_scale, datetime_precision,
    interval_type; no row when the remote role has no privilege on the column."""
    return _information_schema_column_probe(
        probe,
        server,
        options,
        sql.SQL("data_type text, numeric_scale integer, datetime_precision integer, interval_type text"),
        sql.SQL("schema_name 'information_schema', table_name 'columns'"),
        sql.SQL("data_type, numeric_scale, datetime_precision, interval_type"),
    )


POSTGRES_FDW = Wrapper(
    name="postgres_fdw",
    conn_type="postgres_fdw",
    server_options=_rules(LIBPQ_SERVER_OPTIONS | FDW_SERVER_OPTIONS),
    user_mapping_options={
        "user": text,
        "password": text,
        "sslpassword": text,
        "password_required": boolean,
        "sslcert": text,
        "sslkey": text,
    },
    table_options={
        "schema_name": text,
        "table_name": text,
        "use_remote_estimate": boolean,
        "updatable": boolean,
        "truncatable": boolean,
        "fetch_size": integer(1),
        "batch_size": integer(1),
        "async_capable": boolean,
        "analyze_sampling": RULES["analyze_sampling"],
    },
    import_options={
        "import_collate": boolean,
        "import_default": boolean,
        "import_generated": boolean,
        "import_not_null": boolean,
    },
    connection_server_fields={"host": "host", "port": "port", "schema": "dbname"},
    login_option="user",
    password_option="password",
    remote_table_options=("schema_name", "table_name"),
    fetch_size_option="fetch_size",
    managed_options=frozenset({"client_encoding", "fallback_application_name"}),
    remote_is_postgres=True,
    column_type_probe=_postgres_column_type_probe,
    probe=_postgres_probe,
    docs_url="https://www.postgresql.org/docs/current/postgres-fdw.html",
    debian_package="postgresql-contrib",
)


# -- mysql_fdw (options of mysql_fdw 2.8, the version Debian 12 ships; README "Usage") ---------------


def _mysql_probe(probe: str, server: str, options: Mapping[str, str]) -> tuple[sql.Composed, sql.Composed]:
    """A session-local foreign table over the remote ``information_schema.SCHEMATA``: a login with the
    mapping's credentials, and the databases that login may see (MySQL and MariaDB alike)."""
    create = sql.SQL(
        "CREATE FOREIGN TABLE pg_temp.{} (schema_name text) SERVER {} "
        "OPTIONS (dbname 'information_schema', table_name 'SCHEMATA')"
    ).format(sql.Identifier(probe), sql.Identifier(server))
    read = sql.SQL("SELECT 'MySQL: ' || count(*) || ' databases visible' FROM pg_temp.{}").format(
        sql.Identifier(probe)
    )
    return create, read


def _mysql_session_probe(
    probe: str, server: str, options: Mapping[str, str]
) -> tuple[sql.Composed, sql.Composed]:
    """A session-local foreign table over ``information_schema.PROCESSLIST`` and a read of this MySQL
    connection's id: the one row whose running statement is this read (it names a marker unique to
    the probe, sent to MySQL as a literal; every login may see its own connections)."""
    create = sql.SQL(
        "CREATE FOREIGN TABLE pg_temp.{} (id bigint, info text) SERVER {} "
        "OPTIONS (dbname 'information_schema', table_name 'PROCESSLIST')"
    ).format(sql.Identifier(probe), sql.Identifier(server))
    read = sql.SQL("SELECT max(id) FROM pg_temp.{} WHERE info LIKE {}").format(
        sql.Identifier(probe), sql.Literal(f"%fdw-session-{uuid.uuid4().hex}%")
    )
    return create, read


def _mysql_address(options: Mapping[str, str]) -> tuple[str, int] | None:
    """Where mysql_fdw connects (its defaults: 127.0.0.1, 3306); None for ``localhost``, which the MySQL
    client library reaches through its Unix socket, not TCP, and for a port no TCP connection has.
    The port is read as mysql_fdw reads it (C ``atoi``: leading digits, 0 or none meaning 3306)."""
    host = options.get("host", "127.0.0.1")
    digits = re.match(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", options.get("port", ""))
    # glibc's atoi is (int) strtol: the value wraps to a signed 32-bit int
    port = ((int(digits.group(1)) + 2**31) % 2**32 - 2**31 if digits else 0) or 3306
    return None if host == "localhost" or not 0 < port < 65536 else (host, port)


def _mysql_column_type_probe(
    probe: str, server: str, options: Mapping[str, str]
) -> tuple[sql.Composed, sql.Composed]:
    """A session-local foreign table over ``information_schema.COLUMNS`` and a read of the MySQL type
    (``DATA_TYPE``, ``NUMERIC_SCALE``, ``DATETIME_PRECISION``; no interval type: NULL) of the column
    ``options`` names (``dbname``, ``table_name``, ``column_name``)."""
    return _information_schema_column_probe(
        probe,
        server,
        options,
        sql.SQL("data_type text, numeric_scale bigint, datetime_precision bigint"),
        sql.SQL("dbname 'information_schema', table_name 'COLUMNS'"),
        sql.SQL("pg_catalog.lower(data_type), numeric_scale, datetime_precision, NULL::text"),
    )


# MySQL's DATA_TYPE -> the PostgreSQL type (information_schema.columns.data_type) of the same values
# and order, for comparing a remote column with its declared type (bulkcopy/watermark_types.py). A
# MySQL REAL is a DOUBLE (its catalog says double); BOOLEAN is tinyint(1); YEAR is a whole number.
MYSQL_TYPE_NAMES = {
    "tinyint": "smallint",
    "smallint": "smallint",
    "mediumint": "integer",
    "int": "integer",
    "integer": "integer",
    "bigint": "bigint",
    "year": "smallint",
    "decimal": "numeric",
    "numeric": "numeric",
    "float": "real",
    "double": "double precision",
    "date": "date",
    "datetime": "timestamp without time zone",
    "timestamp": "timestamp without time zone",
    "time": "time without time zone",
    "char": "character",
    "varchar": "character varying",
    "tinytext": "text",
    "text": "text",
    "mediumtext": "text",
    "longtext": "text",
}


def _mysql_tables_probe(
    probe: str, server: str, options: Mapping[str, str]
) -> tuple[sql.Composed, sql.Composed]:
    """A session-local foreign table over ``information_schema.TABLES`` and a read of the (schema, name)
    of the tables and views of MySQL database ``options["dbname"]`` (MySQL compares the schema
    case-insensitively: the caller keeps the exact one)."""
    create = sql.SQL(
        "CREATE FOREIGN TABLE pg_temp.{} (table_schema text, table_name text) SERVER {} "
        "OPTIONS (dbname 'information_schema', table_name 'TABLES')"
    ).format(sql.Identifier(probe), sql.Identifier(server))
    read = sql.SQL("SELECT table_schema, table_name FROM pg_temp.{} WHERE table_schema = {}").format(
        sql.Identifier(probe), sql.Literal(options["dbname"])
    )
    return create, read


# PostgreSQL server encoding -> the MySQL character set whose bytes are the same characters: each of
# the 256 bytes converted to Unicode by MariaDB 10.11 and by PostgreSQL 15 gave the same character, or
# none on PostgreSQL's side (such a byte, sent for a character only MySQL has, is refused when read).
# None for LATIN1: MySQL's latin1 is cp1252 (0x80 is the euro sign there, a control character in
# ISO-8859-1), nor for the others whose tables differ (KOI8U, WIN866, WIN1256, ISO_8859_7/8, WIN874).
MYSQL_CHARACTER_SETS = {
    "UTF8": "utf8mb4",  # not utf8 (utf8mb3): it sends a 4-byte character (an emoji) as '?'
    "WIN1252": "latin1",
    "LATIN2": "latin2",
    "LATIN5": "latin5",
    "LATIN7": "latin7",
    "WIN1250": "cp1250",
    "WIN1251": "cp1251",
    "WIN1257": "cp1257",
    "KOI8R": "koi8r",
}


def _mysql_connection_character_set(value: str | None, encoding: str) -> str | None:
    """The character set of mysql_fdw's MySQL connection for a ``character_set`` option (None: absent)
    in a database of ``encoding``, as mysql_fdw 2.8 (option.c) and the client library resolve it; None
    for its default, ``auto``: the character set of the PostgreSQL server process's locale (its
    environment, not the database's), which cannot be read from a session."""
    if value is None or value.lower() == "auto":
        return None
    if value == "PGDatabaseEncoding":  # mysql_fdw's special value: the encoding's name, as MySQL reads it
        return encoding.lower()
    return value.lower()


MYSQL_FDW = Wrapper(
    name="mysql_fdw",
    conn_type="mysql_fdw",
    server_options={
        "host": text,
        "port": _single_port,
        "secure_auth": boolean,
        "init_command": text,
        "use_remote_estimate": boolean,
        "reconnect": boolean,
        "sql_mode": _sql_mode,
        "ssl_key": text,
        "ssl_cert": text,
        "ssl_ca": text,
        "ssl_capath": text,
        "ssl_cipher": text,
        "fetch_size": integer(1),
        "character_set": text,
    },
    user_mapping_options={"username": text, "password": text},
    table_options={
        "dbname": text,
        "table_name": text,
        "max_blob_size": integer(0),
        "fetch_size": integer(1),
    },
    import_options={
        "import_default": boolean,
        "import_not_null": boolean,
        "import_enum_as_text": boolean,
    },
    connection_server_fields={"host": "host", "port": "port"},
    login_option="username",
    password_option="password",
    remote_table_options=("dbname", "table_name"),
    fetch_size_option="fetch_size",
    ends_reads_at_big_binary_values=True,
    compares_text_in_its_collation=True,
    sends_conditions_by_name=True,
    time_zone="UTC",
    rounded_types={
        "real": "MySQL sends a FLOAT rounded to 6 significant digits (16777260 arrives as 16777300)"
    },
    rounded_remote_types={
        "float": "MySQL sends a FLOAT rounded to 6 significant digits (16777260 arrives as 16777300), "
        "whatever type the foreign table declares"
    },
    column_type_probe=_mysql_column_type_probe,
    remote_type_names=MYSQL_TYPE_NAMES,
    probe=_mysql_probe,
    session_probe=_mysql_session_probe,
    greeting_address=_mysql_address,
    remote_tables_probe=_mysql_tables_probe,
    # mysql_fdw 2.8, mysqlImportForeignSchema: a SET column ends the table's definition with a WARNING;
    # its query joins information_schema.TABLES to COLUMNS, so a table without listed columns is absent
    skips_on_import="mysql_fdw's import leaves out a table with a SET column (PostgreSQL has no SET "
    "type; a WARNING only) and, silently, one MySQL lists no columns of (a view whose base tables are "
    "gone)",
    character_set_option="character_set",
    character_sets=MYSQL_CHARACTER_SETS,
    connection_character_set=_mysql_connection_character_set,
    docs_url="https://github.com/EnterpriseDB/mysql_fdw",
    debian_package="postgresql-<version>-mysql-fdw",
)


# -- file_fdw ------------------------------------------------------------------------------------------


def _file_probe(probe: str, server: str, options: Mapping[str, str]) -> tuple[sql.Composed, sql.Composed]:
    """A session-local foreign table over the same file, one column wide: its first line is read."""
    create = sql.SQL("CREATE FOREIGN TABLE pg_temp.{} (line text) SERVER {}{}").format(
        sql.Identifier(probe),
        sql.Identifier(server),
        q.options_clause(
            {k: v for k, v in options.items() if k in ("filename", "program", "encoding")}
            | {"format": "text", "delimiter": "\x01"}
        ),
    )
    read = sql.SQL(
        "SELECT 'file: ' || count(*) || ' line(s) read' FROM (SELECT FROM pg_temp.{} LIMIT 1) t"
    ).format(sql.Identifier(probe))
    return create, read


FILE_FDW = Wrapper(
    name="file_fdw",
    conn_type=None,
    server_options={},
    user_mapping_options={},
    table_options={
        "filename": _absolute_path,
        "program": text,
        "format": choice("text", "csv", "binary"),
        "header": _header,
        "delimiter": _single_char,
        "quote": _single_char,
        "escape": _single_char,
        "null": text,
        "encoding": text,
    },
    import_options={},
    table_source_options=("filename", "program"),
    probe=_file_probe,
    docs_url="https://www.postgresql.org/docs/current/file-fdw.html",
    debian_package="postgresql-contrib",
)

WRAPPERS: dict[str, Wrapper] = {w.name: w for w in (POSTGRES_FDW, MYSQL_FDW, FILE_FDW)}


def source_wrapper(s: Any, table: QualifiedName) -> str | None:
    """The foreign-data wrapper name behind ``table`` (read in session ``s``); None when not foreign."""
    relation = read_relation(s, table, "the source's wrapper")
    return relation.wrapper if relation else None


def servers_read(
    s: Any, reads: Iterable[tuple[str, str]], applies: Callable[[Wrapper], bool]
) -> Iterator[tuple[Wrapper, str, dict[str, str]]]:
    """(wrapper, server, server options) of each server of ``reads`` ((wrapper, server) pairs, e.g.
    :func:`.foreign_reads`) whose described wrapper ``applies``, once each (others cost nothing)."""
    for fdw, server in sorted(set(reads)):
        wrapper = WRAPPERS.get(fdw)
        if wrapper is None or not applies(wrapper):
            continue
        row = s.fetchone("read server", q.SERVER_OPTIONS_QUERY, (server,))
        if row is not None:
            yield wrapper, server, parse_options(row[0])


def reads_postgres(wrapper_name: str | None) -> bool:
    """Whether a foreign table of this wrapper reads PostgreSQL (pg_catalog probes, direct COPY apply)."""
    return wrapper_name is not None and wrapper_name in WRAPPERS and WRAPPERS[wrapper_name].remote_is_postgres


def bulk_read_options(
    wrapper_name: str | None,
    table_options: Mapping[str, str],
    remote: tuple[str, str] | None,
    fetch_size: int,
) -> dict[str, str]:
    """Options of a private copy of a foreign table that reads the same source in bulk: postgres_fdw's
    remote schema/table with ``fetch_size`` (as before the other wrappers came); another described
    wrapper's table options with its fetch size raised; an unknown wrapper's table options as they are."""
    if wrapper_name == POSTGRES_FDW.name and remote is not None:
        # No remote EXPLAIN round trips for a private table that is only ever read whole or by range.
        return {
            "schema_name": remote[0],
            "table_name": remote[1],
            "fetch_size": str(fetch_size),
            "use_remote_estimate": "false",
        }
    if wrapper_name in WRAPPERS:
        return WRAPPERS[wrapper_name].bulk_read_options(table_options, fetch_size)
    return dict(table_options)
