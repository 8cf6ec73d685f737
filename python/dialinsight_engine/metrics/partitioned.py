"""Support module, not a metric plugin: one phase of the spec's metrics as a row-parallel stage.

The whole-pool path (`combine.assess_phase`) needs every row in one process. Here the same
decisions are made partition by partition, so the `assess` stage runs on any executor and no
process holds the pool:

1. `prepare`, on the driver:
   a. the languages of the row-local metrics, resolved over the whole pool (a partition's own
      detection could differ from the pool's);
   b. the row-local metrics (`Metric.row_local()`: the Rust text metrics) scored as a map over
      the input partitions on the executor, each partition's columns written to a scratch
      folder (`<stage>/.phase/rowwise/`, resumable like any partition); so are the metrics
      that need the pool only through a mergeable aggregate (`Metric.aggregates()`: n-gram
      richness), after a first map of their `partial` aggregates, `merge`d on the driver
      (the n-gram document frequencies per group);
   c. the pool-wide metrics (richness, near duplicates, plugins): under Ray, for a pool too
      large for one process's search, those that can score it where the rows lie
      (`Metric.score_partitions`: near duplicates, nothing gathered), the others over the
      pool in play, gathering only the columns they read (`Metric.pool_columns()`); their
      columns are written back a partition at a time (`<stage>/.phase/pooled/`);
   d. the normalisation statistics of every score column over the rows in play
      (`combine.PoolStats`: min/max a partition at a time; mean/std and the sorted values
      for rank over the joined column).
2. `decide` maps partition i: its rows in play get their metric columns from the two scratch
   files, are normalised by the pool statistics, combined and thresholded (`combine.combine`),
   and go back among the rows already out, in order: the rows `assess_phase` gives.
3. `finish` writes the quality summary from the output's score and flag columns, and removes
   the scratch folder.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa

from .. import records as R
from ..errors import StageFailed
from ..executors.base import PartitionContext, PartitionFailed, RowStage, merge_stats
from ..keysets import SeenKeys
from ..run import atomic, dataset
from .base import SCORE, Metric, MetricContext, Phase
from .combine import (
    PoolStats,
    combine,
    detail_col,
    finish_named,
    flag_col,
    in_play_mask,
    instantiate,
    merged_pool_stats,
    named_columns,
    reassemble,
    run_metric,
    score_col,
    scored_metrics,
    summarise,
    with_metric_columns,
)

if TYPE_CHECKING:
    from ..run.context import StageContext

SCRATCH = ".phase"
SUMMARY = "quality_summary.json"


@dataclass
class PhaseState:
    """What every partition's `decide` needs (sent once to the executor): small but for the
    sorted values of rank-normalised scores (8 bytes per row in play)."""

    phase: Phase
    order: list[str]  # the phase's metrics in spec order (their columns go in this order)
    rowwise: str | None  # scratch folder of the row-local metrics' columns (None: no such metric)
    pooled: str | None  # scratch folder of the pool-wide metrics' columns (None: no such metric)
    pool: dict[str, PoolStats]
    # driver-side figures for the summary (not needed by the map)
    timings: dict[str, float] = field(default_factory=dict)
    metric_stats: dict[str, Any] = field(default_factory=dict)


class RowMetrics(RowStage):
    """Step 1b: the row-local metrics of a phase over one partition's rows in play."""

    name = "row-metrics"
    order = 0

    def __init__(self, phase: Phase, names: list[str], languages: dict[str, str]) -> None:
        self.phase, self.names, self.languages = phase, names, languages

    def map_partition(self, pctx: PartitionContext, frame: pl.DataFrame, state: Any) -> pl.DataFrame:
        metrics = instantiate(pctx.spec.quality, pctx.registry, self.phase)
        mctx = MetricContext(spec=pctx.spec, languages=self.languages)
        play = frame.filter(in_play_mask(frame))
        columns, seconds = [], {}
        for name in self.names:
            t0 = time.perf_counter()
            metrics[name].pool_state = (state or {}).get(name)  # the merged aggregate, if it needs one
            columns.append(run_metric(name, metrics[name], play, mctx))
            seconds[name] = time.perf_counter() - t0
        pctx.stats.update(seconds=seconds, metric_stats=mctx.stats)
        return pl.concat(columns, how="horizontal")


