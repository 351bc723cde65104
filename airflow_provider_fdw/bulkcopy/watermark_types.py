"""Whether a watermark column's declared type keeps every value of the remote column it reads.

Through a foreign-data wrapper the remote's values arrive converted to the type the foreign table
declares, and the watermark bound is ``max()`` of the converted values, while ``column > bound`` is
evaluated by the remote on its own values. A declared type narrower than the remote's rounds them:
a remote ``timestamp`` declared ``timestamp(0)`` turns 10:00:05.4 into 10:00:05 (the newest row is then
above the bound and copied again on every run) and 10:00:05.6 into 10:00:06 (a row written later with
10:00:05.7 is below it and never copied). :func:`narrowing` says why a declared type is refused,
comparing kinds of values first, then the digits each keeps after the point.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

INTEGERS = frozenset({"smallint", "integer", "bigint"})
FLOATS = frozenset({"real", "double precision"})
TIMESTAMPS = frozenset({"timestamp without time zone", "timestamp with time zone"})
# Kinds of values two servers compare alike (a timestamp declared timestamptz, or the reverse, is read
# in the zone the copy pins: bulkcopy/state.py); a type not named here is its own kind.
KINDS = {
    **dict.fromkeys(INTEGERS | FLOATS | {"numeric"}, "number"),
    **dict.fromkeys(TIMESTAMPS | {"date"}, "date and time"),
    "text": "text",
    "character varying": "text",
}
# Types whose values an information_schema does not name (enums, extension types, composites): not compared.
UNNAMED = "USER-DEFINED"


@dataclass(frozen=True)
class ColumnType:
    """A column's type as ``information_schema.columns`` describes it (domains resolved).

    :param data_type: PostgreSQL's name of the type, without its modifiers (``numeric``, ``timestamp
        without time zone``; ``ARRAY``, ``USER-DEFINED``).
    :param scale: digits after the point of a ``numeric`` (None: unconstrained); 0 for an integer.
    :param precision: fractional-second digits of a date-time type (0 for ``date``).
    :param fields: the fields an ``interval`` keeps (``DAY``, ``HOUR TO MINUTE``; None: all).
    :param name: the remote's own name of the type (MySQL's ``datetime``), else ``data_type``.
    """

    data_type: str
    scale: int | None = None
    precision: int | None = None
    fields: str | None = None
    name: str = ""

    @property
    def kind(self) -> str:
        return KINDS.get(self.data_type, self.data_type)

    @property
    def digits(self) -> float:
        """Digits kept after the point: a date keeps fewer than any timestamp, a float or an
        unconstrained numeric any number."""
        if self.data_type in INTEGERS:
            return 0
        if self.data_type == "numeric":
            return math.inf if self.scale is None else self.scale
        if self.data_type in FLOATS:
            return math.inf
        if self.data_type == "date":
            return -1
        if self.data_type in TIMESTAMPS or self.data_type.startswith(("time ", "interval")):
            return 6 if self.precision is None else self.precision
        return math.inf

    def describe(self) -> str:
        """The type with what it keeps: ``numeric with scale 2``, ``timestamp(0) without time zone``;
        with the remote's own name first when it has one (``DATETIME, timestamp(6) …``)."""
        if self.data_type == "numeric":
            text = "numeric" if self.scale is None else f"numeric with scale {self.scale}"
        elif self.data_type in TIMESTAMPS or self.data_type.startswith("time "):
            head, _, tail = self.data_type.partition(" ")
            text = f"{head}({6 if self.precision is None else self.precision}) {tail}"
        elif self.data_type == "interval":
            fields = f" {self.fields}" if self.fields else ""
            text = f"interval{fields}({6 if self.precision is None else self.precision})"
        else:
            text = self.data_type
        if self.name and self.name != self.data_type:
            text = f"{self.name.upper()} ({text})"
        return text


def _digits_text(digits: float) -> str:
    if digits == math.inf:
        return "every digit"
    if digits < 0:
        return "whole days"
    return f"{int(digits)} digit{'s' if digits != 1 else ''} after the point"


