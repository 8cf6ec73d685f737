"""Compare the subsets: per metric, top vs bottom (and top vs random) on every evaluator with
paired bootstrap intervals, the pooled domain gain, the rank correlation of the metric with
per-row usefulness, a ranking and suggested weights."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .evaluation import ItemScores
from .stats import Interval, paired_bootstrap, spearman, suggested_weights
from .subsets import COMPOSITE, study_settings

if TYPE_CHECKING:
    from ..spec import Spec
    from .run import StudyPlan


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _clean(value: Any) -> Any:
    """JSON-safe: NaN becomes None, recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _signed(scores: list[ItemScores], suite: str) -> list[float]:
    """Every item of `suite`'s evaluators, signed so that higher is better, concatenated."""
    return [v if s.higher_is_better else -v for s in scores if s.suite == suite for v in s.values]


def compare(top: list[ItemScores], bottom: list[ItemScores], random: list[ItemScores], *, resamples: int,
            seed: int) -> tuple[list[dict[str, Any]], Interval]:
    """Per evaluator: means and intervals of top - bottom and top - random; and the domain
    gain, every domain item pooled (each evaluator's main metric is on a 0-1 scale)."""
    rows: list[dict[str, Any]] = []
    for t, b, r in zip(top, bottom, random, strict=True):
        def interval(a: ItemScores, b: ItemScores, better: bool = t.higher_is_better) -> dict[str, Any]:
            return paired_bootstrap(a.values, b.values, resamples=resamples, seed=seed,
                                    higher_is_better=better).as_dict()

        rows.append({"suite": t.suite, "evaluator": t.entry, "metric": t.metric,
                     "higher_is_better": t.higher_is_better, "items": len(t.values),
                     "top": _mean(t.values), "bottom": _mean(b.values), "random": _mean(r.values),
                     "top_vs_bottom": interval(t, b), "top_vs_random": interval(t, r)})
    gain = paired_bootstrap(_signed(top, "domain"), _signed(bottom, "domain"), resamples=resamples, seed=seed)
    return rows, gain


def analyse(spec: Spec, plan: StudyPlan, scores: dict[str, list[ItemScores]],
            useful: list[float | None]) -> dict[str, Any]:
    settings = study_settings(spec)
    by_label = {s.label: scores[plan.keys[s.row_ids]] for s in plan.subsets}
    metrics: list[dict[str, Any]] = []
    gains: dict[str, Interval] = {}
    harmful: set[str] = set()
    for metric, column in plan.columns.items():
        rows, gain = compare(by_label[f"{metric}:top"], by_label[f"{metric}:bottom"], by_label["random"],
                             resamples=settings.bootstrap, seed=plan.seed)
        rho, n_rho = spearman(plan.pool[column].to_list(), useful)
        if any(r["suite"] == "general" and r["top_vs_bottom"]["high"] < 0 for r in rows):
            harmful.add(metric)
        if metric != COMPOSITE:
            gains[metric] = gain
        metrics.append({"metric": metric, "column": column, "domain_gain": gain.as_dict(),
                        "general": [r for r in rows if r["suite"] == "general"],
                        "evaluators": rows, "spearman": rho, "spearman_rows": n_rho,
                        "general_harm": metric in harmful})
    ranking = sorted(metrics, key=lambda m: (_or_low(m["domain_gain"]["low"]), _or_low(m["domain_gain"]["mean"])),
                     reverse=True)
    known = [u for u in useful if u is not None]
    return _clean({
        "pool_rows": plan.pool.height, "subset_size": plan.size, "seed": plan.seed,
        "bootstrap": settings.bootstrap, "max_steps": settings.max_steps,
        "usefulness": {"estimate": settings.usefulness, "rows": len(known), "mean": _mean(known)},
        "metrics": metrics, "ranking": [m["metric"] for m in ranking],
        "weights": suggested_weights(gains, harmful),
        "current_weights": {m: spec.quality.metrics[m].weight for m in gains if m in spec.quality.metrics},
    })


def _or_low(value: float | None) -> float:
    return -math.inf if value is None or math.isnan(value) else value
