"""ReplicationLagSensor and ReplicationLagTrigger on real streaming and logical replication."""

from __future__ import annotations

import asyncio
import datetime
import os
import threading
import time

import pytest
from conftest import SOURCE_DB, TARGET_DB, postgres_connection

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError
from airflow_provider_fdw.replication import LagSpec
from airflow_provider_fdw.sensors.replication import ReplicationLagSensor
from airflow_provider_fdw.triggers.replication import ReplicationLagTrigger
from fdw_testing.pgcluster import standby_of

BURST = "INSERT INTO app.repl_items SELECT g, repeat(md5(g::text), 8) FROM generate_series({lo}, {hi}) g"


@pytest.fixture(scope="module")
def repl(airflow_connections):
    """A standby of the source (third cluster) and a subscription source -> target, with connections."""
    pair = airflow_connections
    src, tgt = pair.source, pair.target
    with standby_of(src) as standby:
        src.execute("CREATE TABLE app.repl_items (id bigint PRIMARY KEY, payload text)", dbname=SOURCE_DB)
        src.execute("CREATE PUBLICATION fdw_pub FOR TABLE app.repl_items", dbname=SOURCE_DB)
        tgt.execute("CREATE SCHEMA IF NOT EXISTS app", dbname=TARGET_DB)
        tgt.execute("CREATE TABLE app.repl_items (id bigint PRIMARY KEY, payload text)", dbname=TARGET_DB)
        publisher = (
            f"host={src.host} port={src.port} dbname={SOURCE_DB} user={src.superuser} password={src.password}"
        )
        tgt.execute(
            sql.SQL("CREATE SUBSCRIPTION fdw_sub CONNECTION {} PUBLICATION fdw_pub").format(
                sql.Literal(publisher)
            ),
            dbname=TARGET_DB,
        )
        os.environ["AIRFLOW_CONN_STANDBY_DB"] = postgres_connection(standby, SOURCE_DB)
        os.environ["AIRFLOW_CONN_SOURCE_DB"] = postgres_connection(src, SOURCE_DB)
        wait_for(lambda: standby.execute("SELECT status FROM pg_stat_wal_receiver") == [("streaming",)])
        wait_for(
            lambda: (
                tgt.execute(
                    "SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL", dbname=TARGET_DB
                )[0][0]
                >= 1
            )
        )
        started = time.monotonic()
        yield pair, standby
        tgt.execute("DROP SUBSCRIPTION IF EXISTS fdw_sub", dbname=TARGET_DB)
        # the session-wide pair is shared: leave its databases as other modules expect them
        tgt.execute("DROP TABLE app.repl_items", dbname=TARGET_DB)
        src.execute("DROP PUBLICATION fdw_pub", dbname=SOURCE_DB)
        src.execute("DROP TABLE app.repl_items", dbname=SOURCE_DB)
    print(f"\n[replication] tests took {time.monotonic() - started:.1f}s")


