"""Stage `verify`: after `label`, keep the labels' consensus when each prompt has k labels
(`[labels] samples` > 1, see `metrics/label_agreement.py`), score the responses with the
label-phase metrics (`label_quality` and plugins of phase "label"), apply their thresholds and
recombine the composite `quality_score` over every dimension scored so far.

When the rows carry `truth` and a task has an evaluator (`[tasks.eval]`, or `eval = "NAME"`),
`label_truth.json` (and the stage's stats) give the labels' precision/recall/F1 against it:
every label as the labeller gave it (`all_labels`) and the labels verify kept (`kept`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..evaluate.base import DomainEvaluator
from ..executors.base import PartitionContext, RowStage, merge_stats
from ..jsonanswer import json_answer_or_error
from ..metrics.label_agreement import Consensus, schema_consensus, text_consensus
from ..metrics.partitioned import SCRATCH, PhaseStage, PhaseState, decide, map_partitions
from ..metrics.phases import phase_fingerprint
from ..run import dataset
from ..run.stage import ORDER

if TYPE_CHECKING:
    from ..run.context import StageContext
    from ..spec import Spec

SAMPLES = "label_samples"  # written by the label stage
ORIGINAL = "response_original"
AGREEMENT = "label_agreement"
TRUTH_REPORT = "label_truth.json"


class VerifyStage(PhaseStage):
    """Row-parallel on either executor, as `assess` (metrics/partitioned.py): `prepare` maps the
    consensus over the input partitions (a row's k labels are in that row, so each row is
    settled where it lies) into a scratch folder, then runs the label phase's prepare over those
    rows; each partition is decided from its consensus rows; `finish` writes the reports that
    need the whole pool (quality summary, labels against truth)."""

    name = "verify"
    order = ORDER["verify"]
    config_keys = ("quality", "labels.samples", "labels.min_agreement", "labels.ground_fields",
                   "labels.ground_roles", "labels.min_text_agreement")
    # 4: label_agreement grounds values before the vote ([labels] ground_roles); metric detail
    # columns NAME__DETAIL (was NAME.DETAIL); JSON columns as structs on disk
    version = "4"
    description = "label consensus of k samples, label checks (rules + optional LLM judge), the quality score"
    phase = "label"
    _consensus: str | None = None  # the consensus scratch folder, set by `prepare` when labels vote

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        return phase_fingerprint(ctx, "label")

    def prepare(self, ctx: StageContext) -> PhaseState:
        self._consensus = None
        if ctx.input_stage and ctx.spec.labels.samples > 1 and _has_samples(ctx):
            folder = ctx.stage_dir / SCRATCH / "consensus"
            done = map_partitions(ctx, ConsensusMap(), folder, "label consensus")
            ctx.stats["label_agreement"] = _agreement_stats(ctx.spec.labels.samples, [r.stats for r in done])
            self._consensus = str(folder)
        ctx.input_folder = Path(self._consensus) if self._consensus else None
        try:  # the label metrics score the consensus rows
            return super().prepare(ctx)
        finally:
            ctx.input_folder = None

    def map_partition(self, pctx: PartitionContext, frame: pl.DataFrame, state: Any) -> pl.DataFrame:
        if self._consensus:  # this partition's rows as the consensus map settled them
            frame = dataset.read_partition(Path(self._consensus) / dataset.part_name(pctx.index))
        return decide(pctx, frame, state)

    def conclude(self, ctx: StageContext, output: list[pl.DataFrame] | None) -> None:
        truth = truth_report(ctx, _truth_columns(ctx.iter_input()),
                             _truth_columns(output if output is not None else dataset.iter_output(ctx.stage_dir)))
        if truth:
            ctx.write_json(TRUTH_REPORT, truth)
            ctx.stats["label_truth"] = truth
        super().conclude(ctx, output)


class ConsensusMap(RowStage):
    """Each row in play answered by its labels' consensus; the first label is kept aside."""

    name = "label-consensus"
    order = 0

    def map_partition(self, pctx: PartitionContext, frame: pl.DataFrame, state: Any) -> pl.DataFrame:
        out, stats = consensus_rows(frame, pctx.spec.labels)
        pctx.stats.update(stats)
        return out


def consensus_rows(df: pl.DataFrame, cfg: Any) -> tuple[pl.DataFrame, dict[str, Any]]:
    """(the rows answered by their consensus, counts to sum over partitions)."""
    in_play = df[R.KEPT].to_list() if R.KEPT in df.columns else [True] * df.height
    texts, shares, kept, reasons = [], [], [], []
    dropped_fields = rows_dropped = 0
    for row, play in zip(df.iter_rows(named=True), in_play, strict=True):
        consensus = _row_consensus(row, cfg) if play else None
        text, share, why = _apply(row, consensus, cfg.min_text_agreement)
        texts.append(text)
        shares.append(share)
        kept.append(bool(play) and why is None)
        reasons.append(list(row.get(R.REASONS) or []) + ([why] if play and why else []))
        dropped_fields += len(consensus.dropped) if consensus else 0
        rows_dropped += bool(play) and why is not None
    agreed = [s for s in shares if s is not None]
    stats = {"fields_dropped": dropped_fields, "rows_dropped": rows_dropped,
             "agreement_sum": sum(agreed), "agreement_rows": len(agreed)}
    out = df.with_columns(
        pl.col(R.RESPONSE).alias(ORIGINAL), pl.Series(R.RESPONSE, texts, dtype=pl.String),
        pl.Series(AGREEMENT, shares, dtype=pl.Float64), pl.Series(R.KEPT, kept, dtype=pl.Boolean),
        pl.Series(R.REASONS, reasons, dtype=pl.List(pl.String)))
    return out, stats