class PoolPartial(RowStage):
    """Step 1b': one partition's part of an aggregating metric's pool aggregate."""

    name = "pool-partial"
    order = 0
    #: a part sorted by a column its metric's `merge_scan` filters on (richness's n-gram
    #: shard) is read by each pass in the groups of its range only
    row_group_rows = 4096

    def __init__(self, phase: Phase, metric: str, languages: dict[str, str]) -> None:
        self.phase, self.metric, self.languages = phase, metric, languages

    def map_partition(self, pctx: PartitionContext, frame: pl.DataFrame, state: Any) -> pl.DataFrame:
        metric = instantiate(pctx.spec.quality, pctx.registry, self.phase)[self.metric]
        return metric.partial(frame.filter(in_play_mask(frame)), MetricContext(spec=pctx.spec, languages=self.languages))


def prepare(ctx: StageContext, phase: Phase) -> PhaseState:
    """Step 1: everything about the pool that a partition's decisions need."""
    metrics = instantiate(ctx.spec.quality, ctx.registry, phase)
    # row-local metrics, and those that need the pool only through a mergeable aggregate
    local = [n for n, m in metrics.items() if m.row_local() or m.aggregates()]
    scratch = ctx.stage_dir / SCRATCH
    state = PhaseState(phase, list(metrics), None, None, {})
    _driver_memory(ctx, "start")
    if local:
        state.rowwise = str(scratch / "rowwise")
        languages = pool_languages(ctx, {n: metrics[n] for n in local})
        aggregates = {n: _aggregate(ctx, PoolPartial(phase, n, languages), metrics[n], scratch / f"partial-{n}")
                      for n in local if not metrics[n].row_local()}
        _driver_memory(ctx, "aggregates merged")
        _score_rowwise(ctx, RowMetrics(phase, local, languages), state, aggregates,
                       {n for n in local if metrics[n].row_local()})
        del aggregates
        _driver_memory(ctx, "row metrics")
    pooled = {n: m for n, m in metrics.items() if n not in local}
    if pooled:
        state.pooled = str(scratch / "pooled")
        _score_pooled(ctx, pooled, state)
        # a judge's or rater's generation pool (Ray actors) may hold every CPU of the cluster,
        # which the decide map's tasks need: the backends are done with, so release them now
        ctx.close()
        _driver_memory(ctx, "pool-wide metrics")
    state.pool = _normalisation(ctx, state)
    _driver_memory(ctx, "normalisation")
    return state


def _driver_memory(ctx: StageContext, step: str) -> None:
    """The driver's peak and current RSS after a step (`driver_memory_mb` in the manifest):
    which step raises the peak as the pool grows (docs/performance.md). The step's freed
    memory is handed back first (`allocator.release`), so the next one starts from what is held."""
    from ..allocator import release
    from ..executors.base import peak_rss_mb, rss_mb

    release()
    ctx.stats.setdefault("driver_memory_mb", {})[step] = {"peak": peak_rss_mb(), **rss_mb()}


def decide(pctx: PartitionContext, frame: pl.DataFrame, state: PhaseState) -> pl.DataFrame:
    """Step 2: one partition's rows, scored and decided as inside the whole pool."""
    in_play = in_play_mask(frame)
    play = frame.filter(in_play)
    scored = [pl.read_parquet(Path(folder) / dataset.part_name(pctx.index))
              for folder in (state.rowwise, state.pooled) if folder]
    for name in state.order:
        columns = [f[c] for f in scored for c in f.columns if _belongs(c, name)]
        play = with_metric_columns(play, pl.DataFrame(columns))
    out = reassemble(frame, in_play, combine(play, pctx.spec.quality, state.order, state.pool))
    dropped_before = int((~frame[R.KEPT]).sum()) if R.KEPT in frame.columns else 0
    pctx.stats["quality"] = {"rows_in_play": int(frame[R.KEPT].sum()) if R.KEPT in frame.columns else frame.height,
                             "dropped_here": out.height - int(out[R.KEPT].sum()) - dropped_before}
    return out


