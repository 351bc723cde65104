"""Replication lag, measured the way trusted monitoring does (postgres_exporter, check_postgres, pgwatch).

- Bytes come from ``pg_wal_lsn_diff`` between the primary's WAL position and the replica's.
- Seconds come from replay timestamps / ``replay_lag`` only while the receiver is connected, and
  are 0 when nothing is outstanding: on an idle primary ``pg_last_xact_replay_timestamp()`` keeps
  ageing and ``*_lag`` columns turn NULL, which must not read as "stale".
- A receiver that is not streaming, a disabled subscription, a stopped apply worker or an inactive
  slot is *broken*, reported as such: never a false "fresh".
- A subscription with a table still in its initial sync is not fresh whatever its slot says: the
  apply worker confirms positions past data that is still being copied.
- A server that cannot be reached (down, starting, shutting down) is :class:`ServerUnavailable`:
  "not fresh", to wait for; a server that turns the login away raises the driver's error.

What to measure and when it is fresh enough is one :class:`LagSpec`, built (and validated) once by
the sensor and carried whole to the trigger (``to_dict``/``from_dict``: plain JSON in the trigger
row, no credentials). ``measure_lag`` is synchronous; the sensor calls it directly and the trigger
off the event loop.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_provider_fdw.compat import DriverError, error_fields, server_unavailable, sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.timeouts import DEFAULT_MEASUREMENT_TIMEOUT

MEASURES = ("standby", "subscription", "slot", "walsender")

CURRENT_LSN = sql.SQL("SELECT pg_current_wal_lsn()::text")

LSN_DIFF = sql.SQL("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint")

STANDBY_QUERY = sql.SQL(
    "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, "
    "  extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, "
    "  (SELECT status FROM pg_stat_wal_receiver), "
    "  pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint"
)

# On the primary: one walsender by application_name (physical standbys and subscriptions alike).
WALSENDER_QUERY = sql.SQL(
    "SELECT pg_current_wal_lsn()::text, r.state, r.replay_lsn::text, "
    "  extract(epoch FROM r.replay_lag)::float8, "
    "  pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint "
    "FROM pg_stat_replication r WHERE r.application_name = %s ORDER BY r.backend_start DESC LIMIT 1"
)

# On the primary: a replication slot and, when it is in use, its walsender.
SLOT_QUERY = sql.SQL(
    "SELECT pg_current_wal_lsn()::text, s.slot_type, s.active, s.wal_status, "
    "  coalesce(r.replay_lsn, s.confirmed_flush_lsn, s.restart_lsn)::text, "
    "  extract(epoch FROM r.replay_lag)::float8, "
    "  pg_wal_lsn_diff(pg_current_wal_lsn(), "
    "                  coalesce(r.replay_lsn, s.confirmed_flush_lsn, s.restart_lsn))::bigint "
    "FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid "
    "WHERE s.slot_name = %s"
)

# Without pg_read_all_stats, pg_stat_wal_receiver / pg_stat_replication show a pid and NULLs.
STATS_PRIVILEGE_QUERY = sql.SQL("SELECT current_user, pg_has_role('pg_read_all_stats', 'USAGE')")

# On the subscriber: is the subscription enabled, its apply worker running, and which of its tables
# are not yet ready (srsubstate other than 'r': still in their initial copy, or handing over to the
# apply worker)?
SUBSCRIPTION_QUERY = sql.SQL(
    "SELECT s.subenabled, st.pid, s.subslotname, st.latest_end_lsn::text, "
    "  ARRAY(SELECT ARRAY[r.srrelid::regclass::text, r.srsubstate::text] FROM pg_subscription_rel r "
    "        WHERE r.srsubid = s.oid AND r.srsubstate <> 'r' ORDER BY r.srrelid) "
    "FROM pg_subscription s LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL "
    "WHERE s.subname = %s AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@dataclass(frozen=True)
class LagSpec:
    """One replication-lag measurement and its bounds: what the sensor checks and the trigger polls.

    Validated when built (a clear :class:`FdwConfigError` before any connection). Serialisable:
    ``LagSpec.from_dict(spec.to_dict()) == spec``, through JSON too; only connection ids, names and
    numbers, never credentials.
    """

    postgres_conn_id: str
    measure: str = "standby"
    primary_conn_id: str | None = None
    subscription_name: str | None = None
    slot_name: str | None = None
    application_name: str | None = None
    max_lag_bytes: int | None = None
    max_lag_seconds: float | None = None
    catch_up: bool = False
    target_lsn: str | None = None
    fail_on_broken: bool = False
    measurement_timeout: float = DEFAULT_MEASUREMENT_TIMEOUT
    connect_timeout: int | None = None

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise FdwConfigError(f"measure must be one of {', '.join(MEASURES)}; got {self.measure!r}.")
        required = {"subscription": "subscription_name", "slot": "slot_name", "walsender": "application_name"}
        needed = required.get(self.measure)
        if needed and not getattr(self, needed):
            raise FdwConfigError(f"measure={self.measure!r} needs {needed}.")
        if self.target_lsn is not None and not self.catch_up:
            raise FdwConfigError("target_lsn is the position catch_up=True waits for: pass catch_up=True.")
        if not self.catch_up and self.max_lag_bytes is None and self.max_lag_seconds is None:
            raise FdwConfigError(
                "Give max_lag_bytes, max_lag_seconds (both must hold when both are given), or catch_up=True."
            )
        for name in ("max_lag_bytes", "max_lag_seconds"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise FdwConfigError(f"{name} must be a non-negative number, got {value!r}.")
        has_primary = self.primary_conn_id is not None
        if self.catch_up and self.measure in ("standby", "subscription") and not has_primary:
            raise FdwConfigError(
                "catch_up=True compares with the primary's WAL position: pass primary_conn_id."
            )
        if self.measure == "subscription" and not has_primary:
            # Seconds too: the subscriber alone has no lag to report, the wait could never succeed.
            raise FdwConfigError(
                "Lag of a subscription (bytes and seconds) is read on the publisher: pass primary_conn_id."
            )
        if self.measure == "standby" and self.max_lag_seconds is not None and not has_primary:
            # Alone, a standby sees only the WAL it received: one that stopped receiving looks 0 s behind.
            raise FdwConfigError(
                "max_lag_seconds of a standby needs the primary's WAL position (without it a standby "
                "that stopped receiving looks up to date): pass primary_conn_id."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LagSpec:
        """The spec ``to_dict`` gave (also the flat trigger kwargs of 0.1.0, where ``target_lsn``
        alone meant catch-up)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FdwConfigError(f"Unknown replication-lag spec field(s): {', '.join(unknown)}.")
        values = dict(data)
        values.setdefault("catch_up", values.get("target_lsn") is not None)
        return cls(**values)

    def satisfied(self, reading: LagReading) -> bool:
        """Fresh enough? Every given bound must hold; an unknown value never passes a bound; a table
        still in its initial sync is never fresh."""
        if reading.broken or reading.syncing:
            return False
        if self.catch_up and (reading.lag_bytes is None or reading.lag_bytes > 0):
            return False
        if self.max_lag_bytes is not None and (
            reading.lag_bytes is None or reading.lag_bytes > self.max_lag_bytes
        ):
            return False
        return not (
            self.max_lag_seconds is not None
            and (reading.lag_seconds is None or reading.lag_seconds > self.max_lag_seconds)
        )

    def wanted(self) -> str:
        """The bounds, for the log: ``bytes <= 0, seconds <= 5`` or ``caught up to 0/3000060``."""
        bounds = ", ".join(
            f"{k} <= {v}"
            for k, v in (("bytes", self.max_lag_bytes), ("seconds", self.max_lag_seconds))
            if v is not None
        )
        return bounds or f"caught up to {self.target_lsn}"


