"""Stage `assess`: score the reviewed instructions on every instruction-phase quality
dimension (`[quality.metrics.*]` whose metric has phase "instruction"), combine the scores
into `quality_score` and drop rows by flags and thresholds. All rows are written, each with
every dimension's score and every reason it was dropped (see metrics/combine.py).

A row-parallel stage (metrics/partitioned.py): the pool-wide work (pool-wide metrics, the
normalisation statistics) is done first, then each partition is scored and decided where it
lies, on either executor, with the rows the whole-pool computation gives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..metrics.partitioned import PhaseStage
from ..metrics.phases import phase_fingerprint
from ..run.stage import ORDER

if TYPE_CHECKING:
    from ..run.context import StageContext


class AssessStage(PhaseStage):
    name = "assess"
    order = ORDER["assess"]
    config_keys = ("quality",)
    version = "2"  # 2: metric detail columns NAME__DETAIL (was NAME.DETAIL); JSON columns as structs on disk
    description = "score instructions on every quality dimension, weighted score, thresholds"
    phase = "instruction"

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        return phase_fingerprint(ctx, "instruction")