def finish(ctx: StageContext, state: PhaseState, output: Iterable[pl.DataFrame] | None = None) -> None:
    """Step 3: the quality summary over the output (default: as written), then the scratch
    folder goes."""
    metrics = instantiate(ctx.spec.quality, ctx.registry, state.phase)
    wanted = [c for n in ctx.spec.quality.active() for c in (score_col(n), flag_col(n))] + [R.KEPT]
    # one partition's score and flag columns at a time: the summary adds them up
    frames = output if output is not None else (
        dataset.read_partition(p, [c for c in wanted if c in pl.read_parquet_schema(p)])
        for p in dataset.partition_files(ctx.stage_dir))
    narrowed = (f.select([c for c in wanted if c in f.columns]) for f in frames)
    summary = summarise(narrowed, ctx.spec.quality, metrics, state.phase, state.timings, state.metric_stats)
    ctx.write_json(SUMMARY, summary)
    counts = ctx.stats.get("quality", {})
    ctx.stats["quality"] = {
        "rows_in_play": counts.get("rows_in_play", 0), "dropped_here": counts.get("dropped_here", 0),
        "metrics": {n: {k: v for k, v in m.items() if k in ("flagged", "below_min", "above_max", "seconds")}
                    for n, m in summary["metrics"].items() if m.get("phase") == state.phase},
    }
    if summary["rows"] == 0:
        ctx.log.warning("no input rows")
    shutil.rmtree(ctx.stage_dir / SCRATCH, ignore_errors=True)
    _driver_memory(ctx, "summary")


class PhaseStage(RowStage):
    """Base of `assess` (and any stage that is one phase of metrics): prepare, decide, finish."""

    phase: Phase = "instruction"

    def prepare(self, ctx: StageContext) -> PhaseState:
        self._state = prepare(ctx, self.phase)
        return self._state

    def map_partition(self, pctx: PartitionContext, frame: pl.DataFrame, state: Any) -> pl.DataFrame:
        return decide(pctx, frame, state)

    def finish(self, ctx: StageContext, rows_out: int) -> None:
        self.conclude(ctx, None)

    def conclude(self, ctx: StageContext, output: list[pl.DataFrame] | None) -> None:
        """The pool-level reports over the output (None: as written), then the scratch goes."""
        finish(ctx, self._state, output)

    def run(self, ctx: StageContext) -> pl.DataFrame:
        """The whole output in one frame, outside the runner (nothing written but the summary)."""
        state = self.prepare(ctx)
        parts = []
        for i, frame in enumerate(ctx.iter_input()):
            pctx = PartitionContext(ctx.spec, self.name, i, ctx.registry)
            parts.append(self.map_partition(pctx, frame, state))
            merge_stats(ctx.stats, pctx.stats)  # as the driver sums them over partitions
        out = pl.concat(parts, how="vertical")
        self.conclude(ctx, [out])
        return out

    def __getstate__(self) -> dict[str, Any]:
        # the state travels once as the map's argument, not again inside the stage
        return {k: v for k, v in self.__dict__.items() if k != "_state"}


# -- prepare's steps -------------------------------------------------------------------------------
def _belongs(column: str, metric: str) -> bool:
    return column in (score_col(metric), flag_col(metric)) or column.startswith(detail_col(metric, ""))


def _partitions(ctx: StageContext) -> list[Path]:
    from ..executors.driver import input_tasks

    return [Path(t.input_path) for t in input_tasks(ctx, "")] if ctx.input_stage else []


def _in_play(path: Path, columns: list[str] | None = None) -> pl.DataFrame:
    """One input partition's rows in play, with `columns` only (None: all)."""
    names = pl.read_parquet_schema(path)
    # through the dataset reader: JSON columns (truth, output_schema) as the text every metric
    # sees on the whole-pool path, whichever form the partition stores them in
    frame = dataset.read_partition(path, [c for c in names if columns is None or c in columns or c == R.KEPT])
    frame = frame.filter(in_play_mask(frame))
    return frame.drop(R.KEPT) if columns is not None and R.KEPT not in columns and R.KEPT in frame.columns \
        else frame


