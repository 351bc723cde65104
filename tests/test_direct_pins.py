"""The direct path's pinned settings hold in every reading transaction, whatever the source role's
defaults and whether a pooler in front of the source drops libpq ``options`` (an adversarial review,
2026-12-07): copies with both relays, parallel and partitioned, and mirrors, compared value by value.
"""

from __future__ import annotations

import uuid

import pytest
from conftest import fdw_sandbox, local, server_as, wait_until

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.hooks.fdw import FdwHook
from fdw_testing.sample_data import SOURCE_DB, TARGET_DB

# -- the direct path's pins, with a source role whose defaults are hostile and a pooler dropping options


HOSTILE_ROLE, HOSTILE_PASSWORD = "review_hostile_reader", "Hostile-Reader-Secret-9"
HOSTILE_DEFAULTS = {
    "IntervalStyle": "sql_standard",
    "DateStyle": "German, DMY",
    "TimeZone": "Asia/Kolkata",
    "extra_float_digits": "0",
    "search_path": "hostile, public",
}
ROWS = 60_000  # above SMALL_LOAD_ROWS: a single range goes through psql too


@pytest.fixture(scope="module")
def pin_sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "pinrev", "pinrev_src")


@pytest.fixture(params=["pooled", "direct"])
def hostile_source(request, pin_sandbox, monkeypatch):
    """(fdw conn id, foreign table, remote table name, enum?) of a source read by a role with hostile
    defaults, through a pgbouncer dropping libpq ``options`` (or directly)."""
    from test_pooler import Bouncer

    sandbox = pin_sandbox
    source = sandbox.source
    source.execute(
        sql.SQL(
            "DO $$ BEGIN CREATE ROLE {} LOGIN PASSWORD {}; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ).format(sql.Identifier(HOSTILE_ROLE), sql.Literal(HOSTILE_PASSWORD))
    )
    for name, value in HOSTILE_DEFAULTS.items():
        source.execute(
            sql.SQL("ALTER ROLE {} SET {} = {}").format(
                sql.Identifier(HOSTILE_ROLE), sql.Identifier(name), sql.Literal(value)
            )
        )
    source.execute("CREATE SCHEMA IF NOT EXISTS hostile", dbname=SOURCE_DB)
    source.execute(
        sql.SQL("GRANT USAGE ON SCHEMA pinrev, hostile TO {}").format(sql.Identifier(HOSTILE_ROLE)),
        dbname=SOURCE_DB,
    )
    name = f"pr_{uuid.uuid4().hex[:8]}"
    for cluster, dbname, schema in ((source, SOURCE_DB, "pinrev"), (sandbox.target, TARGET_DB, "public")):
        cluster.execute(
            sql.SQL("CREATE TYPE {} AS ENUM ('ok', 'sad')").format(sql.Identifier(schema, f"{name}_mood")),
            dbname=dbname,
        )
    source.execute(
        sql.SQL(
            "CREATE TABLE pinrev.{} (id int PRIMARY KEY, ts timestamptz, d date, t timestamp, "
            "f float8, iv interval, n numeric, tm timetz, m pinrev.{})"
        ).format(sql.Identifier(name), sql.Identifier(f"{name}_mood")),
        dbname=SOURCE_DB,
    )
    source.execute(
        sql.SQL(
            "INSERT INTO pinrev.{} SELECT g, "
            "timestamptz '2024-03-04 10:00:00+00' + g * interval '37 minutes', "
            "date '2024-03-04' + g %% 400, timestamp '2024-01-02 03:04:05.123456' + g * interval '1 hour', "
            "0.1 * g + 0.2, make_interval(days => -(g %% 5), hours => -2, secs => -(g %% 7)), g / 7.0, "
            "timetz '10:00:00+05:45', 'sad' FROM generate_series(1, %s) g"
        ).format(sql.Identifier(name)),
        (ROWS,),
        dbname=SOURCE_DB,
    )
    source.execute(
        sql.SQL("GRANT SELECT ON pinrev.{} TO {}").format(sql.Identifier(name), sql.Identifier(HOSTILE_ROLE)),
        dbname=SOURCE_DB,
    )
    bouncer = None
    cluster = source
    if request.param == "pooled":
        bouncer = Bouncer(
            source, "session", ignore="extra_float_digits,options", users={HOSTILE_ROLE: HOSTILE_PASSWORD}
        )
        cluster = bouncer.cluster()
    try:
        conn_id, server = server_as(sandbox, cluster, HOSTILE_ROLE, HOSTILE_PASSWORD, monkeypatch)
        local(
            sandbox,
            "CREATE FOREIGN TABLE {f} (id int, ts timestamptz, d date, t timestamp, f float8, "
            "iv interval, n numeric, tm timetz, m {e}) SERVER {s} "
            "OPTIONS (schema_name 'pinrev', table_name {n})",
            f=f"proxy_pinrev.{name}",
            e=f"public.{name}_mood",
            s=server,
            n=sql.Literal(name),
        )
        yield conn_id, f"proxy_pinrev.{name}", name
    finally:
        if bouncer is not None:
            bouncer.stop()


FINGERPRINT = (
    "SELECT id, extract(epoch FROM ts)::text, (d - date '2000-01-01'), extract(epoch FROM t)::text, "
    "float8send(f)::text, extract(epoch FROM iv)::text, n::text, timetz_send(tm)::text, m::text "
    "FROM {t} ORDER BY id"
)


def source_fingerprint(pin_sandbox, name):
    return pin_sandbox.source.execute(
        sql.SQL(FINGERPRINT).format(t=sql.Identifier("pinrev", name)), dbname=SOURCE_DB
    )


@pytest.mark.parametrize("relay", ["psql", "python"])
@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_direct_copy_from_a_role_with_hostile_defaults_keeps_every_value(
    pin_sandbox, hostile_source, relay, parallelism
):
    conn_id, foreign, name = hostile_source
    target = f"public.pr_{uuid.uuid4().hex[:8]}"
    plan = plan_copy(
        foreign,
        target,
        transport="copy",
        parallelism=parallelism,
        **({"split_column": "id"} if parallelism > 1 else {}),
    )
    with FdwHook(fdw_conn_id=conn_id) as hook:
        hook.bulk_copy(plan, relay=relay)
    got = local(pin_sandbox, FINGERPRINT, t=target)
    want = source_fingerprint(pin_sandbox, name)
    assert len(got) == ROWS
    assert got == want


@pytest.mark.parametrize("transport", ["copy", "fdw"])
def test_a_mirror_from_a_role_with_hostile_defaults_ends_equal(pin_sandbox, hostile_source, transport):
    from airflow_provider_fdw.bulkcopy.mirror import Mirror, plan_mirror

    conn_id, foreign, name = hostile_source
    target = f"public.pr_{uuid.uuid4().hex[:8]}"
    cols = ["id", "ts", "d", "t", "f", "iv", "n", "tm"]
    local(
        pin_sandbox,
        "CREATE TABLE {t} (id int PRIMARY KEY, ts timestamptz, d date, t timestamp, f float8, "
        "iv interval, n numeric, tm timetz, m text)",
        t=target,
    )
    local(
        pin_sandbox,
        "INSERT INTO {t} SELECT id, ts, d, t, f, iv, n, tm FROM {s} WHERE id % 3 <> 0",
        t=target,
        s=foreign,
    )
    local(pin_sandbox, "UPDATE {t} SET iv = iv + interval '1 hour' WHERE id % 5 = 0", t=target)
    plan = plan_mirror(foreign, target, transport=transport, columns=cols)
    with FdwHook(fdw_conn_id=conn_id) as hook:
        identity = {k: v for k, v in hook.remote.libpq_params().items() if k != "password"}
        Mirror(
            plan,
            hook.log,
            new_session=hook._new_session,
            remote_connect=hook.direct_connection,
            remote_identity=identity,
        ).run(hook.session)
    fp = FINGERPRINT.replace(", m::text", "")
    assert local(pin_sandbox, fp, t=target) == pin_sandbox.source.execute(
        sql.SQL(fp).format(t=sql.Identifier("pinrev", name)), dbname=SOURCE_DB
    )


@pytest.mark.parametrize("relay", ["psql", "python"])
def test_a_partitioned_direct_copy_from_a_role_with_hostile_defaults_keeps_every_value(
    pin_sandbox, hostile_source, relay
):
    import threading

    from airflow_provider_fdw.bulkcopy import partitions as parts

    conn_id, foreign, name = hostile_source
    target = f"public.pr_{uuid.uuid4().hex[:8]}"

    def step(run, *args):
        plan = plan_copy(
            foreign, target, key_columns=["id"], transport="copy", parallelism=2, split_column="id"
        )
        with FdwHook(fdw_conn_id=conn_id) as hook:
            return run(hook.bulk_copy_engine(plan, relay=relay), hook.session, *args)

    run_id = f"dag/{uuid.uuid4().hex[:6]}"
    state = step(parts.prepare, run_id, 2)
    assert state.path == "direct"
    published: list = []
    done = threading.Event()
    holder = threading.Thread(
        target=lambda: step(parts.hold_snapshot, state, published.append, done.is_set, 120), daemon=True
    )
    holder.start()
    wait_until(lambda: published, 30)
    assert published[0]
    for i in range(len(state.ranges)):
        step(parts.load_range, state, i, lambda: published[0])
    step(parts.apply, state)
    holder.join(timeout=60)
    assert local(pin_sandbox, FINGERPRINT, t=target) == source_fingerprint(pin_sandbox, name)
