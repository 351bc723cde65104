"""The ``where`` argument: user SQL (trusted DAG-author input), but exactly ONE boolean expression.

Two checks, both before anything changes:

1. :func:`check_where_text` (no database): outside string literals, dollar quotes and quoted
   identifiers there is no ``;``, no comment (``--``, ``/*``) and the parentheses balance, so the
   text cannot end the expression it is placed in nor add a statement.
2. :func:`parse_where` (on the server that will evaluate it): ``SELECT 1 FROM <table> WHERE (<where>)``
   is PARSED through the extended protocol, which refuses several statements, and the server's own
   rules refuse what is not a boolean (``argument of WHERE must be type boolean``), aggregates and
   unknown columns. Nothing is executed.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.compat import parameter_status, prepare_only
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.names import QualifiedName


def check_where_text(where: str, backslash_strings: bool = False) -> str:
    """Return ``where`` stripped, or raise :class:`FdwConfigError` naming what is wrong with it.

    ``backslash_strings``: read ``'…'`` literals as a server with ``standard_conforming_strings =
    off`` does (backslash escapes a quote), so the text is split exactly where the server splits it.
    """
    text = where.strip()
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":
            e_prefix = i > 0 and text[i - 1] in "eE" and (i < 2 or not _word_char(text[i - 2]))
            escapes = e_prefix or (backslash_strings and not _unicode_prefix(text, i))
            i = _end_of_string(text, i, escapes)
        elif c == '"':
            i = _end_of_quoted(text, i, '"', "a quoted identifier")
        elif c == "$" and (i == 0 or not _word_char(text[i - 1])):
            i = _end_of_dollar_quote(text, i)
        elif c == ";":
            raise FdwConfigError(f"where must be one SQL condition; it contains ';' at position {i + 1}.")
        elif text.startswith("--", i) or text.startswith("/*", i):
            raise FdwConfigError(
                f"where must not contain comments ('{text[i : i + 2]}' at position {i + 1})."
            )
        elif c == "(":
            depth += 1
            i += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise FdwConfigError(f"where has an unbalanced ')' at position {i + 1}.")
            i += 1
        else:
            i += 1
    if depth:
        raise FdwConfigError(f"where has {depth} unclosed '('.")
    if not text:
        raise FdwConfigError("where must be a non-empty SQL condition, or None.")
    return text


def parse_where(conn: Any, table: QualifiedName, where: str) -> None:
    """Have the server parse ``where`` as the WHERE clause of one statement over ``table``.

    Raises :class:`FdwConfigError` with the server's message. The connection must be outside a
    transaction block; it is left outside one.
    """
    if parameter_status(conn, "standard_conforming_strings") == "off":
        # This server reads backslashes in '…' as escapes: check the text the way it will lex it.
        try:
            check_where_text(where, backslash_strings=True)
        except FdwConfigError as exc:
            raise FdwConfigError(
                f"{exc} (read as this server reads it: standard_conforming_strings is off)"
            ) from None
    # psycopg 3 parses only; psycopg2 runs it (LIMIT 0; check_where_text already refused ';').
    message = prepare_only(conn, q.where_probe(table, where).as_string(conn))
    if message is not None:
        raise FdwConfigError(f"where is not one boolean condition on {table}: {message}.")


def _unicode_prefix(text: str, i: int) -> bool:
    """``U&'…'``: quotes are doubled, backslashes start Unicode escapes (never a quote)."""
    return i >= 2 and text[i - 2 : i] in ("U&", "u&") and (i < 3 or not _word_char(text[i - 3]))


def _word_char(c: str) -> bool:
    """Continues an identifier or number for PostgreSQL's lexer: ASCII letters, digits, ``_``, ``$``
    and EVERY non-ASCII character (``€$a$`` is one identifier, not ``€`` and a dollar quote)."""
    return not c.isascii() or c.isalnum() or c in "_$"


def _tag_char(c: str) -> bool:
    """A dollar-quote tag character for the lexer: ASCII letters, digits, ``_``, every non-ASCII one."""
    return not c.isascii() or c.isalnum() or c == "_"


def _end_of_string(text: str, start: int, backslash_escapes: bool) -> int:
    i, n = start + 1, len(text)
    while i < n:
        if backslash_escapes and text[i] == "\\":
            i += 2
            continue
        if text[i] == "'":
            if i + 1 < n and text[i + 1] == "'":
                i += 2
                continue
            return i + 1
        i += 1
    raise FdwConfigError("where has an unterminated string literal.")


def _end_of_quoted(text: str, start: int, quote: str, what: str) -> int:
    i, n = start + 1, len(text)
    while i < n:
        if text[i] == quote:
            if i + 1 < n and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    raise FdwConfigError(f"where has an unterminated {what}.")


def _end_of_dollar_quote(text: str, start: int) -> int:
    end = start + 1
    while end < len(text) and _tag_char(text[end]):
        end += 1
    body = text[start + 1 : end]
    if end >= len(text) or text[end] != "$" or (body[:1] in "0123456789" and body):
        return start + 1  # a positional parameter ($1) or a bare '$': not a quote
    tag = text[start : end + 1]
    close = text.find(tag, end + 1)
    if close == -1:
        raise FdwConfigError("where has an unterminated dollar-quoted string.")
    return close + len(tag)
