"""Writes a run chose that PostgreSQL silently did not make (an adversarial review).

A BEFORE row trigger returning NULL, or a rule (DO INSTEAD NOTHING), makes a statement skip rows it
chose; the transaction's counts then agree with the statement's own. After a reported success the
target must hold the rows the run wrote, or the run must fail leaving the target (and the recorded
watermark) as they were. Each test here failed on the code it was written against.
"""

from __future__ import annotations

import uuid

import pytest
from conftest import RemoteTable, fdw_sandbox, local, partitioned_target, row_trigger, small_source
from conftest import copy_table as copy
from conftest import first_value as one
from conftest import table_rows as rows

from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwError

SERVER = "skipped_src"
TRANSPORTS = pytest.mark.parametrize("transport", ["fdw", "copy"])


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "skipped", SERVER)


def source(sandbox, rows: int = 20) -> RemoteTable:
    return small_source(sandbox, "skipped", SERVER, rows)


def source_rows(src: RemoteTable) -> list[tuple]:
    return src.remote("SELECT id, name, v FROM {t} ORDER BY id")


def new_target() -> str:
    return f"public.r_{uuid.uuid4().hex[:8]}"


def equal_or_refused(sandbox, src, target, before, **kwargs) -> dict | None:
    """The run either makes the target equal to the source, or fails leaving it as it was."""
    try:
        result = copy(src, target, **kwargs)
    except FdwError:
        assert rows(sandbox, target) == before
        return None
    assert rows(sandbox, target) == source_rows(src), f"reported success ({result['swap']}), target differs"
    return result


# -- 1. in place: writes the diff's own statements silently did not make ----------------------------
# The in-place apply trusts the row counts of its DELETE/UPDATE/INSERT and checks only that the
# transaction's counters agree with them. A BEFORE row trigger returning NULL, or a DO INSTEAD NOTHING
# rule, makes a statement skip rows: both counts then agree on the smaller number, and the run reports
# success while the target keeps rows the source deleted, misses new rows, or keeps old values.


def guard_trigger(sandbox, target: str, events: str, condition: str) -> None:
    body = (
        f"IF {condition} THEN RETURN NULL; END IF; IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW;"
    )
    row_trigger(sandbox, target, f"BEFORE {events}", body, "guard")


@TRANSPORTS
def test_in_place_replace_whose_before_delete_trigger_skips_a_row_does_not_report_success(sandbox, transport):
    src, target = source(sandbox), new_target()
    copy(src, target, transport=transport)
    guard_trigger(sandbox, target, "DELETE", "OLD.id = 5")  # "archived rows are never deleted"
    src.remote("DELETE FROM {t} WHERE id IN (5, 6)")
    result = equal_or_refused(sandbox, src, target, rows(sandbox, target), transport=transport)
    assert result is None or result["swap"] == "in-place"


@TRANSPORTS
def test_in_place_replace_with_an_instead_nothing_rule_does_not_report_success(sandbox, transport):
    src, target = source(sandbox), new_target()
    copy(src, target, transport=transport)
    local(sandbox, "CREATE RULE keep AS ON DELETE TO {t} DO INSTEAD NOTHING", t=target)
    src.remote("DELETE FROM {t} WHERE id = 7")
    equal_or_refused(sandbox, src, target, rows(sandbox, target), transport=transport)


@TRANSPORTS
def test_in_place_replace_whose_before_trigger_skips_inserts_and_updates_does_not_report_success(
    sandbox, transport
):
    src, target = source(sandbox), new_target()
    copy(src, target, transport=transport)
    guard_trigger(sandbox, target, "INSERT OR UPDATE", "NEW.name LIKE 'spam%%'")
    src.remote("INSERT INTO {t} VALUES (100, 'spam 1', 1)")
    src.remote("UPDATE {t} SET name = 'spam 2' WHERE id = 3")
    equal_or_refused(sandbox, src, target, rows(sandbox, target), transport=transport)


@TRANSPORTS
def test_in_place_replace_keeps_working_with_a_before_trigger_that_skips_no_row_it_writes(sandbox, transport):
    """With such a trigger the whole target is compared: equal to the new data, the run goes on."""
    src, target = source(sandbox), new_target()
    copy(src, target, transport=transport)
    guard_trigger(sandbox, target, "INSERT OR UPDATE OR DELETE", "TG_OP = 'DELETE' AND OLD.name = 'archived'")
    src.remote("DELETE FROM {t} WHERE id = 4")
    src.remote("UPDATE {t} SET name = 'changed' WHERE id = 3")
    src.remote("INSERT INTO {t} VALUES (100, 'new', 1)")
    result = copy(src, target, transport=transport)
    assert result["swap"] == "in-place"
    assert (result["inserted"], result["updated"], result["deleted"]) == (1, 1, 1)
    assert rows(sandbox, target) == source_rows(src)


# -- 2. append and upsert: staged rows a trigger or rule kept out --------------------------------------
# The merge took "staged rows minus inserted minus updated" as rows already equal, and recorded the
# watermark past the staged rows: a row kept out was lost for good (the next run starts after it).

INCREMENTAL = {"watermark_column": "v"}


