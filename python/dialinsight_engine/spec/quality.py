"""Spec section `[quality]`: metrics with weights, normalisation and thresholds.

Owned by the quality-assessment issue; each metric's `params` are validated by the metric
plugin's own `Config` model. Documented in docs/spec.md ("Quality metrics").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import PluginRef, Section, Weight

Normalize = Literal["none", "minmax", "z", "rank"]


class MetricSpec(Section):
    """`[quality.metrics.NAME]`: one quality dimension."""

    plugin: str | None = Field(None, description="Metric plugin to run (default: NAME); lets one metric run twice")
    enabled: bool = True
    weight: Weight = Field(1.0, description="Share in the composite quality_score (0: reported only)")
    normalize: Normalize = Field("minmax", description="How the score is scaled before weighting")
    min: float | None = Field(None, description="Drop rows whose raw score is below this")
    max: float | None = Field(None, description="Drop rows whose raw score is above this")
    on_flag: Literal["drop", "record"] = Field(
        "drop", description="drop: a row the metric flags (duplicate, refusal...) is dropped; record: only noted")
    params: dict[str, Any] = Field(default_factory=dict, description="The metric's own settings")

    @model_validator(mode="after")
    def _range(self) -> MetricSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    def plugin_name(self, key: str) -> str:
        return self.plugin or key


class QualitySpec(Section):
    metrics: dict[str, MetricSpec] = Field(default_factory=dict, description="Run in this order; later metrics see earlier scores")
    min_score: float | None = Field(None, description="Drop rows whose composite quality_score is below this")
    examples: int = Field(8, ge=0, le=200, description="Kept and dropped example rows shown in the report")

    def plugin_refs(self, loc: tuple[str | int, ...]) -> list[PluginRef]:
        return [
            PluginRef("metric", m.plugin_name(name),
                      (*loc, "metrics", name, "plugin") if m.plugin else (*loc, "metrics", name),
                      m.params, (*loc, "metrics", name, "params"))
            for name, m in self.metrics.items()
        ]

    def active(self) -> dict[str, MetricSpec]:
        return {name: m for name, m in self.metrics.items() if m.enabled}
