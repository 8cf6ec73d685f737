"""Run the study: train every subset (cached per subset), score each on the dev items
(cached per subset and evaluator configuration), then compare and write the results.

Layout under runs/<project>/study/:
  <key>/model/         what the trainer wrote (its own checkpoints make a killed run resume)
  <key>/subset.json    the subset's manifest: key, row ids, steps, seconds (written last)
  <key>/eval-<k>.json  one evaluator's per-item scores (<k>: its configuration and items)
  results.json, study.md, weights.patch.toml
`<key>` hashes the sorted row ids and the training configuration, so a rerun retrains
nothing finished and two metrics that pick the same rows share one model."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..dialogue import conversations
from ..errors import UserError
from ..evaluate.lm import ModelHandle
from ..run.atomic import write_json, write_text
from ..run.dataset import read_output, scan_output
from ..run.manifest import canonical_hash
from ..train.base import make_trainer
from .analysis import analyse
from .evaluation import (
    ItemScores,
    Scorer,
    build_scorers,
    heldout_dialogues,
    score_items,
    usefulness,
)
from .render import study_markdown, weights_patch
from .subsets import (
    ROW_ID,
    Subset,
    build_subsets,
    metric_columns,
    read_pool,
    study_settings,
    subset_size,
)

if TYPE_CHECKING:
    from ..plugins import Registry
    from ..spec import Spec
    from ..train.base import Trainer

STUDY_DIR = "study"
SUBSET_MANIFEST = "subset.json"
log = logging.getLogger("dialinsight_engine.study")


@dataclass
class StudyPlan:
    pool: pl.DataFrame
    columns: dict[str, str]
    size: int
    seed: int
    subsets: list[Subset]
    keys: dict[tuple[str, ...], str]  # row ids -> subset key

    def cached(self, run_dir: Path) -> dict[str, bool]:
        return {key: (run_dir / STUDY_DIR / key / SUBSET_MANIFEST).is_file() for key in self.keys.values()}


def plan_study(spec: Spec, registry: Registry, run_dir: Path) -> StudyPlan:
    pool = read_pool(spec, read_output(run_dir / "verify"))
    columns = metric_columns(spec, pool)
    size = subset_size(spec, pool, columns)
    settings = study_settings(spec)
    seed = settings.seed if settings.seed is not None else spec.project.seed
    subsets = build_subsets(spec, pool, columns, size, seed)
    config = train_config(spec, registry)
    keys = {s.row_ids: canonical_hash([sorted(s.row_ids), config])[:16] for s in subsets}
    return StudyPlan(pool, columns, size, seed, subsets, keys)


def train_config(spec: Spec, registry: Registry) -> dict[str, Any]:
    """Everything a subset's model depends on besides its rows."""
    if spec.train is None:
        raise UserError("the study trains with the [train] trainer: the spec has no [train] section",
                        file=spec.source, key="study")
    trainer = make_trainer(spec, registry)
    return {"trainer": trainer.name, "version": registry.version_of("trainer", trainer.name),
            "params": spec.train.params(), "max_steps": study_settings(spec).max_steps,
            "identity": trainer.identity(spec.base_dir), "system_prompt": spec.export.system_prompt}


