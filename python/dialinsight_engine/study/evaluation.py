"""Per-item scores of one trained subset on the `[eval]` evaluators, so top and bottom
subsets can be compared item by item (paired) with a bootstrap.

An evaluator gives per-item scores in one of three ways, in this order:
- its own `item_scores(handle, *, base_dir, exclude) -> (metric, [value per item])` (the
  built-in general evaluators have one; so can a plugin that scores without decoding);
- a domain evaluator: every held-out dialogue is answered (`evaluate/suite.run_domain`) and
  scored alone with the evaluator's main metric;
- otherwise its aggregate main metric counts as one item (no interval).
Items are the same for every subset, in the same order: the comparison is paired."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..dialogue import task_instruction
from ..errors import UserError
from ..evaluate.base import DomainEvaluator, Evaluator, GeneralEvaluator
from ..evaluate.declared import DeclaredEvaluator
from ..evaluate.entries import declared_tasks, domain_instruction, evaluator_entries
from ..evaluate.heldout import HeldOut, overlapping, read_heldout
from ..evaluate.lm import ModelHandle
from ..evaluate.suite import DomainTask, run_domain
from ..jsonanswer import first_json_object
from ..selection import Selection
from .subsets import study_settings

if TYPE_CHECKING:
    from ..plugins import Registry
    from ..spec import Spec


@dataclass
class ItemScores:
    """One evaluator's main metric per dev item for one model."""

    suite: str
    entry: str
    metric: str
    higher_is_better: bool
    values: list[float]


@dataclass
class Scorer:
    """An evaluator bound to what it needs to score one model item by item."""

    entry: str
    evaluator: Evaluator
    task: DomainTask | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def suite(self) -> str:
        return self.evaluator.suite

    def describe(self) -> dict[str, Any]:
        """What the cached results depend on besides the model (for the cache key)."""
        cfg = self.evaluator.config.model_dump(mode="json") if hasattr(self.evaluator.config, "model_dump") else {}
        declared = self.evaluator.declaration.model_dump(mode="json") \
            if isinstance(self.evaluator, DeclaredEvaluator) else None
        return {"entry": self.entry, "evaluator": self.evaluator.name, "config": cfg, "declaration": declared,
                "instruction": self.task.instruction if self.task else None,
                "schema": self.task.schema if self.task else None}


def build_scorers(spec: Spec, registry: Registry) -> list[Scorer]:
    """The `[eval]` evaluators (and `[tasks.eval]` declarations) the study runs, in spec order;
    `[study] evaluators` picks entries by name."""
    if spec.eval is None:
        raise UserError("the study evaluates with the [eval] evaluators: the spec has no [eval] section",
                        file=spec.source, key="study")
    scorers: list[Scorer] = []
    for entry, (plugin, params, _) in evaluator_entries(spec).items():
        cls: Any = registry.get("evaluator", plugin, where=f"eval.evaluators.{entry}", file=str(spec.source))
        evaluator: Evaluator = cls(cls.Config.model_validate(params))
        task = None
        if isinstance(evaluator, DomainEvaluator) and not hasattr(evaluator, "item_scores"):
            instruction, schema = domain_instruction(spec, entry, evaluator)
            task = DomainTask(entry, evaluator, instruction, schema)
        scorers.append(Scorer(entry, evaluator, task))
    for entry, task_spec, declaration in declared_tasks(spec):
        declared = DeclaredEvaluator(declaration, task_spec.output_schema)
        instruction = task_instruction(spec, task_spec) or ""
        scorers.append(Scorer(entry, declared, DomainTask(entry, declared, instruction, task_spec.output_schema)))
    return _picked(spec, scorers)


def _picked(spec: Spec, scorers: list[Scorer]) -> list[Scorer]:
    wanted = study_settings(spec).evaluators
    known = [s.entry for s in scorers]
    for i, name in enumerate(wanted):
        if name not in known:
            raise UserError(f"unknown evaluator entry {name!r}", file=spec.source, key=f"study.evaluators.{i}",
                            hint=f"the [eval] evaluators are: {', '.join(known)}")
    picked = [s for s in scorers if not wanted or s.entry in wanted]
    for s in picked:
        if isinstance(s.evaluator, DeclaredEvaluator) and s.evaluator.declaration.kind == "judge":
            raise UserError(f"evaluator {s.entry!r} is an LLM judge, which the study does not run per subset",
                            file=spec.source, key="study.evaluators", hint="list the other evaluators there")
    return picked


def heldout_dialogues(spec: Spec, ingest_texts: list[str]) -> list[HeldOut]:
    """The `[eval]` held-out dialogues as the eval stage picks them (selection, contamination
    check against the ingested dialogues), capped at `[study] max_dialogues`."""
    assert spec.eval is not None
    alias = {a.lower(): role.name for role in spec.roles for a in (role.name, *role.aliases)}
    alias.update({k.lower(): v for k, v in spec.data.role_map.items()})
    dialogues = read_heldout([spec.resolve_path(p) for p in spec.eval.domain_data], role_alias=alias,
                             selection=Selection.from_spec(spec.eval, spec, "eval"))
    flags = overlapping([d.dialogue_text for d in dialogues], ingest_texts, spec.eval.contamination_threshold)
    kept = [d for d, f in zip(dialogues, flags, strict=True) if not f]
    return kept[:study_settings(spec).max_dialogues or spec.eval.max_dialogues]


