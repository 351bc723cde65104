"""The character set a wrapper's remote sends text in, against the LOCAL database's encoding.

mysql_fdw stores the bytes MySQL sends as they are, neither converted to the local database's encoding
nor validated: text arrives right only when the MySQL connection's character set (the server option
``character_set``) has the bytes of that encoding. Otherwise 'café' arrives as 'cafÃ©' in a LATIN1
database (every byte valid there), or as invalid text in a UTF8 one, and a copy reports success.

So a server made from a connection gets the character set of the local database's encoding
(:data:`~airflow_provider_fdw.wrappers.MYSQL_CHARACTER_SETS`) unless the connection names one, and one
naming another is refused; a copy or an import reading a server whose character set (or mysql_fdw's
default, ``auto``, when it has none) is not the database's is refused before anything changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.session import LocalSession
from airflow_provider_fdw.wrappers import Wrapper, servers_read


def server_character_set(
    s: LocalSession, wrapper: Wrapper, server_name: str, desired: Mapping[str, str]
) -> dict[str, str]:
    """``desired`` server options with the character set the local database's encoding needs: added
    when they name none, checked when they do.

    :raises FdwConfigError: naming the server, the character set and the encoding.
    """
    option = wrapper.character_set_option
    if option is None:
        return dict(desired)
    with s.transaction():
        encoding = database_encoding(s)
    if option in desired:
        check_character_set(wrapper, server_name, desired[option], encoding)
        return dict(desired)
    return {**desired, option: expected_character_set(wrapper, server_name, encoding)}


def check_character_sets(s: LocalSession, reads: Iterable[tuple[str, str]]) -> None:
    """Refuse to read through any of ``reads`` ((wrapper, server) pairs) a server whose remote text
    would arrive in another character set than the local database's encoding (other wrappers' servers
    cost nothing).

    :raises FdwConfigError: naming the server, its character set and the encoding; nothing was changed.
    """
    encoding = None
    for wrapper, server, options in servers_read(s, reads, lambda w: w.character_set_option is not None):
        assert wrapper.character_set_option is not None
        encoding = encoding or database_encoding(s)
        check_character_set(wrapper, server, options.get(wrapper.character_set_option), encoding)


def check_character_set(wrapper: Wrapper, server_name: str, value: str | None, encoding: str) -> None:
    """Refuse a server of ``wrapper`` whose character set option is ``value`` (None: absent) in a
    local database of ``encoding``, unless its remote text arrives in that encoding's bytes."""
    expected = expected_character_set(wrapper, server_name, encoding)
    resolve = wrapper.connection_character_set
    actual = resolve(value, encoding) if resolve else value
    if actual is not None and actual == expected:
        return
    option = wrapper.character_set_option
    if value is None:
        given = f"has no {option} ({wrapper.name}'s default, 'auto', follows the locale of the PostgreSQL "
        given += "server process, which cannot be checked from here)"
    elif actual is None:
        given = f"has {option} {value!r} (the locale of the PostgreSQL server process, which cannot be "
        given += "checked from here)"
    else:
        resolved = f" (the remote's {actual!r})" if actual != value.lower() else ""
        given = f"has {option} {value!r}{resolved}"
    raise FdwConfigError(
        f"Server {server_name!r} ({wrapper.name}) {given}, but the local database's encoding is {encoding}, "
        f"whose bytes are {option} {expected!r}: {wrapper.name} stores the bytes the remote sends without "
        "converting them, so non-ASCII text would arrive garbled or invalid. Leave the connection's "
        f"{option} empty (or set {expected!r}) and re-run CreateForeignServerOperator to converge the "
        f"server. Nothing was changed."
    )


def expected_character_set(wrapper: Wrapper, server_name: str, encoding: str) -> str:
    """The remote character set with the bytes of ``encoding``, or :class:`FdwConfigError`."""
    expected = wrapper.character_sets.get(encoding)
    if expected is None:
        supported = ", ".join(f"{e} ({c})" for e, c in wrapper.character_sets.items())
        why = f" ({_NO_MATCH[encoding]})" if encoding in _NO_MATCH else ""
        raise FdwConfigError(
            f"Server {server_name!r} ({wrapper.name}): the local database's encoding {encoding}{why} has "
            f"no remote character set ({wrapper.character_set_option}) with the same bytes, and "
            f"{wrapper.name} stores the bytes the remote sends without converting them. Databases it can "
            f"read into: {supported}. Nothing was changed."
        )
    return expected


# Why an encoding with a MySQL character set of almost the same name has none.
_NO_MATCH = {
    "LATIN1": "MySQL's latin1 is Windows-1252: its 0x80-0x9F are characters such as '€' and '“' where "
    "ISO-8859-1 has control characters; a WIN1252 database reads latin1",
    "SQL_ASCII": "no encoding at all: PostgreSQL takes any bytes, so none can be shown to match, and "
    "MySQL's ascii would send every other character as '?'",
}


def database_encoding(s: LocalSession) -> str:
    """The LOCAL database's encoding (PostgreSQL's name: ``UTF8``, ``LATIN1`` …)."""
    return str(s.fetchvalue("read encoding", q.SERVER_ENCODING_QUERY))
