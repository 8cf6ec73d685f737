"""Support module, not a metric plugin: run a phase's metrics over the rows in play and combine
them into a decision per row.

Columns written for every metric NAME of the spec:
- ``score_NAME``: the metric's raw score (thresholds `min`/`max` apply to this);
- ``norm_NAME``: the score normalised as declared (`minmax`, `z`, `rank` or `none`) over the
  rows in play;
- ``flag_NAME``: the metric's hard flag (null when none), e.g. "near duplicate of ...";
- ``NAME__DETAIL``: the metric's detail columns (raw measures, cluster ids, judge reasons);
  two underscores, not a dot, so SQL tools (DuckDB, Spark) need no quoting.

``quality_score`` = sum(weight * norm) / sum(weight) over the metrics with a score, and
``reasons`` collects every reason a row was dropped; ``kept`` = no reasons. Rows already out
(``kept`` false upstream) are carried through untouched and not scored, so they cannot sway
normalisation, duplicate clusters or diversity.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..errors import StageFailed, UserError
from .base import REASON, SCORE, Metric, MetricContext, Phase

if TYPE_CHECKING:
    from ..plugins import Registry
    from ..spec.quality import MetricSpec, QualitySpec


def score_col(name: str) -> str:
    return f"score_{name}"


def norm_col(name: str) -> str:
    return f"norm_{name}"


def flag_col(name: str) -> str:
    return f"flag_{name}"


#: between a metric's name and its detail's in a detail column: `prompt_complexity__words`.
#: Until stage version 2 of assess/review/verify it was a dot, which SQL needs quoted.
DETAIL_SEP = "__"


def detail_col(name: str, detail: str) -> str:
    return f"{name}{DETAIL_SEP}{detail}"


def column_alias(column: str) -> str:
    """A column named in a spec, with the old dotted detail form (`prompt_complexity.words`)
    mapped to the written one (`prompt_complexity__words`); other names are returned as given."""
    return column.replace(".", DETAIL_SEP)


@dataclass
class PhaseResult:
    frame: pl.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def instantiate(quality: QualitySpec, registry: Registry, phase: Phase | None = None) -> dict[str, Metric]:
    """The spec's enabled metrics (of `phase`), in spec order, configured from their params."""
    out: dict[str, Metric] = {}
    for name, mspec in quality.active().items():
        cls = registry.get("metric", mspec.plugin_name(name), where=f"quality.metrics.{name}")
        if phase is not None and getattr(cls, "phase", "instruction") != phase:
            continue
        try:
            out[name] = cls.from_params(mspec.params)  # type: ignore[attr-defined]
        except Exception as exc:  # validated at load time; this is a safety net for direct use
            raise UserError(f"invalid params: {exc}", key=f"quality.metrics.{name}.params") from None
    return out


def normalise(values: pl.Expr, method: str, pool: PoolStats | None = None) -> pl.Expr:
    """`values` normalised by `method`, against the values' own statistics, or against `pool`
    (the statistics of the whole pool, when `values` are one partition of it)."""
    if method == "none":
        return values
    if pool is not None:
        return pool.normalise(values)
    if method == "minmax":
        lo, hi = values.min(), values.max()
        return pl.when(hi > lo).then((values - lo) / (hi - lo)).otherwise(pl.when(values.is_not_null()).then(1.0))
    if method == "z":
        std = values.std()
        return pl.when(std > 0).then((values - values.mean()) / std).otherwise(pl.when(values.is_not_null()).then(0.0))
    if method == "rank":
        n = values.count()
        return pl.when(n > 1).then((values.rank("average") - 1) / (n - 1)).otherwise(pl.when(values.is_not_null()).then(1.0))
    raise ValueError(f"unknown normalisation {method!r}")


