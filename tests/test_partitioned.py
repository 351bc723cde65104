"""Mapped partitions, step by step in one process (the Celery two-worker run is in
tests/test_partitioned_deployment.py): one staging table per run, a retried range redoes only its
range, every range of the direct path reads the holder's snapshot, apply is the engine's."""

from __future__ import annotations

import threading
import uuid

import pytest
from conftest import RemoteTable, fdw_sandbox, local

from airflow_provider_fdw.bulkcopy import partitions as parts
from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "part_src"
ROWS = 10_000


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "part", SERVER)


def source_table(sandbox, rows: int = ROWS) -> RemoteTable:
    src = RemoteTable(
        sandbox, "part", SERVER, "id bigint, name text", remote_columns="id bigint PRIMARY KEY, name text"
    )
    src.remote("INSERT INTO {t} SELECT g, 'row ' || g FROM generate_series(1, %s) g", (rows,))
    return src


def engine(hook: FdwHook, src: RemoteTable, target: str, transport: str, parallelism: int = 1):
    plan = plan_copy(src.foreign, target, key_columns=["id"], transport=transport, parallelism=parallelism)
    return hook.bulk_copy_engine(plan)


def step(src, target, transport, run, *args, parallelism=1):
    """One task's work: a hook of its own, like a task on another worker."""
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return run(engine(hook, src, target, transport, parallelism), hook.session, *args)


def staged(sandbox, state) -> list[tuple]:
    return local(sandbox, "SELECT count(*), count(DISTINCT id) FROM {t}", t=state.staging)


def digest(sandbox, table: str, remote: RemoteTable | None = None) -> list[tuple]:
    query = "SELECT count(*), md5(string_agg(id || ':' || name, '|' ORDER BY id)) FROM {t}"
    if remote is not None:
        return remote.remote(query)
    return local(sandbox, query, t=table)


def test_ranges_load_into_one_staging_table_a_retried_range_redoes_only_itself_and_apply_swaps(sandbox):
    src, target = source_table(sandbox), f"public.part_{uuid.uuid4().hex[:8]}"
    state = step(src, target, "fdw", parts.prepare, "dag/run_1", 4, parallelism=4)
    assert len(state.ranges) == 4 and state.path == "fdw"
    assert state.staging == str(parts.staging_name(plan_copy(src.foreign, target).target, "dag/run_1"))
    # prepare again (a cleared run): the same name, a fresh empty table
    state = step(src, target, "fdw", parts.prepare, "dag/run_1", 4, parallelism=4)

    results = [step(src, target, "fdw", parts.load_range, state, i, lambda: None) for i in range(4)]
    assert sum(r["rows"] for r in results) == ROWS and all(r["removed"] == 0 for r in results)
    # Range 2 again (a retry after its try committed): its rows go, then come back; nothing else moves.
    retried = step(src, target, "fdw", parts.load_range, state, 2, lambda: None)
    assert retried["removed"] == results[2]["rows"] == retried["rows"] > 0
    assert staged(sandbox, state) == [(ROWS, ROWS)]
    assert local(sandbox, "SELECT to_regclass(%s)", (target,)) == [(None,)]  # the target is untouched

    summary = step(src, target, "fdw", parts.apply, state)
    assert summary["rows"] == ROWS and summary["parallelism"] == 4 and summary["swap"] == "created"
    assert digest(sandbox, target) == digest(sandbox, None, src)
    assert local(sandbox, "SELECT to_regclass(%s)", (state.staging,)) == [(None,)]
    # the new target got the remote table's primary key, as an unpartitioned copy gives it
    assert local(
        sandbox, "SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass AND indisprimary", (target,)
    ) == [(1,)]


