"""Spec section `[quality]`: metrics with weights, normalisation and thresholds.

Owned by the quality-assessment issue; each metric's `params` are validated by the metric
plugin's own `Config` model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import PluginRef, Section


class MetricSpec(Section):
    weight: float = Field(1.0, ge=0)
    normalize: Literal["none", "minmax", "z", "rank"] = "minmax"
    min: float | None = None
    max: float | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class QualitySpec(Section):
    metrics: dict[str, MetricSpec] = Field(default_factory=dict)
    min_score: float | None = None

    def plugin_refs(self, loc: tuple[str | int, ...]) -> list[PluginRef]:
        return [
            PluginRef("metric", name, (*loc, "metrics", name), m.params, (*loc, "metrics", name, "params"))
            for name, m in self.metrics.items()
        ]
