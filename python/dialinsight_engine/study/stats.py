"""The study's statistics: paired bootstrap intervals of top-vs-bottom differences over the
dev items, Spearman rank correlation with per-row usefulness, suggested weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Interval:
    """A mean difference (better minus worse direction already applied) and its 95% interval."""

    mean: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def paired_bootstrap(a: list[float], b: list[float], *, resamples: int, seed: int,
                     higher_is_better: bool = True) -> Interval:
    """Mean of a - b over paired items and the percentile 95% interval of that mean over
    `resamples` seeded resamples of the items (the same resample for a and b: paired).
    Signed so that a positive difference means `a` is better."""
    if len(a) != len(b):
        raise ValueError(f"paired scores differ in length: {len(a)} vs {len(b)}")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not higher_is_better:
        diff = -diff
    if diff.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    if diff.size == 1:  # one aggregate: no spread to resample
        return Interval(float(diff[0]), float(diff[0]), float(diff[0]), 1)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, diff.size, size=(resamples, diff.size))
    means = diff[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(diff.mean()), float(low), float(high), int(diff.size))


def spearman(x: list[float | None], y: list[float | None]) -> tuple[float | None, int]:
    """Spearman's rho over the pairs where both are known (scipy; None when undefined)."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
    if len(pairs) < 3:
        return None, len(pairs)
    xs, ys = zip(*pairs, strict=True)
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return None, len(pairs)
    rho = float(spearmanr(xs, ys).statistic)
    return (None if np.isnan(rho) else rho), len(pairs)


def suggested_weights(gains: dict[str, Interval], harmful: set[str]) -> dict[str, float]:
    """Weights proportional to the lower bound of each metric's domain gain where it is
    positive (an interval above zero), zero for the rest and for metrics that significantly
    hurt a general capability; normalised to sum to 1. Empty when no metric qualifies."""
    raw = {m: (max(iv.low, 0.0) if m not in harmful and not np.isnan(iv.low) else 0.0) for m, iv in gains.items()}
    total = sum(raw.values())
    if total <= 0:
        return {}
    return {m: round(v / total, 4) for m, v in raw.items()}