def score_items(scorer: Scorer, handle: ModelHandle, *, dialogues: list[HeldOut], base_dir: Path | None,
                exclude: set[str], decoding: str, max_new_tokens: int) -> ItemScores:
    ev = scorer.evaluator
    own = getattr(ev, "item_scores", None)
    if callable(own):
        metric, values = own(handle, base_dir=base_dir, exclude=exclude)
        return ItemScores(ev.suite, scorer.entry, metric, ev.higher_is_better, [float(v) for v in values])
    if scorer.task is not None:
        return _domain_items(scorer, handle, dialogues, decoding, max_new_tokens)
    assert isinstance(ev, GeneralEvaluator)
    scores = ev.evaluate(handle.lm, base_dir=base_dir, exclude=exclude)
    main = next(s for s in scores if s.metric == ev.primary)
    return ItemScores(ev.suite, scorer.entry, ev.primary, ev.higher_is_better, [main.value])


def _domain_items(scorer: Scorer, handle: ModelHandle, dialogues: list[HeldOut], decoding: str,
                  max_new_tokens: int) -> ItemScores:
    """Each dialogue answered and scored on its own by `run_domain` (the eval stage's path), so
    an item's score is exactly the main metric the eval stage reports, over that one item."""
    task = scorer.task
    assert task is not None
    values: list[float] = []
    for dialogue in dialogues:
        rows, _ = run_domain(handle.lm, task, [dialogue], decoding=decoding, max_new_tokens=max_new_tokens)
        main = [r.value for r in rows if r.metric == task.evaluator.primary and r.n > 0]
        values += main[:1]  # none: the dialogue's truth lacks what this evaluator compares
    return ItemScores("domain", scorer.entry, task.evaluator.primary, task.evaluator.higher_is_better, values)


def row_score(evaluator: DomainEvaluator, answer: str | None, reference: Any, *, prompt: str) -> float | None:
    """One answer scored alone against its reference with the evaluator's main metric."""
    text = answer or ""
    prediction = evaluator.parse_answer(first_json_object(text), text)
    if isinstance(evaluator, DeclaredEvaluator):
        scores = evaluator.score([prediction], [reference], [prompt])
    else:
        scores = evaluator.score([prediction], [reference])
    return next((s.value for s in scores if s.metric == evaluator.primary), None)


def usefulness(spec: Spec, registry: Registry, tasks: list[str | None], responses: list[str | None],
               truths: list[str | None]) -> list[float | None]:
    """Per-row usefulness: the row's label scored against its own dialogue's truth by its
    task's domain evaluator (None where the task has none or the truth lacks what it compares)."""
    evaluators = task_evaluators(spec, registry)
    out: list[float | None] = []
    for task, response, truth in zip(tasks, responses, truths, strict=True):
        evaluator = evaluators.get(task or "")
        if evaluator is None or truth is None or response is None:
            out.append(None)
            continue
        try:
            reference = evaluator.reference(json.loads(truth))
        except KeyError:
            out.append(None)
            continue
        out.append(row_score(evaluator, response, reference, prompt=""))
    return out


def task_evaluators(spec: Spec, registry: Registry) -> dict[str, DomainEvaluator]:
    """Task name -> the domain evaluator its `eval` names or declares, else the one whose
    `[eval.evaluators.NAME] task` names it (judges left out: a per-row model call is not a
    cheap estimate)."""
    params = {name: e.params() for name, e in (spec.eval.evaluators if spec.eval else {}).items()}
    out = _evaluators_naming_a_task(spec, registry, params)
    for task in spec.tasks:
        if isinstance(task.eval, str):
            cls: Any = registry.get("evaluator", task.eval, where="tasks.eval", file=str(spec.source))
            evaluator = cls(cls.Config.model_validate(params.get(task.eval, {})))
            if isinstance(evaluator, DomainEvaluator):
                out[task.name] = evaluator
        elif task.eval is not None and task.eval.kind != "judge":
            out[task.name] = DeclaredEvaluator(task.eval, task.output_schema)
    return out


def _evaluators_naming_a_task(spec: Spec, registry: Registry, params: dict[str, dict[str, Any]]
                              ) -> dict[str, DomainEvaluator]:
    """Task name -> the domain evaluator whose config's `task` names it (the eval stage prompts
    with that task's template, so its answers are what the evaluator scores)."""
    out: dict[str, DomainEvaluator] = {}
    for name, entry in (spec.eval.evaluators if spec.eval else {}).items():
        task = params[name].get("task")
        if not task or task in out:
            continue
        cls: Any = registry.get("evaluator", entry.plugin or name, where=f"eval.evaluators.{name}",
                                file=str(spec.source))
        evaluator = cls(cls.Config.model_validate(params[name]))
        if isinstance(evaluator, DomainEvaluator):
            out[task] = evaluator
    return out