@dataclass(frozen=True)
class PoolPartitions:
    """The pool in play as it lies in the stage's input partitions, for the columns the driver
    left there (`Metric.partition_columns()`, under a distributed executor): a metric reads
    them where the data lies (Ray tasks) instead of in the gathered frame, whose row i is the
    i-th row in play of the partitions in order."""

    paths: tuple[str, ...]
    heights: tuple[int, ...]  # rows in play per partition
    columns: frozenset[str]  # the columns not in the gathered frame

    @property
    def offsets(self) -> list[int]:
        """Pool position of each partition's first row in play, then the pool's size."""
        out = [0]
        for height in self.heights:
            out.append(out[-1] + height)
        return out

    def read(self, index: int, columns: list[str]) -> pl.DataFrame:
        """Partition `index`'s rows in play, `columns` only (run where the data lies)."""
        return _in_play(Path(self.paths[index]), columns)

    def take(self, column: str, rows: Sequence[int] | np.ndarray) -> pl.Series:
        """`column` at pool positions `rows` (ascending), one partition in memory at a time."""
        offsets, out = self.offsets, []
        rows = np.asarray(rows, dtype=np.int64)
        bounds = np.searchsorted(rows, offsets)  # rows[bounds[i]:bounds[i + 1]] lie in partition i
        for index in range(len(self.paths)):
            local = rows[bounds[index]:bounds[index + 1]] - offsets[index]
            if local.size:
                taken = self.read(index, [column]).select(pl.col(column).gather(local))
                # copied: gathered rows share their partition's buffers (`dataset.own_buffers`)
                out.append(dataset.own_buffers(taken)[column])
        return pl.concat(out) if out else pl.Series(column, [], dtype=pl.String)

    def rows(self, index: int, columns: Sequence[str], local_rows: np.ndarray | None,
             extra: dict[str, pa.Array]) -> PartitionRows:
        """Partition `index`'s rows in play at `local_rows` (None: all of them), to be read by
        the task that needs them."""
        return PartitionRows(self.paths[index], tuple(columns), self.heights[index], local_rows, extra)

    def language_sample(self, column: str) -> pl.Series:
        """The rows of `column` that `fast.detect_language` samples from the whole pool column,
        so a detection on them equals the detection on the gathered column."""
        from ..fast import detection_rows

        return self.take(column, list(detection_rows(self.offsets[-1])))


@dataclass(frozen=True)
class PartitionRows:
    """Some rows of one input partition, read where a task runs: what a distributed step
    sends instead of the rows themselves, so the pool's text never sits in Ray's object store
    (at 10^6 rows it filled the store, spilled to disk, and every worker mapped the store's
    pages: docs/performance.md). `extra`: the caller's columns for these rows, appended."""

    path: str
    columns: tuple[str, ...]
    height: int  # the partition's rows in play
    local_rows: np.ndarray | None  # positions among them (ascending, 32-bit), None: all
    extra: dict[str, pa.Array]

    @property
    def num_rows(self) -> int:
        return self.height if self.local_rows is None else len(self.local_rows)

    def schema(self) -> dict[str, pl.DataType]:
        """The columns' names and dtypes as `table()` gives them, without reading the rows
        (JSON columns stored as structs are read as text: `dataset.decode_json_columns`)."""
        stored = pl.read_parquet_schema(self.path)
        empty = pl.DataFrame(schema={c: stored[c] for c in self.columns if c in stored})
        out: dict[str, pl.DataType] = dict(dataset.decode_json_columns(empty).schema)
        for name, values in self.extra.items():
            out[name] = pl.from_arrow(pa.table({name: values})).dtypes[0]  # type: ignore[union-attr]
        return out

    def table(self) -> pa.Table:
        table = _in_play(Path(self.path), list(self.columns)).to_arrow()
        if self.local_rows is not None:
            table = table.take(pa.array(self.local_rows, pa.int64()))
        for name, values in self.extra.items():
            table = table.append_column(name, values)
        return table


