"""Stage `verify`: after `label`, score the responses with the label-phase metrics
(`label_quality` and plugins of phase "label"), apply their thresholds and recombine the
composite `quality_score` over every dimension scored so far."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from ..metrics.phases import phase_fingerprint, run_phase
from .base import ORDER, Stage

if TYPE_CHECKING:
    from ..run.context import StageContext


class VerifyStage(Stage):
    name = "verify"
    order = ORDER["verify"]
    config_keys = ("quality",)
    version = "1"
    description = "check labels (rules + optional LLM judge), recombine the quality score"

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        return phase_fingerprint(ctx, "label")

    def run(self, ctx: StageContext) -> pl.DataFrame:
        return run_phase(ctx, "label")