def test_every_direct_range_reads_the_holders_snapshot_and_the_holder_ends_after_apply(sandbox):
    src, target = source_table(sandbox), f"public.part_{uuid.uuid4().hex[:8]}"
    state = step(src, target, "copy", parts.prepare, "dag/run_2", 3, parallelism=3)
    assert state.path == "direct"
    published: list[str | None] = []
    done = threading.Event()
    held: dict = {}

    def hold():
        held.update(step(src, target, "copy", parts.hold_snapshot, state, published.append, done.is_set, 120))

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    for _ in range(300):
        if published:
            break
        threading.Event().wait(0.1)
    assert published and published[0]
    before = digest(sandbox, None, src)
    # Changes committed after the export, in every range: no range may see them.
    src.remote("DELETE FROM {t} WHERE id IN (1, 5000, 9999)")
    src.remote("UPDATE {t} SET name = 'changed' WHERE id IN (2, 6000)")
    src.remote("INSERT INTO {t} VALUES (20000, 'new')")
    for i in range(3):
        step(src, target, "copy", parts.load_range, state, i, lambda: published[0])
    step(src, target, "copy", parts.apply, state)
    holder.join(timeout=60)
    assert not holder.is_alive() and held["snapshot"] == published[0]  # staging gone: released
    assert digest(sandbox, target) == before


def test_a_range_fails_clearly_when_the_runs_staging_table_is_gone(sandbox):
    src, target = source_table(sandbox, 100), f"public.part_{uuid.uuid4().hex[:8]}"
    state = step(src, target, "fdw", parts.prepare, "dag/run_3", 2, parallelism=2)
    local(sandbox, "DROP TABLE {t}", t=state.staging)
    with pytest.raises(FdwError, match=r"staging table .* is gone"):
        step(src, target, "fdw", parts.load_range, state, 0, lambda: None)


def test_partitioned_copy_refuses_verify_and_a_missing_split_column_before_anything_changes(sandbox):
    src, target = source_table(sandbox, 10), f"public.part_{uuid.uuid4().hex[:8]}"
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        plan = plan_copy(src.foreign, target, key_columns=["id"], verify="count")
        with pytest.raises(FdwConfigError, match="verify"):
            parts.prepare(hook.bulk_copy_engine(plan), hook.session, "dag/run_4", 2)
        plan = plan_copy(src.foreign, target)
        with pytest.raises(FdwConfigError, match="split_column"):
            parts.prepare(hook.bulk_copy_engine(plan), hook.session, "dag/run_4", 2)
    marked = local(
        sandbox, "SELECT count(*) FROM pg_class WHERE relname LIKE %s", (target.split(".")[1] + "%",)
    )
    assert marked == [(0,)]


def test_the_task_group_maps_loads_over_prepare_and_holds_a_snapshot_only_off_the_fdw_path():
    import datetime

    from airflow.sdk import DAG

    from airflow_provider_fdw.operators.partitioned import partitioned_copy

    args = {"source_table": "s.a", "target_table": "public.a", "key_columns": ["id"], "partitions": 3}
    with DAG("partition_shape", schedule=None, start_date=datetime.datetime(2024, 1, 1)) as dag:
        partitioned_copy("direct", transport="copy", fdw_conn_id="fdw_source", **args)
        partitioned_copy("through_fdw", **args)
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {
        "direct.prepare",
        "direct.snapshot",
        "direct.load",
        "direct.apply",
        "through_fdw.prepare",
        "through_fdw.load",
        "through_fdw.apply",
    }
    assert tasks["direct.load"].upstream_task_ids == {"direct.prepare"}
    assert tasks["direct.apply"].upstream_task_ids == {"direct.load"}
    assert tasks["direct.snapshot"].upstream_task_ids == {"direct.prepare"}
    assert tasks["direct.snapshot"].retries == 0 and tasks["direct.apply"].retries == 0
    assert tasks["direct.load"].partial_kwargs["retries"] == 2
    # Only apply produces the target's asset: the target changes nowhere else.
    assert [o.name for o in tasks["direct.apply"].outlets] == ["postgres_default.public.a"]
    assert tasks["direct.prepare"].outlets == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"partitions": 0}, "partitions must be an integer from 1 to 64"),
        ({"partitions": True}, "partitions must be an integer"),
        ({"partitions": 2, "parallelism": 2}, "not parallelism"),
        ({"partitions": 2, "key_columns": None}, "key_columns or split_column"),
        ({"partitions": 2, "transport": "copy"}, "pass fdw_conn_id"),
    ],
)
def test_the_task_group_refuses_bad_arguments_when_the_dag_is_parsed(kwargs, message):
    import datetime

    from airflow.sdk import DAG

    from airflow_provider_fdw.operators.partitioned import partitioned_copy

    args = {"source_table": "s.a", "target_table": "public.a", "key_columns": ["id"], **kwargs}
    with (
        DAG("partition_bad", schedule=None, start_date=datetime.datetime(2024, 1, 1)),
        pytest.raises(FdwConfigError, match=message),
    ):
        partitioned_copy("copy", **args)


