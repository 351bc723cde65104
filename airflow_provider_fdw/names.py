"""Validation of the names users pass in: checked before any SQL runs, with a clear message."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from airflow_provider_fdw.exceptions import FdwConfigError

NAMEDATALEN = 64  # PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes; we refuse instead.

# Role specifications CREATE USER MAPPING accepts as keywords rather than role names.
ROLE_KEYWORDS = frozenset({"CURRENT_USER", "CURRENT_ROLE", "SESSION_USER", "USER", "PUBLIC"})


class QualifiedName(NamedTuple):
    """A schema-qualified relation name, already resolved to its exact (case-sensitive) parts."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{quote_if_needed(self.schema)}.{quote_if_needed(self.name)}"


def check_identifier(value: object, what: str) -> str:
    """Return ``value`` if it is a usable PostgreSQL identifier (any characters, 1..63 bytes)."""
    if not isinstance(value, str) or not value:
        raise FdwConfigError(f"{what} must be a non-empty string, got {value!r}.")
    if "\x00" in value:
        raise FdwConfigError(f"{what} must not contain NUL characters.")
    if len(value.encode()) >= NAMEDATALEN:
        raise FdwConfigError(
            f"{what} {value!r} is longer than {NAMEDATALEN - 1} bytes; PostgreSQL would truncate it."
        )
    return value


def check_identifiers(values: Iterable[str] | None, what: str) -> list[str] | None:
    """Validate an optional list of identifiers (a bare string is refused: it is a common slip)."""
    if values is None:
        return None
    if isinstance(values, str):
        raise FdwConfigError(f"{what} must be a list of names, not the string {values!r}.")
    checked = [check_identifier(v, f"{what} entry") for v in values]
    if not checked:
        raise FdwConfigError(f"{what} must not be empty when given.")
    return checked


def check_role(value: object) -> str:
    """A local role for a user mapping: a role keyword spelled exactly, or a role name verbatim.

    Only the exact keywords mean the keywords: ``Public``, ``user`` or ``Current_User`` are role
    names (such roles exist: ``CREATE ROLE "Public"``). ``public`` is PUBLIC too, as PostgreSQL
    spells it in its catalogs (no role may be named ``public``).
    """
    if value in ROLE_KEYWORDS:
        return value  # type: ignore[return-value]
    if value == "public":
        return "PUBLIC"
    return check_identifier(value, "local_user")


def parse_qualified_name(value: object, what: str, default_schema: str | None = None) -> QualifiedName:
    """Parse ``schema.name`` the way PostgreSQL does: unquoted parts fold to lower case,
    double-quoted parts are exact (``"Sales Data"."Q1"``). A tuple ``(schema, name)`` is taken verbatim.
    """
    if isinstance(value, tuple | list) and len(value) == 2:
        return QualifiedName(check_identifier(value[0], f"{what} schema"), check_identifier(value[1], what))
    if not isinstance(value, str) or not value.strip():
        raise FdwConfigError(f"{what} must be a non-empty 'schema.name' string, got {value!r}.")
    parts = _split_name(value.strip(), what)
    if len(parts) == 1:
        if default_schema is None:
            raise FdwConfigError(f"{what} {value!r} must be schema-qualified ('schema.name').")
        parts = [default_schema, parts[0]]
    if len(parts) != 2:
        raise FdwConfigError(f"{what} {value!r} must have the form 'schema.name'.")
    return QualifiedName(check_identifier(parts[0], f"{what} schema"), check_identifier(parts[1], what))


def fold_identifier(word: str) -> str:
    """An unquoted identifier as PostgreSQL stores it: only ASCII A-Z are downcased (``ÜBER`` -> ``Über``
    in a UTF-8 database, ``İstanbul`` unchanged), like the server's ``downcase_identifier``."""
    return word.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _split_name(text: str, what: str) -> list[str]:
    parts: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == '"':
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise FdwConfigError(f"{what} {text!r} has an unterminated quoted identifier.")
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            j = text.find(".", i)
            j = n if j == -1 else j
            chunk = text[i:j]
            if not chunk or '"' in chunk or chunk != chunk.strip():
                raise FdwConfigError(f"{what} {text!r} is not a valid qualified name.")
            parts.append(fold_identifier(chunk))
            i = j
        if i < n:
            if text[i] != ".":
                raise FdwConfigError(f"{what} {text!r} is not a valid qualified name.")
            i += 1
            if i == n:
                raise FdwConfigError(f"{what} {text!r} ends with a dot.")
    return parts


def quote_if_needed(part: str) -> str:
    plain = part and (part[0].isalpha() or part[0] == "_") and all(c.isalnum() or c == "_" for c in part)
    if plain and part == part.lower() and part.isascii():
        return part
    return '"' + part.replace('"', '""') + '"'