@dataclass
class PoolStats:
    """What `normalise` needs of one score column over the whole pool in play, so a partition
    is normalised as it would be inside the whole: min/max, mean/std, or the sorted values
    (rank). Built by `pool_stats`; the formulas are the ones above, term for term."""

    method: str
    lo: float | None = None
    hi: float | None = None
    mean: float | None = None
    std: float | None = None
    count: int = 0
    sorted_values: Any = None  # numpy float64, non-null values ascending (rank only)

    def normalise(self, values: pl.Expr) -> pl.Expr:
        if self.method == "minmax":
            if self.lo is None or self.hi is None or not self.hi > self.lo:
                return pl.when(values.is_not_null()).then(1.0)
            # times the reciprocal, as polars divides a column by a scalar (on more than one
            # row): a partition of one row then gets the bits the whole pool gives it
            return (values - self.lo) * (1.0 / (self.hi - self.lo))
        if self.method == "z":
            if self.std is None or not self.std > 0:
                return pl.when(values.is_not_null()).then(0.0)
            return (values - self.mean) * (1.0 / self.std)
        if self.count <= 1:
            return pl.when(values.is_not_null()).then(1.0)
        return values.map_batches(self._rank, return_dtype=pl.Float64)

    def _rank(self, values: pl.Series) -> pl.Series:
        """(average rank - 1) / (n - 1) of each value among the pool's values."""
        import numpy as np

        present = values.cast(pl.Float64).to_numpy()
        below = np.searchsorted(self.sorted_values, present, side="left")
        equal = np.searchsorted(self.sorted_values, present, side="right") - below
        rank = pl.Series(below + (equal + 1) / 2.0, dtype=pl.Float64)
        normalised = (rank - 1) * (1.0 / (self.count - 1))
        return pl.select(pl.when(values.is_not_null()).then(normalised)).to_series() if values.null_count() \
            else normalised


def pool_stats(values: pl.Series, method: str) -> PoolStats:
    """The pool statistics of one score column (its non-null values over the rows in play)."""
    values = values.cast(pl.Float64)
    if method == "rank":
        present = values.drop_nulls().sort()
        return PoolStats(method, count=present.len(), sorted_values=present.to_numpy())
    std = values.std()
    return PoolStats(method, lo=_float(values.min()), hi=_float(values.max()), mean=_float(values.mean()),
                     std=_float(std), count=values.count())


def merged_pool_stats(parts: Iterable[pl.Series], method: str) -> PoolStats:
    """`pool_stats` of the parts' values together. Min-max reads them a part at a time: the
    least of the parts' minima (and the greatest maximum) is the pool's, so no process holds
    the pool's column (8 bytes a row). The others join the parts: the mean and deviation
    as Polars computes them over the whole column (to the bit), the rank's sorted values."""
    if method != "minmax":
        joined = list(parts)
        return pool_stats(pl.concat(joined).rechunk() if joined else pl.Series([], dtype=pl.Float64), method)
    lows, highs, count = [], [], 0
    for part in parts:
        values = part.cast(pl.Float64)
        lows.append(values.min())
        highs.append(values.max())
        count += values.count()
    return PoolStats(method, lo=_float(pl.Series(lows, dtype=pl.Float64).min()),
                     hi=_float(pl.Series(highs, dtype=pl.Float64).max()), count=count)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def run_metric(name: str, metric: Metric, play: pl.DataFrame, ctx: MetricContext) -> pl.DataFrame:
    """Score `play` with one metric and return its columns, named for the output."""
    missing = [c for c in getattr(metric, "requires", ()) if c not in play.columns]
    if missing:
        raise UserError(f"metric {name!r} needs columns {missing} that the input lacks",
                        key=f"quality.metrics.{name}", hint=f"it runs in the {metric.phase!r} phase")
    result = metric.score(play, ctx)
    if not isinstance(result, pl.DataFrame) or result.height != play.height or SCORE not in result.columns:
        got = f"{type(result).__name__} of {getattr(result, 'height', '?')} rows" if result is not None else "None"
        raise StageFailed(f"metric {name!r} must return a DataFrame of {play.height} rows with a "
                          f"{SCORE!r} column; it returned {got}")
    return named_columns(name, result)


def named_columns(name: str, result: pl.DataFrame) -> pl.DataFrame:
    """A metric's result with its columns named for the output: score, flag, details."""
    columns = [result[SCORE].cast(pl.Float64).alias(score_col(name))]
    flags = result[REASON].cast(pl.String) if REASON in result.columns else pl.Series([None] * result.height, dtype=pl.String)
    columns.append(flags.alias(flag_col(name)))
    columns += [result[c].alias(detail_col(name, c)) for c in result.columns if c not in (SCORE, REASON)]
    return pl.DataFrame(columns)


