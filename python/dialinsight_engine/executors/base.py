"""Row-parallel stages and the unit of work an executor runs: one partition.

A `RowStage` maps each input partition to one output partition (`map_partition`), after an
optional driver-side aggregate over the whole input (`prepare`, e.g. pool statistics that
normalisation needs). Output partition i depends only on input partition i and that state, so
a partition written once never needs recomputing: a killed run resumes at the first
unfinished one, and any executor (this process, Ray tasks on a cluster) gives the same rows.

`compute_partition` is what runs where the work runs (a Ray worker, or this process): read
one input partition, map it, write the output partition atomically, then its progress record.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from abc import abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ..errors import UserError
from ..run import atomic, dataset
from ..run.stage import Stage

if TYPE_CHECKING:
    from ..plugins import Registry
    from ..run.context import StageContext
    from ..spec import Spec

PROGRESS_DIR = "progress"
FAILED_DIR = "failed"
#: test hook: SIGKILL the worker computing partition NAME once (`scenes:00001`); a marker file
#: in the stage folder makes the retry (in a fresh worker process) succeed. `verify:00002:always`
#: kills every attempt, so the partition fails after the executor's retries
WORKER_FAULT_ENV = "DIALENGINE_WORKER_FAULT"


@lru_cache(maxsize=1)
def _worker_registry() -> Registry:
    from ..plugins import get_registry

    return get_registry()


@dataclass
class PartitionContext:
    """What `map_partition` sees: the spec and the plugins, never the whole input."""

    spec: Spec
    stage: str
    index: int
    registry_: Registry | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def registry(self) -> Registry:
        # in a Ray worker the driver's registry is not sent: it is rebuilt from entry points
        return self.registry_ if self.registry_ is not None else _worker_registry()

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"dialinsight_engine.{self.stage}")


class RowStage(Stage):
    """A stage whose output partition i is a function of input partition i (and `prepare`)."""

    #: rows per Parquet row group of the partitions written, with statistics, for a stage
    #: whose readers filter on a column its rows are sorted by; None: one group, no statistics
    row_group_rows: int | None = None

    def prepare(self, ctx: StageContext) -> Any:
        """Driver-side aggregate over the whole input before the map (default: none). Must be
        small and picklable: it is sent to every partition task."""
        return None

    @abstractmethod
    def map_partition(self, pctx: PartitionContext, frame: pl.DataFrame, state: Any) -> pl.DataFrame:
        """The output rows of one input partition. Per-partition counts go in `pctx.stats`
        (numbers, or dicts of numbers: they are summed over partitions)."""

    def finish(self, ctx: StageContext, rows_out: int) -> None:
        """Checks over the whole output once every partition is written (default: none)."""

    def run(self, ctx: StageContext) -> pl.DataFrame:
        """The whole output in one frame (for callers outside the runner)."""
        state = self.prepare(ctx)
        parts = [self.map_partition(PartitionContext(ctx.spec, self.name, i, ctx.registry), frame, state)
                 for i, frame in enumerate(ctx.iter_input())]
        return pl.concat(parts, how="vertical") if parts else pl.DataFrame()


@dataclass(frozen=True)
class PartitionTask:
    """One partition to compute: where its input is and where its output goes."""

    index: int
    input_path: str
    input_sha256: str
    stage_dir: str
    key: str  # stage fingerprint + upstream output hash: progress from another config is ignored


@dataclass
class PartitionResult:
    index: int
    partition: dataset.Partition
    stats: dict[str, Any]
    seconds: float
    host: str = ""
    pid: int = 0
    peak_rss_mb: float = 0.0  # of the process that computed it, so far


class PartitionFailed(Exception):
    """A partition's map raised (after the executor's retries, for a dead worker)."""

    def __init__(self, index: int, input_path: str, error: str) -> None:
        super().__init__(index, input_path, error)  # all in args: Ray pickles it back to the driver
        self.index, self.input_path, self.error = index, input_path, error

    def __str__(self) -> str:
        return f"partition {self.index:05d} ({self.input_path}): {self.error}"


def progress_path(stage_dir: Path, index: int) -> Path:
    return Path(stage_dir) / PROGRESS_DIR / f"part-{index:05d}.json"


def compute_partition(stage: RowStage, spec: Spec, task: PartitionTask, state: Any,
                      registry: Registry | None = None) -> PartitionResult:
    """Read, map and write one partition; the progress record is written after the data, so a
    record always names a complete partition file."""
    t0 = time.perf_counter()
    _maybe_die(stage.name, task)
    frame = dataset.read_partition(task.input_path)
    pctx = PartitionContext(spec, stage.name, task.index, registry)
    try:
        out = stage.map_partition(pctx, frame, state)
    except UserError:  # the user's to fix (a template, a spec value): exit 2 as on the driver
        raise
    except Exception as exc:  # named and returned to the driver, which keeps the rows
        raise PartitionFailed(task.index, task.input_path, f"{type(exc).__name__}: {exc}") from None
    part = dataset.write_partition(Path(task.stage_dir), task.index, out, row_group_rows=stage.row_group_rows)
    result = PartitionResult(task.index, part, pctx.stats, round(time.perf_counter() - t0, 4),
                             os.uname().nodename, os.getpid(), peak_rss_mb())
    atomic.write_json(progress_path(Path(task.stage_dir), task.index), {
        "key": task.key, "input_sha256": task.input_sha256, "partition": part.to_dict(),
        "stats": pctx.stats, "seconds": result.seconds,
    })
    return result


def load_progress(task: PartitionTask) -> PartitionResult | None:
    """The finished partition of an earlier, interrupted run, when it is for this config and
    this input partition and its file is intact."""
    path = progress_path(Path(task.stage_dir), task.index)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        part = dataset.Partition(**record["partition"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("key") != task.key or record.get("input_sha256") != task.input_sha256:
        return None
    file = Path(task.stage_dir) / part.name
    if not file.is_file() or atomic.file_sha256(file) != part.sha256:
        return None
    return PartitionResult(task.index, part, record.get("stats", {}), float(record.get("seconds", 0.0)))


def peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def rss_mb() -> dict[str, float]:
    """The process's resident memory now, MiB (Linux; empty elsewhere): `now` in all,
    `anon` its own heap, `shared` mapped shared memory (Ray's object store) and files. With
    the peak it tells a step that needed memory from memory the allocators kept after an
    earlier one, and the process's data from object-store pages it has mapped."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    kib = {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in lines)
           if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem") and v.split()}
    if "VmRSS" not in kib:
        return {}
    out = {"now": kib["VmRSS"] / 1024, "anon": kib.get("RssAnon", 0) / 1024,
           "shared": (kib.get("RssFile", 0) + kib.get("RssShmem", 0)) / 1024}
    return {k: round(v, 1) for k, v in out.items()}


def _maybe_die(stage: str, task: PartitionTask) -> None:
    wanted = os.environ.get(WORKER_FAULT_ENV, "")
    always = wanted.endswith(":always")
    if wanted.removesuffix(":always") != f"{stage}:{task.index:05d}":
        return
    marker = Path(task.stage_dir) / f".worker-fault-{task.index:05d}"
    if marker.exists() and not always:
        return
    marker.parent.mkdir(parents=True, exist_ok=True)  # this may be the stage's first partition
    marker.touch()
    os.kill(os.getpid(), signal.SIGKILL)


def merge_stats(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Sum per-partition counts (nested dicts of numbers); other values keep the first seen."""
    for key, value in part.items():
        if isinstance(value, dict):
            total[key] = merge_stats(dict(total.get(key) or {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool) and key in total:
            total[key] = total[key] + value
        else:
            total.setdefault(key, value)
    return total