def pool_languages(ctx: StageContext, metrics: dict[str, Metric]) -> dict[str, str]:
    """Each row-local metric's language as `fast.resolve_language` would find it on the whole
    pool: the texts it detects on are counted a partition at a time, and only the evenly
    spaced sample that detection reads is gathered."""
    from .. import fast

    configured = MetricContext(stage_ctx=ctx).language
    if fast.canonical_language(configured) != "auto":
        return {}
    paths = _partitions(ctx)
    return {name: fast.detect_language(pl.Series("texts", _language_sample(metric, paths), dtype=pl.String))
            for name, metric in metrics.items()}


def _language_sample(metric: Metric, paths: list[Path]) -> list[str]:
    """The texts `fast.detect_language` reads of the metric's texts over all partitions (of
    their distinct ones, as hashes tell, for a metric that detects on distinct texts). Two
    passes: the count, then the sample; the second knows a partition's first occurrences by
    one bit per text, so what is held is those bits and the hashes seen (distinct texts only)."""
    from ..fast import detection_rows

    seen = _SeenTexts() if getattr(metric, "language_unique", False) else None
    counts, firsts = [], []
    for path in paths:
        texts = metric.language_texts(_in_play(path))
        first = None if texts is None or seen is None else seen.add(texts)
        counts.append(0 if texts is None else len(texts) if first is None else int(first.sum()))
        firsts.append(None if first is None else np.packbits(first))
    del seen
    starts = np.cumsum([0, *counts])
    rows = np.asarray(detection_rows(int(starts[-1])), dtype=np.int64)
    sample: list[str] = []
    for i, path in enumerate(paths):
        wanted = rows[(rows >= starts[i]) & (rows < starts[i + 1])] - starts[i]
        if not len(wanted):
            continue
        texts = metric.language_texts(_in_play(path))
        assert texts is not None  # it had texts in the first pass
        packed = firsts[i]
        positions = wanted if packed is None else \
            np.flatnonzero(np.unpackbits(packed, count=len(texts)))[wanted]
        sample += texts.gather(positions).to_list()
    return sample


class _SeenTexts:
    """The hashes of the texts seen so far (Polars' `hash`, as the whole pool's
    `is_first_distinct` compares them), 8 bytes per distinct text, in `SeenKeys`' sorted runs.
    (One sorted array with `np.insert` copied every hash seen for each partition: quadratic
    in the pool, ~1.6 TB of copies at 10^8 dialogues in 2,000 partitions.)"""

    def __init__(self) -> None:
        self.keys = SeenKeys()

    def add(self, texts: pl.Series) -> np.ndarray:
        """Which of `texts` are first seen here: not seen before, nor earlier in `texts`."""
        hashes = texts.hash(seed=0).to_numpy()
        distinct, index = np.unique(hashes, return_index=True)
        known = self.keys.contains(distinct[:, None])
        self.keys.add(distinct[~known][:, None])
        first = np.zeros(len(hashes), bool)
        first[index[~known]] = True
        return first


def map_partitions(ctx: StageContext, stage: RowStage, folder: Path, what: str, state: Any = None) -> list[Any]:
    """`stage` mapped over the input partitions into `folder` on the run's executor (partitions
    of an interrupted run reused); returns every partition's progress record."""
    from ..executors.base import load_progress
    from ..executors.driver import input_tasks, keep_failed_rows
    from ..executors.local import LocalExecutor

    tasks = input_tasks(ctx, f"{ctx.partition_key}|{folder.name}", folder)
    todo = [t for t in tasks if load_progress(t) is None]
    executor = ctx.executor or LocalExecutor()
    with ctx.progress(f"{ctx.stage}: {what} ({executor.name})", len(tasks)) as advance:
        advance(len(tasks) - len(todo))
        try:
            for _ in executor.map(stage, ctx.spec, todo, state, ctx.registry):
                advance(1)
        except PartitionFailed as failed:
            raise StageFailed(keep_failed_rows(ctx, failed)) from None
    done = [r for t in tasks if (r := load_progress(t)) is not None]
    # per-block costs of prepare's maps, for docs/performance.md's scaling model
    ctx.stats.setdefault("prepare_maps", {})[folder.name] = {
        "partitions": len(done), "computed": len(todo), "map_seconds": round(sum(r.seconds for r in done), 3),
        "bytes": sum((folder / r.partition.name).stat().st_size for r in done)}
    return done