@dataclass
class LagReading:
    """One measurement. ``broken`` holds the reason when replication is not working; ``syncing``
    the subscription's tables not yet ready (``app.t (copying)``), which keep it from being fresh."""

    measure: str
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    broken: str | None = None
    replica_lsn: str | None = None
    primary_lsn: str | None = None
    target_lsn: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    syncing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.broken:
            return f"{self.measure} replication is broken: {self.broken}"
        seconds = "unknown" if self.lag_seconds is None else f"{self.lag_seconds:.1f}s"
        lag_bytes = "unknown" if self.lag_bytes is None else f"{self.lag_bytes} bytes"
        where = f" (replica at {self.replica_lsn}, primary at {self.primary_lsn or self.target_lsn})"
        syncing = f"; not yet in sync: {', '.join(self.syncing)}" if self.syncing else ""
        return f"{self.measure} lag {lag_bytes}, {seconds}{where}{syncing}"


# pg_subscription_rel.srsubstate of a table not yet ready, for the log.
SYNC_STATES = {
    "i": "initializing",
    "d": "copying",
    "f": "copied, catching up",
    "s": "synchronized, handing over",
}


class ServerUnavailable(FdwError):
    """A server could not be reached (down, starting up, shutting down): "not fresh" yet."""


LSN_FORMAT = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")


