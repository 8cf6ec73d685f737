"""Run evaluators on one model: domain tasks over held-out dialogues (prompt, decode, parse,
score) and general capability checks. Used by the eval stage and by benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..jsonanswer import first_json_object
from ..records import compose_prompt
from .base import DomainEvaluator, GeneralEvaluator
from .declared import DeclaredEvaluator
from .heldout import HeldOut
from .lm import LanguageModel, slot_schema
from .scoring import Score


@dataclass
class DomainTask:
    """A domain evaluator bound to its prompt: `instruction` contains `{dialogue}`."""

    entry: str  # the name in [eval.evaluators] (or the evaluator's own name)
    evaluator: DomainEvaluator
    instruction: str
    schema: dict[str, Any] | None


@dataclass
class Row:
    suite: str
    evaluator: str
    metric: str
    value: float
    n: int


def run_domain(lm: LanguageModel, task: DomainTask, dialogues: Sequence[HeldOut], *, decoding: str,
               max_new_tokens: int, advance: Callable[..., None] | None = None
               ) -> tuple[list[Row], list[dict[str, Any]]]:
    """Scores plus one prediction record per dialogue and decoding mode (for inspection).
    `decoding`: "slots" (schema-constrained where the schema allows it), "free" (the model
    answers as in a plain chat; the first JSON object is parsed) or "both" (free-text metrics
    prefixed `free.`). Each mode also reports `json_ok`, the share of answers that are a JSON
    object with every expected key. Dialogues whose truth lacks what the evaluator compares
    with are left out."""
    usable: list[tuple[HeldOut, Any]] = []
    for d in dialogues:
        try:
            usable.append((d, task.evaluator.reference(d.truth)))
        except KeyError:
            continue
    prompts = [compose_prompt(task.instruction, d.dialogue_text) for d, _ in usable]
    modes = {"both": [("slots", ""), ("free", "free.")], "slots": [("slots", "")], "free": [("free", "")]}[decoding]
    rows: list[Row] = []
    records: list[dict[str, Any]] = []
    for mode, prefix in modes:
        answers = _decode(lm, task, prompts, mode, max_new_tokens, advance)
        scores = _score(task, answers, [ref for _, ref in usable], prompts)
        keys = task.evaluator.expected_keys()
        if keys:
            ok = sum(isinstance(obj, dict) and all(k in obj for k in keys) for obj, _ in answers)
            scores.append(Score("json_ok", ok / len(answers) if answers else 0.0, len(answers)))
        rows += [Row("domain", task.entry, prefix + s.metric, s.value, s.n) for s in scores]
        records += [{"evaluator": task.entry, "decoding": mode, "dialogue_id": d.dialogue_id, "answer": text,
                     "parsed": obj is not None, "reference": ref}
                    for (d, ref), (obj, text) in zip(usable, answers, strict=True)]
    return rows, records


def _decode(lm: LanguageModel, task: DomainTask, prompts: list[str], mode: str, max_new_tokens: int,
            advance: Callable[..., None] | None) -> list[tuple[dict[str, Any] | None, str]]:
    answers: list[tuple[dict[str, Any] | None, str]] = []
    if mode == "slots" and task.schema is not None and slot_schema(task.schema):
        for prompt in prompts:
            answers.append(lm.fill_slots(prompt, task.schema))
            if advance is not None:
                advance(1)
        return answers
    for start in range(0, len(prompts), lm.batch_size):
        texts = lm.generate(prompts[start:start + lm.batch_size], max_new_tokens)
        answers += [(first_json_object(t), t) for t in texts]
        if advance is not None:
            advance(len(texts))
    return answers


def _score(task: DomainTask, answers: list[tuple[dict[str, Any] | None, str]], references: list[Any],
           prompts: list[str]) -> list[Score]:
    predictions = [task.evaluator.parse_answer(obj, text) for obj, text in answers]
    if isinstance(task.evaluator, DeclaredEvaluator):
        return task.evaluator.score(predictions, references, prompts)
    return task.evaluator.score(predictions, references)


def run_general(lm: LanguageModel, entry: str, evaluator: GeneralEvaluator, *, base_dir: Path | None,
                exclude: set[str]) -> list[Row]:
    scores: list[Score] = evaluator.evaluate(lm, base_dir=base_dir, exclude=exclude)
    return [Row("general", entry, s.metric, s.value, s.n) for s in scores]
