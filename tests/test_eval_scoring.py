"""Domain scoring on known predictions (exact numbers), value normalisation, JSON parsing,
the guard's verdict, held-out reading and the contamination check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dialinsight_engine.errors import DataError
from dialinsight_engine.evaluate.heldout import overlapping, read_heldout
from dialinsight_engine.evaluate.lm import slot_schema
from dialinsight_engine.evaluate.normalise import normalise_name, normalise_value
from dialinsight_engine.evaluate.scoring import offered_scores, slot_scores, visit_scores
from dialinsight_engine.evaluate.verdict import Primary, judge
from dialinsight_engine.jsonanswer import first_json_object

EXAMPLES = Path(__file__).resolve().parents[1] / "python" / "dialinsight_engine" / "data"


def as_dict(scores):
    return {s.metric: s.value for s in scores}


@pytest.mark.parametrize(("raw", "expected"), [
    ("Two", "2"), (2, "2"), ("2.0", "2"), (2.0, "2"), ("3 bedrooms", "3"), ("two baths", "2"),
    ("True", "true"), (True, "true"), ("yes", "true"), ("No", "false"), (False, "false"),
    ("  San  Jose. ", "san jose"), ("unknown", None), ("", None), (None, None), ("N/A", None),
    ("not mentioned", None), ([1], None), ("1.5", "1.5"),
])
def test_normalise_value(raw, expected) -> None:
    assert normalise_value(raw) == expected


def test_normalise_name() -> None:
    assert normalise_name("Amber Court!") == normalise_name("amber   court") == "amber court"
    assert normalise_name(3) is None


def test_slot_scores_exact() -> None:
    truths = [
        {"area": "Fremont", "number_of_beds": "2", "number_of_baths": "2"},
        {"area": "San Jose", "number_of_beds": "3", "pets_allowed": "True"},
        {"area": "Dublin", "number_of_beds": "1"},
    ]
    predictions = [
        {"area": "fremont", "number_of_beds": "two", "number_of_baths": "1"},  # 2 right, 1 wrong
        {"area": "San Jose", "number_of_beds": 3, "pets_allowed": "yes", "furnished": "True"},  # 3 right, 1 extra
        None,  # unparseable: states nothing
    ]
    slots = ["area", "number_of_beds", "number_of_baths", "pets_allowed", "furnished"]
    got = as_dict(slot_scores(predictions, truths, slots))
    # tp = 5; fp = 1 (baths "1") + 1 (furnished) = 2; fn = 1 (baths "2") + 2 (Dublin, "1") = 3
    assert got["precision"] == pytest.approx(5 / 7)
    assert got["recall"] == pytest.approx(5 / 8)
    assert got["f1"] == pytest.approx(2 * (5 / 7) * (5 / 8) / (5 / 7 + 5 / 8))
    assert got["area.precision"] == 1.0 and got["area.recall"] == pytest.approx(2 / 3)
    assert got["area.f1"] == pytest.approx(0.8)
    assert got["number_of_baths.f1"] == 0.0
    assert got["furnished.precision"] == 0.0 and got["furnished.recall"] == 0.0
    assert got["pets_allowed.f1"] == 1.0
    # only the three core slots
    core = as_dict(slot_scores(predictions, truths, ["area", "number_of_beds", "number_of_baths"]))
    # tp = 4, fp = 1, fn = 3
    assert core["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 3))


def test_visit_scores_exact() -> None:
    truths = [None, {"property_name": "Amber Court", "visit_date": "2019-03-04"},
              {"property_name": "Oak Hill", "visit_date": "2019-03-01"}, None]
    predictions = [{"visit_booked": False, "property_name": None},
                   {"visit_booked": True, "property_name": "amber court"},
                   {"visit_booked": "true", "property_name": "Elm Lane"},  # booked right, wrong property
                   {"visit_booked": True, "property_name": "Oak Hill"}]  # booked wrong
    got = as_dict(visit_scores(predictions, truths))
    assert got["accuracy"] == 0.75
    assert got["property_accuracy"] == 0.5

    # no decision is no answer: unreadable, left out or "maybe" is wrong on an unbooked case too
    unanswered = [None, {}, {"visit_booked": "maybe"}, {"property_name": None}, {"visit_booked": "no"}]
    got = as_dict(visit_scores(unanswered, [None] * 5))
    assert got["accuracy"] == 0.2 and got["property_accuracy"] == 0.2


def test_offered_scores_exact() -> None:
    truths = [["Amber Court", "Alborada Apartments"], ["Oak Hill"]]
    predictions = [["amber court", "Nowhere Plaza"], None]
    got = as_dict(offered_scores(predictions, truths))
    assert got["recall"] == pytest.approx(1 / 3)
    assert got["precision"] == pytest.approx(1 / 2)


def test_first_json_object_and_slot_schema() -> None:
    assert first_json_object('Sure! ```json\n{"a": 1, "b": {"c": 2}}\n``` done') == {"a": 1, "b": {"c": 2}}
    assert first_json_object("{broken {\"x\": true}") == {"x": True}
    assert first_json_object("no json here") is None
    assert slot_schema({"type": "object", "properties": {"a": {"type": "string"},
                                                           "b": {"type": ["string", "null"]},
                                                           "c": {"enum": ["x", "y"]}}})
    assert not slot_schema({"type": "object", "properties": {"a": {"type": "array"}}})
    assert not slot_schema(None)


def test_guard_verdict() -> None:
    rows = [
        {"variant": "base", "evaluator": "req", "metric": "f1", "value": 0.60},
        {"variant": "tuned", "evaluator": "req", "metric": "f1", "value": 0.80},
        {"variant": "unfiltered", "evaluator": "req", "metric": "f1", "value": 0.70},
        {"variant": "base", "evaluator": "gsm", "metric": "loglik_per_token", "value": -1.00},
        {"variant": "tuned", "evaluator": "gsm", "metric": "loglik_per_token", "value": -1.01},
        {"variant": "unfiltered", "evaluator": "gsm", "metric": "loglik_per_token", "value": -1.05},
        {"variant": "base", "evaluator": "ppl", "metric": "perplexity", "value": 10.0},
        {"variant": "tuned", "evaluator": "ppl", "metric": "perplexity", "value": 10.1},
        {"variant": "unfiltered", "evaluator": "ppl", "metric": "perplexity", "value": 10.5},
    ]
    primaries = [Primary("req", "domain", "f1", True, True),
                 Primary("gsm", "general", "loglik_per_token", True, True),
                 Primary("ppl", "general", "perplexity", False, False)]
    verdicts, checks = judge(rows, primaries, min_domain_gain=0.15, max_general_drop=0.02)
    assert verdicts == {"tuned": "pass", "unfiltered": "fail"}
    by = {(c.variant, c.entry): c for c in checks}
    assert by[("tuned", "req")].change == pytest.approx(0.20)
    assert by[("tuned", "gsm")].change == pytest.approx(0.01)
    assert by[("unfiltered", "gsm")].change == pytest.approx(0.05) and not by[("unfiltered", "gsm")].ok
    # perplexity worsened 5% for unfiltered but is not guarded: it is reported, not judged
    assert by[("unfiltered", "ppl")].change == pytest.approx(0.05) and not by[("unfiltered", "ppl")].guarded


def test_read_heldout_and_contamination(tmp_path: Path) -> None:
    heldout = read_heldout([EXAMPLES / "realestate_heldout.jsonl"], role_alias={"customer": "customer"})
    assert len(heldout) == 12
    assert heldout[0].dialogue_text.startswith("Customer: ")
    assert heldout[1].truth["visit"]["property_name"] == "Orchard Lane Suites"
    assert len(read_heldout([EXAMPLES / "realestate_heldout.jsonl"], limit=3)) == 3

    texts = [h.dialogue_text for h in heldout]
    training = [texts[2], texts[5] + "\nAgent: One more thing, the lease is twelve months."]
    flags = overlapping(texts, training, threshold=0.8)
    assert [i for i, f in enumerate(flags) if f] == [2, 5]
    # the packaged held-out set shares no dialogue with the packaged training examples
    train_examples = read_heldout([EXAMPLES / "realestate_dialogues.jsonl"])
    assert not any(overlapping(texts, [t.dialogue_text for t in train_examples], threshold=0.5))

    empty = tmp_path / "none.jsonl"
    empty.write_text(json.dumps({"id": "x", "turns": [{"role": "customer", "text": "hi"}]}) + "\n")
    with pytest.raises(DataError, match="truth"):
        read_heldout([empty])
