"""The call sites for distributed near-duplicate detection (`executors/ray_dedup.py`).

`data_redundancy` asks here for its within-set clusters and its matches against reference
sets. Under the Ray executor, when the distributed module is installed and the pool has
`[executor] dedup_local_rows` rows or more (`distributed_pool`), the pool's text stays in the
stage's input partitions (`metrics.partitioned.PoolPartitions`): Ray tasks read it there and
`ray_near_duplicates` computes the same clusters as `fast.near_duplicates`, so the driver holds
group keys and row positions, not text. Otherwise (local executor, no Ray, or a pool one process does
faster than the shuffle) the Rust core computes them in this process.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from ..metrics.partitioned import PoolPartitions


def on_ray(stage_ctx: Any) -> bool:
    """True when the run's executor is Ray."""
    return getattr(getattr(stage_ctx, "executor", None), "name", "local") == "ray"


def distributed_pool(stage_ctx: Any, rows: int) -> bool:
    """True when a pool of `rows` rows searches near duplicates on the run's Ray cluster."""
    if not on_ray(stage_ctx) or rows == 0 or rows < stage_ctx.executor.config.dedup_local_rows:
        return False
    try:
        from . import ray_dedup  # noqa: F401  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return False
    return True


def near_duplicates(frame: pl.DataFrame, stage_ctx: Any, source: PoolPartitions | None = None,
                    compact: bool = False, **settings: Any) -> pl.DataFrame:
    """`fast.near_duplicates(frame, **settings)`; with `source` (the text column left in the
    partitions: `frame` then has a `_row` column of pool positions), on Ray where the text
    lies. `compact`: on Ray, the result in 32-bit columns (`ray_near_duplicates`)."""
    from .. import fast

    column = settings["text_column"]
    if source is not None and column in source.columns:
        return _from_partitions(frame, stage_ctx, source, compact=compact, **settings)
    if distributed_pool(stage_ctx, frame.height):  # the text is here (a semantic search needed it)
        return _from_frame(frame, stage_ctx, compact=compact, **settings)
    if on_ray(stage_ctx):
        # one process does a pool this size faster than the shuffle between Ray tasks
        done = stage_ctx.stats.setdefault("near_duplicates_in_driver", {"calls": 0, "rows": 0})
        done.update(calls=done["calls"] + 1, rows=done["rows"] + frame.height)
    settings.pop("text_column")
    found: pl.DataFrame = fast.near_duplicates(frame, column, **settings)
    return found


def near_duplicates_where_rows_lie(source: PoolPartitions, stage_ctx: Any, output: Path, *, text_column: str,
                                   group_by: Sequence[str], id_column: str | None, keep: str,
                                   **settings: Any) -> dict[str, Any]:
    """`fast.near_duplicates` of each `group_by` group of the pool, on Ray, every partition's
    result written by the tasks as `output`/`part_name(i)` (`ray_near_duplicates`'s
    `output`): the driver holds nothing per row. Returns the call's stats."""
    from .ray_dedup import ray_near_duplicates  # type: ignore[import-not-found,unused-ignore]

    executor = _connected(stage_ctx)
    columns = [text_column, *group_by, *([id_column] if id_column else []),
               *([keep] if keep not in ("first", "longest") else [])]
    parts = [source.rows(index, list(dict.fromkeys(columns)), None, {}) for index in range(len(source.paths))]
    shutil.rmtree(output, ignore_errors=True)  # an interrupted run's
    found = ray_near_duplicates(parts, text_column, group_by=group_by, id_column=id_column, keep=keep,
                                output=output, max_retries=executor.config.max_retries,
                                scratch=_scratch(stage_ctx), **settings)
    _count(stage_ctx, source.offsets[-1], len(parts), text_read_in_tasks=True, written_by_tasks=True)
    return found.stats


def contamination_parts(source: PoolPartitions, stage_ctx: Any, column: str, reference: pl.Series,
                        **settings: Any) -> Iterator[pl.DataFrame]:
    """`contamination`'s rows a partition at a time, in order."""
    from .ray_dedup import ray_contamination_parts  # type: ignore[import-not-found,unused-ignore]

    executor = _connected(stage_ctx)
    return ray_contamination_parts(source, column, reference, max_retries=executor.config.max_retries,
                                   **settings)  # type: ignore[no-any-return]