def wait_for(predicate, timeout: float = 60.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


def sensor(**kwargs) -> ReplicationLagSensor:
    kwargs.setdefault("task_id", "lag")
    kwargs.setdefault("deferrable", False)
    return ReplicationLagSensor(**kwargs)


def standby_sensor(**kwargs) -> ReplicationLagSensor:
    return sensor(postgres_conn_id="standby_db", measure="standby", primary_conn_id="source_db", **kwargs)


def poke_until_done(s: ReplicationLagSensor, timeout: float = 60.0):
    return wait_for(lambda: s.poke({}).is_done and s.last_reading, timeout, every=0.2)


def burst(src, lo: int, hi: int) -> None:
    src.execute(BURST.format(lo=lo, hi=hi), dbname=SOURCE_DB)


def test_idle_standby_is_fresh_at_once_even_after_its_replay_timestamp_aged(repl):
    wait_for(lambda: standby_sensor(max_lag_bytes=0).poke({}).is_done)
    time.sleep(2.5)  # the last replayed transaction is now >2s old, but nothing is outstanding
    s = standby_sensor(max_lag_bytes=1024, max_lag_seconds=1)

    def caught_up():  # background WAL (an autovacuum, a checkpoint) can leave a poke a few KB behind
        return s.poke({}).is_done and s.last_reading["lag_bytes"] == 0 and s.last_reading

    # Such WAL has no commit record: the last replayed transaction stays >2 s old meanwhile.
    reading = wait_for(caught_up, timeout=30, every=0.2)
    assert reading["lag_seconds"] == 0.0


def test_a_write_burst_on_the_primary_holds_the_sensor_until_the_standby_catches_up(repl):
    pair, standby = repl
    standby.execute("SELECT pg_wal_replay_pause()")
    try:
        burst(pair.source, 1, 100_000)  # ~30 MB of WAL
        s = standby_sensor(max_lag_bytes=1_000_000, max_lag_seconds=60)
        result = s.poke({})
        assert not result.is_done
        assert result.xcom_value["lag_bytes"] > 1_000_000 and result.xcom_value["broken"] is None
        catch_up = standby_sensor(catch_up=True)
        catch_up.target_lsn = catch_up._start_lsn({})
        assert not catch_up.poke({}).is_done
    finally:
        standby.execute("SELECT pg_wal_replay_resume()")
    assert poke_until_done(s)["lag_bytes"] <= 1_000_000
    assert poke_until_done(catch_up)["lag_bytes"] == 0


def test_a_stopped_receiver_is_reported_broken_never_fresh(repl):
    from airflow.sdk.exceptions import AirflowFailException

    _, standby = repl
    original = standby.execute("SHOW primary_conninfo")[0][0]  # written by pg_basebackup -R
    standby.execute("ALTER SYSTEM SET primary_conninfo = ''")
    standby.execute("SELECT pg_reload_conf()")
    try:
        wait_for(lambda: standby.execute("SELECT count(*) FROM pg_stat_wal_receiver")[0][0] == 0)
        s = standby_sensor(max_lag_bytes=10**12, max_lag_seconds=10**6)  # any lag would pass these bounds
        result = s.poke({})
        assert not result.is_done and "not streaming" in result.xcom_value["broken"]
        with pytest.raises(AirflowFailException, match="WAL receiver is not streaming"):
            standby_sensor(max_lag_bytes=10**12, fail_on_broken=True).poke({})
        # The same outage seen from the primary: the walsender is gone and the slot inactive.
        walsender = sensor(
            postgres_conn_id="source_db",
            measure="walsender",
            application_name="fdw_standby",
            max_lag_bytes=10**12,
        )
        assert "no walsender" in wait_for(lambda: walsender.poke({}).xcom_value["broken"])
        slot = sensor(
            postgres_conn_id="source_db", measure="slot", slot_name="fdw_standby_slot", max_lag_bytes=10**12
        )
        assert "inactive" in slot.poke({}).xcom_value["broken"]
    finally:
        standby.execute(sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(original)))
        standby.execute("SELECT pg_reload_conf()")
    wait_for(lambda: standby.execute("SELECT status FROM pg_stat_wal_receiver") == [("streaming",)])
    poke_until_done(standby_sensor(max_lag_bytes=0))
    walsender = sensor(
        postgres_conn_id="source_db",
        measure="walsender",
        application_name="fdw_standby",
        max_lag_bytes=1_000_000,
    )
    assert poke_until_done(walsender)["broken"] is None
    assert (
        poke_until_done(
            sensor(
                postgres_conn_id="source_db",
                measure="slot",
                slot_name="fdw_standby_slot",
                max_lag_bytes=1_000_000,
            )
        )["details"]["slot_type"]
        == "physical"
    )


def subscription_sensor(**kwargs) -> ReplicationLagSensor:
    return sensor(
        postgres_conn_id="postgres_default",
        measure="subscription",
        subscription_name="fdw_sub",
        primary_conn_id="source_db",
        **kwargs,
    )


def test_subscription_fresh_then_lagging_behind_a_blocked_apply_then_fresh(repl):
    pair, _ = repl
    assert poke_until_done(subscription_sensor(max_lag_bytes=1_000_000))["broken"] is None
    blocker = pair.target.connect(TARGET_DB, autocommit=False)
    try:
        # The apply worker waits for this lock, so changes pile up on the publisher.
        blocker.cursor().execute("LOCK TABLE app.repl_items IN ACCESS EXCLUSIVE MODE")
        # Many transactions: logical decoding ships each at its commit, so they queue up behind the lock
        # (one huge transaction would show little byte lag: catch_up=True is the measure for that).
        for i in range(60):
            burst(pair.source, 200_001 + i * 1000, 200_000 + (i + 1) * 1000)
        s = subscription_sensor(max_lag_bytes=1_000_000)
        catch_up = subscription_sensor(catch_up=True)
        catch_up.target_lsn = catch_up._start_lsn({})
        assert not catch_up.poke({}).is_done
        # (PokeReturnValue is falsy until done: wait on the reading itself.)
        reading = wait_for(
            lambda: (r := s.poke({}).xcom_value)["lag_bytes"] and r["lag_bytes"] > 1_000_000 and r
        )
        assert reading["broken"] is None
    finally:
        blocker.rollback()
        blocker.close()
    assert poke_until_done(s)["lag_bytes"] <= 1_000_000
    wait_for(
        lambda: (
            pair.target.execute("SELECT count(*) FROM app.repl_items WHERE id > 200000", dbname=TARGET_DB)[0][
                0
            ]
            == 60_000
        )
    )


