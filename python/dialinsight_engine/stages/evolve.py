"""Stage `evolve` (stage 2 of the method): rounds of Evol-Instruct rewrites of the seeds.

Each round, every lineage's latest surviving instruction is rewritten by one operator drawn
by weight (seeded per instruction and round). The model rewrites the instruction text only;
the dialogue stays the `{dialogue}` placeholder, so the prompts stay short and even a 135M
model can produce valid rewrites. A rewrite the elimination rules reject is kept with
`kept=False` and its reasons, and its parent is retried next round. Rows with the same
instruction text share their rewrite request (`evolution.variants` distinct ones), so the
cost grows with the number of distinct instruction texts, not with the dialogues.

The elimination rules (`operators/elimination.py`) include the task-kept check (a schema
task's keys, a free-text task's goal words and, with the `embed` extra, embedding similarity,
measured per round in one batch) and the information-gain check. `evolution_report.json`
counts eliminations per check and per operator, and how diverse the survivors are.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..backends.base import GenerationRequest
from ..backends.redact import redact_value
from ..jsonanswer import parse_json_answer
from ..operators.base import InstructionView, Operator, prompt_language
from ..operators.builtin import DEFAULT_OPERATORS
from ..operators.elimination import Rewrite, clean_rewrite, judge, required_keys
from .base import ORDER, Stage

if TYPE_CHECKING:
    from ..run.context import StageContext
    from ..spec import Spec

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
SCENE_CHECK_SCHEMA = {"type": "object", "properties": {"fits": {"type": "boolean"}}, "required": ["fits"]}


def _int_seed(*parts: object) -> int:
    return int(R.stable_id(*parts, length=8), 16)


def split_placeholder(instruction: str) -> tuple[str, bool]:
    """The instruction without `{dialogue}`, and whether the placeholder came first."""
    head, sep, _ = instruction.partition(R.DIALOGUE_PLACEHOLDER)
    text = "\n".join(line for line in instruction.replace(R.DIALOGUE_PLACEHOLDER, "").splitlines() if line.strip())
    return text.strip(), bool(sep) and not head.strip()


def reinsert_placeholder(text: str, first: bool) -> str:
    if R.DIALOGUE_PLACEHOLDER in text:
        return text
    return f"{R.DIALOGUE_PLACEHOLDER}\n\n{text}" if first else f"{text}\n\n{R.DIALOGUE_PLACEHOLDER}"


def build_operators(spec: Spec, registry: Any) -> tuple[list[Operator], list[float]]:
    entries = [(op.name, op.weight, op.params()) for op in spec.evolution.operators]
    if not entries:
        entries = [(name, 1.0, {}) for name in DEFAULT_OPERATORS]
    operators, weights = [], []
    for i, (name, weight, params) in enumerate(entries):
        cls = registry.get("operator", name, where=f"evolution.operators[{i}].name", file=spec.source)
        operators.append(cls(cls.Config.model_validate(params), base_dir=spec.base_dir))
        weights.append(weight)
    return operators, weights


@dataclass(frozen=True)
class Plan:
    """One rewrite request of a round: the lineage it extends, its parent row, the operator,
    whether `{dialogue}` came first in the parent, and the request."""

    lineage: str
    parent: dict[str, Any]
    op: Operator
    placeholder_first: bool
    request: GenerationRequest


def embedding_similarities(pairs: list[tuple[str, str]]) -> tuple[list[float | None], str | None]:
    """Cosine of each (parent, child) instruction pair's sentence embeddings (placeholders out),
    and why none were measured (None: measured). The model (all-MiniLM-L6-v2, the `embed`
    extra, loaded offline) is English-only: pairs in unspaced scripts get None, so the keyword
    check judges them."""
    from ..metrics import embeddings

    reason = embeddings.available()
    if reason is not None or not pairs:
        return [None] * len(pairs), reason
    spaced = [i for i, (a, b) in enumerate(pairs) if not (_CJK.search(a) or _CJK.search(b))]
    out: list[float | None] = [None] * len(pairs)
    if not spaced:
        return out, None
    texts = [split_placeholder(t)[0] for i in spaced for t in pairs[i]]
    try:
        vectors = embeddings.embed(texts)
    except Exception as exc:  # a broken model install must not stop the run: keywords judge instead
        return out, f"embedding model failed: {type(exc).__name__}: {exc}"
    for j, i in enumerate(spaced):
        out[i] = float(vectors[2 * j] @ vectors[2 * j + 1])
    return out, None


class _Round:
    """What every round of one run needs: operators, the client, the task facts per task."""

    def __init__(self, ctx: StageContext, operators: list[Operator], weights: list[float]) -> None:
        spec = ctx.spec
        self.ctx, self.evo, self.spec = ctx, spec.evolution, spec
        self.operators, self.weights = operators, weights
        self.seed = self.evo.seed if self.evo.seed is not None else spec.project.seed
        self.scenes = {s.name: s.description for s in spec.scenes}
        self.tasks = {t.name: t.description for t in spec.tasks}
        self.client = ctx.backend(self.evo.backend)
        self.task_check: dict[str, Any] = {"method": "keywords", "fallback_reason": None}

    @classmethod
    def setup(cls, ctx: StageContext) -> _Round:
        operators, weights = build_operators(ctx.spec, ctx.registry)
        return cls(ctx, operators, weights)

    def plan(self, lineage: str, parent: dict[str, Any], round_no: int) -> Plan:
        evo = self.evo
        rng = random.Random(_int_seed(self.seed, parent[R.INSTRUCTION_ID], round_no))
        op = rng.choices(self.operators, weights=self.weights, k=1)[0]
        text, first = split_placeholder(parent[R.INSTRUCTION])
        keep = evo.placeholder == "keep"
        view = InstructionView(
            instruction=parent[R.INSTRUCTION] if keep else text, scene=parent[R.SCENE],
            scene_description=self.scenes.get(parent[R.SCENE], ""), task=parent[R.TASK],
            task_description=self.tasks.get(parent[R.TASK], ""), business=self.spec.project.business,
            keep_placeholder=keep, language=prompt_language(self.spec.project.language, text),
        )
        variant = _int_seed(parent[R.INSTRUCTION_ID]) % evo.variants
        request = GenerationRequest(
            prompt=op.prompt(view), max_tokens=evo.max_tokens, temperature=evo.temperature,
            seed=_int_seed(self.seed, round_no, op.name, variant) % (2**31),
        )
        return Plan(lineage, parent, op, first, request)

    def children(self, plans: list[Plan], results: list[Any], round_no: int) -> list[tuple[str, dict[str, Any]]]:
        """The evolved rows of a round, each with `kept` and the elimination reasons."""
        rewrites = [self._rewrite(plan, result) for plan, result in zip(plans, results, strict=True)]
        judged = self._with_similarity([r for r in rewrites if isinstance(r, Rewrite)])
        out = []
        for plan, rewrite in zip(plans, rewrites, strict=True):
            if isinstance(rewrite, Rewrite):
                text, reasons = rewrite.child, judge(judged[id(rewrite)], self.evo.elimination)
            else:
                text, reasons = plan.parent[R.INSTRUCTION], [rewrite]
            out.append((plan.lineage, self._child(plan, text, reasons, round_no)))
        return out

    def _rewrite(self, plan: Plan, result: Any) -> Rewrite | str:
        """The rewrite to judge, or the reason there is none."""
        if not result.ok:
            return f"generation_failed:{result.error}"
        text = clean_rewrite(result.text or "")
        if self.evo.placeholder == "reinsert":
            text = reinsert_placeholder(text, plan.placeholder_first)
        parent = plan.parent
        schema = json.loads(parent[R.OUTPUT_SCHEMA]) if parent.get(R.OUTPUT_SCHEMA) else None
        return Rewrite(parent[R.INSTRUCTION], text, required_keys=required_keys(schema),
                       goal=self.tasks.get(parent[R.TASK], ""), new_task=plan.op.makes_new_task())

    def _with_similarity(self, rewrites: list[Rewrite]) -> dict[int, Rewrite]:
        """Each rewrite (by id) with its embedding similarity where the free-text check uses one."""
        out = {id(r): r for r in rewrites}
        rules = self.evo.elimination
        free = [r for r in rewrites if not r.required_keys and not r.new_task]
        if not rules.task_kept or rules.task_check == "keywords" or not free:
            return out
        sims, why = embedding_similarities([(r.parent, r.child) for r in free])
        if why is not None and self.task_check["fallback_reason"] is None:
            self.ctx.log.warning("task-kept check: goal words instead of embeddings (%s)", why)
        self.task_check = {"method": "keywords" if why else "embeddings", "fallback_reason": why}
        for r, sim in zip(free, sims, strict=True):
            out[id(r)] = replace(r, similarity=sim)
        return out

    def _child(self, plan: Plan, text: str, reasons: list[str], round_no: int) -> dict[str, Any]:
        parent, op = plan.parent, plan.op
        child = dict(parent)
        child.update({
            R.INSTRUCTION_ID: R.stable_id(parent[R.INSTRUCTION_ID], op.name, round_no, text),
            R.PARENT_ID: parent[R.INSTRUCTION_ID], R.OPERATOR: op.name, R.ROUND: round_no,
            R.INSTRUCTION: text, R.PROMPT: R.compose_prompt(text, parent[R.DIALOGUE_TEXT]),
            R.TASK: op.task_name(parent[R.TASK]),
            R.OUTPUT_SCHEMA: None if op.makes_new_task() else parent[R.OUTPUT_SCHEMA],
            R.KEPT: not reasons, R.REASONS: reasons,
        })
        return child


@dataclass
class _Tally:
    """Tries, survivors and eliminations (by check, and by check per operator)."""

    tried: Counter[str] = field(default_factory=Counter)
    survived: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    per_operator: dict[str, Counter[str]] = field(default_factory=dict)

    def count(self, child: dict[str, Any]) -> None:
        op = child[R.OPERATOR]
        self.tried[op] += 1
        self.survived[op] += bool(child[R.KEPT])
        checks = {r.split(":", 1)[0] for r in child[R.REASONS]}  # a check counts once per row
        self.reasons.update(checks)
        self.per_operator.setdefault(op, Counter()).update(checks)

    def report(self) -> dict[str, Any]:
        return {"evolved_kept": sum(self.survived.values()), "tried_per_operator": dict(self.tried),
                "kept_per_operator": dict(self.survived), "elimination_reasons": dict(self.reasons),
                "eliminations_per_operator": {op: dict(c) for op, c in self.per_operator.items()}}


def diversity(seeds: list[dict[str, Any]], evolved: list[dict[str, Any]]) -> dict[str, Any]:
    """How many distinct instructions the kept evolutions are: overall, per operator, and per
    seed instruction text (the rows of one text share their rewrite requests)."""
    root = {row[R.INSTRUCTION_ID]: " ".join(row[R.INSTRUCTION].split()) for row in seeds}
    for row in evolved:  # a child's seed text is its parent's
        root.setdefault(row[R.INSTRUCTION_ID], root.get(row[R.PARENT_ID], ""))
    kept = [row for row in evolved if row[R.KEPT]]
    texts = {" ".join(row[R.INSTRUCTION].split()) for row in kept}
    per_op: dict[str, set[str]] = {}
    per_seed: dict[str, set[str]] = {text: set() for text in set(root[row[R.INSTRUCTION_ID]] for row in seeds)}
    for row in kept:
        text = " ".join(row[R.INSTRUCTION].split())
        per_op.setdefault(row[R.OPERATOR], set()).add(text)
        per_seed.setdefault(root[row[R.INSTRUCTION_ID]], set()).add(text)
    counts = [len(v) for v in per_seed.values()]
    return {
        "evolved": len(evolved), "evolved_kept": len(kept), "distinct_kept": len(texts),
        "distinct_per_operator": {op: len(v) for op, v in sorted(per_op.items())},
        "seed_texts": len(counts), "distinct_per_seed_text": {
            "mean": round(sum(counts) / len(counts), 2) if counts else 0.0,
            "min": min(counts, default=0), "max": max(counts, default=0),
            "without_a_kept_evolution": sum(1 for c in counts if c == 0)},
    }


def _supersede(rows: list[dict[str, Any]], latest: set[str]) -> None:
    """Only each lineage's latest instruction stays kept (`keep_ancestors = false`)."""
    for row in rows:
        if row[R.KEPT] and row[R.INSTRUCTION_ID] not in latest:
            row[R.KEPT] = False
            row[R.REASONS] = [*row[R.REASONS], "superseded_by_evolution"]


