"""Through postgres_fdw, a mirror reads the source's first level of buckets range by range of the key
when a plain btree index on the remote serves those ranges (one GROUP BY over the whole foreign table
makes the remote sort every row). The ranges change how the source is read, never the result: every
key layout mirrors exactly, rows in no range (a NULL key) are still refused, and without a usable
index the mirror reads as before. ``CHUNK_ROWS`` is made small so that small tables take many ranges.
"""

from __future__ import annotations

import itertools
import logging
import random
import uuid

import pytest
from conftest import RemoteTable, fdw_sandbox, local
from test_mirror import SERVER, mirror

from airflow_provider_fdw.bulkcopy import mirror_compare
from airflow_provider_fdw.bulkcopy.mirror_compare import INT8_MAX, key_chunks
from airflow_provider_fdw.exceptions import FdwError

RANGES = "key ranges through its index"
NO_INDEX = "No plain btree index of"


@pytest.fixture(scope="module")
def sandbox(airflow_connections):
    return fdw_sandbox(airflow_connections, "mirror", SERVER)


@pytest.fixture
def log(caplog, monkeypatch):
    monkeypatch.setattr(mirror_compare, "CHUNK_ROWS", 16)
    monkeypatch.setattr(mirror_compare, "CHUNKING_FROM_ROWS", 0)
    caplog.set_level(logging.INFO)
    return logging.getLogger("test_mirror_ranges")


class Keyed(RemoteTable):
    """A remote table (``k``: the key, named ``id`` locally through ``column_name``) with ``keys``
    (a SQL set of int8), and a target equal to it."""

    def __init__(self, pair, keys: str, remote_key: str = "k bigint PRIMARY KEY", index: str = "") -> None:
        super().__init__(
            pair,
            "mirror",
            SERVER,
            "id bigint OPTIONS (column_name 'k'), name text",
            f"{remote_key}, name text",
        )
        self.remote("INSERT INTO {t} (k, name) SELECT g, 'n' || g FROM " + keys + " AS g(g)")
        if index:
            self.remote(index)
        self.remote("ANALYZE {t}")
        self.target = f"public.m_{uuid.uuid4().hex[:8]}"
        local(pair, "CREATE TABLE {t} (id bigint PRIMARY KEY, name text)", t=self.target)
        local(pair, "INSERT INTO {t} SELECT * FROM {s}", t=self.target, s=self.foreign)

    def rows(self) -> list[tuple]:
        return self.remote("SELECT k, name FROM {t} ORDER BY k")

    def target_rows(self) -> list[tuple]:
        return local(self.pair, "SELECT id, name FROM {t} ORDER BY id", t=self.target)

    def change(self, rng: random.Random, new_keys: list[int]) -> None:
        chosen = rng.sample([k for (k, _) in self.rows()], 24)
        self.remote("UPDATE {t} SET name = name || ' changed' WHERE k = ANY(%s)", (chosen[:12],))
        self.remote("DELETE FROM {t} WHERE k = ANY(%s)", (chosen[12:],))
        self.remote("INSERT INTO {t} (k, name) SELECT g, 'new' FROM unnest(%s::int8[]) g", (new_keys,))


@pytest.mark.parametrize(
    ("keys", "new_keys"),
    [
        pytest.param("generate_series(1, 2000)", [0, 2001, 5000, 1 << 40], id="dense"),
        pytest.param("generate_series(-1000, 1000)", [-5000, -1001, 1001], id="negative"),
        pytest.param("(SELECT g * 1000003 FROM generate_series(1, 600) g)", [7, 3, 1 << 33], id="sparse"),
        pytest.param(
            f"(SELECT {INT8_MAX} - g FROM generate_series(0, 600) g)",
            [INT8_MAX - 5000, -INT8_MAX - 1],
            id="up-to-the-int8-limits",
        ),
    ],
)
def test_every_key_layout_mirrors_exactly_when_read_range_by_range(sandbox, log, caplog, keys, new_keys):
    src = Keyed(sandbox, keys)
    src.change(random.Random(keys), new_keys)
    result = mirror(src, src.target, log=log)
    assert RANGES in caplog.text
    assert src.target_rows() == src.rows()
    assert result["inserted"] >= len(new_keys) - 1 and result["deleted"] == 12
    assert mirror(src, src.target)["buckets_compared"] == 1  # the next run finds them equal


