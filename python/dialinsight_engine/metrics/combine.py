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


def normalise(values: pl.Expr, method: str) -> pl.Expr:
    if method == "none":
        return values
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
    columns = [result[SCORE].cast(pl.Float64).alias(score_col(name))]
    flags = result[REASON].cast(pl.String) if REASON in result.columns else pl.Series([None] * play.height, dtype=pl.String)
    columns.append(flags.alias(flag_col(name)))
    columns += [result[c].alias(detail_col(name, c)) for c in result.columns if c not in (SCORE, REASON)]
    return pl.DataFrame(columns)


def combine(play: pl.DataFrame, quality: QualitySpec, phase_metrics: list[str]) -> pl.DataFrame:
    """Normalise every metric that has a score, compute quality_score, apply the thresholds
    of `phase_metrics` and the composite threshold, and set reasons/kept."""
    specs = quality.active()
    scored = [n for n in specs if score_col(n) in play.columns]
    play = play.with_columns([
        normalise(pl.col(score_col(n)), specs[n].normalize).alias(norm_col(n)) for n in scored
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
    in_play = df[R.KEPT].fill_null(False) if R.KEPT in df.columns else pl.Series([True] * df.height)
    rows = pl.int_range(df.height, eager=True).alias("_row")
    play = df.filter(in_play)
    rest = df.filter(~in_play).with_columns(rows.filter(~in_play))
    timings: dict[str, float] = {}
    for name, metric in metrics.items():
        t0 = time.perf_counter()
        ctx.log.info("metric %s: scoring %d rows", name, play.height)
        columns = run_metric(name, metric, play, ctx)
        # replace columns of an earlier run of the same metric (verify after a rerun)
        play = play.drop([c for c in columns.columns if c in play.columns]).hstack(columns)
        timings[name] = round(time.perf_counter() - t0, 3)
    play = combine(play, quality, list(metrics)).with_columns(rows.filter(in_play))
    if R.REASONS not in rest.columns:
        rest = rest.with_columns(pl.lit([], dtype=pl.List(pl.String)).alias(R.REASONS))
    frame = pl.concat([play, rest], how="diagonal_relaxed").sort("_row").drop("_row")
    return PhaseResult(frame, summarise(frame, quality, metrics, phase, timings, ctx.stats))


def summarise(frame: pl.DataFrame, quality: QualitySpec, metrics: dict[str, Metric], phase: Phase,
              timings: dict[str, float], stats: dict[str, Any]) -> dict[str, Any]:
    """What the report and `dialengine explain` need without the spec: config and counts."""
    specs = quality.active()
    out: dict[str, Any] = {"phase": phase, "min_score": quality.min_score, "examples": quality.examples, "metrics": {}}
    for name, spec in specs.items():
        col = score_col(name)
        entry: dict[str, Any] = {
            "plugin": spec.plugin_name(name), "weight": spec.weight, "normalize": spec.normalize,
            "min": spec.min, "max": spec.max, "on_flag": spec.on_flag, "params": spec.params,
            "phase": metrics[name].phase if name in metrics else None,
            "description": getattr(metrics.get(name), "description", ""),
        }
        if col in frame.columns:
            values = frame[col].drop_nulls()
            entry.update(
                rows=values.len(), mean=values.mean(), min_value=values.min(), max_value=values.max(),
                flagged=int(frame[flag_col(name)].is_not_null().sum()) if flag_col(name) in frame.columns else 0,
                below_min=int((values < spec.min).sum()) if spec.min is not None else 0,
                above_max=int((values > spec.max).sum()) if spec.max is not None else 0,
            )
        if name in timings:
            entry["seconds"] = timings[name]
        own = metrics[name].name if name in metrics else name
        if own in stats:
            entry["stats"] = stats[own]
        out["metrics"][name] = entry
    out["rows"] = frame.height
    out["kept"] = int(frame[R.KEPT].sum()) if R.KEPT in frame.columns else frame.height
    return out
