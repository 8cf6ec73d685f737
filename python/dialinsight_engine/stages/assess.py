"""Stage `assess`: score the reviewed instructions on every instruction-phase quality
dimension (`[quality.metrics.*]` whose metric has phase "instruction"), combine the scores
into `quality_score` and drop rows by flags and thresholds. All rows are written, each with
every dimension's score and every reason it was dropped (see metrics/combine.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from ..metrics.phases import phase_fingerprint, run_phase
from ..run.stage import ORDER, Stage

if TYPE_CHECKING:
    from ..run.context import StageContext


class AssessStage(Stage):
    name = "assess"
    order = ORDER["assess"]
    config_keys = ("quality",)
    version = "2"  # 2: metric detail columns NAME__DETAIL (was NAME.DETAIL); JSON columns as structs on disk
    description = "score instructions on every quality dimension, weighted score, thresholds"

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        return phase_fingerprint(ctx, "instruction")

    def run(self, ctx: StageContext) -> pl.DataFrame:
        return run_phase(ctx, "instruction")