def recorded(sandbox, target: str):
    """The watermark recorded for ``target`` (None when there is none)."""
    return one(
        sandbox,
        "SELECT watermark FROM public.fdw_copy_state WHERE target_table = {n}",
        n=sql.Literal(target.split(".")[1]),
    )


def refused_unchanged(sandbox, src, target, mode: str, **kwargs) -> None:
    """The run fails naming the cause, leaving the target's rows and recorded watermark as they were."""
    incremental = mode != "replace"
    before, mark = rows(sandbox, target), incremental and recorded(sandbox, target)
    with pytest.raises(FdwError, match=r"BEFORE row trigger or rule"):
        copy(src, target, mode=mode, **kwargs)
    assert rows(sandbox, target) == before
    assert (incremental and recorded(sandbox, target)) == mark


@TRANSPORTS
def test_an_append_whose_before_insert_trigger_skips_a_row_is_refused(sandbox, transport):
    src, target = source(sandbox), new_target()
    copy(src, target, mode="append", transport=transport, **INCREMENTAL)
    guard_trigger(sandbox, target, "INSERT", "NEW.name LIKE 'spam%%'")
    src.remote("INSERT INTO {t} VALUES (21, 'ok', 2), (22, 'spam', 2)")
    refused_unchanged(sandbox, src, target, "append", transport=transport, **INCREMENTAL)


@TRANSPORTS
def test_an_append_into_a_target_with_an_instead_nothing_rule_is_refused(sandbox, transport):
    src, target = source(sandbox), new_target()
    copy(src, target, mode="append", transport=transport, **INCREMENTAL)
    local(sandbox, "CREATE RULE keep AS ON INSERT TO {t} DO INSTEAD NOTHING", t=target)
    src.remote("INSERT INTO {t} VALUES (21, 'ok', 2)")
    refused_unchanged(sandbox, src, target, "append", transport=transport, **INCREMENTAL)


UPSERT = {"key_columns": ["id"], **INCREMENTAL}
SKIPPED_UPSERTS = {  # the trigger's events, the source's change whose write it skips
    "update": ("UPDATE", "UPDATE {t} SET name = 'spam', v = 2 WHERE id = 3"),
    "insert": ("INSERT", "INSERT INTO {t} VALUES (100, 'spam', 2)"),
}


@TRANSPORTS
@pytest.mark.parametrize("verify", ["off", "count"])
@pytest.mark.parametrize("skipped", list(SKIPPED_UPSERTS))
def test_an_upsert_whose_before_trigger_skips_a_row_is_refused(sandbox, transport, verify, skipped):
    events, change = SKIPPED_UPSERTS[skipped]
    src, target = source(sandbox), new_target()
    copy(src, target, mode="upsert", transport=transport, verify=verify, **UPSERT)
    guard_trigger(sandbox, target, events, "NEW.name LIKE 'spam%%'")
    src.remote("UPDATE {t} SET name = 'kept', v = 2 WHERE id = 4")  # a write the trigger lets through
    src.remote(change)
    refused_unchanged(sandbox, src, target, "upsert", transport=transport, verify=verify, **UPSERT)


@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_a_merge_keeps_working_with_a_before_trigger_that_sets_a_column_it_does_not_copy(sandbox, mode):
    src, target = source(sandbox), new_target()
    local(sandbox, "CREATE TABLE {t} (id bigint PRIMARY KEY, name text, v bigint, loaded_at int)", t=target)
    local(
        sandbox,
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.loaded_at := 7; "
        "RETURN NEW; END $$",
        f=f"{target}_stamp",
    )
    local(
        sandbox,
        "CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()",
        t=target,
        f=f"{target}_stamp",
    )
    kwargs = {"columns": ["id", "name", "v"], **(UPSERT if mode == "upsert" else INCREMENTAL)}
    copy(src, target, mode=mode, **kwargs)
    src.remote("INSERT INTO {t} VALUES (100, 'new', 2)")
    if mode == "upsert":
        src.remote("UPDATE {t} SET name = 'changed', v = 2 WHERE id = 3")
    result = copy(src, target, mode=mode, **kwargs)
    assert (result["inserted"], result["updated"]) == (1, 1 if mode == "upsert" else 0)
    assert rows(sandbox, target) == source_rows(src)
    assert one(sandbox, "SELECT count(*) FROM {t} WHERE loaded_at IS DISTINCT FROM 7", t=target) == 0
    assert recorded(sandbox, target) is not None


@pytest.mark.parametrize("mode", ["replace", "append"])
def test_a_before_trigger_on_a_leaf_partition_that_skips_a_row_is_caught(sandbox, mode):
    src, target = source(sandbox), new_target()
    partitioned_target(sandbox, target)
    kwargs = {} if mode == "replace" else INCREMENTAL
    copy(src, target, mode=mode, **kwargs)
    guard_trigger(
        sandbox, f"{target}_d", "INSERT OR DELETE", "(CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END).id = 30"
    )
    if mode == "replace":
        src.remote("DELETE FROM {t} WHERE id = 15")  # the leaf's trigger lets this one through
        src.remote("INSERT INTO {t} VALUES (30, 'n30', 2)")
    else:
        src.remote("INSERT INTO {t} VALUES (25, 'n25', 2), (30, 'n30', 2)")
    refused_unchanged(sandbox, src, target, mode, **kwargs)
