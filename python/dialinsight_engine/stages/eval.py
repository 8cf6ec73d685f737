"""Stage `eval`: base model vs tuned model (and ablations trained on the same budget), on
held-out domain dialogues and on general-capability sets, with a verdict against the
`[eval.guard]` thresholds.

Output frame, long format: variant, suite, evaluator, metric, value, n, base_value, delta,
main (whether it is the evaluator's main metric), verdict (of the variant). Side files:
`results.json`, `results.md`, `predictions/<variant>.jsonl`, `variants/<variant>.json` (cached
per-variant results, so a killed run redoes only the unfinished variants)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..dialogue import conversations, role_aliases, task_instruction
from ..errors import DataError, UserError
from ..evaluate.base import DomainEvaluator, Evaluator, GeneralEvaluator
from ..evaluate.declared import DeclaredEvaluator
from ..evaluate.entries import declared_tasks, domain_instruction, evaluator_entries, reads_replay
from ..evaluate.heldout import overlapping, read_heldout
from ..evaluate.lm import LanguageModel
from ..evaluate.suite import DomainTask, Row, run_domain, run_general
from ..evaluate.verdict import Check, Primary, judge
from ..run.atomic import file_sha256
from ..run.stage import ORDER, Stage
from ..selection import Selection
from ..spec.checks import require_truth
from ..train.base import make_trainer

if TYPE_CHECKING:
    from ..run.context import StageContext
    from ..spec import Spec

RESULT_SCHEMA = {"variant": pl.String, "suite": pl.String, "evaluator": pl.String, "metric": pl.String,
                 "value": pl.Float64, "n": pl.Int64, "base_value": pl.Float64, "delta": pl.Float64,
                 "main": pl.Boolean, "verdict": pl.String}
class EvalStage(Stage):
    name = "eval"
    order = ORDER["eval"]
    config_keys = ("eval", "train", "tasks", "roles", "scenes", "project.business", "export.system_prompt")
    description = "base vs tuned (and ablations): domain scores, general capability, verdict"

    def disabled_reason(self, spec: Spec) -> str | None:
        if spec.eval is None:
            return "no [eval] section in the spec"
        if spec.train is None:
            return "no [train] section in the spec (eval compares base and tuned models)"
        return None

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        assert ctx.spec.eval is not None
        files: dict[str, str | None] = {}
        for raw in ctx.spec.eval.domain_data:
            path = ctx.spec.resolve_path(raw)
            files[raw] = file_sha256(path) if path.is_file() else None
        if ctx.spec.eval.exclude_file:
            path = ctx.spec.resolve_path(ctx.spec.eval.exclude_file)
            files[ctx.spec.eval.exclude_file] = file_sha256(path) if path.is_file() else None
        for name, (_, params, _) in evaluator_entries(ctx.spec).items():
            named = params.get("path")
            if isinstance(named, str):
                resolved = ctx.spec.resolve_path(named)
                files[f"{name}:{named}"] = file_sha256(resolved) if resolved.is_file() else None
        return {"files": files, "trainer": make_trainer(ctx.spec, ctx.registry).identity(ctx.spec.base_dir)}

    # -- setup ---------------------------------------------------------------------------------
    def _evaluators(self, ctx: StageContext) -> tuple[list[DomainTask], list[tuple[str, GeneralEvaluator]],
                                                       list[Primary]]:
        spec = ctx.spec
        domain: list[DomainTask] = []
        general: list[tuple[str, GeneralEvaluator]] = []
        primaries: list[Primary] = []
        for entry, (plugin, params, guard) in evaluator_entries(spec).items():
            cls: Any = ctx.registry.get("evaluator", plugin, where=f"eval.evaluators.{entry}", file=str(spec.source))
            evaluator: Evaluator = cls(cls.Config.model_validate(params))
            # a general score the replay mix raises by its format says nothing about forgetting
            replayed = evaluator.suite == "general" and reads_replay(spec, params)
            primaries.append(Primary(entry, evaluator.suite, evaluator.primary, evaluator.higher_is_better,
                                     guard if guard is not None else not replayed, replayed))
            if isinstance(evaluator, DomainEvaluator):
                instruction, schema = domain_instruction(spec, entry, evaluator)
                domain.append(DomainTask(entry, evaluator, instruction, schema))
            elif isinstance(evaluator, GeneralEvaluator):
                general.append((entry, evaluator))
            else:
                raise UserError(f"evaluator {plugin!r} is neither a domain nor a general evaluator",
                                file=spec.source, key=f"eval.evaluators.{entry}")
        for entry, task, declaration in declared_tasks(spec):
            declared = DeclaredEvaluator(declaration, task.output_schema)
            if declaration.kind == "judge":
                declared.judge_client = ctx.backend(declaration.backend)
            task_prompt = task_instruction(spec, task)
            assert task_prompt is not None  # a task always has a template
            domain.append(DomainTask(entry, declared, task_prompt, task.output_schema))
            primaries.append(Primary(entry, "domain", declared.primary, True, declaration.guard))
        self._warn_unguarded_general(ctx, primaries)
        return domain, general, primaries

    @staticmethod
    def _warn_unguarded_general(ctx: StageContext, primaries: list[Primary]) -> None:
        """Collapse is judged only by guarded general metrics outside the replay mix: say so
        when there is none (the verdict then cannot see forgetting)."""
        general = [p for p in primaries if p.suite == "general"]
        if general and not any(p.guarded and not p.in_replay for p in general):
            note = ("no guarded general evaluator reads data outside the [train] mix_general file: the "
                    "verdict cannot see forgetting (add perplexity or multiple_choice)")
            ctx.log.warning(note)
            ctx.stats["guard_note"] = note

    def _heldout(self, ctx: StageContext) -> list[Any]:
        spec = ctx.spec
        assert spec.eval is not None
        alias = role_aliases(spec)
        selection = Selection.from_spec(spec.eval, spec, "eval")
        dialogues = read_heldout([spec.resolve_path(p) for p in spec.eval.domain_data], role_alias=alias,
                                 selection=selection)
        ingest = ctx.read_stage("ingest")
        reference = ingest[R.DIALOGUE_TEXT].to_list() if ingest is not None else []
        flags = overlapping([d.dialogue_text for d in dialogues], reference, spec.eval.contamination_threshold)
        dropped = [d.dialogue_id for d, f in zip(dialogues, flags, strict=True) if f]
        kept = [d for d, f in zip(dialogues, flags, strict=True) if not f][:spec.eval.max_dialogues]
        ctx.stats["heldout"] = {"read": len(dialogues), "dropped_overlapping_training": len(dropped),
                                "dropped_ids": dropped[:50], "used": len(kept), "selection": selection.stats()}
        if dropped:
            ctx.log.warning("%d held-out dialogues overlap the training dialogues and were dropped", len(dropped))
        if not kept:
            raise DataError("every held-out dialogue overlaps the training data", file=spec.source,
                            key="eval.domain_data", hint="evaluate on dialogues the pipeline never read")
        return kept

    def _ablation_rows(self, ctx: StageContext, ablation: str) -> list[list[dict[str, str]]]:
        system = ctx.spec.export.system_prompt
        if ablation == "unfiltered":
            label = ctx.read_stage("label")
            if label is None:
                raise UserError("ablation 'unfiltered' needs the label stage's output", file=ctx.spec.source,
                                key="eval.ablations")
            # every labelled row, whatever verify/assess/review decided
            return conversations(label.drop("messages", strict=False).filter(pl.col(R.RESPONSE).is_not_null()),
                                 system)
        export = ctx.read_stage("export")
        if export is None or R.OPERATOR not in export.columns:
            raise UserError("ablation 'no_evolution' needs the export stage's output with an `operator` column",
                            file=ctx.spec.source, key="eval.ablations")
        seeds = R.training_rows(export).filter(pl.col(R.OPERATOR) == "seed")
        if seeds.height == 0:
            raise DataError("ablation 'no_evolution': no seed rows in the exported data", key="eval.ablations")
        return conversations(seeds, system)

    @staticmethod
    def _trained(ctx: StageContext) -> dict[str, Any] | None:
        """What the train stage handed on in its manifest (model folder relative to the run,
        fingerprint, steps, replayed general prompts), or None when it has not run."""
        manifest = ctx.stage_manifest("train")
        return manifest.stats if manifest is not None and "model_dir" in manifest.stats else None

    # -- run -------------------------------------------------------------------------------------
    def run(self, ctx: StageContext) -> pl.DataFrame:
        spec = ctx.spec
        ev = spec.eval
        assert ev is not None
        trainer = make_trainer(spec, ctx.registry)
        domain, general, primaries = self._evaluators(ctx)
        dialogues = self._heldout(ctx) if domain else []
        if dialogues:
            require_truth(spec, [d.truth for d in dialogues], "the held-out dialogues ([eval] domain_data)")

        trained = self._trained(ctx)
        exclude: set[str] = set()
        export = ctx.read_stage("export")
        if export is not None:
            exclude |= {m["content"] for conv in conversations(R.kept_rows(export), spec.export.system_prompt)
                        for m in conv if m["role"] == "user"}
        if trained:
            exclude |= set(trained.get("general_prompts", []))

        # (variant, model folder or None for the base model, key of that model for the cache)
        variants: list[tuple[str, Path | None, str]] = []
        for v in ev.variants:
            if v != "tuned":
                variants.append((v, None, "base"))
            elif trained is None:
                raise UserError("no trained model: the train stage has not run", key="eval.variants")
            else:
                variants.append((v, ctx.run_dir / trained["model_dir"], trained["fingerprint"]))
        for ablation in ev.ablations:
            budget = trained["steps"] if trained else None
            out = ctx.stage_dir / "ablations" / ablation
            convs = self._ablation_rows(ctx, ablation)
            ctx.log.info("ablation %s: %d rows, %s steps", ablation, len(convs), budget)
            result = trainer.train(convs, out, base_dir=spec.base_dir, progress=ctx.progress, log=ctx.log,
                                   max_steps=budget)
            exclude |= set(result.extra.get("general_prompts", []))
            ctx.stats.setdefault("ablations", {})[ablation] = {"rows": len(convs), "steps": result.steps}
            variants.append((ablation, out, result.extra["fingerprint"]))

        config_key = hashlib.sha256(json.dumps(
            [spec.section("eval"), spec.section("tasks"), spec.section("export"),
             [d.dialogue_id for d in dialogues], sorted(exclude)], sort_keys=True, default=str).encode()).hexdigest()
        rows: list[dict[str, Any]] = []
        for variant, model_dir, model_key in variants:
            rows += self._evaluate_variant(ctx, trainer, variant, (model_dir, model_key), domain, general,
                                           dialogues, exclude, config_key)

        verdicts, checks = judge(rows, primaries, min_domain_gain=ev.guard.min_domain_gain,
                                 max_general_drop=ev.guard.max_general_drop)
        frame = _result_frame(rows, primaries, verdicts)
        ctx.write_json("results.json", {
            "verdicts": verdicts,
            "guard": ev.guard.model_dump(),
            "checks": [c.__dict__ for c in checks],
            "rows": rows,
            "heldout": ctx.stats.get("heldout"),
        })
        ctx.write_text("results.md", results_markdown(frame, checks, verdicts))
        ctx.stats["verdicts"] = verdicts
        return frame

    def _evaluate_variant(self, ctx: StageContext, trainer: Any, variant: str, model: tuple[Path | None, str],
                          domain: list[DomainTask], general: list[tuple[str, GeneralEvaluator]],
                          dialogues: list[Any], exclude: set[str], config_key: str) -> list[dict[str, Any]]:
        ev = ctx.spec.eval
        assert ev is not None
        model_dir, model_key = model
        cache = ctx.stage_dir / "variants" / f"{variant}.json"
        if cache.exists():
            saved = json.loads(cache.read_text())
            if saved.get("key") == [config_key, model_key]:
                ctx.log.info("variant %s: results kept from an earlier run", variant)
                return saved["rows"]
        if model_dir is None:
            model, tokenizer = trainer.load_base(base_dir=ctx.spec.base_dir, device=ev.device)
        else:
            model, tokenizer = trainer.load_tuned(model_dir, base_dir=ctx.spec.base_dir, device=ev.device)
        lm = LanguageModel(model, tokenizer, system_prompt=ctx.spec.export.system_prompt, batch_size=ev.batch_size)
        found: list[Row] = []
        predictions: list[dict[str, Any]] = []
        modes = 2 if ev.decoding == "both" else 1
        with ctx.progress(f"evaluating {variant}", len(dialogues) * len(domain) * modes or None) as advance:
            for task in domain:
                scores, records = run_domain(lm, task, dialogues, decoding=ev.decoding,
                                             max_new_tokens=ev.max_new_tokens, advance=advance)
                found += scores
                predictions += records
        for entry, evaluator in general:
            found += run_general(lm, entry, evaluator, base_dir=ctx.spec.base_dir, exclude=exclude)
        rows = [{"variant": variant, **r.__dict__} for r in found]
        ctx.write_text(f"predictions/{variant}.jsonl",
                       "".join(json.dumps(p, ensure_ascii=False, default=str) + "\n" for p in predictions))
        ctx.write_json(f"variants/{variant}.json", {"key": [config_key, model_key], "rows": rows})
        del model, lm
        return rows


def _result_frame(rows: list[dict[str, Any]], primaries: list[Primary], verdicts: dict[str, str]) -> pl.DataFrame:
    main = {(p.entry, p.metric) for p in primaries}
    base = {(r["evaluator"], r["metric"]): r["value"] for r in rows if r["variant"] == "base"}
    out = []
    for r in rows:
        b = base.get((r["evaluator"], r["metric"]))
        out.append({**r, "base_value": b, "delta": None if b is None else r["value"] - b,
                    "main": (r["evaluator"], r["metric"]) in main,
                    "verdict": verdicts.get(r["variant"], "reference" if r["variant"] == "base" else None)})
    return pl.DataFrame(out, schema=RESULT_SCHEMA)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def _decoding_table(frame: pl.DataFrame, keys: list[tuple[str, str, str]], variants: list[str],
                    table: dict[tuple[str, str, str], float]) -> list[str]:
    """Domain main metrics under schema-constrained and free-text decoding, with the share of
    free-text answers that are JSON with the right keys."""
    domain = [(entry, metric) for suite, entry, metric in keys
              if suite == "domain" and any(k[1:] == (entry, f"free.{metric}") for k in table)]
    if not domain:
        return []
    lines = ["", "## Domain: constrained vs free-text decoding", "",
             "| evaluator | metric | variant | constrained | free text | free-text JSON ok |", "|---|---|---|---|---|---|"]
    for entry, metric in domain:
        for v in variants:
            cells = [table.get((v, entry, metric)), table.get((v, entry, f"free.{metric}")),
                     table.get((v, entry, "free.json_ok"))]
            lines.append(f"| {entry} | {metric} | {v} | " + " | ".join(_fmt(c) for c in cells) + " |")
    return lines


def results_markdown(frame: pl.DataFrame, checks: list[Check], verdicts: dict[str, str]) -> str:
    """Main metrics side by side, then the guard's checks, then every metric."""
    variants = list(dict.fromkeys(frame["variant"].to_list()))
    lines = ["# Evaluation", "", "## Main metrics", "",
             "| suite | evaluator | metric | " + " | ".join(variants) + " |",
             "|---|---|---|" + "---|" * len(variants)]
    main = frame.filter(pl.col("main"))
    keys = list(dict.fromkeys(zip(main["suite"], main["evaluator"], main["metric"], strict=True)))
    table = {(r["variant"], r["evaluator"], r["metric"]): r["value"] for r in frame.iter_rows(named=True)}
    for suite, entry, metric in keys:
        cells = [_fmt(table.get((v, entry, metric))) for v in variants]
        lines.append(f"| {suite} | {entry} | {metric} | " + " | ".join(cells) + " |")
    lines += _decoding_table(frame, keys, variants, table)
    lines += ["", "## Guard", "",
              "| variant | evaluator | metric | base | value | change | limit | ok |", "|---|---|---|---|---|---|---|---|"]
    for c in checks:
        kind = "gain" if c.suite == "domain" else "drop"
        flag = ("yes" if c.ok else "NO") + ("" if c.guarded else " (not guarded)")
        flag += " (in the replay mix)" if c.in_replay else ""
        lines.append(f"| {c.variant} | {c.entry} | {c.metric} | {_fmt(c.base)} | {_fmt(c.value)} | "
                     f"{kind} {_fmt(c.change)} | {_fmt(c.limit)} | {flag} |")
    lines += [""] + [f"- **{v}**: {verdict}" for v, verdict in verdicts.items()]
    lines += ["", "## All metrics", "", "| suite | evaluator | metric | " + " | ".join(variants) + " |",
              "|---|---|---|" + "---|" * len(variants)]
    all_keys = list(dict.fromkeys(zip(frame["suite"], frame["evaluator"], frame["metric"], strict=True)))
    for suite, entry, metric in all_keys:
        cells = [_fmt(table.get((v, entry, metric))) for v in variants]
        lines.append(f"| {suite} | {entry} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