def test_a_disabled_subscription_is_broken_and_its_slot_inactive(repl):
    from airflow.sdk.exceptions import AirflowFailException

    pair, _ = repl
    pair.target.execute("ALTER SUBSCRIPTION fdw_sub DISABLE", dbname=TARGET_DB)
    try:
        s = subscription_sensor(max_lag_bytes=10**12)
        assert "is disabled" in s.poke({}).xcom_value["broken"]
        slot = sensor(postgres_conn_id="source_db", measure="slot", slot_name="fdw_sub", max_lag_bytes=10**12)
        assert "inactive" in wait_for(lambda: slot.poke({}).xcom_value["broken"])
        with pytest.raises(AirflowFailException, match="disabled"):
            subscription_sensor(max_lag_bytes=10**12, fail_on_broken=True).poke({})
    finally:
        pair.target.execute("ALTER SUBSCRIPTION fdw_sub ENABLE", dbname=TARGET_DB)
    assert poke_until_done(subscription_sensor(max_lag_bytes=1_000_000))["broken"] is None


def run_trigger(trigger: ReplicationLagTrigger, timeout: float = 60.0):
    """Run the trigger in a real event loop next to a ticker; return the event and the longest stall."""

    async def main():
        gaps: list[float] = []

        async def ticker():
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.02)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick_task = asyncio.create_task(ticker())
        started = time.monotonic()
        event = await asyncio.wait_for(anext(trigger.run()), timeout)
        tick_task.cancel()
        return event, max(gaps, default=0.0), time.monotonic() - started

    return asyncio.run(main())


def test_trigger_success_and_broken_events_without_blocking_the_loop(repl, monkeypatch):
    import airflow_provider_fdw.triggers.replication as trigger_module

    real_measure = trigger_module.measure_lag

    def slow_measure(*args, **kwargs):  # each measurement takes 0.3 s: on the loop, the ticker would stall
        time.sleep(0.3)
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(trigger_module, "measure_lag", slow_measure)
    pair, standby = repl
    standby.execute("SELECT pg_wal_replay_pause()")
    try:
        burst(pair.source, 300_001, 340_000)
        trigger = ReplicationLagTrigger(
            LagSpec("standby_db", "standby", primary_conn_id="source_db", max_lag_bytes=0), poll_interval=0.2
        )
        resume = threading.Timer(1.5, lambda: standby.execute("SELECT pg_wal_replay_resume()"))
        resume.start()
        event, longest_stall, seconds = run_trigger(trigger)
    finally:
        standby.execute("SELECT pg_wal_replay_resume()")
    assert event.payload["status"] == "success" and event.payload["reading"]["lag_bytes"] == 0
    assert seconds >= 1.4
    assert longest_stall < 0.25  # measurements of 0.3 s ran off the loop: it never stopped ticking

    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_fdw.triggers.replication.ReplicationLagTrigger"
    assert pair.source.password not in repr(kwargs)
    assert ReplicationLagTrigger(**kwargs).serialize() == (classpath, kwargs)

    pair.target.execute("ALTER SUBSCRIPTION fdw_sub DISABLE", dbname=TARGET_DB)
    try:
        broken = ReplicationLagTrigger(
            LagSpec(
                "postgres_default",
                "subscription",
                primary_conn_id="source_db",
                subscription_name="fdw_sub",
                max_lag_bytes=0,
                fail_on_broken=True,
            )
        )
        event, _, _ = run_trigger(broken)
    finally:
        pair.target.execute("ALTER SUBSCRIPTION fdw_sub ENABLE", dbname=TARGET_DB)
    assert event.payload["status"] == "broken" and "disabled" in event.payload["message"]
    error, _, _ = run_trigger(
        ReplicationLagTrigger(LagSpec("standby_db", "slot", slot_name="nope", max_lag_bytes=0))
    )
    assert error.payload["status"] == "invalid" and "does not exist" in error.payload["message"]


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_sensor_modes_in_a_dag_run_wait_for_a_lagging_standby(airflow_db, repl, mode):
    from airflow.sdk import DAG

    from fdw_testing.dagrun import run_dag

    pair, standby = repl
    with DAG(f"lag_{mode}", schedule=None, start_date=datetime.datetime(2024, 1, 1)) as dag:
        ReplicationLagSensor(
            task_id="lag",
            postgres_conn_id="standby_db",
            primary_conn_id="source_db",
            catch_up=True,
            poke_interval=0.5,
            timeout=120,
            mode="reschedule" if mode == "reschedule" else "poke",
            deferrable=mode == "deferrable",
        )
    standby.execute("SELECT pg_wal_replay_pause()")
    offset = 400_000 + 10_000 * ["poke", "reschedule", "deferrable"].index(mode)
    burst(pair.source, offset + 1, offset + 10_000)
    resume = threading.Timer(2.0, lambda: standby.execute("SELECT pg_wal_replay_resume()"))
    resume.start()
    try:
        result = run_dag(dag)
    finally:
        resume.join()
        standby.execute("SELECT pg_wal_replay_resume()")
    assert result.state == "success", result.task_states
    assert result.xcom["lag"]["lag_bytes"] == 0 and result.xcom["lag"]["target_lsn"]


