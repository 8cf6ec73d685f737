"""A stage's output hashed in the executor's tasks, a partition each, for the manifest.

`dataset.content_hash` hashes fixed chunks of `HASH_CHUNK_ROWS` rows in order and combines
their digests, so a chunk can be hashed by anyone who reads its rows. On Ray each partition's
task hashes the chunks that start in it (reading the partitions after it as far as its last
chunk runs), counts its rows and kept rows, and the driver combines the digests in order: it
reads no row, and the pass runs on every node at once. On the driver this pass was the run's
peak at every size (a chunk on top of what the driver held) and serial time per stage
(docs/performance.md). The local executor keeps the one pass on the driver
(`driver.summarise`), which reads each partition once; the two give the same hash.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..records import KEPT
from ..run import dataset


@dataclass(frozen=True)
class HashTask:
    """Hash the chunks that start in partition `index`: its rows from `skip` on, then the
    first `heads[k]` rows of each following file `paths[k + 1]`, where its last chunk runs."""

    index: int
    paths: list[str]  # the partition's file first
    skip: int  # its rows before the first chunk that starts in it
    chunks: int
    heads: list[int]


@dataclass(frozen=True)
class HashResult:
    index: int
    rows: int
    kept: int | None  # None: the partition has no `kept` column
    schema: bytes  # of its first chunk, or of its rows when no chunk starts in it
    digests: list[bytes]


def hash_tasks(paths: list[str], rows: list[int], chunk_rows: int = dataset.HASH_CHUNK_ROWS) -> list[HashTask]:
    """One task per partition, given each partition's rows (the manifest's counts)."""
    offsets = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)]).astype(np.int64)
    total = int(offsets[-1])
    tasks = []
    for index in range(len(paths)):
        start, end = int(offsets[index]), int(offsets[index + 1])
        first, past = -(-start // chunk_rows), -(-end // chunk_rows)  # chunks k with start <= k * rows < end
        chunks = past - first
        reach = min(past * chunk_rows, total)  # the row after its last chunk
        last = index
        if chunks:
            # the partition holding the last row of its last chunk (an empty one never does)
            last = int(np.searchsorted(offsets, reach - 1, side="right")) - 1
        heads = [int(min(offsets[j + 1], reach) - offsets[j]) for j in range(index + 1, last + 1)]
        tasks.append(HashTask(index, paths[index:last + 1], first * chunk_rows - start if chunks else 0, chunks, heads))
    return tasks


def hash_partition(task: HashTask, chunk_rows: int = dataset.HASH_CHUNK_ROWS) -> HashResult:
    """The task: the same chunks as `dataset.content_hash` cuts from the whole output
    (`split_rows` from the first chunk's first row; a chunk's digest depends on its rows
    only, not on the arrays they were cut from, so the next files are read only as far as
    needed)."""
    own = dataset.read_partition(Path(task.paths[0]))
    kept = int(own[KEPT].sum()) if KEPT in own.columns else None
    if not task.chunks:
        return HashResult(task.index, own.height, kept, dataset.schema_bytes(own), [])
    heads = (dataset.read_partition(Path(p), rows=n) for p, n in zip(task.paths[1:], task.heads, strict=True))
    frames: Iterator[pl.DataFrame] = chain([own.slice(task.skip)], heads)
    digests: list[bytes] = []
    schema = b""
    for chunk in islice(dataset.split_rows(frames, chunk_rows), task.chunks):
        schema = schema or dataset.schema_bytes(chunk)
        digests.append(dataset.chunk_digest(chunk))
    return HashResult(task.index, own.height, kept, schema, digests)


def combine(results: list[HashResult]) -> tuple[int, int | None, str]:
    """Rows, kept rows (None when no partition has the column) and content hash of the whole
    output from its partitions' results, in partition order."""
    if not results:
        return 0, None, dataset.combined_hash(b"", [])
    # the schema `content_hash` takes is the first chunk's: the first partition's rows when
    # the output has none
    first = next((r for r in results if r.digests), results[0])
    kept = [r.kept for r in results if r.kept is not None]
    content = dataset.combined_hash(first.schema, chain.from_iterable(r.digests for r in results))
    return sum(r.rows for r in results), sum(kept) if kept else None, content


def hashed_in_tasks(executor: Any, folder: Path, partitions: list[dict[str, Any]]) -> tuple[int, int | None, str]:
    """Rows, kept rows and content hash of the dataset in `folder` (its `partitions` as the
    manifest lists them), hashed by `executor.call_each`'s tasks."""
    tasks = hash_tasks([str(folder / p["name"]) for p in partitions], [int(p["rows"]) for p in partitions])
    results: list[HashResult] = executor.call_each(hash_partition, tasks, step="content hash")  # in order
    return combine(results)