def run_study(spec: Spec, registry: Registry, run_dir: Path, *,
              say: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Train and score every subset (or take them from the cache), analyse, write the results."""
    plan = plan_study(spec, registry, run_dir)
    trainer = make_trainer(spec, registry)
    manifests = {key: _train_subset(spec, trainer, plan, ids, key, run_dir, say) for ids, key in plan.keys.items()}
    scorers = build_scorers(spec, registry)
    exclude = _excluded_prompts(spec, plan.pool, manifests)
    dialogues = _dialogues(spec, run_dir) if any(s.task is not None for s in scorers) else []
    scorer_keys = [_scorer_key(spec, s, dialogues, exclude) for s in scorers]
    scores = {key: _score_subset(spec, trainer, list(zip(scorers, scorer_keys, strict=True)),
                                 run_dir / STUDY_DIR / key, dialogues, exclude, say) for key in plan.keys.values()}
    rows = plan.pool
    useful = usefulness(spec, registry, _column(rows, R.TASK), _column(rows, R.RESPONSE), _column(rows, R.TRUTH))
    results = analyse(spec, plan, scores, useful)
    results["subsets"] = [{"label": s.label, "metric": s.metric, "arm": s.arm, "key": plan.keys[s.row_ids],
                           "rows": len(s.row_ids), "steps": manifests[plan.keys[s.row_ids]]["steps"],
                           "train_seconds": manifests[plan.keys[s.row_ids]]["seconds"]} for s in plan.subsets]
    out = run_dir / STUDY_DIR
    write_json(out / "results.json", results)
    write_text(out / "weights.patch.toml", weights_patch(spec, results))
    write_text(out / "study.md", study_markdown(results))
    return results


def _column(frame: pl.DataFrame, name: str) -> list[Any]:
    return frame[name].to_list() if name in frame.columns else [None] * frame.height


def _train_subset(spec: Spec, trainer: Trainer, plan: StudyPlan, ids: tuple[str, ...], key: str, run_dir: Path,
                  say: Callable[[str], None]) -> dict[str, Any]:
    folder = run_dir / STUDY_DIR / key
    manifest_file = folder / SUBSET_MANIFEST
    if manifest_file.is_file():
        saved: dict[str, Any] = json.loads(manifest_file.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            return saved
    labels = [s.label for s in plan.subsets if s.row_ids == ids]
    rows = plan.pool.filter(pl.col(ROW_ID).is_in(list(ids)))
    convs = conversations(rows.drop("messages", strict=False), spec.export.system_prompt)
    say(f"training subset {key} ({', '.join(labels)}): {len(convs)} rows, {study_settings(spec).max_steps} steps")
    t0 = time.perf_counter()
    result = trainer.train(convs, folder / "model", base_dir=spec.base_dir, log=log,
                           max_steps=study_settings(spec).max_steps)
    manifest = {"key": key, "labels": labels, "row_ids": sorted(ids), "steps": result.steps,
                "examples": result.examples, "seconds": round(time.perf_counter() - t0, 2),
                "general_prompts": list(result.extra.get("general_prompts", []))}
    write_json(manifest_file, manifest)  # last: a subset without it is trained again (resuming)
    return manifest


def _excluded_prompts(spec: Spec, pool: pl.DataFrame, manifests: dict[str, dict[str, Any]]) -> set[str]:
    """Every prompt any subset trained on: general evaluators skip them, for every subset alike
    (so the dev items stay paired)."""
    prompts = {m["content"] for conv in conversations(pool.drop("messages", strict=False), spec.export.system_prompt)
               for m in conv if m["role"] == "user"}
    for manifest in manifests.values():
        prompts |= set(manifest.get("general_prompts", []))
    return prompts


def _dialogues(spec: Spec, run_dir: Path) -> list[Any]:
    ingest = scan_output(run_dir / "ingest")
    texts = ingest.select(R.DIALOGUE_TEXT).collect()[R.DIALOGUE_TEXT].to_list() if ingest is not None else []
    return heldout_dialogues(spec, texts)


def _scorer_key(spec: Spec, scorer: Scorer, dialogues: list[Any], exclude: set[str]) -> str:
    """What one evaluator's per-item scores of a model depend on: a domain evaluator on the
    dialogues and the decoding, a general one on the prompts it must skip."""
    assert spec.eval is not None
    settings = study_settings(spec)
    if scorer.task is not None:
        inputs: Any = [[d.dialogue_id for d in dialogues], settings.decoding, spec.eval.max_new_tokens]
    else:
        inputs = sorted(exclude)
    return canonical_hash([scorer.describe(), inputs, spec.export.system_prompt])[:16]


def _score_subset(spec: Spec, trainer: Trainer, scorers: list[tuple[Scorer, str]], folder: Path,
                  dialogues: list[Any], exclude: set[str], say: Callable[[str], None]) -> list[ItemScores]:
    """Each evaluator's per-item scores of the subset's model, from `eval-KEY.json` when an
    earlier run wrote them (the model is loaded only when something is left to score)."""
    ev = spec.eval
    assert ev is not None
    handle: ModelHandle | None = None
    found: list[ItemScores] = []
    for scorer, key in scorers:
        cache = folder / f"eval-{key}.json"
        if cache.is_file():
            found.append(ItemScores(**json.loads(cache.read_text(encoding="utf-8"))["scores"]))
            continue
        if handle is None:
            model, tokenizer = trainer.load_tuned(folder / "model", base_dir=spec.base_dir, device=ev.device)
            handle = ModelHandle(model, tokenizer, system_prompt=spec.export.system_prompt, batch_size=ev.batch_size)
        say(f"evaluating subset {folder.name} on {scorer.entry}")
        t0 = time.perf_counter()
        scores = score_items(scorer, handle, dialogues=dialogues, base_dir=spec.base_dir, exclude=exclude,
                             decoding=study_settings(spec).decoding, max_new_tokens=ev.max_new_tokens)
        write_json(cache, {"key": key, "entry": scorer.entry, "seconds": round(time.perf_counter() - t0, 2),
                           "scores": scores.__dict__})
        found.append(scores)
    return found