def finish_named(name: str, metric: Metric, columns: pl.DataFrame) -> pl.DataFrame:
    """`metric.finish_rows` over a slice of its output columns (`named_columns`), named back."""
    details = [c for c in columns.columns if c not in (score_col(name), flag_col(name))]
    raw = columns.rename({score_col(name): SCORE, flag_col(name): REASON,
                          **{c: c.removeprefix(detail_col(name, "")) for c in details}})
    return named_columns(name, metric.finish_rows(raw))


def scored_metrics(quality: QualitySpec, columns: list[str]) -> list[str]:
    """The spec's metrics that have a score column among `columns` (the ones `combine` normalises)."""
    return [n for n in quality.active() if score_col(n) in columns]


def combine(play: pl.DataFrame, quality: QualitySpec, phase_metrics: list[str],
            pool: dict[str, PoolStats] | None = None) -> pl.DataFrame:
    """Normalise every metric that has a score (over `play`, or by `pool`'s statistics when
    `play` is one partition of the pool), compute quality_score, apply the thresholds of
    `phase_metrics` and the composite threshold, and set reasons/kept."""
    specs = quality.active()
    scored = scored_metrics(quality, play.columns)
    play = play.with_columns([
        normalise(pl.col(score_col(n)), specs[n].normalize, pool.get(n) if pool is not None else None).alias(norm_col(n))
        for n in scored
    ])
    weighted = [n for n in scored if specs[n].weight > 0]
    if weighted:
        num = pl.sum_horizontal([pl.col(norm_col(n)).fill_null(0.0) * specs[n].weight for n in weighted])
        den = pl.sum_horizontal([pl.col(norm_col(n)).is_not_null().cast(pl.Float64) * specs[n].weight for n in weighted])
        play = play.with_columns(pl.when(den > 0).then(num / den).alias(R.QUALITY_SCORE))
    else:
        play = play.with_columns(pl.lit(None, dtype=pl.Float64).alias(R.QUALITY_SCORE))

    new_reasons: list[pl.Expr] = []
    for n in phase_metrics:
        spec: MetricSpec = specs[n]
        s = pl.col(score_col(n))
        if spec.on_flag == "drop":
            new_reasons.append(pl.when(pl.col(flag_col(n)).is_not_null()).then(pl.lit(f"{n}: ") + pl.col(flag_col(n))))
        if spec.min is not None:
            new_reasons.append(pl.when(s < spec.min).then(
                pl.format("{}: score {} < min {}", pl.lit(n), s.round(3), pl.lit(spec.min))))
        if spec.max is not None:
            new_reasons.append(pl.when(s > spec.max).then(
                pl.format("{}: score {} > max {}", pl.lit(n), s.round(3), pl.lit(spec.max))))
    if quality.min_score is not None:
        q = pl.col(R.QUALITY_SCORE)
        new_reasons.append(pl.when(q.is_null() | (q < quality.min_score)).then(
            pl.format("quality_score {} < min_score {}", q.round(3).cast(pl.String).fill_null("null"),
                      pl.lit(quality.min_score))))
    before = pl.col(R.REASONS) if R.REASONS in play.columns else pl.lit([], dtype=pl.List(pl.String))
    reasons = pl.concat_list([before.cast(pl.List(pl.String)).fill_null([]),
                              *(pl.concat_list([r]) for r in new_reasons)]).list.drop_nulls()
    return play.with_columns(reasons.alias(R.REASONS)).with_columns(
        (pl.col(R.REASONS).list.len() == 0).alias(R.KEPT))


def assess_phase(df: pl.DataFrame, quality: QualitySpec, registry: Registry, ctx: MetricContext,
                 phase: Phase) -> PhaseResult:
    """Score the rows in play with `phase`'s metrics and decide. Returns all rows."""
    metrics = instantiate(quality, registry, phase)
    in_play = in_play_mask(df)
    play = df.filter(in_play)
    timings: dict[str, float] = {}
    for name, metric in metrics.items():
        t0 = time.perf_counter()
        ctx.log.info("metric %s: scoring %d rows", name, play.height)
        play = with_metric_columns(play, run_metric(name, metric, play, ctx))
        timings[name] = round(time.perf_counter() - t0, 3)
    frame = reassemble(df, in_play, combine(play, quality, list(metrics)))
    return PhaseResult(frame, summarise([frame], quality, metrics, phase, timings, ctx.stats))


