"""Stage `train`: fine-tune the base model on the exported data set with the `[train]`
trainer plugin. Writes the adapter (and the merged model on request) under runs/<project>/train/;
its output frame is the loss curve. A rerun after a kill resumes from the last checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..dialogue import conversations
from ..errors import DataError
from ..run.stage import ORDER, Stage
from ..train.base import make_trainer

if TYPE_CHECKING:
    from ..run.context import StageContext
    from ..spec import Spec

LOSS_SCHEMA = {"step": pl.Int64, "loss": pl.Float64, "lr": pl.Float64, "tokens": pl.Int64}


class TrainStage(Stage):
    name = "train"
    order = ORDER["train"]
    config_keys = ("train", "export.system_prompt")
    description = "fine-tune the base model on the exported data (LoRA by default)"
    version = "2"  # 2: the manifest hands eval the model folder, fingerprint and replayed prompts

    def disabled_reason(self, spec: Spec) -> str | None:
        return None if spec.train is not None else "no [train] section in the spec"

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        trainer = make_trainer(ctx.spec, ctx.registry)
        return {"trainer": trainer.identity(ctx.spec.base_dir),
                "plugins": {"trainer": ctx.registry.version_of("trainer", trainer.name)}}

    def run(self, ctx: StageContext) -> pl.DataFrame:
        trainer = make_trainer(ctx.spec, ctx.registry)
        # validation rows of an export split are held out of training
        rows = R.training_rows(R.kept_rows(ctx.input))
        convs = conversations(rows, ctx.spec.export.system_prompt)
        if not convs:
            raise DataError("no training rows: the export stage produced none", file=ctx.spec.source, key="train")
        result = trainer.train(convs, ctx.stage_dir, base_dir=ctx.spec.base_dir, progress=ctx.progress, log=ctx.log)
        losses = [row["loss"] for row in result.losses]
        ctx.stats.update({
            "trainer": trainer.name, "steps": result.steps, "examples": result.examples,
            "general_rows": result.general_rows, "dropped_too_long": result.dropped_too_long,
            "resumed_from_step": result.resumed_from,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "seconds": result.extra.get("seconds"),
            # handed to eval through this manifest: the tuned model and what it was trained on
            "model_dir": ctx.stage_dir.relative_to(ctx.run_dir).as_posix(),
            "fingerprint": result.extra["fingerprint"],
            "general_prompts": result.extra.get("general_prompts", []),
        })
        return pl.DataFrame([{k: row.get(k) for k in LOSS_SCHEMA} for row in result.losses], schema=LOSS_SCHEMA)