def _has_samples(ctx: StageContext) -> bool:
    from ..executors.driver import input_tasks

    tasks = input_tasks(ctx, "")
    return bool(tasks) and SAMPLES in pl.read_parquet_schema(tasks[0].input_path)


def _agreement_stats(samples: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for record in records:
        merge_stats(total, record)
    n = total.get("agreement_rows", 0)
    return {"samples": samples, "fields_dropped": total.get("fields_dropped", 0),
            "rows_dropped": total.get("rows_dropped", 0),
            "mean_agreement": round(total["agreement_sum"] / n, 4) if n else None}


def _truth_columns(frames: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """The rows with a reference, narrowed to what `truth_report` reads (it needs the pool's,
    not its whole input)."""
    wanted = (R.TASK, R.TRUTH, R.RESPONSE, R.KEPT)
    parts = [f.select([c for c in wanted if c in f.columns]) for f in frames]
    parts = [p.filter(pl.col(R.TRUTH).is_not_null()) if R.TRUTH in p.columns else p for p in parts]
    return pl.concat(parts, how="vertical") if parts else pl.DataFrame()


def _row_consensus(row: dict[str, Any], cfg: Any) -> Consensus | None:
    answers = list(row.get(SAMPLES) or [])
    if row.get(R.OUTPUT_SCHEMA):
        return schema_consensus(answers, json.loads(row[R.OUTPUT_SCHEMA]), row.get(R.DIALOGUE_TEXT) or "",
                                min_agreement=cfg.min_agreement, ground=cfg.ground_fields, roles=cfg.ground_roles.get(row.get(R.TASK) or "", []))
    return text_consensus(answers)


def _apply(row: dict[str, Any], consensus: Consensus | None, min_text: float) -> tuple[Any, float | None, str | None]:
    """(response, agreement, reason to drop the row) of one row."""
    if consensus is None:  # out of play, or no readable label: the label checks judge the first
        return row.get(R.RESPONSE), None, None
    if not row.get(R.OUTPUT_SCHEMA) and consensus.agreement < min_text:
        return consensus.text, consensus.agreement, f"label_disagreement:{consensus.agreement:.2f}<{min_text}"
    if not consensus.settled:  # every field's answers disagree: the label would teach noise
        return consensus.text, consensus.agreement, "label_disagreement:no field settled"
    return consensus.text, consensus.agreement, None


# -- labels against truth ------------------------------------------------------------------------
def truth_evaluators(spec: Spec, registry: Any) -> dict[str, DomainEvaluator]:
    """Task name -> the evaluator that compares its answers with `truth` (fields, exact and
    accuracy kinds: text and judge evaluators need references or a model)."""
    from ..evaluate.declared import DeclaredEvaluator
    from ..spec.evaluation import TaskEvalSpec

    declared = spec.eval.evaluators if spec.eval is not None else {}
    out: dict[str, DomainEvaluator] = {}
    for task in spec.tasks:
        if isinstance(task.eval, TaskEvalSpec):
            if task.eval.kind in ("fields", "exact", "accuracy"):
                out[task.name] = DeclaredEvaluator(task.eval, task.output_schema)
        elif isinstance(task.eval, str):
            entry = declared.get(task.eval)
            plugin, params = (entry.plugin or task.eval, entry.params()) if entry else (task.eval, {})
            cls: Any = registry.get("evaluator", plugin, where=f"eval.evaluators.{task.eval}", file=spec.source)
            evaluator = cls(cls.Config.model_validate(params))
            if isinstance(evaluator, DomainEvaluator):
                out[task.name] = evaluator
    return out


def truth_scores(rows: list[dict[str, Any]], evaluator: DomainEvaluator, column: str) -> dict[str, Any]:
    """The overall scores of `column`'s answers against each row's `truth` (rows without a
    reference for this evaluator are left out)."""
    predictions, references = [], []
    for row in rows:
        try:
            reference = evaluator.reference(json.loads(row[R.TRUTH]))
        except (KeyError, TypeError, ValueError):
            continue
        text = row.get(column) or ""
        parsed, _ = json_answer_or_error(text)
        predictions.append(evaluator.parse_answer(parsed if isinstance(parsed, dict) else None, text))
        references.append(reference)
    if not references:
        return {"n": 0}
    scores = evaluator.score(predictions, references)
    return {"n": len(references), **{s.metric: round(s.value, 4) for s in scores if "." not in s.metric}}


def truth_report(ctx: StageContext, given: pl.DataFrame, frame: pl.DataFrame) -> dict[str, Any]:
    """Per task with an evaluator: the labels as given (rows in play at verify's input) and the
    labels verify kept, scored against `truth`; {} when the data has no truth."""
    if R.TRUTH not in given.columns or given[R.TRUTH].is_null().all() or R.RESPONSE not in given.columns:
        return {}
    try:
        evaluators = truth_evaluators(ctx.spec, ctx.registry)
    except Exception as exc:  # a report must not fail the stage
        ctx.log.warning("labels against truth: no evaluators (%s)", exc)
        return {}
    in_play = given.filter(pl.col(R.KEPT)) if R.KEPT in given.columns else given
    out: dict[str, Any] = {}
    for task, evaluator in evaluators.items():
        before = in_play.filter((pl.col(R.TASK) == task) & pl.col(R.TRUTH).is_not_null()
                                & pl.col(R.RESPONSE).is_not_null()).to_dicts()
        after = frame.filter((pl.col(R.TASK) == task) & pl.col(R.KEPT) & pl.col(R.TRUTH).is_not_null()).to_dicts()
        if before:
            out[task] = {"evaluator": evaluator.name, "all_labels": truth_scores(before, evaluator, R.RESPONSE),
                         "kept": truth_scores(after, evaluator, R.RESPONSE)}
    return out
