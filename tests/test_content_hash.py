"""The content hash taken in the executor's tasks, a partition each (`executors/content_hash.py`),
equals the driver's one pass over the output (`dataset.content_hash`) for any partitioning:
partitions smaller than a chunk, empty ones, a chunk running over several files, nulls,
JSON columns stored as structs, the `kept` count."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest

from dialinsight_engine.executors.content_hash import (
    combine,
    hash_partition,
    hash_tasks,
    hashed_in_tasks,
)
from dialinsight_engine.executors.driver import summarise
from dialinsight_engine.executors.local import LocalExecutor
from dialinsight_engine.records import KEPT
from dialinsight_engine.run import dataset


def _rows(n: int, seed: int = 3) -> pl.DataFrame:
    """Nulls, booleans (bit-packed: a slice starts mid-byte), nested lists, JSON text."""
    rng = random.Random(seed)
    return pl.DataFrame({
        "id": [f"r{i}" for i in range(n)],
        "text": [None if rng.random() < 0.1 else "x" * rng.randrange(0, 9) for _ in range(n)],
        "turns": [None if i % 4 == 0 else [{"role": "agent", "text": "y" * (i % 6)}] * (1 + i % 3) for i in range(n)],
        "truth": [json.dumps({"city": f"c{i % 5}", "beds": i % 3}, sort_keys=True) for i in range(n)],
        KEPT: [rng.random() < 0.7 for _ in range(n)],
    })


def _write(folder: Path, frame: pl.DataFrame, sizes: list[int]) -> list[dict[str, object]]:
    parts, start = [], 0
    for index, size in enumerate(sizes):
        parts.append(dataset.write_partition(folder, index, frame.slice(start, size)).to_dict())
        start += size
    assert start == frame.height
    return parts


def _in_tasks(folder: Path, parts: list[dict[str, object]], chunk_rows: int) -> tuple[int, int | None, str]:
    tasks = hash_tasks([str(folder / str(p["name"])) for p in parts], [int(str(p["rows"])) for p in parts],
                       chunk_rows)
    return combine([hash_partition(t, chunk_rows) for t in tasks])


@pytest.mark.parametrize("sizes", [
    [40], [7, 7, 7, 7, 12], [3, 0, 1, 0, 0, 2, 30, 4], [0, 40], [40, 0, 0], [1] * 40, [6, 8, 13, 13],
])
def test_the_tasks_hash_equals_the_one_pass_for_any_partitioning(tmp_path, sizes):
    frame = _rows(40)
    parts = _write(tmp_path, frame, sizes)
    one_pass = dataset.content_hash(dataset.iter_output(tmp_path), chunk_rows=7)
    rows, kept, content = _in_tasks(tmp_path, parts, chunk_rows=7)
    assert content == one_pass
    assert content == dataset.content_hash([frame], chunk_rows=7), "the partitioning leaves no trace"
    assert (rows, kept) == (40, int(frame[KEPT].sum()))


def test_the_same_rows_hash_alike_however_they_were_cut(tmp_path):
    """The chunks' arrays are rebuilt before they are hashed: a slice of a partition kept the
    bits of its neighbours (a boolean's byte, a list's child values): 303 of 400 random
    partitionings of these 40 rows hashed unlike the rows in one partition before. The tasks,
    which read only the head of the files after theirs, agree."""
    frame = _rows(40, seed=5)
    rng = random.Random(1)
    want = dataset.content_hash([frame], chunk_rows=7)
    for trial in range(100):
        cuts = sorted(rng.sample(range(1, 40), rng.randrange(0, 12)))
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, 40], strict=True)]
        folder = tmp_path / str(trial)
        parts = _write(folder, frame, sizes)
        assert dataset.content_hash(dataset.iter_output(folder), chunk_rows=7) == want, sizes
        assert _in_tasks(folder, parts, chunk_rows=7)[2] == want, sizes  # next files read as far as needed


def test_each_chunk_is_read_from_the_files_it_spans():
    tasks = hash_tasks(["a", "b", "c", "d"], [3, 0, 2, 9], chunk_rows=4)
    # chunks at rows 0, 4, 8, 12 of 14: a holds 0 (rows 0-3 run into c), c holds 4 (rows 4-7
    # run into d), d holds 8 and 12
    assert [(t.paths, t.skip, t.chunks, t.heads) for t in tasks] == [
        (["a", "b", "c"], 0, 1, [0, 1]), (["b"], 0, 0, []), (["c", "d"], 1, 1, [3]), (["d"], 3, 2, [])]


def test_an_output_without_rows_hashes_its_schema(tmp_path):
    frame = _rows(5).clear()
    parts = _write(tmp_path, frame, [0])
    assert _in_tasks(tmp_path, parts, 7)[2] == dataset.content_hash(dataset.iter_output(tmp_path), chunk_rows=7)
    assert combine([])[2] == dataset.content_hash([])


def test_the_executors_summary_equals_the_drivers_pass(tmp_path):
    """With the real chunk size, through an executor's `call_each` (the local one here; the
    Ray one in tests/test_ray.py, whose runs compare the hashes of the two executors)."""
    frame = _rows(30_000)
    parts = _write(tmp_path, frame, [10_000, 5_000, 0, 15_000])
    summary = summarise(tmp_path)
    assert hashed_in_tasks(LocalExecutor(), tmp_path, parts) == (summary.rows, summary.kept, summary.content_hash)
    assert summary.rows == 30_000 and summary.kept == int(frame[KEPT].sum())
    assert summary.content_hash == dataset.content_hash([frame])


@pytest.fixture(scope="module")
def on_ray():
    """This process joined to the two-node Ray cluster the Ray test modules share."""
    pytest.importorskip("ray", reason="Ray is not installed (the `ray` extra: pip install '.[ray]')")
    from raycluster import joined, shared_cluster

    with joined(shared_cluster(1, 1).address):
        yield


def test_on_ray_the_tasks_hash_what_the_driver_hashes_and_a_failure_names_the_step(on_ray, tmp_path):
    from dialinsight_engine.errors import StageFailed
    from dialinsight_engine.executors.ray_executor import RayExecutor
    from dialinsight_engine.spec.executor import ExecutorSpec

    executor = RayExecutor(ExecutorSpec.model_validate({"kind": "ray", "max_retries": 0}), None)
    frame = _rows(20_000)
    parts = _write(tmp_path, frame, [9_000, 2_000, 0, 9_000])
    local = summarise(tmp_path)
    on_cluster = summarise(tmp_path, parts, executor)
    assert (on_cluster.rows, on_cluster.kept, on_cluster.content_hash) == (local.rows, local.kept, local.content_hash)
    assert executor.call_each(len, ["ab", "", "abc"], step="lengths") == [2, 0, 3]  # in the items' order
    with pytest.raises(StageFailed, match=r"parse: task 1 of 2 failed after Ray's retries: ValueError"):
        executor.call_each(int, ["1", "x"], step="parse")
