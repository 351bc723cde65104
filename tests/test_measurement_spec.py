"""One replication-lag measurement spec shared by the sensor and the trigger (no database)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.replication import LagReading, LagSpec
from airflow_provider_fdw.sensors.replication import ReplicationLagSensor
from airflow_provider_fdw.triggers.replication import ReplicationLagTrigger


def sensor(**kwargs) -> ReplicationLagSensor:
    base = {
        "task_id": "lag",
        "postgres_conn_id": "replica",
        "primary_conn_id": "primary",
        "measure": "subscription",
        "subscription_name": "sub",
        "max_lag_bytes": 100,
        "max_lag_seconds": 2.5,
        "fail_on_broken": True,
        "measurement_timeout": 7,
        "connect_timeout": 3,
        "deferrable": True,
    }
    return ReplicationLagSensor(**{**base, **kwargs})


def test_the_deferred_trigger_carries_the_sensors_spec_whole_through_json():
    s = sensor(catch_up=True, target_lsn="0/3000060")
    spec = s.spec()
    trigger = ReplicationLagTrigger(spec, poll_interval=5, deadline=1234.5)
    classpath, kwargs = trigger.serialize()
    assert set(kwargs) == {"spec", "poll_interval", "deadline"}
    assert kwargs["spec"] == spec.to_dict()
    stored = json.loads(json.dumps(kwargs))  # as the trigger row holds it
    restarted = ReplicationLagTrigger(**stored)
    assert restarted.spec == spec and restarted.serialize() == (classpath, kwargs)
    assert restarted.poll_interval == 5 and restarted.deadline == 1234.5


def test_spec_round_trips_and_refuses_unknown_fields():
    spec = LagSpec("standby_db", "slot", slot_name="s1", max_lag_seconds=1.5)
    assert LagSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(FdwConfigError, match="Unknown replication-lag spec field"):
        LagSpec.from_dict({**spec.to_dict(), "max_lag_byte": 1})


def test_a_trigger_row_written_by_0_1_0_still_loads():
    legacy = {
        "postgres_conn_id": "replica",
        "measure": "standby",
        "primary_conn_id": "primary",
        "subscription_name": None,
        "slot_name": None,
        "application_name": None,
        "max_lag_bytes": None,
        "max_lag_seconds": None,
        "target_lsn": "0/3000060",
        "fail_on_broken": False,
        "poll_interval": 0.5,
        "measurement_timeout": 30,
        "deadline": None,
        "connect_timeout": None,
    }
    trigger = ReplicationLagTrigger(**legacy)
    assert trigger.spec.catch_up is True and trigger.spec.target_lsn == "0/3000060"
    assert trigger.poll_interval == 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"measure": "slot"}, "needs slot_name"),
        ({"measure": "nope"}, "measure must be one of"),
        ({"max_lag_bytes": None, "max_lag_seconds": None}, "Give max_lag_bytes"),
        ({"max_lag_bytes": -1}, "non-negative"),
        ({"target_lsn": "0/1"}, "pass catch_up=True"),
    ],
)
def test_the_sensor_and_the_spec_refuse_the_same_bad_arguments(kwargs, message):
    with pytest.raises(FdwConfigError, match=message):
        sensor(**kwargs)
    fields = {k: v for k, v in sensor().spec().to_dict().items()}
    with pytest.raises(FdwConfigError, match=message):
        LagSpec(**{**fields, **kwargs})


def test_satisfied_needs_every_bound_and_never_passes_unknown_or_broken():
    spec = LagSpec("r", primary_conn_id="p", max_lag_bytes=10, max_lag_seconds=1.0)
    assert spec.satisfied(LagReading("standby", lag_bytes=10, lag_seconds=1.0))
    assert not spec.satisfied(LagReading("standby", lag_bytes=11, lag_seconds=0.0))
    assert not spec.satisfied(LagReading("standby", lag_bytes=0, lag_seconds=None))
    assert not spec.satisfied(LagReading("standby", lag_bytes=0, lag_seconds=0.0, broken="stopped"))
    catch_up = LagSpec("r", primary_conn_id="p", catch_up=True, target_lsn="0/1")
    assert catch_up.satisfied(LagReading("standby", lag_bytes=0))
    assert not catch_up.satisfied(LagReading("standby", lag_bytes=1))
    assert catch_up.wanted() == "caught up to 0/1" and spec.wanted() == "bytes <= 10, seconds <= 1.0"