def _aggregate(ctx: StageContext, stage: PoolPartial, metric: Metric, folder: Path) -> Any:
    """Step 1b': the partitions' parts of a metric's aggregate, merged on the driver, its
    large parts written for the scoring tasks (`Metric.spill`)."""
    map_partitions(ctx, stage, folder, f"{stage.metric} aggregate")
    files = dataset.partition_files(folder)
    merged = metric.merge_scan(pl.scan_parquet(files)) if files else metric.merge([])
    spilled = folder.with_name(f"merged-{stage.metric}")
    shutil.rmtree(spilled, ignore_errors=True)  # an interrupted run's: the merge is redone
    spilled.mkdir(parents=True)
    return metric.spill(merged, spilled)


def _score_rowwise(ctx: StageContext, stage: RowMetrics, state: PhaseState, aggregates: dict[str, Any],
                   row_local: set[str]) -> None:
    """Step 1b on the run's executor; partitions of an interrupted run are reused."""
    assert state.rowwise is not None
    done = map_partitions(ctx, stage, Path(state.rowwise), "row metrics", aggregates)
    # every partition's record, computed now or reused: seconds are summed; so are a row-local
    # metric's own counts (label_quality's rule failures), while the resolved language (the
    # pool's, in every partition) and an aggregating metric's stats (the pool's rows) are
    # partition 0's
    records = [r.stats for r in done]
    seconds: dict[str, Any] = {}
    summed: dict[str, Any] = {}
    for record in records:
        merge_stats(seconds, record.get("seconds", {}))
        merge_stats(summed, record.get("metric_stats", {}))
    state.timings.update({n: round(v, 3) for n, v in seconds.items()})
    first = records[0].get("metric_stats", {}) if records else {}
    state.metric_stats.update({n: {**summed[n], **{k: v[k] for k in ("language",) if k in v}}
                               if n in row_local and isinstance(v, dict) else v for n, v in first.items()})
    ctx.stats["row_metrics"] = {"partitions": len(done), "metrics": stage.names}


def _score_pooled(ctx: StageContext, metrics: dict[str, Metric], state: PhaseState) -> None:
    """Step 1c on the driver: the pool in play, narrowed to the columns the metrics read, or,
    for a metric that can (`Metric.score_partitions`), scored where the rows lie."""
    paths = _partitions(ctx)
    heights = _distributed_heights(ctx, paths)
    apart, mctx_apart = _scored_where_rows_lie(ctx, metrics, paths, heights)
    gathered = {n: m for n, m in metrics.items() if n not in apart}
    pool, sizes, mctx = _gathered_pool(ctx, gathered, state, paths, heights is not None)
    scored = {}
    for name, metric in gathered.items():
        t0 = time.perf_counter()
        ctx.log.info("metric %s: scoring %d rows", name, pool.height)
        result = run_metric(name, metric, pool, mctx)
        pool = with_metric_columns(pool, result)
        scored[name] = result
        state.timings[name] = round(time.perf_counter() - t0, 3)
    columns_gathered = pool.width - sum(result.width for result in scored.values())
    del pool
    assert state.pooled is not None
    start, written = 0, 0
    for i, rows in enumerate(sizes if gathered else heights or ()):
        part = pl.concat([_partition_result(name, metric, apart, scored, start, rows, state.timings)
                          for name, metric in metrics.items()], how="horizontal")
        written += atomic.write_parquet(Path(state.pooled) / dataset.part_name(i), part).stat().st_size
        start += rows
    state.metric_stats.update(mctx.stats)
    state.metric_stats.update(mctx_apart.stats)
    left = sorted(mctx.partitions.columns) if mctx.partitions is not None and gathered else []
    ctx.stats.setdefault("prepare_maps", {})["pooled"] = {"rows": start, "columns": columns_gathered,
                                                          "bytes": written, "left_in_partitions": left,
                                                          "scored_where_rows_lie": sorted(apart)}


