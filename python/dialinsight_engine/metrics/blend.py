"""Support module, not a metric plugin. Blending raw measures into one 0..1 score: each measure
counts up to a cap, then a weighted mean. Used by the rule-based built-ins so users can
re-weight measures from the spec."""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl


def saturating_blend(weights: dict[str, float], caps: dict[str, float]) -> pl.Expr:
    """sum_k w_k * clip(x_k / cap_k, 0, 1) / sum_k w_k, over the columns named in `weights`."""
    total = sum(weights.values()) or 1.0
    parts = [
        (pl.col(k).cast(pl.Float64).fill_null(0.0) / (caps.get(k) or 1.0)).clip(0.0, 1.0) * (w / total)
        for k, w in weights.items()
    ]
    return pl.sum_horizontal(parts) if parts else pl.lit(0.0)


def check_measures(value: dict[str, float], allowed: Iterable[str]) -> dict[str, float]:
    """Pydantic validator body: every key names a known measure, every value is >= 0."""
    known = sorted(allowed)
    unknown = [k for k in value if k not in known]
    if unknown:
        raise ValueError(f"unknown measures {unknown}; known: {', '.join(known)}")
    negative = [k for k, v in value.items() if v < 0]
    if negative:
        raise ValueError(f"negative values for {negative}")
    return value