def test_timeout_with_soft_fail_skips_while_replication_is_broken(airflow_db, repl):
    from airflow.sdk import DAG

    from fdw_testing.dagrun import run_dag

    pair, _ = repl
    with DAG("lag_soft_fail", schedule=None, start_date=datetime.datetime(2024, 1, 1)) as dag:
        ReplicationLagSensor(
            task_id="lag",
            postgres_conn_id="postgres_default",
            measure="subscription",
            subscription_name="fdw_sub",
            primary_conn_id="source_db",
            max_lag_seconds=5,
            poke_interval=0.5,
            timeout=2,
            soft_fail=True,
            deferrable=False,
        )
    pair.target.execute("ALTER SUBSCRIPTION fdw_sub DISABLE", dbname=TARGET_DB)
    try:
        result = run_dag(dag)
    finally:
        pair.target.execute("ALTER SUBSCRIPTION fdw_sub ENABLE", dbname=TARGET_DB)
    assert result.task_states["lag"] == "skipped"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"measure": "standby"}, "Give max_lag_bytes"),
        ({"measure": "nope", "max_lag_bytes": 1}, "measure must be one of"),
        ({"measure": "slot", "max_lag_bytes": 1}, "needs slot_name"),
        ({"measure": "subscription", "max_lag_seconds": 1}, "needs subscription_name"),
        ({"measure": "subscription", "subscription_name": "s", "max_lag_bytes": 1}, "read on the publisher"),
        ({"measure": "standby", "catch_up": True}, "pass primary_conn_id"),
        ({"measure": "standby", "max_lag_bytes": -1}, "non-negative"),
        ({"measure": "standby", "max_lag_bytes": 1, "target_lsn": "0/1"}, "pass catch_up=True"),
    ],
)
def test_bad_arguments_fail_at_parse_time(kwargs, message):
    with pytest.raises(FdwConfigError, match=message):
        ReplicationLagSensor(task_id="t", postgres_conn_id="x", **kwargs)