def test_a_null_key_in_a_source_read_range_by_range_is_still_refused(sandbox, log, caplog):
    """Rows with a NULL key are in no range: their count is missing from the ranges' total, so the
    level is read whole, which reports them."""
    src = Keyed(
        sandbox, "generate_series(1, 1000)", remote_key="k bigint", index="CREATE UNIQUE INDEX ON {t} (k)"
    )
    src.remote("INSERT INTO {t} VALUES (NULL, 'no key')")
    src.remote("UPDATE {t} SET name = 'changed' WHERE k = 7")
    before = src.target_rows()
    with pytest.raises(FdwError, match=r"1 of its rows have a NULL id.*Nothing was changed"):
        mirror(src, src.target, log=log, key_columns=["id"])
    assert RANGES in caplog.text
    assert src.target_rows() == before


@pytest.mark.parametrize(
    ("remote_key", "index"),
    [
        pytest.param("k bigint", "", id="no-index"),
        pytest.param("k bigint", "CREATE INDEX ON {t} USING hash (k)", id="hash-index"),
        pytest.param("k bigint", "CREATE INDEX ON {t} (k) WHERE k > 100", id="partial-index"),
        pytest.param("n bigint, k bigint", "CREATE INDEX ON {t} (n, k)", id="index-not-leading-with-the-key"),
    ],
)
def test_without_an_index_serving_key_ranges_the_source_is_grouped_whole(
    sandbox, log, caplog, remote_key, index
):
    src = Keyed(sandbox, "generate_series(1, 1000)", remote_key=remote_key, index=index)
    src.change(random.Random(index), [5000])
    mirror(src, src.target, log=log, key_columns=["id"])
    assert NO_INDEX in caplog.text and RANGES not in caplog.text
    assert src.target_rows() == src.rows()


def test_an_inheritance_parent_on_the_remote_is_grouped_whole(sandbox, log, caplog):
    """Its index does not hold its children's rows: each range would scan the children whole."""
    src = Keyed(sandbox, "generate_series(1, 1000)")
    child = f"{src.name}_child"
    src.remote(f"CREATE TABLE mirror.{child} () INHERITS ({{t}})")
    src.remote(f"INSERT INTO mirror.{child} VALUES (5000, 'in the child')")
    mirror(src, src.target, log=log)
    assert NO_INDEX in caplog.text and RANGES not in caplog.text
    assert src.target_rows() == src.rows()


@pytest.mark.parametrize(
    ("low", "high", "rows", "level"),
    [
        (1, 2000, 2000, 2),
        (-1000, 1000, 2001, 3),
        (7, 7, 1, 0),
        (INT8_MAX - 600, INT8_MAX, 601, 2),
        (0, 1 << 40, 600, 4),
    ],
)
def test_key_ranges_cover_every_key_once_and_never_split_a_bucket(monkeypatch, low, high, rows, level):
    monkeypatch.setattr(mirror_compare, "CHUNK_ROWS", 16)
    chunks = key_chunks(low, high, rows, level)
    assert chunks is not None and len(chunks) <= max(1, rows // 16) + 2
    assert chunks[0][0] <= low and chunks[-1][1] >= high and chunks[-1][1] <= INT8_MAX
    for (_, end), (start, _) in itertools.pairwise(chunks):
        assert start == end + 1  # contiguous, no gap and no overlap
    for start, end in chunks:
        assert start >> level << level == start  # starts a bucket
        assert end == INT8_MAX or (end + 1) >> level << level == end + 1  # ends one


@pytest.mark.parametrize(
    ("key_type", "max_keys", "by_keys"),
    [
        ("bigint", 200_000, True),
        ("integer", 200_000, True),
        ("smallint", 200_000, True),
        ("bigint", 10, False),
    ],
)
def test_many_differing_buckets_are_read_by_their_key_values_through_the_index(
    sandbox, log, caplog, monkeypatch, key_type, max_keys, by_keys
):
    """Beyond MAX_RANGES ranges, the differing buckets' rows are fetched, deleted and re-checked by
    the list of their key values (an index lookup each) while those are few, else by one filtered
    pass over each side: either way the target ends equal to the source."""
    monkeypatch.setattr(mirror_compare, "MAX_RANGES", 2)
    monkeypatch.setattr(mirror_compare, "MAX_KEYS", max_keys)
    src = Keyed(sandbox, "generate_series(1, 3000)", remote_key=f"k {key_type} PRIMARY KEY")
    local(sandbox, f"ALTER TABLE {{t}} ALTER COLUMN id TYPE {key_type}", t=src.target)
    src.change(random.Random(key_type), [3001, 3002, 9000])
    result = mirror(src, src.target, log=log)
    assert ('"id" = ANY(%s::int8[])' in caplog.text) is by_keys
    assert src.target_rows() == src.rows()
    assert (result["updated"], result["deleted"], result["inserted"]) == (12, 12, 3)
