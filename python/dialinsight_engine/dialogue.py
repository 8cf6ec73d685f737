"""How a dialogue becomes what a model sees, shared by stages, metrics and evaluation:

- its text (`render_dialogue`) and the role names it is read with (`role_aliases`);
- the task instruction rendered from a spec's templates (`compile_templates`, `template_vars`,
  `task_instruction`), as the seeds stage renders it and the eval stage prompts with it;
- the chat conversation of a labelled row (`chat_messages`, `conversations`), as export
  writes it and trainers read it.

It sits below `stages/` so that other layers need not import a stage module for them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import polars as pl

from . import records as R
from .errors import DataError, SpecError
from .templating import TemplateProblem, compile_template

if TYPE_CHECKING:
    import jinja2

    from .spec.models import Spec, TaskSpec


def render_dialogue(turns: list[dict[str, str]]) -> str:
    """`Customer: ...` lines: the text models and metrics see."""
    return "\n".join(f"{t['role'][:1].upper()}{t['role'][1:]}: {t['text']}" for t in turns)


def role_aliases(spec: Spec) -> dict[str, str]:
    """Lower-cased role name or alias -> the spec's role name (`[[roles]]` aliases, then
    `[data] role_map`, which wins)."""
    alias = {a.lower(): role.name for role in spec.roles for a in (role.name, *role.aliases)}
    alias.update({k.lower(): v for k, v in spec.data.role_map.items()})
    return alias


# -- task instructions ---------------------------------------------------------------------------
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
    """The variables a task template renders with (the dialogue stays a placeholder)."""
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


def task_instruction(spec: Spec, task: TaskSpec) -> str | None:
    """The task's first template rendered as the seeds stage renders it (None: no template)."""
    templates = compile_templates(spec)[task.name]
    if not templates:
        return None
    scene = task.scenes[0] if task.scenes else spec.scenes[0].name
    roles = [r.name for r in spec.roles] or ["customer", "agent"]
    return templates[0].render(**template_vars(spec, task, scene, roles)).strip()


# -- conversations -------------------------------------------------------------------------------
def chat_messages(system: str, prompt: str, response: str | None) -> list[dict[str, str]]:
    """OpenAI chat messages of one row (system only when there is one)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def conversations(df: pl.DataFrame, system_prompt: str) -> list[list[dict[str, str]]]:
    """Chat conversations of an export (or label) frame: its `messages` (list of role/content
    structs) when present, else built from `prompt` and `response` like the export stage does."""
    if R.MESSAGES in df.columns:
        return [[{"role": m["role"], "content": m["content"]} for m in conv] for conv in df[R.MESSAGES].to_list()]
    if R.PROMPT not in df.columns or R.RESPONSE not in df.columns:
        raise DataError("training rows need `messages`, or `prompt` and `response` columns")
    rows = df.filter(pl.col(R.RESPONSE).is_not_null()).select(R.PROMPT, R.RESPONSE).iter_rows()
    return [chat_messages(system_prompt, prompt, response) for prompt, response in rows]
