"""The call site for distributed near-duplicate detection (`executors/ray_dedup.py`).

`data_redundancy` asks here for its within-set clusters. Under the Ray executor, when the
distributed module is installed and the pool has `[executor] dedup_local_rows` rows or more,
the frame is cut into `partition_rows` partitions and `ray_near_duplicates` computes the same
clusters as `fast.near_duplicates` over the cluster; otherwise (local executor, no Ray, or a
pool one process does faster than the shuffle) the Rust core computes them in this process.
"""

from __future__ import annotations

from typing import Any

import polars as pl


def near_duplicates(frame: pl.DataFrame, stage_ctx: Any, **settings: Any) -> pl.DataFrame:
    """`fast.near_duplicates(frame, **settings)`, distributed when the run's executor is Ray."""
    from .. import fast

    executor: Any = getattr(stage_ctx, "executor", None)
    on_ray = getattr(executor, "name", "local") == "ray" and frame.height > 0
    if on_ray and frame.height < executor.config.dedup_local_rows:
        # one process does a pool this size faster than the shuffle between Ray tasks
        done = stage_ctx.stats.setdefault("near_duplicates_in_driver", {"calls": 0, "rows": 0})
        done.update(calls=done["calls"] + 1, rows=done["rows"] + frame.height)
    elif on_ray:
        try:
            from .ray_dedup import ray_near_duplicates  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            pass
        else:
            executor.connect()
            rows = max(1, int(getattr(stage_ctx, "partition_rows", frame.height)))
            parts = [frame.slice(start, rows) for start in range(0, frame.height, rows)]
            distributed = ray_near_duplicates(parts, max_retries=executor.config.max_retries, **settings)
            done = stage_ctx.stats.setdefault("ray_near_duplicates", {"calls": 0, "rows": 0, "partitions": 0})
            done.update(calls=done["calls"] + 1, rows=done["rows"] + frame.height,
                        partitions=done["partitions"] + len(parts))
            result: pl.DataFrame = distributed.frame
            return result
    column = settings.pop("text_column")
    found: pl.DataFrame = fast.near_duplicates(frame, column, **settings)
    return found