def test_a_state_that_is_not_a_partitioned_copys_is_refused_before_anything_runs():
    with pytest.raises(FdwError, match="run the whole task group again"):
        parts.PartitionedState.from_json({"staging": "public.x"})
    with pytest.raises(FdwError, match="run the whole task group again"):
        parts.PartitionedState.from_json(None)


def partitioned_run(src, target, run_key, partitions=3, transport="fdw"):
    state = step(src, target, transport, parts.prepare, run_key, partitions, parallelism=partitions)
    for i in range(len(state.ranges)):
        step(src, target, transport, parts.load_range, state, i, lambda: None)
    return step(src, target, transport, parts.apply, state)


def test_a_second_run_into_an_existing_indexed_target_swaps_with_its_indexes_rebuilt(sandbox):
    src, target = source_table(sandbox, 3000), f"public.part_{uuid.uuid4().hex[:8]}"
    partitioned_run(src, target, "dag/run_5a")
    local(sandbox, "CREATE INDEX {i} ON {t} (name)", i=target.split(".")[1] + "_name", t=target)
    src.remote("UPDATE {t} SET name = 'second run' WHERE id <= 10")

    summary = partitioned_run(src, target, "dag/run_5b")

    assert summary["swap"] == "renamed" and summary["rows"] == 3000
    assert digest(sandbox, target) == digest(sandbox, None, src)
    indexes = local(
        sandbox,
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s ORDER BY 1",
        (target.split(".")[1],),
    )
    assert [d for (d,) in indexes if "(name)" in d] and [d for (d,) in indexes if "UNIQUE" in d], indexes


def test_a_partitioned_upsert_checks_null_keys_the_staging_table_may_hold(sandbox):
    """apply reads the source again, which may have changed since prepare made staging: a key column
    the foreign table declares NOT NULL only by then (ALTER … SET NOT NULL checks no row) must not
    let a NULL key into a target whose UNIQUE index lets NULLs through (ON CONFLICT never matches)."""
    src = RemoteTable(sandbox, "part", SERVER, "code text, version int, name text")
    src.remote("INSERT INTO {t} VALUES ('a', 1, 'x'), (NULL, 2, 'no key')")
    target = f"public.part_{uuid.uuid4().hex[:8]}"
    local(sandbox, "CREATE TABLE {t} (code text UNIQUE, version int, name text)", t=target)
    plan = plan_copy(src.foreign, target, mode="upsert", key_columns=["code"], watermark_column="version")

    def upsert_step(run, *args):
        with FdwHook(fdw_conn_id="fdw_source") as hook:
            return run(hook.bulk_copy_engine(plan), hook.session, *args)

    state = upsert_step(parts.prepare, "dag/run_null_key", 1)
    upsert_step(parts.load_range, state, 0, lambda: None)
    local(sandbox, "ALTER FOREIGN TABLE {t} ALTER COLUMN code SET NOT NULL", t=src.foreign)
    with pytest.raises(FdwError, match=r"have a NULL in the key \(code\)"):
        upsert_step(parts.apply, state)
    assert local(sandbox, "SELECT count(*) FROM {t}", t=target) == [(0,)]
