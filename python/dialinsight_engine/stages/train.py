"""Stage `train`: fine-tune the base model on the exported data set with the `[train]`
trainer plugin. Writes the adapter (and the merged model on request) under runs/<project>/train/;
its output frame is the loss curve. A rerun after a kill resumes from the last checkpoint."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..errors import DataError
from ..run.stage import ORDER, Stage
from .export import chat_messages, training_rows

if TYPE_CHECKING:
    from ..plugins import Registry
    from ..run.context import StageContext
    from ..spec import Spec
    from ..train.base import Trainer

LOSS_SCHEMA = {"step": pl.Int64, "loss": pl.Float64, "lr": pl.Float64, "tokens": pl.Int64}


def make_trainer(spec: Spec, registry: Registry) -> Trainer:
    assert spec.train is not None
    cls: Any = registry.get("trainer", spec.train.trainer, where="train.trainer", file=str(spec.source))
    return cls(cls.Config.model_validate(spec.train.params()))


def conversations(df: pl.DataFrame, system_prompt: str) -> list[list[dict[str, str]]]:
    """Chat conversations of an export (or label) frame: its `messages` JSON when present,
    else built from `prompt` and `response` like the export stage does."""
    if "messages" in df.columns:
        return [json.loads(m) for m in df["messages"].to_list()]
    if R.PROMPT not in df.columns or R.RESPONSE not in df.columns:
        raise DataError("training rows need `messages`, or `prompt` and `response` columns")
    rows = df.filter(pl.col(R.RESPONSE).is_not_null()).select(R.PROMPT, R.RESPONSE).iter_rows()
    return [chat_messages(system_prompt, prompt, response) for prompt, response in rows]


class TrainStage(Stage):
    name = "train"
    order = ORDER["train"]
    config_keys = ("train", "export.system_prompt")
    description = "fine-tune the base model on the exported data (LoRA by default)"

    def disabled_reason(self, spec: Spec) -> str | None:
        return None if spec.train is not None else "no [train] section in the spec"

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        trainer = make_trainer(ctx.spec, ctx.registry)
        return {"trainer": trainer.identity(ctx.spec.base_dir),
                "plugins": {"trainer": ctx.registry.version_of("trainer", trainer.name)}}

    def run(self, ctx: StageContext) -> pl.DataFrame:
        trainer = make_trainer(ctx.spec, ctx.registry)
        # validation rows of an export split are held out of training
        rows = training_rows(R.kept_rows(ctx.input))
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
        })
        return pl.DataFrame([{k: row.get(k) for k in LOSS_SCHEMA} for row in result.losses], schema=LOSS_SCHEMA)