def _partition_result(name: str, metric: Metric, apart: dict[str, Iterator[pl.DataFrame]],
                      scored: dict[str, pl.DataFrame], start: int, rows: int, timings: dict[str, float]) -> pl.DataFrame:
    """One metric's columns for one partition's rows in play: the next of its partitions
    scored where they lie, or its slice of the gathered pool's result, finished."""
    if name not in apart:
        return finish_named(name, metric, scored[name].slice(start, rows))
    t0 = time.perf_counter()
    result = next(apart[name])
    timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 3)
    if result.height != rows or SCORE not in result.columns:
        raise StageFailed(f"metric {name!r}: score_partitions gave {result.height} rows for a partition of {rows} "
                          f"rows in play, or no {SCORE!r} column")
    return named_columns(name, result)


def _distributed_heights(ctx: StageContext, paths: list[Path]) -> tuple[int, ...] | None:
    """Each partition's rows in play when the pool is searched across the cluster (under
    Ray, `dedup_local_rows` rows or more); None otherwise (off Ray they are not counted)."""
    from ..executors.dedup import distributed_pool, on_ray

    if not paths or not on_ray(ctx):
        return None
    heights = tuple(_rows_in_play(p) for p in paths)
    return heights if distributed_pool(ctx, sum(heights)) else None


def _scored_where_rows_lie(ctx: StageContext, metrics: dict[str, Metric], paths: list[Path],
                           heights: tuple[int, ...] | None) -> tuple[dict[str, Iterator[pl.DataFrame]], MetricContext]:
    """The metrics that score the pool without it gathered (`Metric.score_partitions`),
    under a distributed executor for a pool too large for one process's search (`heights`:
    its partitions' rows in play, None when it is not): each one's partitions to come, and
    the context they report their stats in. A metric whose columns a later one reads is not
    asked."""
    mctx = MetricContext(stage_ctx=ctx)
    if heights is None:
        return {}, mctx
    mctx.partitions = PoolPartitions(tuple(map(str, paths)), heights, frozenset(pl.read_parquet_schema(paths[0])))
    mctx.rows_later = True
    apart: dict[str, Iterator[pl.DataFrame]] = {}
    names = list(metrics)
    for index, (name, metric) in enumerate(metrics.items()):
        later = [metrics[n].pool_columns() for n in names[index + 1:]]
        if any(reads is None or any(_belongs(c, name) for c in reads) for reads in later):
            continue
        t0 = time.perf_counter()
        parts = metric.score_partitions(mctx.partitions, mctx)
        if parts is not None:
            apart[name] = parts
            ctx.log.info("metric %s: scored where the %d rows lie", name, sum(heights))
            ctx.stats.setdefault("scored_where_rows_lie", {})[name] = round(time.perf_counter() - t0, 3)
    return apart, mctx


def _gathered_pool(ctx: StageContext, metrics: dict[str, Metric], state: PhaseState, paths: list[Path],
                   distributed: bool) -> tuple[pl.DataFrame, list[int], MetricContext]:
    """The pool in play as the `metrics` (those scored on it) read it: only their columns,
    group keys as codes, the columns they read where the data lies left there (for a
    `distributed` pool); each partition's rows in play; the context they score in."""
    mctx = MetricContext(stage_ctx=ctx)
    if not metrics:
        return pl.DataFrame(), [], mctx
    wanted: set[str] | None = set()
    for metric in metrics.values():
        needs = metric.pool_columns()
        wanted = None if wanted is None or needs is None else wanted | needs | set(metric.requires)
    left = _columns_left_in_partitions(metrics, wanted, distributed)
    columns = sorted(wanted - left) if wanted is not None else None
    keys = _key_columns(metrics, columns)
    frames, sizes = [], []
    for i, path in enumerate(paths):
        play = _as_codes(_in_play(path, columns), keys)
        if state.rowwise:  # a pool-wide metric may read a row-local one's score (keep = "score_...")
            scores = Path(state.rowwise) / dataset.part_name(i)
            # only the columns asked for: every row-local score and detail is in this file
            wanted_here = [c for c in pl.read_parquet_schema(scores)
                           if (columns is None or c in columns) and c not in play.columns]
            if wanted_here:
                play = play.hstack(pl.read_parquet(scores, columns=wanted_here).get_columns())
        frames.append(play)
        sizes.append(play.height)
    pool = pl.concat(frames, how="vertical").rechunk() if frames else pl.DataFrame()
    del frames
    mctx.rows_later = True  # each partition's rows completed as written, below
    if left:
        mctx.partitions = PoolPartitions(tuple(map(str, paths)), tuple(sizes), frozenset(left))
    return pool, sizes, mctx


