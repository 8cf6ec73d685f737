"""Support module, not a metric plugin. Shared by the `assess` and `verify` stages: run one
phase of the spec's metrics inside a stage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from .base import MetricContext, Phase
from .combine import assess_phase, instantiate

if TYPE_CHECKING:
    from ..run.context import StageContext

SUMMARY = "quality_summary.json"


def phase_fingerprint(ctx: StageContext, phase: Phase) -> dict[str, Any]:
    """Versions of the metric plugins (and files they read) that this phase runs."""
    metrics = instantiate(ctx.spec.quality, ctx.registry, phase)
    mctx = MetricContext(stage_ctx=ctx)
    return {
        "plugins": {f"metric:{name}": ctx.registry.version_of("metric", m.name) for name, m in metrics.items()},
        "metrics": {name: m.fingerprint(mctx) for name, m in metrics.items()},
    }


def run_phase(ctx: StageContext, phase: Phase, df: pl.DataFrame | None = None) -> pl.DataFrame:
    """Score `df` (default: the stage's input) with `phase`'s metrics."""
    df = ctx.input if df is None else df
    if df.height == 0:
        ctx.log.warning("no input rows")
    mctx = MetricContext(stage_ctx=ctx)
    result = assess_phase(df, ctx.spec.quality, ctx.registry, mctx, phase)
    ctx.write_json(SUMMARY, result.summary)
    frame = result.frame
    dropped_here = frame.filter(~pl.col(R.KEPT)).height - (df.filter(~pl.col(R.KEPT)).height if R.KEPT in df.columns else 0)
    ctx.stats["quality"] = {
        "rows_in_play": int(df[R.KEPT].sum()) if R.KEPT in df.columns else df.height,
        "dropped_here": dropped_here,
        "metrics": {n: {k: v for k, v in m.items() if k in ("flagged", "below_min", "above_max", "seconds")}
                    for n, m in result.summary["metrics"].items() if m.get("phase") == phase},
    }
    return frame
