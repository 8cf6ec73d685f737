"""Stage `report`: the run's self-contained HTML report (report/report.html), rebuilt
whenever any stage's output changed. Its output frame is the rows per stage (with costs and staleness)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from ..report.html import build_report
from ..report.runinfo import manifests, stage_rows
from ..run.stage import ORDER, Stage

if TYPE_CHECKING:
    from ..run.context import StageContext

REPORT_FILE = "report.html"


class ReportStage(Stage):
    name = "report"
    order = ORDER["report"]
    config_keys = ("quality.examples",)
    version = "1"
    description = "write the HTML report: rows per stage, metric distributions, mix, duplicates, examples, eval"

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        # every stage feeds the report, not only the one before it
        return {"outputs": {m.stage: m.output_hash for m in manifests(ctx.run_dir) if m.stage != self.name}}

    def run(self, ctx: StageContext) -> pl.DataFrame:
        path = ctx.write_text(REPORT_FILE, build_report(ctx.run_dir, examples=ctx.spec.quality.examples))
        ctx.stats["report"] = str(path)
        ctx.log.info("report written to %s", path)
        return stage_rows(ctx.run_dir)