def valid_lsn(value: Any) -> bool:
    """A ``pg_lsn`` text such as ``0/16B3748``."""
    return isinstance(value, str) and LSN_FORMAT.fullmatch(value) is not None


def current_lsn(conn: Any) -> str:
    return _one(conn, CURRENT_LSN)[0]


def measure_lag(
    spec: LagSpec, replica: Callable[[], Any], primary: Callable[[], Any] | None = None
) -> LagReading:
    """Measure once. ``replica``/``primary`` open connections to ``spec.postgres_conn_id`` and
    ``spec.primary_conn_id``; with ``spec.target_lsn`` lag is measured against that fixed position
    (catch-up) instead of the primary's current one. Raises :class:`ServerUnavailable` when either
    server cannot be reached."""
    measure = {"standby": _standby, "subscription": _subscription, "slot": _slot, "walsender": _walsender}
    replica = _reachable(replica, spec.postgres_conn_id)
    if primary is not None:
        primary = _reachable(primary, spec.primary_conn_id)
    return measure[spec.measure](spec, replica, primary, spec.target_lsn)


def _reachable(connect: Callable[[], Any], conn_id: str | None) -> Callable[[], Any]:
    """``connect``, raising :class:`ServerUnavailable` when the server cannot be reached (a restart
    is waited for); a login the server turns away (password, role, database) raises as it is."""

    def attempt(last: bool) -> Any:
        try:
            return connect()
        except DriverError as exc:
            if server_unavailable(exc):
                # The driver's first line names host and port, never the password.
                reason = error_fields(exc)["message"]
                raise ServerUnavailable(
                    f"Cannot reach the server of connection {conn_id!r}: {reason}", step="connect"
                ) from None
            if last:
                raise
            return None

    def open_connection() -> Any:
        # The ping answered: the login was turned away, or the server came up between the attempt
        # and the ping (a restart ending). One more attempt tells them apart.
        return attempt(last=False) or attempt(last=True)

    return open_connection


def _standby(
    spec: LagSpec, replica: Callable[[], Any], primary: Callable[[], Any] | None, target_lsn: str | None
) -> LagReading:
    reading = LagReading("standby", target_lsn=target_lsn)
    primary_lsn = target_lsn
    if primary is not None and target_lsn is None:
        primary_lsn = _with(primary, current_lsn)  # read first: the replica can only be behind it
        reading.primary_lsn = primary_lsn
    conn = replica()
    try:
        check_stats_privilege(conn)
        in_recovery, receive_lsn, replay_lsn, replay_age, status, unreplayed = _one(conn, STANDBY_QUERY)
        if not in_recovery:
            raise FdwConfigError(
                "measure='standby' needs a connection to a standby (pg_is_in_recovery() is false)."
            )
        reading.replica_lsn = replay_lsn
        reading.details = {"receive_lsn": receive_lsn, "receiver_status": status}
        if status != "streaming":
            reading.broken = f"the WAL receiver is not streaming (status: {status or 'not running'})"
            return reading
        if primary_lsn is None:  # without the primary: WAL received but not yet replayed (a lower bound)
            reading.lag_bytes = max(0, int(unreplayed or 0))
            return reading  # seconds unknown: a standby that stopped receiving would look 0 s behind
        reading.lag_bytes = max(0, int(_one(conn, LSN_DIFF, (primary_lsn, replay_lsn))[0]))
    finally:
        conn.close()
    reading.lag_seconds = 0.0 if reading.lag_bytes == 0 else replay_age
    return reading


def _walsender(
    spec: LagSpec, replica: Callable[[], Any], primary: Callable[[], Any] | None, target_lsn: str | None
) -> LagReading:
    """On the primary (the sensor's own connection): one walsender by application_name."""
    reading = LagReading("walsender", target_lsn=target_lsn)
    conn = replica()
    try:
        check_stats_privilege(conn)
        row = _one(conn, WALSENDER_QUERY, (spec.application_name,))
        if row is None:
            reading.broken = f"no walsender with application_name {spec.application_name!r} is connected"
            return reading
        reading.primary_lsn, state, reading.replica_lsn, replay_lag, diff = row
        reading.details = {"state": state}
        _fill(reading, conn, diff, replay_lag, target_lsn)
    finally:
        conn.close()
    return reading