def test_reschedule_and_retry_keep_the_catch_up_target_of_the_first_try(airflow_db, repl, monkeypatch):
    """Airflow 3 clears a task's XComs at each reschedule try and retry: the target must not move."""
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.sdk import DAG
    from airflow.utils.session import create_session

    import airflow_provider_fdw.sensors.replication as sensor_module
    from fdw_testing.dagrun import run_dag

    pair, standby = repl
    real_measure = sensor_module.measure_lag
    targets: list[str | None] = []

    def measure_and_move_the_primary(spec, replica, primary=None):
        targets.append(spec.target_lsn)
        if len(targets) == 1:  # after the first poke the primary moves on: a later read would differ
            burst(pair.source, 520_001, 530_000)
        if len(targets) == 3:  # a failed try: the retry must keep the first try's target too
            raise RuntimeError("connection lost")
        if len(targets) == 5:
            standby.execute("SELECT pg_wal_replay_resume()")
        return real_measure(spec, replica, primary)

    monkeypatch.setattr(sensor_module, "measure_lag", measure_and_move_the_primary)
    with DAG("lag_target_kept", schedule=None, start_date=datetime.datetime(2024, 1, 1)) as dag:
        ReplicationLagSensor(
            task_id="lag",
            postgres_conn_id="standby_db",
            primary_conn_id="source_db",
            catch_up=True,
            poke_interval=0.2,
            timeout=120,
            mode="reschedule",
            retries=1,
            retry_delay=datetime.timedelta(seconds=0.2),
            deferrable=False,
        )
    standby.execute("SELECT pg_wal_replay_pause()")
    burst(pair.source, 510_001, 520_000)  # the standby is behind when the sensor starts
    try:
        result = run_dag(dag)
    finally:
        standby.execute("SELECT pg_wal_replay_resume()")
    assert result.state == "success", result.task_states
    assert len(targets) >= 5 and targets[0] is not None
    assert set(targets) == {targets[0]}, targets
    assert result.xcom["lag"]["target_lsn"] == targets[0] and result.xcom["lag"]["lag_bytes"] == 0
    with create_session() as session:
        reschedules = session.query(TaskReschedule).join(TaskReschedule.task_instance).count()
    assert reschedules >= 2


def test_an_explicit_target_lsn_is_waited_for_and_a_malformed_one_fails(repl):
    from airflow.sdk.exceptions import AirflowFailException

    pair, _ = repl
    target = pair.source.execute("SELECT pg_current_wal_lsn()::text", dbname=SOURCE_DB)[0][0]
    burst(pair.source, 540_001, 541_000)  # the primary moves on: the given position is still the target
    s = standby_sensor(catch_up=True, target_lsn=target)
    assert s._start_lsn({}) == target
    assert poke_until_done(s)["target_lsn"] == target
    with pytest.raises(AirflowFailException, match="WAL position"):
        standby_sensor(catch_up=True, target_lsn="yesterday")._start_lsn({})


def test_a_deferred_target_survives_a_triggerer_restart_and_a_missing_grant_fails_at_once(repl):
    """The trigger row holds the target: a trigger re-created from its kwargs waits for the same one."""
    import json

    from airflow.sdk.exceptions import TaskDeferred

    pair, standby = repl
    standby.execute("SELECT pg_wal_replay_pause()")
    try:
        burst(pair.source, 550_001, 560_000)
        s = standby_sensor(catch_up=True, deferrable=True, poke_interval=0.2)
        with pytest.raises(TaskDeferred) as deferred:
            s.execute({})
        _, kwargs = deferred.value.trigger.serialize()
        burst(pair.source, 560_001, 570_000)  # the primary moves on while the triggerer restarts
        restarted = ReplicationLagTrigger(**json.loads(json.dumps(kwargs)))  # as stored in the trigger row
        resume = threading.Timer(1.0, lambda: standby.execute("SELECT pg_wal_replay_resume()"))
        resume.start()
        event, _, _ = run_trigger(restarted)
    finally:
        standby.execute("SELECT pg_wal_replay_resume()")
    assert event.payload["status"] == "success"
    assert event.payload["reading"]["target_lsn"] == s.target_lsn == kwargs["spec"]["target_lsn"]

    pair.source.execute("CREATE ROLE lag_nobody LOGIN PASSWORD 'x'")
    os.environ["AIRFLOW_CONN_LAG_NOBODY"] = postgres_connection(pair.source, SOURCE_DB, "lag_nobody", "x")
    try:
        trigger = ReplicationLagTrigger(
            LagSpec("lag_nobody", "walsender", application_name="fdw_standby", max_lag_bytes=0)
        )
        event, _, _ = run_trigger(trigger)
    finally:
        del os.environ["AIRFLOW_CONN_LAG_NOBODY"]
    assert (
        event.payload["status"] == "invalid" and "GRANT pg_monitor TO lag_nobody" in event.payload["message"]
    )
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="GRANT pg_monitor"):
        s.execute_complete({}, event.payload)


