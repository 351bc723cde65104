"""Values of libpq and postgres_fdw options, checked by their documented type before any SQL runs.

PostgreSQL stores server options as text and checks most of them only when a connection is made,
so a bad value would be committed and break a working server. Each known option has a rule here:
the value is refused with a message naming the option, or returned as the text PostgreSQL stores.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from airflow_provider_fdw.exceptions import FdwConfigError

INT_MAX = 2**31 - 1
_TRUE = {"true", "on", "yes", "1", "t", "y"}
_FALSE = {"false", "off", "no", "0", "f", "n"}


def _integer(low: int, high: int = INT_MAX) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise FdwConfigError(f"{name} must be an integer from {low} to {high}, got {value!r}.")
        text = str(int(value)) if isinstance(value, float) else str(value).strip()
        if not re.fullmatch(r"[+-]?\d+", text) or not low <= int(text) <= high:
            raise FdwConfigError(f"{name} must be an integer from {low} to {high}, got {value!r}.")
        return str(int(text))

    return check


def _number(low: float) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(str(value).strip())
        except ValueError:
            raise FdwConfigError(f"{name} must be a number, got {value!r}.") from None
        if not number >= low or number == float("inf"):
            raise FdwConfigError(f"{name} must be a finite number of at least {low:g}, got {value!r}.")
        return str(value).strip()

    return check


def _boolean(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return "true" if text in _TRUE else "false"
    raise FdwConfigError(f"{name} must be a boolean (true/false), got {value!r}.")


def _zero_one(name: str, value: Any) -> str:
    text = "1" if value is True else "0" if value is False else str(value).strip()
    if text not in ("0", "1"):
        raise FdwConfigError(f"{name} must be 0 or 1, got {value!r}.")
    return text


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        text = str(value).strip() if isinstance(value, str) else None
        if text not in choices:
            raise FdwConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
        return text

    return check


def _text(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FdwConfigError(f"{name} must be text, got {value!r}.")
    text = str(value)
    if "\x00" in text:
        raise FdwConfigError(f"{name} must not contain NUL characters.")
    return text


def _ports(name: str, value: Any) -> str:
    """One port, or a comma-separated list (one per host in a multi-host ``host``)."""
    text = str(value).strip() if not isinstance(value, bool) else ""
    parts = text.split(",")
    if not text or not all(re.fullmatch(r"\d+", p.strip()) and 1 <= int(p) <= 65535 for p in parts):
        raise FdwConfigError(f"{name} must be a port number from 1 to 65535, got {value!r}.")
    return ",".join(str(int(p)) for p in parts)


def _name_list(name: str, value: Any) -> str:
    """A comma-separated list of names (``extensions``); a list or tuple is joined."""
    items = list(value) if isinstance(value, list | tuple) else str(value).split(",")
    names = [str(item).strip() for item in items]
    if not names or not all(isinstance(i, str) for i in items) or not all(names):
        raise FdwConfigError(f"{name} must be a comma-separated list of names, got {value!r}.")
    if any(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$-]*", n) for n in names):
        raise FdwConfigError(f"{name} must be a comma-separated list of extension names, got {value!r}.")
    return ",".join(names)


def _auth_methods(name: str, value: Any) -> str:
    methods = {"password", "md5", "gss", "sspi", "scram-sha-256", "none"}
    text = str(value).strip() if isinstance(value, str) else ""
    parts = [p.strip().removeprefix("!") for p in text.split(",")]
    if not text or not all(p in methods for p in parts):
        raise FdwConfigError(f"{name} must be a comma-separated list of {', '.join(sorted(methods))}.")
    return text


SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")

RULES: dict[str, Callable[[str, Any], str]] = {
    # libpq (https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS)
    "port": _ports,
    "connect_timeout": _integer(0),
    "keepalives": _zero_one,
    "keepalives_idle": _integer(0),
    "keepalives_interval": _integer(0),
    "keepalives_count": _integer(0),
    "tcp_user_timeout": _integer(0),
    "sslmode": _choice(*SSLMODES),
    "sslcompression": _zero_one,
    "sslsni": _zero_one,
    "gssencmode": _choice("disable", "prefer", "require"),
    "channel_binding": _choice("disable", "prefer", "require"),
    "target_session_attrs": _choice("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "load_balance_hosts": _choice("disable", "random"),
    "sslnegotiation": _choice("postgres", "direct"),
    "ssl_min_protocol_version": _choice(*TLS_VERSIONS),
    "ssl_max_protocol_version": _choice(*TLS_VERSIONS),
    "gssdelegation": _zero_one,
    "require_auth": _auth_methods,
    # postgres_fdw (https://www.postgresql.org/docs/current/postgres-fdw.html)
    "use_remote_estimate": _boolean,
    "updatable": _boolean,
    "truncatable": _boolean,
    "async_capable": _boolean,
    "parallel_commit": _boolean,
    "parallel_abort": _boolean,
    "keep_connections": _boolean,
    "fdw_startup_cost": _number(0),
    "fdw_tuple_cost": _number(0),
    "fetch_size": _integer(1),
    "batch_size": _integer(1),
    "extensions": _name_list,
    "analyze_sampling": _choice("off", "auto", "random", "system", "bernoulli"),
}


def check_option(name: str, value: Any, where: str) -> str:
    """The text PostgreSQL will store for option ``name``, or :class:`FdwConfigError`."""
    rule = RULES.get(name, _text)
    try:
        return rule(name, value)
    except FdwConfigError as exc:
        raise FdwConfigError(f"{where}: {exc}") from None


_INTERVAL_UNITS = (
    "microsecond|millisecond|second|minute|hour|day|week|month|year|decade|century|millennium|"
    "us|ms|s|sec|min|h|hr|d|w|mon|y|yr"
)
_INTERVAL = re.compile(
    rf"\s*(?:[+-]?\d+(?:\.\d+)?\s*(?:(?:{_INTERVAL_UNITS})s?)\s*)+\s*"
    r"|\s*[+-]?\d+:\d{1,2}(?::\d{1,2}(?:\.\d+)?)?\s*"
    r"|\s*[+-]?\d+(?:\.\d+)?\s*",
    re.IGNORECASE,
)


def check_interval(value: str, what: str) -> str:
    """A PostgreSQL interval in a plain form ('5 minutes', '1 hour 30 min', '00:05:00'), or a number
    (for numeric watermarks)."""
    if not _INTERVAL.fullmatch(value):
        raise FdwConfigError(
            f"{what} must be an interval such as '5 minutes', '1 hour 30 minutes' or '00:05:00', "
            f"got {value!r}."
        )
    return value.strip()


# The value rules by type, for the wrapper descriptions (wrappers.py) that combine them per option.
boolean = _boolean
text = _text
integer = _integer
choice = _choice