def _slot(
    spec: LagSpec, replica: Callable[[], Any], primary: Callable[[], Any] | None, target_lsn: str | None
) -> LagReading:
    """On the primary (the sensor's own connection): a replication slot."""
    reading = LagReading("slot", target_lsn=target_lsn)
    conn = replica()
    try:
        check_stats_privilege(conn)
        row = _one(conn, SLOT_QUERY, (spec.slot_name,))
        if row is None:
            raise FdwConfigError(f"Replication slot {spec.slot_name!r} does not exist on this server.")
        reading.primary_lsn, slot_type, active, wal_status, reading.replica_lsn, replay_lag, diff = row
        reading.details = {"slot_type": slot_type, "wal_status": wal_status}
        if wal_status == "lost":
            reading.broken = f"slot {spec.slot_name!r} has lost required WAL (wal_status lost)"
        elif not active:
            reading.broken = f"slot {spec.slot_name!r} is inactive: no consumer is connected"
        else:
            _fill(reading, conn, diff, replay_lag, target_lsn)
    finally:
        conn.close()
    return reading


def _subscription(
    spec: LagSpec, replica: Callable[[], Any], primary: Callable[[], Any] | None, target_lsn: str | None
) -> LagReading:
    """On the subscriber: health of the subscription; lag read from its slot on the publisher."""
    conn = replica()
    try:
        row = _one(conn, SUBSCRIPTION_QUERY, (spec.subscription_name,))
    finally:
        conn.close()
    if row is None:
        raise FdwConfigError(f"Subscription {spec.subscription_name!r} does not exist in this database.")
    enabled, pid, slot_name, latest_end_lsn, not_ready = row
    syncing = [f"{name} ({SYNC_STATES.get(state, state)})" for name, state in not_ready or []]
    reading = LagReading("subscription", target_lsn=target_lsn, replica_lsn=latest_end_lsn, syncing=syncing)
    reading.details = {"slot_name": slot_name}
    if not enabled:
        reading.broken = f"subscription {spec.subscription_name!r} is disabled"
        return reading
    if pid is None:
        reading.broken = f"the apply worker of subscription {spec.subscription_name!r} is not running"
        return reading
    if primary is None:  # LagSpec refuses a subscription without its publisher
        raise FdwConfigError("Lag of a subscription is read on the publisher: pass primary_conn_id.")
    if slot_name is None:
        raise FdwConfigError(
            f"Subscription {spec.subscription_name!r} has no replication slot (slot_name = NONE): "
            "its lag cannot be read on the publisher."
        )
    on_publisher = _slot(
        dataclasses.replace(spec, measure="slot", slot_name=slot_name), primary, None, target_lsn
    )
    on_publisher.measure = "subscription"
    on_publisher.details["slot_name"] = slot_name
    on_publisher.syncing = syncing  # read before the publisher's position: errs on "not fresh"
    return on_publisher


def _fill(
    reading: LagReading, conn: Any, diff: int | None, replay_lag: float | None, target_lsn: str | None
) -> None:
    if target_lsn is not None:
        diff = _one(conn, LSN_DIFF, (target_lsn, reading.replica_lsn))[0] if reading.replica_lsn else None
    reading.lag_bytes = None if diff is None else max(0, int(diff))
    # replay_lag is NULL when idle: with nothing outstanding that is "no lag", not "unknown".
    reading.lag_seconds = 0.0 if reading.lag_bytes == 0 else replay_lag


def check_stats_privilege(conn: Any) -> None:
    """Fail with the grant to run, rather than read hidden statistics as "not streaming"."""
    user, allowed = _one(conn, STATS_PRIVILEGE_QUERY)
    if not allowed:
        raise FdwConfigError(
            f"The role {user} cannot read replication status on this server (PostgreSQL hides "
            "pg_stat_wal_receiver and pg_stat_replication details from roles without pg_read_all_stats): "
            f"GRANT pg_monitor TO {user};"
        )


def _one(conn: Any, statement: Any, params: Any = None) -> Any:
    cur = conn.cursor()
    cur.execute(statement, params)
    return cur.fetchone()


def _with(connect: Callable[[], Any], fn: Callable[[Any], Any]) -> Any:
    conn = connect()
    try:
        return fn(conn)
    finally:
        conn.close()