def test_a_target_lsn_templated_from_an_upstream_task_is_waited_for(airflow_db, repl):
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from airflow.sdk import DAG, task

    from fdw_testing.dagrun import run_dag

    with DAG("lag_templated_target", schedule=None, start_date=datetime.datetime(2024, 1, 1)) as dag:

        @task
        def record_lsn() -> str:
            return PostgresHook(postgres_conn_id="source_db").get_first("SELECT pg_current_wal_lsn()::text")[
                0
            ]

        recorded = record_lsn()
        recorded >> ReplicationLagSensor(
            task_id="lag",
            postgres_conn_id="standby_db",
            primary_conn_id="source_db",
            catch_up=True,
            target_lsn="{{ ti.xcom_pull(task_ids='record_lsn') }}",
            poke_interval=0.5,
            timeout=60,
            deferrable=False,
        )
    result = run_dag(dag)
    assert result.state == "success", result.task_states
    assert result.xcom["lag"]["target_lsn"] == result.xcom["record_lsn"]


def test_a_subscription_is_not_caught_up_while_a_table_is_still_in_its_initial_sync(repl):
    pair, _ = repl
    src, tgt = pair.source, pair.target
    src.execute("CREATE TABLE app.repl_synced (id bigint PRIMARY KEY, payload text)", dbname=SOURCE_DB)
    src.execute(
        "INSERT INTO app.repl_synced SELECT g, md5(g::text) FROM generate_series(1, 1000) g", dbname=SOURCE_DB
    )
    src.execute("CREATE PUBLICATION fdw_sync_pub FOR TABLE app.repl_synced", dbname=SOURCE_DB)
    tgt.execute("CREATE TABLE app.repl_synced (id bigint PRIMARY KEY, payload text)", dbname=TARGET_DB)
    publisher = (
        f"host={src.host} port={src.port} dbname={SOURCE_DB} user={src.superuser} password={src.password}"
    )
    # A long reader of the subscriber's table (a report, a migration) holds the initial copy back.
    blocker = tgt.connect(TARGET_DB, autocommit=False)
    try:
        tgt.execute(  # (CREATE SUBSCRIPTION itself would wait for the lock: created disabled first)
            sql.SQL(
                "CREATE SUBSCRIPTION fdw_sync_sub CONNECTION {} PUBLICATION fdw_sync_pub "
                "WITH (enabled = false)"
            ).format(sql.Literal(publisher)),
            dbname=TARGET_DB,
        )
        blocker.cursor().execute("LOCK TABLE app.repl_synced IN ACCESS EXCLUSIVE MODE")
        tgt.execute("ALTER SUBSCRIPTION fdw_sync_sub ENABLE", dbname=TARGET_DB)
        s = sensor(
            postgres_conn_id="postgres_default",
            measure="subscription",
            subscription_name="fdw_sync_sub",
            primary_conn_id="source_db",
            catch_up=True,
        )
        s.target_lsn = s._start_lsn({})  # the 1000 rows were committed before this
        # The subscription's own slot passes the target while the table is still being copied ...
        slot = sensor(
            postgres_conn_id="source_db",
            measure="slot",
            slot_name="fdw_sync_sub",
            catch_up=True,
            target_lsn=s.target_lsn,
        )
        poke_until_done(slot)
        # ... which is not "everything committed before the sensor started is on the subscriber".
        result = s.poke({})
        assert not result.is_done
        assert result.xcom_value["broken"] is None
        assert [name for name in result.xcom_value["syncing"] if "repl_synced" in name]
        cur = blocker.cursor()
        cur.execute("SELECT count(*) FROM app.repl_synced")
        assert cur.fetchone()[0] == 0
    finally:
        blocker.rollback()
        blocker.close()
    try:
        assert poke_until_done(s)["syncing"] == []
        # Caught up now means it: every row committed before the target is on the subscriber.
        assert tgt.execute("SELECT count(*) FROM app.repl_synced", dbname=TARGET_DB) == [(1000,)]
    finally:
        tgt.execute("DROP SUBSCRIPTION IF EXISTS fdw_sync_sub", dbname=TARGET_DB)
        tgt.execute("DROP TABLE app.repl_synced", dbname=TARGET_DB)
        src.execute("DROP PUBLICATION IF EXISTS fdw_sync_pub", dbname=SOURCE_DB)
        src.execute("DROP TABLE app.repl_synced", dbname=SOURCE_DB)


