"""Which evaluators a spec asks for (`[eval.evaluators]`, or the tasks' `eval` names plus the
default general ones) and the instruction each domain evaluator prompts with. Used by the
eval stage and by `dialengine study`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..dialogue import task_instruction
from ..errors import SpecError
from ..spec.evaluation import TaskEvalSpec
from .base import DomainConfig, DomainEvaluator

if TYPE_CHECKING:
    from ..spec import Spec
    from ..spec.models import TaskSpec

DEFAULT_GENERAL = ("perplexity", "multiple_choice")


def evaluator_entries(spec: Spec) -> dict[str, tuple[str, dict[str, Any], bool | None]]:
    """entry name -> (plugin, params, guard as the spec says: None when it does not). Without
    `[eval.evaluators]`: the evaluators the tasks name in `eval`, plus perplexity and
    multiple_choice on the packaged files."""
    assert spec.eval is not None
    if spec.eval.evaluators:
        return {name: (e.plugin or name, e.params(), e.guard) for name, e in spec.eval.evaluators.items()}
    entries: dict[str, tuple[str, dict[str, Any], bool | None]] = {
        t.eval: (t.eval, {}, None) for t in spec.tasks if isinstance(t.eval, str)}
    entries.update({name: (name, {}, None) for name in DEFAULT_GENERAL})
    return entries


def replay_file(spec: Spec) -> Path | None:
    """The general-data file the trainer replays (`[train] mix_general.path`), resolved."""
    mix = spec.train.params().get("mix_general") if spec.train is not None else None
    path = mix.get("path") if isinstance(mix, dict) else None
    return spec.resolve_path(path).resolve() if isinstance(path, str) else None


def reads_replay(spec: Spec, params: dict[str, Any]) -> bool:
    """True when an evaluator's data file (`path`) is the replayed general-data file: a
    score the training mix raises by its format, which overstates general ability."""
    replay, named = replay_file(spec), params.get("path")
    return replay is not None and isinstance(named, str) and spec.resolve_path(named).resolve() == replay


def domain_instruction(spec: Spec, entry: str, evaluator: DomainEvaluator) -> tuple[str, dict[str, Any] | None]:
    """The instruction (with `{dialogue}`) and output schema a domain evaluator prompts with:
    the first template of its task (as the seeds stage renders it), else its own prompt."""
    cfg = evaluator.config
    assert isinstance(cfg, DomainConfig)
    task_name = cfg.task or next((t.name for t in spec.tasks if t.eval in (entry, evaluator.name)), None)
    if task_name is None:
        return cfg.prompt or evaluator.default_prompt, evaluator.default_schema
    task = next((t for t in spec.tasks if t.name == task_name), None)
    if task is None:
        raise SpecError(f"evaluator {entry!r} names unknown task {task_name!r}", file=spec.source,
                        key=f"eval.evaluators.{entry}.task")
    instruction = task_instruction(spec, task)
    if instruction is None:
        return cfg.prompt or evaluator.default_prompt, task.output_schema or evaluator.default_schema
    return instruction, task.output_schema or evaluator.default_schema


def declared_tasks(spec: Spec) -> list[tuple[str, TaskSpec, TaskEvalSpec]]:
    """(entry name, task, declaration) of every task with a `[tasks.eval]` table."""
    return [(t.eval.name or t.name, t, t.eval) for t in spec.tasks if isinstance(t.eval, TaskEvalSpec)]
