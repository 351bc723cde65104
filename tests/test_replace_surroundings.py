"""mode="replace" and what is attached to its target (an adversarial review).

After a reported success the target must hold the source's rows AND keep everything attached to it
(grants, tablespace, settings, comments, schema changes made meanwhile …), or the run must fail
before any change. Each test here failed on the code it was written against.
"""

from __future__ import annotations

import uuid

import pytest
from conftest import RemoteTable, fdw_sandbox, local

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "surroundings_src"
TRANSPORTS = pytest.mark.parametrize("transport", ["fdw", "copy"])


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "surroundings", SERVER)


def source(sandbox, rows: int = 20) -> RemoteTable:
    src = RemoteTable(
        sandbox,
        "surroundings",
        SERVER,
        "id bigint, name text, v bigint",
        "id bigint PRIMARY KEY, name text, v bigint",
    )
    src.remote("INSERT INTO {t} SELECT g, 'n' || g, 1 FROM generate_series(1, %s) g", (rows,))
    return src


def copy(src: RemoteTable, target: str, **kwargs) -> dict:
    with FdwHook(postgres_conn_id="postgres_default", fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(src.foreign, target, mode="replace", **kwargs))


def rows(sandbox, table: str) -> list[tuple]:
    return local(sandbox, "SELECT id, name, v FROM {t} ORDER BY id", t=table)


def source_rows(src: RemoteTable) -> list[tuple]:
    return src.remote("SELECT id, name, v FROM {t} ORDER BY id")


def new_target() -> str:
    return f"public.r_{uuid.uuid4().hex[:8]}"


def one(sandbox, statement: str, **names):
    result = local(sandbox, statement, **names)
    return result[0][0] if result else None


def equal_or_refused(sandbox, src, target, before, **kwargs) -> dict | None:
    """The run either makes the target equal to the source, or fails leaving it as it was."""
    try:
        result = copy(src, target, **kwargs)
    except FdwError:
        assert rows(sandbox, target) == before
        return None
    assert rows(sandbox, target) == source_rows(src), f"reported success ({result['swap']}), target differs"
    return result


# -- in place: children's rows the replace does not touch ----------------------------------------


def test_in_place_replace_is_not_refused_for_an_orphan_a_not_valid_foreign_key_already_had(sandbox):
    """A child's foreign key added NOT VALID over old rows whose parent never existed: the run refuses
    every replace, saying the new data 'no longer has' a key the target never had."""
    src, target = source(sandbox), new_target()
    copy(src, target)
    child = f"{target}_c"
    local(sandbox, "CREATE TABLE {c} (id int PRIMARY KEY, pid bigint)", c=child)
    local(sandbox, "INSERT INTO {c} VALUES (1, 999), (2, 3)", c=child)
    local(
        sandbox,
        "ALTER TABLE {c} ADD CONSTRAINT cfk FOREIGN KEY (pid) REFERENCES {t} NOT VALID",
        c=child,
        t=target,
    )
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 4")
    result = copy(src, target)
    assert result["swap"] == "in-place" and result["updated"] == 1
    assert rows(sandbox, target) == source_rows(src)


def test_in_place_replace_ignores_rows_of_inheritance_children_of_a_referencing_table(sandbox):
    """Foreign keys are not inherited: rows of a child table's own inheritance children reference
    nothing, but the orphan check reads them (no ONLY) and refuses the replace."""
    src, target = source(sandbox), new_target()
    copy(src, target)
    child = f"{target}_c"
    local(sandbox, "CREATE TABLE {c} (id int PRIMARY KEY, pid bigint REFERENCES {t})", c=child, t=target)
    local(sandbox, "CREATE TABLE {d} () INHERITS ({c})", c=child, d=f"{child}_d")
    local(sandbox, "INSERT INTO {d} VALUES (1, 999)", d=f"{child}_d")
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 4")
    result = copy(src, target)
    assert result["swap"] == "in-place" and result["updated"] == 1
    assert rows(sandbox, target) == source_rows(src)
