"""Foreign keys through partitions, checked before a replace or a mirror deletes or changes a target row:
a key referencing a partition below the target, a middle level, the target's partitioned parent; a row
moving out of a referenced partition; a self-referencing partitioned target; inheritance children."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from conftest import RemoteTable, fdw_sandbox, local

from airflow_provider_fdw.bulkcopy import plan_copy
from airflow_provider_fdw.exceptions import FdwError
from airflow_provider_fdw.hooks.fdw import FdwHook

SERVER = "rev3_src"
MODES = pytest.mark.parametrize("mode", ["replace", "mirror"])


@pytest.fixture(scope="module")
def rv(airflow_connections):
    return fdw_sandbox(airflow_connections, "rev3", SERVER)


class Source(RemoteTable):
    def __init__(self, pair, columns: str, constraints: str = "") -> None:
        super().__init__(pair, "rev3", SERVER, columns, remote_columns=columns + constraints, prefix="r")


def copy(src: Source, target: str, **kwargs):
    with FdwHook(fdw_conn_id="fdw_source") as hook:
        return hook.bulk_copy(plan_copy(src.foreign, target, **kwargs))


def name() -> str:
    return f"public.rv_{uuid.uuid4().hex[:8]}"


def rows(pair, table: str):
    return local(pair, "SELECT * FROM {t} ORDER BY 1", t=table)


# -- 1. a row moving between partitions (its key unchanged) leaves a partition a foreign key references


@MODES
def test_a_row_moving_out_of_a_referenced_partition_is_seen_before_its_cascade(rv, mode):
    """t PARTITION BY LIST (region), PK (id, region); t_a has its own UNIQUE (id), which a child
    references ON DELETE CASCADE. Rows are matched by key_columns=["id"] (the source's key). The
    source moves row 5 to region 'b': the diff UPDATEs row 5, PostgreSQL moves it from t_a to t_b (a
    DELETE from t_a), and the FK declared on t_a fires its ON DELETE CASCADE: the child row goes."""
    src = Source(rv, "id bigint, region text, v int", ", PRIMARY KEY (id)")
    src.remote("INSERT INTO {t} SELECT g, 'a', g FROM generate_series(1, 10) g")
    t = name()
    local(
        rv,
        "CREATE TABLE {t} (id bigint, region text, v int, PRIMARY KEY (id, region)) "
        "PARTITION BY LIST (region)",
        t=t,
    )
    local(rv, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES IN ('a')", p=t + "_a", t=t)
    local(rv, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES IN ('b')", p=t + "_b", t=t)
    local(rv, "ALTER TABLE {p} ADD UNIQUE (id)", p=t + "_a")
    local(rv, "INSERT INTO {t} SELECT g, 'a', g FROM generate_series(1, 10) g", t=t)
    child = t + "_c"
    local(
        rv, "CREATE TABLE {c} (n int, pid bigint REFERENCES {p} (id) ON DELETE CASCADE)", c=child, p=t + "_a"
    )
    local(rv, "INSERT INTO {c} VALUES (1, 5), (2, 6)", c=child)
    src.remote("UPDATE {t} SET region = 'b' WHERE id = 5")
    outcome = None
    with contextlib.suppress(FdwError):
        outcome = copy(src, t, mode=mode, key_columns=["id"])
    assert rows(rv, child) == [(1, 5), (2, 6)], (
        f"the copy succeeded ({outcome}) and the cascade deleted a child row"
    )


# -- 3. sub-partitions: FKs to a leaf, to a middle level; a target that is a leaf ---------------------


def three_levels(pair, src: Source) -> dict[str, str]:
    """t RANGE (id): m [MIN, 100) itself RANGE (id): l1 [MIN, 50), l2 [50, 100); r [100, MAX)."""
    t = name()
    n = {"t": t, "m": t + "_m", "l1": t + "_l1", "l2": t + "_l2", "r": t + "_r"}
    local(pair, "CREATE TABLE {t} (id bigint PRIMARY KEY, v int) PARTITION BY RANGE (id)", t=t)
    local(
        pair,
        "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (MINVALUE) TO (100) PARTITION BY RANGE (id)",
        p=n["m"],
        t=t,
    )
    local(pair, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (MINVALUE) TO (50)", p=n["l1"], t=n["m"])
    local(pair, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (50) TO (100)", p=n["l2"], t=n["m"])
    local(pair, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (100) TO (MAXVALUE)", p=n["r"], t=t)
    local(pair, "INSERT INTO {t} SELECT id, v FROM {f}", t=t, f=src.foreign)
    return n


CASES = [  # (target, referenced, deleted id, refused)
    ("t", "l1", 5, True),
    ("t", "m", 60, True),
    ("t", "l2", 5, False),
    ("l1", "m", 5, True),
    ("l1", "t", 5, True),
    ("l1", "m", 7, False),  # the child also references 60 (in l2, outside the target)
    ("m", "l2", 60, True),
    ("m", "t", 7, False),  # the child also references 150 (outside the target)
    ("l2", "l2", 60, True),
]


@MODES
@pytest.mark.parametrize("target_key, referenced, deleted, refused", CASES)
def test_sub_partitions(rv, mode, target_key, referenced, deleted, refused):
    src = Source(rv, "id bigint, v int", ", PRIMARY KEY (id)")
    src.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 200) g")
    n = three_levels(rv, src)
    child = n["t"] + "_c"
    local(
        rv,
        "CREATE TABLE {c} (n int, pid bigint REFERENCES {p} (id) ON DELETE CASCADE)",
        c=child,
        p=n[referenced],
    )
    refs = {"l1": [5], "l2": [60], "m": [5, 60], "t": [5, 60, 150]}[referenced]
    for i, r in enumerate(refs):
        local(rv, f"INSERT INTO {{c}} VALUES ({i}, {r})", c=child)
    before = rows(rv, child)
    lo, hi = {"t": (1, 200), "m": (1, 99), "l1": (1, 49), "l2": (50, 99)}[target_key]
    src.remote(f"DELETE FROM {{t}} WHERE id < {lo} OR id > {hi} OR id = {deleted}")
    if refused:
        with pytest.raises(FdwError, match="Nothing was changed"):
            copy(src, n[target_key], mode=mode)
        assert rows(rv, child) == before
        assert local(rv, f"SELECT count(*) FROM {{t}} WHERE id = {deleted}", t=n["t"]) == [(1,)]
    else:
        result = copy(src, n[target_key], mode=mode)
        assert result["deleted"] == 1
        assert rows(rv, child) == before


def self_ref_tree(pair, src: Source, declared_on: str) -> tuple[str, str]:
    """t (id PK, parent) PARTITION BY RANGE (id): t_a [MINVALUE, 1000), t_b the rest; the FK
    parent -> id ON DELETE CASCADE is declared on t (``declared_on="parent"``) or on t_a only."""
    t = name()
    low = t + "_a"
    fk = "REFERENCES {t} (id) ON DELETE CASCADE" if declared_on == "parent" else ""
    local(
        pair,
        "CREATE TABLE {t} (id bigint PRIMARY KEY, parent bigint " + fk + ") PARTITION BY RANGE (id)",
        t=t,
    )
    local(pair, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (MINVALUE) TO (1000)", p=low, t=t)
    local(pair, "CREATE TABLE {p} PARTITION OF {t} FOR VALUES FROM (1000) TO (MAXVALUE)", p=t + "_b", t=t)
    if declared_on == "partition":
        local(
            pair, "ALTER TABLE {p} ADD FOREIGN KEY (parent) REFERENCES {t} (id) ON DELETE CASCADE", p=low, t=t
        )
    local(pair, "INSERT INTO {t} SELECT id, parent FROM {f}", t=t, f=src.foreign)
    return t, low


# -- 4. self-referencing partitioned target: detected, not double-counted ------------------------


def test_self_referencing_partitioned_target_mirror_updates_before_deleting(rv):
    """t (FK t -> t ON DELETE CASCADE) across two partitions: row 500 (t_a) referenced by row 1500
    (t_b) is deleted while 1500 is re-pointed to 3: update first, so nothing cascades."""
    src = Source(rv, "id bigint, parent bigint", ", PRIMARY KEY (id)")
    src.remote("INSERT INTO {t} SELECT g, CASE WHEN g = 1500 THEN 500 END FROM generate_series(1, 2000) g")
    t, _ = self_ref_tree(rv, src, "parent")
    src.remote("UPDATE {t} SET parent = 3 WHERE id = 1500")
    src.remote("DELETE FROM {t} WHERE id = 500")
    result = copy(src, t, mode="mirror")
    assert (result["deleted"], result["updated"]) == (1, 1)
    assert local(rv, "SELECT count(*), count(parent) FROM {t}", t=t) == [(1999, 1)]


# -- 5. inheritance children of the target ----------------------------------------------------


@MODES
def test_an_fk_to_an_inheritance_child_of_the_target_is_untouched(rv, mode):
    src = Source(rv, "id bigint, v int", ", PRIMARY KEY (id)")
    src.remote("INSERT INTO {t} SELECT g, g FROM generate_series(1, 10) g")
    t = name()
    local(rv, "CREATE TABLE {t} (id bigint PRIMARY KEY, v int)", t=t)
    local(rv, "INSERT INTO {t} SELECT g, g FROM generate_series(1, 10) g", t=t)
    local(rv, "CREATE TABLE {i} (PRIMARY KEY (id)) INHERITS ({t})", i=t + "_i", t=t)
    local(rv, "INSERT INTO {i} VALUES (5, 5)", i=t + "_i")
    child = t + "_c"
    local(
        rv, "CREATE TABLE {c} (n int, pid bigint REFERENCES {i} (id) ON DELETE CASCADE)", c=child, i=t + "_i"
    )
    local(rv, "INSERT INTO {c} VALUES (1, 5)", c=child)
    src.remote("DELETE FROM {t} WHERE id = 5")
    result = copy(src, t, mode=mode)
    assert result["deleted"] == 1
    assert rows(rv, child) == [(1, 5)]
    assert rows(rv, t + "_i") == [(5, 5)]
