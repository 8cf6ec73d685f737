"""Stage `evolve` (stage 2 of the method): rounds of Evol-Instruct rewrites of the seeds.

Each round, every lineage's latest surviving instruction is rewritten by one operator drawn
by weight (seeded per instruction and round). The model rewrites the instruction text only;
the dialogue stays the `{dialogue}` placeholder, so the prompts stay short and even a 135M
model can produce valid rewrites. A rewrite the elimination rules reject is kept with
`kept=False` and its reasons, and its parent is retried next round. Rows with the same
instruction text share their rewrite request (`evolution.variants` distinct ones), so the
cost grows with the number of distinct instruction texts, not with the dialogues.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..backends.base import GenerationRequest
from ..backends.client import parse_json_answer
from ..backends.redact import redact_value
from ..operators.base import InstructionView, Operator, prompt_language
from ..operators.builtin import DEFAULT_OPERATORS
from ..operators.elimination import clean_rewrite, eliminate
from .base import ORDER, Stage

if TYPE_CHECKING:
    from ..run.context import StageContext
    from ..spec import Spec

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


class EvolveStage(Stage):
    name = "evolve"
    order = ORDER["evolve"]
    config_keys = ("evolution", "project.seed", "project.business")
    version = "1"
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
        spec, evo = ctx.spec, ctx.spec.evolution
        df = R.with_row_status(ctx.input)
        if evo.rounds == 0 or df.is_empty():
            ctx.stats.update(rounds=0, evolved=0)
            return df

        operators, weights = build_operators(spec, ctx.registry)
        seed = evo.seed if evo.seed is not None else spec.project.seed
        scenes = {s.name: s.description for s in spec.scenes}
        tasks = {t.name: t.description for t in spec.tasks}
        client = ctx.backend(evo.backend)
        seeds = df.to_dicts()
        frontier = {row[R.INSTRUCTION_ID]: row for row in seeds if row[R.KEPT]}  # lineage -> latest kept
        evolved: list[dict[str, Any]] = []
        tried: Counter[str] = Counter()
        survived: Counter[str] = Counter()
        reasons_seen: Counter[str] = Counter()

        for round_no in range(1, evo.rounds + 1):
            lineages = list(frontier)
            plans = []
            for lineage in lineages:
                parent = frontier[lineage]
                rng = random.Random(_int_seed(seed, parent[R.INSTRUCTION_ID], round_no))
                op = rng.choices(operators, weights=weights, k=1)[0]
                text, first = split_placeholder(parent[R.INSTRUCTION])
                keep = evo.placeholder == "keep"
                view = InstructionView(
                    instruction=parent[R.INSTRUCTION] if keep else text, scene=parent[R.SCENE],
                    scene_description=scenes.get(parent[R.SCENE], ""), task=parent[R.TASK],
                    task_description=tasks.get(parent[R.TASK], ""), business=spec.project.business,
                    keep_placeholder=keep, language=prompt_language(spec.project.language, text),
                )
                variant = _int_seed(parent[R.INSTRUCTION_ID]) % evo.variants
                request = GenerationRequest(
                    prompt=op.prompt(view), max_tokens=evo.max_tokens, temperature=evo.temperature,
                    seed=_int_seed(seed, round_no, op.name, variant) % (2**31),
                )
                plans.append((lineage, parent, op, first, request))
            with ctx.progress(f"evolving, round {round_no}/{evo.rounds}", len(plans)) as advance:
                results = client.generate([p[4] for p in plans], progress=advance)
            children = []
            for (lineage, parent, op, first, _), result in zip(plans, results, strict=True):
                tried[op.name] += 1
                if result.ok:
                    rewrite = clean_rewrite(result.text or "")
                    if evo.placeholder == "reinsert":
                        rewrite = reinsert_placeholder(rewrite, first)
                    reasons = eliminate(parent[R.INSTRUCTION], rewrite, evo.elimination)
                else:
                    rewrite, reasons = parent[R.INSTRUCTION], [f"generation_failed:{result.error}"]
                child = dict(parent)
                child.update({
                    R.INSTRUCTION_ID: R.stable_id(parent[R.INSTRUCTION_ID], op.name, round_no, rewrite),
                    R.PARENT_ID: parent[R.INSTRUCTION_ID], R.OPERATOR: op.name, R.ROUND: round_no,
                    R.INSTRUCTION: rewrite, R.PROMPT: R.compose_prompt(rewrite, parent[R.DIALOGUE_TEXT]),
                    R.TASK: op.task_name(parent[R.TASK]),
                    R.OUTPUT_SCHEMA: None if op.makes_new_task() else parent[R.OUTPUT_SCHEMA],
                    R.KEPT: not reasons, R.REASONS: reasons,
                })
                children.append((lineage, child))
            if evo.elimination.scene_check:
                self._scene_check(ctx, client, [c for _, c in children if c[R.KEPT]], scenes, seed)
            for lineage, child in children:
                evolved.append(child)
                reasons_seen.update(r.split(":", 1)[0] for r in child[R.REASONS])
                if child[R.KEPT]:
                    survived[child[R.OPERATOR]] += 1
                    frontier[lineage] = child  # else the parent is retried next round

        latest = {row[R.INSTRUCTION_ID] for row in frontier.values()}
        rows = seeds + evolved
        if not evo.keep_ancestors:
            for row in rows:
                if row[R.KEPT] and row[R.INSTRUCTION_ID] not in latest:
                    row[R.KEPT] = False
                    row[R.REASONS] = [*row[R.REASONS], "superseded_by_evolution"]
        ctx.stats.update(
            rounds=evo.rounds, evolved=len(evolved), evolved_kept=sum(survived.values()),
            tried_per_operator=dict(tried), kept_per_operator=dict(survived),
            elimination_reasons=dict(reasons_seen),
        )
        ctx.write_json("evolution_report.json", ctx.stats)
        out = pl.DataFrame(rows, schema=df.schema)
        return out

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