def in_play_mask(df: pl.DataFrame) -> pl.Series:
    """The rows a phase scores: those still kept (all rows when nothing dropped any)."""
    return df[R.KEPT].fill_null(False) if R.KEPT in df.columns else pl.Series([True] * df.height)


def with_metric_columns(play: pl.DataFrame, columns: pl.DataFrame) -> pl.DataFrame:
    """`play` with one metric's columns, replacing those of an earlier run of the same metric
    (verify after a rerun)."""
    return play.drop([c for c in columns.columns if c in play.columns]).hstack(columns)


def reassemble(df: pl.DataFrame, in_play: pl.Series, play: pl.DataFrame) -> pl.DataFrame:
    """The decided rows in play and the rows already out, back in `df`'s order."""
    rows = pl.int_range(df.height, eager=True).alias("_row")
    rest = df.filter(~in_play).with_columns(rows.filter(~in_play))
    if R.REASONS not in rest.columns:
        rest = rest.with_columns(pl.lit([], dtype=pl.List(pl.String)).alias(R.REASONS))
    play = play.with_columns(rows.filter(in_play))
    return pl.concat([play, rest], how="diagonal_relaxed").sort("_row").drop("_row")


def summarise(frames: Iterable[pl.DataFrame], quality: QualitySpec, metrics: dict[str, Metric], phase: Phase,
              timings: dict[str, float], stats: dict[str, Any]) -> dict[str, Any]:
    """What the report and `dialengine explain` need without the spec: config and counts,
    summed over `frames` (the output one partition at a time: no process holds the pool)."""
    specs = quality.active()
    counts = _ScoreCounts()
    for frame in frames:
        counts.add(frame, specs)
    out: dict[str, Any] = {"phase": phase, "min_score": quality.min_score, "examples": quality.examples, "metrics": {}}
    for name, spec in specs.items():
        entry: dict[str, Any] = {
            "plugin": spec.plugin_name(name), "weight": spec.weight, "normalize": spec.normalize,
            "min": spec.min, "max": spec.max, "on_flag": spec.on_flag, "params": spec.params,
            "phase": metrics[name].phase if name in metrics else None,
            "description": getattr(metrics.get(name), "description", ""),
        }
        entry.update(counts.of(name))
        if name in timings:
            entry["seconds"] = timings[name]
        own = metrics[name].name if name in metrics else name
        if own in stats:
            entry["stats"] = stats[own]
        out["metrics"][name] = entry
    out["rows"] = counts.rows
    out["kept"] = counts.kept
    return out


@dataclass
class _ScoreCounts:
    """Each score column's count, sum, min, max and flags, added up partition by partition."""

    rows: int = 0
    kept: int = 0
    scored: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, frame: pl.DataFrame, specs: dict[str, Any]) -> None:
        self.rows += frame.height
        self.kept += int(frame[R.KEPT].sum()) if R.KEPT in frame.columns else frame.height
        for name, spec in specs.items():
            if score_col(name) not in frame.columns:
                continue
            values = frame[score_col(name)].drop_nulls()
            flags = frame[flag_col(name)] if flag_col(name) in frame.columns else None
            part = {"rows": values.len(), "sum": float(values.sum()) if values.len() else 0.0,
                    "min_value": values.min(), "max_value": values.max(),
                    "flagged": int(flags.is_not_null().sum()) if flags is not None else 0,
                    "below_min": int((values < spec.min).sum()) if spec.min is not None else 0,
                    "above_max": int((values > spec.max).sum()) if spec.max is not None else 0}
            self._merge(name, part)

    def _merge(self, name: str, part: dict[str, Any]) -> None:
        if name not in self.scored:
            self.scored[name] = part
            return
        have = self.scored[name]
        for key in ("rows", "sum", "flagged", "below_min", "above_max"):
            have[key] += part[key]
        for key, pick in (("min_value", min), ("max_value", max)):
            known = [v for v in (have[key], part[key]) if v is not None]
            have[key] = pick(known) if known else None

    def of(self, name: str) -> dict[str, Any]:
        """The summary's figures for metric `name` ({} when no frame had its score)."""
        if name not in self.scored:
            return {}
        got = self.scored[name]
        mean = got["sum"] / got["rows"] if got["rows"] else None
        return {"rows": got["rows"], "mean": mean, **{k: got[k] for k in (
            "min_value", "max_value", "flagged", "below_min", "above_max")}}