def test_a_seconds_bound_on_a_standby_without_its_primary_is_refused_and_its_seconds_are_unknown(repl):
    # Without the primary only WAL already received is seen: a standby that stopped receiving would
    # look 0 s behind. Refused before any connection (the ids do not even exist) ...
    with pytest.raises(FdwConfigError, match="primary_conn_id"):
        ReplicationLagSensor(task_id="t", postgres_conn_id="nowhere", measure="standby", max_lag_seconds=2)
    with pytest.raises(FdwConfigError, match="primary_conn_id"):
        LagSpec("nowhere", "standby", max_lag_bytes=0, max_lag_seconds=2)  # a trigger row too
    # ... and a byte bound without the primary reports its seconds as unknown, never as 0.
    reading = poke_until_done(sensor(postgres_conn_id="standby_db", measure="standby", max_lag_bytes=10**12))
    assert reading["lag_seconds"] is None and reading["lag_bytes"] is not None


def test_a_subscription_without_its_publisher_is_refused_at_parse_time_whatever_the_bound():
    # Its lag is read only on the publisher: a seconds-only bound could never be satisfied.
    with pytest.raises(FdwConfigError, match="primary_conn_id"):
        ReplicationLagSensor(
            task_id="t",
            postgres_conn_id="nowhere",
            measure="subscription",
            subscription_name="s",
            max_lag_seconds=3600,
        )
    with pytest.raises(FdwConfigError, match="primary_conn_id"):
        ReplicationLagTrigger(  # a 0.1.0 trigger row (flat fields) is checked the same way
            postgres_conn_id="nowhere", measure="subscription", subscription_name="s", max_lag_seconds=1
        )


def test_a_restarting_replica_is_not_fresh_until_it_is_back_but_a_wrong_password_fails_at_once(
    repl, monkeypatch
):
    from airflow_provider_fdw.compat import DriverError

    _, standby = repl
    standby.stop("fast")
    try:
        s = standby_sensor(max_lag_bytes=1024)
        result = s.poke({})  # connection refused: a restart, not a reason to fail the task
        assert not result.is_done and result.xcom_value is None
        deferred = ReplicationLagTrigger(
            LagSpec("standby_db", "standby", primary_conn_id="source_db", max_lag_bytes=1024),
            poll_interval=0.1,
            deadline=time.time() + 1.5,
        )
        event, _, _ = run_trigger(deferred)
        assert event.payload["status"] == "timeout"  # waited until the sensor's timeout, no error
        back = threading.Timer(0.5, standby.start)
        back.start()
        restarted = ReplicationLagTrigger(
            LagSpec("standby_db", "standby", primary_conn_id="source_db", max_lag_bytes=1024),
            poll_interval=0.2,
        )
        event, _, _ = run_trigger(restarted)
        back.join()
    finally:
        if not standby.is_running():
            standby.start()
    assert event.payload["status"] == "success"
    assert poke_until_done(s)["broken"] is None

    wrong = "Wrong-Lag-Pw-77"
    monkeypatch.setenv(
        "AIRFLOW_CONN_LAG_WRONG_PASSWORD", postgres_connection(standby, SOURCE_DB, password=wrong)
    )
    with pytest.raises(DriverError, match="password authentication failed") as failed:
        sensor(postgres_conn_id="lag_wrong_password", primary_conn_id="source_db", max_lag_bytes=1024).poke(
            {}
        )
    assert wrong not in str(failed.value)
    spec = LagSpec("lag_wrong_password", "standby", primary_conn_id="source_db", max_lag_bytes=1024)
    event, _, _ = run_trigger(ReplicationLagTrigger(spec, poll_interval=0.1))
    assert event.payload["status"] == "error" and wrong not in event.payload["message"]


def test_a_server_that_comes_up_between_a_failed_login_and_the_ping_is_tried_again(monkeypatch):
    """The ping answers once the restart has ended, though the attempt failed while it was starting:
    one more attempt connects (it failed the task); a second refusal is raised as it is."""
    from airflow_provider_fdw import replication
    from airflow_provider_fdw.compat import DriverError

    monkeypatch.setattr(replication, "server_unavailable", lambda exc: False)  # the ping says "up"
    outcomes: list = [DriverError("the database system is not yet accepting connections"), "connection"]

    def connect():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert replication._reachable(connect, "standby_db")() == "connection"
    outcomes[:] = [
        DriverError("password authentication failed"),
        DriverError("password authentication failed"),
    ]
    with pytest.raises(DriverError, match="password"):
        replication._reachable(connect, "standby_db")()
