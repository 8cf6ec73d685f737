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
from ..errors import SpecError
from ..run.stage import ORDER, Stage
from ..templating import TemplateProblem, compile_template, render_template

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


def compile_templates(spec: Spec) -> dict[str, list[jinja2.Template]]:
    """Each task's templates, compiled in the sandbox (see `templating`)."""
    out: dict[str, list[jinja2.Template]] = {}
    for i, task in enumerate(spec.tasks):
        try:
            out[task.name] = [compile_template(t) for t in task.templates()]
        except TemplateProblem as exc:
            raise SpecError(str(exc), file=spec.source, key=f"tasks[{i}].template") from None
    return out


def template_vars(spec: Spec, task: TaskSpec, scene_name: str, roles: list[str]) -> dict[str, Any]:
    scene = next(s for s in spec.scenes if s.name == scene_name)
    role_specs = {r.name: r for r in spec.roles}
    return {
        "dialogue": R.DIALOGUE_PLACEHOLDER,
        "scene": scene.name,
        "scene_description": scene.description or scene.name.replace("_", " "),
        "roles": roles,
        "role_descriptions": "; ".join(
            f"{r}: {role_specs[r].description}" if r in role_specs and role_specs[r].description else r
            for r in roles),
        "business": spec.project.business,
        "requirements": task.requirements,
        "task": task.name,
        "task_description": task.description,
        "output_schema": json.dumps(task.output_schema, indent=2) if task.output_schema else "",
    }


class SeedsStage(Stage):
    name = "seeds"
    order = ORDER["seeds"]
    config_keys = ("project.business", "project.seed", "roles", "scenes", "tasks")
    description = "build seed instructions from task templates (stage 1)"

    def run(self, ctx: StageContext) -> pl.DataFrame:
        spec = ctx.spec
        templates = compile_templates(spec)
        rows: list[dict[str, Any]] = []
        per_task: dict[str, int] = {t.name: 0 for t in spec.tasks}
        df = ctx.input
        with ctx.progress("building seeds", df.height) as advance:
            for rec in df.iter_rows(named=True):
                for ti, task in enumerate(spec.tasks):
                    scene = next((s for s in rec[R.SCENES] if not task.scenes or s in task.scenes), None)
                    if scene is None:
                        continue
                    variants = templates[task.name]
                    rng = random.Random(f"{spec.project.seed}|{rec[R.DIALOGUE_ID]}|{task.name}")
                    order = rng.sample(range(len(variants)), len(variants))
                    for k in range(task.seeds_per_dialogue):
                        index = order[k % len(order)]
                        try:
                            instruction = render_template(
                                variants[index], template_vars(spec, task, scene, rec[R.ROLES])).strip()
                        except TemplateProblem as exc:
                            raise SpecError(str(exc), file=spec.source, key=f"tasks[{ti}].template") from None
                        rows.append({
                            R.INSTRUCTION_ID: R.stable_id(rec[R.DIALOGUE_ID], task.name, scene, index, k),
                            R.DIALOGUE_ID: rec[R.DIALOGUE_ID], R.SCENE: scene, R.TASK: task.name,
                            R.INSTRUCTION: instruction,
                            R.PROMPT: R.compose_prompt(instruction, rec[R.DIALOGUE_TEXT]),
                            R.DIALOGUE_TEXT: rec[R.DIALOGUE_TEXT], R.TRUTH: rec[R.TRUTH],
                            R.OUTPUT_SCHEMA: json.dumps(task.output_schema, sort_keys=True)
                            if task.output_schema else None,
                            R.PARENT_ID: None, R.OPERATOR: "seed", R.ROUND: 0, "template_index": index,
                        })
                        per_task[task.name] += 1
                advance(1)
        ctx.stats["per_task"] = per_task
        if not rows:
            raise SpecError("no seed instructions: no dialogue matched a scene that a task applies to "
                            "(check [[scenes]] keywords and [[tasks]] scenes)", file=spec.source, key="scenes")
        return pl.DataFrame(rows, schema=SEED_COLUMNS)