def narrowing(declared: ColumnType, remote: ColumnType) -> str | None:
    """Why ``declared`` loses or reorders values of ``remote`` (a sentence), or None when it keeps them."""
    if declared.kind != remote.kind:
        return (
            f"the declared type holds other values ({declared.kind} against {remote.kind}), which the "
            "two servers compare differently"
        )
    if declared.data_type in FLOATS and declared.data_type != remote.data_type:
        if remote.data_type in FLOATS:
            return (
                f"a {remote.data_type} arrives as its shortest text, which as a {declared.data_type} is "
                "another value than the one the remote compares"
            )
        return "the declared type is floating point: the remote's exact values arrive rounded"
    if declared.digits < remote.digits:
        return (
            f"the values arrive rounded to {_digits_text(declared.digits)} (the remote keeps "
            f"{_digits_text(remote.digits)})"
        )
    if declared.fields and declared.fields != remote.fields and not declared.fields.endswith("SECOND"):
        # a range down to SECOND keeps every value but its fractional digits (AdjustIntervalForTypmod)
        return f"the declared type keeps only the fields {declared.fields} of each interval"
    if remote.data_type == "real" and declared.data_type != "real":
        return (
            "a real arrives as its shortest text, which as the declared type is another value than "
            "the one the remote compares (1.1 is 1.10000002384 as a real)"
        )
    return None


def widest(remote: ColumnType) -> str | None:
    """A type to declare that keeps every value of ``remote`` (its type without modifiers), when the
    remote's type is a number or date-time one; None otherwise."""
    if remote.kind in ("number", "date and time") or remote.data_type.startswith(("time ", "interval")):
        return remote.data_type
    return None


def from_remote(row: tuple[object, ...], names: Mapping[str, str]) -> ColumnType:
    """A :class:`ColumnType` from a ``column_type_probe`` row (type name, numeric scale, fractional
    digits, interval fields); ``names``: the remote's type names -> PostgreSQL's."""
    name, scale, precision, fields = (*row, None, None, None)[:4]
    raw = str(name)
    data_type = names.get(raw, raw)
    return ColumnType(
        data_type,
        None if scale is None else int(str(scale)),
        None if precision is None else int(str(precision)),
        # information_schema says 'DAY TO SECOND(3)': the digits are compared apart
        None if fields is None else (re.sub(r"\s*\(\d+\)$", "", str(fields)) or None),
        raw,
    )


# Built-in types by OID (the same on every PostgreSQL server), as information_schema names them.
CATALOG_TYPES = {
    21: "smallint",
    23: "integer",
    20: "bigint",
    1700: "numeric",
    700: "real",
    701: "double precision",
    1082: "date",
    1083: "time without time zone",
    1266: "time with time zone",
    1114: "timestamp without time zone",
    1184: "timestamp with time zone",
    1186: "interval",
    25: "text",
    1043: "character varying",
    1042: "character",
}
# An interval modifier's field bits (src/include/utils/datetime.h: MONTH 1, YEAR 2, DAY 3, HOUR 10,
# MINUTE 11, SECOND 12) -> information_schema's interval_type.
_Y, _MO, _D, _H, _MI, _S = (1 << b for b in (2, 1, 3, 10, 11, 12))
INTERVAL_FIELDS = {
    _Y: "YEAR",
    _MO: "MONTH",
    _D: "DAY",
    _H: "HOUR",
    _MI: "MINUTE",
    _S: "SECOND",
    _Y | _MO: "YEAR TO MONTH",
    _D | _H: "DAY TO HOUR",
    _D | _H | _MI: "DAY TO MINUTE",
    _D | _H | _MI | _S: "DAY TO SECOND",
    _H | _MI: "HOUR TO MINUTE",
    _H | _MI | _S: "HOUR TO SECOND",
    _MI | _S: "MINUTE TO SECOND",
}


def from_catalog(oid: int, typmod: int) -> ColumnType | None:
    """A built-in type's :class:`ColumnType` from its OID and modifier (``pg_attribute.atttypmod``,
    decoded as PostgreSQL does); None for a type not in :data:`CATALOG_TYPES` (a domain, an enum …)."""
    data_type = CATALOG_TYPES.get(oid)
    if data_type is None:
        return None
    if data_type in INTEGERS:
        return ColumnType(data_type, scale=0)
    if data_type == "numeric":  # scale: 11 bits, signed from PostgreSQL 15
        return ColumnType(data_type, scale=None if typmod < 0 else (((typmod - 4) & 0x7FF) ^ 1024) - 1024)
    if data_type in TIMESTAMPS or data_type.startswith("time "):
        return ColumnType(data_type, precision=6 if typmod < 0 else typmod)
    if data_type == "interval":
        if typmod < 0:
            return ColumnType(data_type, precision=6)
        precision, fields = typmod & 0xFFFF, (typmod >> 16) & 0x7FFF
        return ColumnType(
            data_type,
            precision=6 if precision == 0xFFFF else precision,
            fields=None if fields == 0x7FFF else INTERVAL_FIELDS.get(fields, f"mask {fields}"),
        )
    return ColumnType(data_type)
