"""Stage `seeds` (stage 1 of the method): one or more seed instructions per dialogue and task.

Each task's Jinja2 templates are filled with the scene, the roles, the business and task
requirements and the output schema. The dialogue itself stays as the ``{dialogue}``
placeholder inside `instruction` (so evolution rewrites the instruction, never the data);
`prompt` is the instruction with the dialogue filled in. Several templates per task, picked
per dialogue by a seeded draw, make the seeds diverse.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..dialogue import compile_templates, template_vars
from ..errors import SpecError
from ..executors.base import PartitionContext, RowStage
from ..run.stage import ORDER
from ..templating import TemplateProblem, render_template

if TYPE_CHECKING:
    import jinja2

    from ..run.context import StageContext
    from ..spec.models import Spec, TaskSpec

SEED_COLUMNS = {
    R.INSTRUCTION_ID: pl.String, R.DIALOGUE_ID: pl.String, R.SCENE: pl.String, R.TASK: pl.String,
    R.INSTRUCTION: pl.String, R.PROMPT: pl.String, R.DIALOGUE_TEXT: pl.String, R.TRUTH: pl.String,
    R.OUTPUT_SCHEMA: pl.String, R.PARENT_ID: pl.String, R.OPERATOR: pl.String, R.ROUND: pl.Int64,
    "template_index": pl.Int64,
}


class SeedsStage(RowStage):
    name = "seeds"
    order = ORDER["seeds"]
    version = "2"  # 2: truth/meta/output_schema stored as structs where they fit (run/dataset.py)
    config_keys = ("project.business", "project.seed", "roles", "scenes", "tasks")
    description = "build seed instructions from task templates (stage 1)"

    def map_partition(self, pctx: PartitionContext, df: pl.DataFrame, state: Any) -> pl.DataFrame:
        spec = pctx.spec
        templates = compile_templates(spec)
        rows: list[dict[str, Any]] = []
        for rec in df.iter_rows(named=True):
            for ti, task in enumerate(spec.tasks):
                scene = next((s for s in rec[R.SCENES] if not task.scenes or s in task.scenes), None)
                if scene is not None:
                    rows.extend(_seeds_of(spec, ti, task, scene, templates[task.name], rec))
        out = pl.DataFrame(rows, schema=SEED_COLUMNS)
        pctx.stats["per_task"] = {t.name: 0 for t in spec.tasks} | {
            str(k): int(v) for k, v in out.group_by(R.TASK).len().iter_rows()}
        return out

    def finish(self, ctx: StageContext, rows_out: int) -> None:
        if not rows_out:
            raise SpecError("no seed instructions: no dialogue matched a scene that a task applies to "
                            "(check [[scenes]] keywords and [[tasks]] scenes)", file=ctx.spec.source, key="scenes")


def _seeds_of(spec: Spec, ti: int, task: TaskSpec, scene: str, variants: list[jinja2.Template],
              rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The seed rows of one dialogue for one task: templates drawn by a seeded shuffle."""
    rng = random.Random(f"{spec.project.seed}|{rec[R.DIALOGUE_ID]}|{task.name}")
    order = rng.sample(range(len(variants)), len(variants))
    rows = []
    for k in range(task.seeds_per_dialogue):
        index = order[k % len(order)]
        try:
            instruction = render_template(variants[index], template_vars(spec, task, scene, rec[R.ROLES])).strip()
        except TemplateProblem as exc:
            raise SpecError(str(exc), file=spec.source, key=f"tasks[{ti}].template") from None
        rows.append({
            R.INSTRUCTION_ID: R.stable_id(rec[R.DIALOGUE_ID], task.name, scene, index, k),
            R.DIALOGUE_ID: rec[R.DIALOGUE_ID], R.SCENE: scene, R.TASK: task.name,
            R.INSTRUCTION: instruction,
            R.PROMPT: R.compose_prompt(instruction, rec[R.DIALOGUE_TEXT]),
            R.DIALOGUE_TEXT: rec[R.DIALOGUE_TEXT], R.TRUTH: rec[R.TRUTH],
            R.OUTPUT_SCHEMA: json.dumps(task.output_schema, sort_keys=True) if task.output_schema else None,
            R.PARENT_ID: None, R.OPERATOR: "seed", R.ROUND: 0, "template_index": index,
        })
    return rows