class EvolveStage(Stage):
    name = "evolve"
    order = ORDER["evolve"]
    config_keys = ("evolution", "project.seed", "project.business")
    version = "2"  # 2: truth/meta/output_schema stored as structs where they fit (run/dataset.py)
    description = "evolve seed instructions with weighted operators and elimination rules (stage 2)"

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        spec = ctx.spec
        if spec.evolution.rounds == 0:
            return {}
        operators, _ = build_operators(spec, ctx.registry)
        return {
            "operators": [R.stable_id(type(op).__module__, op.name, op.fingerprint()) for op in operators],
            "scenes": {s.name: s.description for s in spec.scenes},
            "tasks": {t.name: t.description for t in spec.tasks},
            "backend": redact_value(spec.section(f"backends.{spec.evolution.backend}")),
            "plugins": {f"operator:{op.name}": ctx.registry.version_of("operator", op.name) for op in operators},
        }

    def run(self, ctx: StageContext) -> pl.DataFrame:
        evo = ctx.spec.evolution
        df = R.with_row_status(ctx.input)
        if evo.rounds == 0 or df.is_empty():
            ctx.stats.update(rounds=0, evolved=0)
            return df
        run = _Round.setup(ctx)
        seeds = df.to_dicts()
        frontier = {row[R.INSTRUCTION_ID]: row for row in seeds if row[R.KEPT]}  # lineage -> latest kept
        evolved: list[dict[str, Any]] = []
        tally = _Tally()
        for round_no in range(1, evo.rounds + 1):
            plans = [run.plan(lineage, parent, round_no) for lineage, parent in frontier.items()]
            with ctx.progress(f"evolving, round {round_no}/{evo.rounds}", len(plans)) as advance:
                results = run.client.generate([plan.request for plan in plans], progress=advance)
            children = run.children(plans, results, round_no)
            if evo.elimination.scene_check:
                self._scene_check(ctx, run.client, [c for _, c in children if c[R.KEPT]], run.scenes, run.seed)
            for lineage, child in children:
                evolved.append(child)
                tally.count(child)
                if child[R.KEPT]:
                    frontier[lineage] = child  # else the parent is retried next round

        rows = seeds + evolved
        if not evo.keep_ancestors:
            _supersede(rows, {row[R.INSTRUCTION_ID] for row in frontier.values()})
        ctx.stats.update(rounds=evo.rounds, evolved=len(evolved), **tally.report(), task_check=run.task_check,
                         diversity=diversity(seeds, evolved))
        ctx.write_json("evolution_report.json", ctx.stats)
        return pl.DataFrame(rows, schema=df.schema)

    def _scene_check(self, ctx: StageContext, client: Any, rows: list[dict[str, Any]],
                     scenes: dict[str, str], seed: int) -> None:
        """Ask the backend whether each surviving rewrite still fits its scene."""
        from ..operators.base import packaged_prompt, render

        requests = []
        for row in rows:
            text, _ = split_placeholder(row[R.INSTRUCTION])
            language = prompt_language(ctx.spec.project.language, text)
            view = InstructionView(text, row[R.SCENE], scenes.get(row[R.SCENE], ""), row[R.TASK], "",
                                   ctx.spec.project.business, False, language)
            requests.append(GenerationRequest(prompt=render(packaged_prompt("scene_check.txt", language), view), max_tokens=16, temperature=0.0,
                                              json_schema=SCENE_CHECK_SCHEMA, seed=seed))
        with ctx.progress("checking scenes", len(requests)) as advance:
            results = client.generate(requests, progress=advance)
        errors = 0
        for row, result in zip(rows, results, strict=True):
            if not result.ok:
                errors += 1  # an unanswered check does not eliminate a rewrite
                continue
            if not parse_json_answer(result.text or "{}").get("fits", True):
                row[R.KEPT] = False
                row[R.REASONS] = [*row[R.REASONS], "off_scene"]
        ctx.stats["scene_check_errors"] = errors
