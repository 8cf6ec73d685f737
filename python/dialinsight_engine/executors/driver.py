"""The driver's side of a stage run: produce the partitioned output, one way or the other.

- A `RowStage` is mapped partition by partition on the executor; partitions finished by an
  earlier, interrupted run of the same config on the same input are reused (counted in the
  stage's stats as `partitions.reused`).
- A `StreamingStage` yields its output in pieces, cut into partitions as they come.
- Any other stage returns one frame, cut into partitions.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ..errors import StageFailed
from ..records import KEPT
from ..run import atomic, dataset, faults
from ..run.manifest import Manifest
from ..run.stage import Stage
from .base import (
    FAILED_DIR,
    PROGRESS_DIR,
    PartitionFailed,
    PartitionResult,
    PartitionTask,
    RowStage,
    load_progress,
    merge_stats,
)

if TYPE_CHECKING:
    from ..run.context import StageContext
    from .local import Executor


class StreamingStage(Stage):
    """A stage that yields its output in pieces (of any size), so it never holds it all."""

    def run_partitions(self, ctx: StageContext) -> Iterator[pl.DataFrame]:
        raise NotImplementedError

    def run(self, ctx: StageContext) -> pl.DataFrame:
        parts = list(self.run_partitions(ctx))
        return pl.concat(parts, how="vertical") if parts else pl.DataFrame()


@dataclass
class OutputSummary:
    partitions: list[dataset.Partition]
    rows: int
    kept: int | None
    content_hash: str
    hashed_in: str = "driver"  # or "tasks": the executor's, a partition each


def produce(stage: Stage, ctx: StageContext, executor: Executor, key: str) -> list[dataset.Partition]:
    """Write the stage's output dataset under its folder; returns its partitions in order."""
    folder = ctx.stage_dir
    if isinstance(stage, RowStage) and ctx.input_stage:
        parts = _run_rows(stage, ctx, executor, key)
        faults.point(f"stage:{stage.name}:ran")  # every partition written, no manifest yet
    else:
        if isinstance(stage, StreamingStage):
            frames: Iterable[pl.DataFrame] = stage.run_partitions(ctx)
        else:
            output = stage.run(ctx)
            if not isinstance(output, pl.DataFrame):
                raise StageFailed(f"stage {stage.name} returned {type(output).__name__}, not a polars DataFrame")
            faults.point(f"stage:{stage.name}:ran")
            frames = [output]
        parts = write_frames(folder, frames, ctx.partition_rows, stage.name)
        if isinstance(stage, StreamingStage):
            faults.point(f"stage:{stage.name}:ran")
    dataset.remove_partitions_from(folder, len(parts))
    return parts


def write_frames(folder: Path, frames: Iterable[pl.DataFrame], rows: int, stage: str) -> list[dataset.Partition]:
    parts = []
    for index, frame in enumerate(dataset.split_rows(frames, rows)):
        parts.append(dataset.write_partition(folder, index, frame, point=stage))
    return parts


def input_tasks(ctx: StageContext, key: str, folder: Path | None = None) -> list[PartitionTask]:
    """One task per partition of the stage's input, writing under `folder` (default: the
    stage's own folder; a stage's `prepare` may run a map of its own into a scratch folder)."""
    assert ctx.input_stage is not None
    upstream = ctx.input_folder or ctx.run_dir / ctx.input_stage
    return [PartitionTask(i, str(upstream / name), sha256, str(folder or ctx.stage_dir), key)
            for i, (name, sha256) in enumerate(listed_partitions(upstream))]


def listed_partitions(folder: Path) -> list[tuple[str, str]]:
    """(name, sha256) of each partition of a dataset folder: as its manifest lists them, or, in
    a folder without one (a stage's scratch map, data a test wrote), its files hashed now."""
    manifest = Manifest.load(folder)
    if manifest is not None:
        return [(p["name"], p["sha256"]) for p in manifest.partitions]
    return [(str(path.relative_to(folder)), atomic.file_sha256(path)) for path in dataset.partition_files(folder)]


def _run_rows(stage: RowStage, ctx: StageContext, executor: Executor, key: str) -> list[dataset.Partition]:
    tasks = input_tasks(ctx, key)
    ctx.partition_key = key
    shutil.rmtree(ctx.stage_dir / FAILED_DIR, ignore_errors=True)
    results: dict[int, PartitionResult] = {}
    for task in tasks:
        reused = load_progress(task)
        if reused is not None:
            results[task.index] = reused
    todo = [t for t in tasks if t.index not in results]
    state = stage.prepare(ctx)
    with ctx.progress(f"{stage.name}: partitions ({executor.name})", len(tasks)) as advance:
        advance(len(results))
        try:
            for result in executor.map(stage, ctx.spec, todo, state, ctx.registry):
                results[result.index] = result
                faults.point(f"partition:{stage.name}:done")
                advance(1)
        except PartitionFailed as failed:
            raise StageFailed(keep_failed_rows(ctx, failed)) from None
    stats: dict[str, Any] = {}
    for index in sorted(results):
        merge_stats(stats, results[index].stats)
    ctx.stats.update(stats)
    ctx.stats["partitions"] = {"total": len(tasks), "reused": len(tasks) - len(todo), "computed": len(todo),
                               "executor": executor.name}
    computed = [results[t.index] for t in todo]
    if computed:  # per-block costs, for docs/performance.md's scaling model
        ctx.stats["partition_costs"] = {
            "map_seconds": round(sum(r.seconds for r in computed), 3),
            "max_partition_seconds": max(r.seconds for r in computed),
            "worker_peak_rss_mb": max(r.peak_rss_mb for r in computed),
            "workers": len({(r.host, r.pid) for r in computed}),
        }
    parts = [results[i].partition for i in sorted(results)]
    stage.finish(ctx, sum(p.rows for p in parts))
    return parts


def keep_failed_rows(ctx: StageContext, failed: PartitionFailed) -> str:
    """Write the failed partition's input rows with the error beside them; the message names it."""
    rows = dataset.read_partition(failed.input_path).with_columns(pl.lit(failed.error).alias("error"))
    path = dataset.write_failed(ctx.stage_dir, failed.index, rows)
    return (f"stage {ctx.stage} failed on partition {failed.index:05d} (input {failed.input_path}): "
            f"{failed.error}; its {rows.height} rows are kept with the error in {path}, nothing was written "
            f"for it, and the finished partitions are reused on the next run")


def summarise(folder: Path, partitions: list[dict[str, Any]] | None = None,
              executor: Executor | None = None) -> OutputSummary:
    """Rows, kept rows and content hash of the written output: on Ray, hashed in the tasks a
    partition each (`content_hash`, given the manifest's `partitions`); else in one streaming
    pass here."""
    if executor is not None and executor.name == "ray" and partitions:
        from .content_hash import hashed_in_tasks

        rows, kept_rows, content = hashed_in_tasks(executor, folder, partitions)
        return OutputSummary([], rows, kept_rows, content, hashed_in="tasks")
    rows, kept, has_kept = 0, 0, False

    def frames() -> Iterator[pl.DataFrame]:
        nonlocal rows, kept, has_kept
        for frame in dataset.iter_output(folder):
            rows += frame.height
            if KEPT in frame.columns:
                has_kept = True
                kept += int(frame[KEPT].sum())
            yield frame

    content = dataset.content_hash(frames())
    return OutputSummary([], rows, kept if has_kept else None, content)


def finish_clean(folder: Path) -> None:
    """After the manifest is written: progress records are no longer needed."""
    shutil.rmtree(folder / PROGRESS_DIR, ignore_errors=True)