def contamination(source: PoolPartitions, stage_ctx: Any, column: str, reference: pl.Series,
                  **settings: Any) -> pl.DataFrame:
    """`fast.contamination` of the pool's `column` (left in the partitions) against
    `reference`, each partition in a Ray task; rows in pool order."""
    from .ray_dedup import ray_contamination  # type: ignore[import-not-found,unused-ignore]

    executor = _connected(stage_ctx)
    found: pl.DataFrame = ray_contamination(source, column, reference, max_retries=executor.config.max_retries,
                                            **settings)
    return found


def _from_frame(frame: pl.DataFrame, stage_ctx: Any, **settings: Any) -> pl.DataFrame:
    """The frame cut into `partition_rows` partitions and put in Ray's object store."""
    from .ray_dedup import ray_near_duplicates  # type: ignore[import-not-found,unused-ignore]

    executor = _connected(stage_ctx)
    rows = max(1, int(getattr(stage_ctx, "partition_rows", frame.height)))
    parts = [frame.slice(start, rows) for start in range(0, frame.height, rows)]
    distributed = ray_near_duplicates(parts, max_retries=executor.config.max_retries, scratch=_scratch(stage_ctx),
                                      **settings)
    _count(stage_ctx, frame.height, len(parts), text_read_in_tasks=False)
    found: pl.DataFrame = distributed.frame
    return found


def _connected(stage_ctx: Any) -> Any:
    """The run's Ray executor, its cluster connected."""
    executor = stage_ctx.executor
    executor.connect()
    return executor


def _scratch(stage_ctx: Any) -> Path | None:
    """Where the distributed steps exchange their files: in the stage's scratch folder, which
    is in the run folder that every node of the cluster sees (None outside a run). Exchange
    folders left there by a driver that was killed are removed first (the run's lock keeps a
    second process out, and each call removes its own folder when it ends)."""
    from ..metrics.partitioned import SCRATCH  # the stage's scratch, removed when the stage ends

    stage_dir = getattr(stage_ctx, "stage_dir", None)
    if stage_dir is None:
        return None
    scratch = Path(stage_dir) / SCRATCH
    for stale in scratch.glob("near-duplicates-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return scratch


def _count(stage_ctx: Any, rows: int, partitions: int, **note: Any) -> None:
    done = stage_ctx.stats.setdefault("ray_near_duplicates", {"calls": 0, "rows": 0, "partitions": 0})
    done.update(calls=done["calls"] + 1, rows=done["rows"] + rows, partitions=done["partitions"] + partitions, **note)


def _from_partitions(frame: pl.DataFrame, stage_ctx: Any, source: PoolPartitions, *, text_column: str,
                     id_column: str | None = None, keep: str = "first", **settings: Any) -> pl.DataFrame:
    """The rows `frame["_row"]` of the pool, their text read by the Ray tasks; `duplicate_of`
    mapped to `frame[id_column]` when asked (else the representative's row in `frame`)."""
    from .ray_dedup import partition_rows, ray_near_duplicates  # type: ignore[import-not-found,unused-ignore]

    executor = _connected(stage_ctx)
    extra = {keep: frame[keep]} if keep not in ("first", "longest") else {}
    parts = partition_rows(source, frame["_row"], [text_column], extra)
    distributed = ray_near_duplicates(parts, text_column, keep=keep, max_retries=executor.config.max_retries,
                                      scratch=_scratch(stage_ctx), **settings)
    _count(stage_ctx, frame.height, len(parts), text_read_in_tasks=True)
    found: pl.DataFrame = distributed.frame
    if id_column is None:
        return found
    if id_column not in frame.columns:
        raise ValueError(f"id column {id_column!r} is not in the frame (ids left in the partitions are the "
                         "caller's to read, for the rows it needs)")
    # a null position gathers a null: only the duplicates' rows get an id string
    return found.with_columns(frame[id_column].gather(found["duplicate_of"]).alias("duplicate_of"))