def _key_columns(metrics: dict[str, Metric], columns: list[str] | None) -> set[str]:
    """The gathered columns that every pool-wide metric reading them compares only for
    equality (`Metric.key_columns()`): a metric reading all columns reads each one."""
    if columns is None:
        return set()
    keys = set(columns) & set().union(*(m.key_columns() for m in metrics.values()))
    for metric in metrics.values():
        needs = metric.pool_columns()
        reads = set(columns) if needs is None else needs | set(metric.requires)
        keys -= reads - metric.key_columns()
    return keys


def _as_codes(frame: pl.DataFrame, keys: set[str]) -> pl.DataFrame:
    """`keys`' string columns as Categorical: a group key such as the task name held as 4-byte
    codes (the bench's task names: 20 -> 4 MB at 10^6 rows; Polars' categories are global, so
    the partitions' codes agree when concatenated)."""
    cast = [pl.col(c).cast(pl.Categorical) for c in keys if c in frame.columns and frame[c].dtype == pl.String]
    return frame.with_columns(cast) if cast else frame


def _columns_left_in_partitions(metrics: dict[str, Metric], wanted: set[str] | None, distributed: bool) -> set[str]:
    """The columns the driver need not gather: under a distributed executor, with a pool too
    large for one process's near-duplicate search (`distributed`), those that every pool-wide
    metric reading them reads from the partitions itself (the text columns: most of a row's
    bytes)."""
    if wanted is None or not distributed:
        return set()
    offered = set().union(*(m.partition_columns() for m in metrics.values()))
    needed_here = set().union(*((m.pool_columns() or set()) - m.partition_columns() | set(m.requires)
                                for m in metrics.values()))
    left = (offered & wanted) - needed_here
    # the gathered frame must keep a column, or it could not hold the rows' count: the ids,
    # the narrowest column a metric may offer to leave (else nothing is left)
    if not wanted - left and R.INSTRUCTION_ID in left:
        left.discard(R.INSTRUCTION_ID)
    return left if wanted - left else set()


def _rows_in_play(path: Path) -> int:
    scan = pl.scan_parquet(path)
    count = pl.col(R.KEPT).fill_null(False).sum() if R.KEPT in pl.read_parquet_schema(path) else pl.len()
    return int(scan.select(count).collect().item())


def _normalisation(ctx: StageContext, state: PhaseState) -> dict[str, PoolStats]:
    """Step 1d: pool statistics of every score column a partition's `combine` normalises."""
    specs = ctx.spec.quality.active()
    paths = _partitions(ctx)
    if not paths:
        return {}
    given = list(pl.read_parquet_schema(paths[0]))
    folders = [Path(f) for f in (state.rowwise, state.pooled) if f]
    new = [c for f in folders for c in pl.read_parquet_schema(f / dataset.part_name(0))]
    out = {}
    for name in scored_metrics(ctx.spec.quality, given + new):
        if specs[name].normalize == "none":
            continue
        out[name] = merged_pool_stats(_score_parts(score_col(name), new, folders, paths), specs[name].normalize)
    return out


def _score_parts(column: str, new: list[str], folders: list[Path], paths: list[Path]) -> Iterator[pl.Series]:
    """Each partition's rows in play's values of a score column, read as they are asked for:
    from the scratch file that has it, or the input (a score given by an earlier phase)."""
    if column in new:
        folder = next(f for f in folders if column in pl.read_parquet_schema(f / dataset.part_name(0)))
        return (pl.read_parquet(folder / dataset.part_name(i), columns=[column])[column] for i in range(len(paths)))
    return (_in_play(p, [column])[column] for p in paths)
