"""Evaluators declared in the spec (`[tasks.eval]`): the real-estate presets score exactly as
the scoring functions of the former classes, every kind on exact small cases, and the value
normalisers (Chinese numerals, full-width digits, units, ranges, times, synonyms)."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dialinsight_engine.evaluate.declared import DeclaredEvaluator, truth_value
from dialinsight_engine.evaluate.domain import OfferedRecall, RequirementsF1, VisitAccuracy
from dialinsight_engine.evaluate.normalise import normaliser, zh_numeral
from dialinsight_engine.evaluate.scoring import offered_scores, slot_scores, visit_scores
from dialinsight_engine.spec.evaluation import TaskEvalSpec


def _metrics(scores) -> dict[str, float]:
    return {s.metric: s.value for s in scores}


# -- presets = the former classes ------------------------------------------------------------------
VALUES = ["2", "two", "Fremont", "fremont ", None, "unknown", "3 bedrooms", "True", True, "yes", 2, "",
          "San Jose", "N/A", 2.0, "Not stated", "False", False]


def test_requirements_preset_scores_exactly_as_slot_scores() -> None:
    rng = random.Random(1)
    slots = ["area", "number_of_beds", "number_of_baths", "pets_allowed"]
    truths = [{s: rng.choice(VALUES) for s in slots if rng.random() < 0.7} for _ in range(400)]
    preds = [({s: rng.choice([*VALUES, [], ["x"]]) for s in slots if rng.random() < 0.7}
              if rng.random() < 0.9 else None) for _ in range(400)]
    preset = RequirementsF1(RequirementsF1.Config(slots=slots))
    refs = [preset.reference({"requirements": t}) for t in truths]
    new = _metrics(preset.score([preset.parse_answer(p, "") for p in preds], refs))
    old = _metrics(slot_scores(preds, truths, slots))
    assert old == {k: new[k] for k in old} and 0 < old["f1"] < 1
    assert preset.primary == "f1"


def test_visit_preset_scores_exactly_as_visit_scores() -> None:
    rng = random.Random(2)
    names = ["Amber Court", "amber court!", "Alborada Apartments", "The Oaks"]
    truths = [rng.choice([None, {"property_name": rng.choice(names), "visit_date": "2019-03-04"}])
              for _ in range(400)]
    preds = [rng.choice([None, {}, {"visit_booked": rng.choice([True, False, "yes", "no", None, "maybe"]),
                                    "property_name": rng.choice([*names, None, ""])}]) for _ in range(400)]
    preset = VisitAccuracy()
    refs = [preset.reference({"visit": t}) for t in truths]
    new = _metrics(preset.score([preset.parse_answer(p, "") for p in preds], refs))
    old = _metrics(visit_scores(preds, truths))
    assert old == {k: new[k] for k in old} and 0 < old["property_accuracy"] < old["accuracy"] < 1
    with pytest.raises(KeyError):
        preset.reference({"requirements": {}})  # no visit in the truth: the dialogue is left out


def test_offered_preset_scores_exactly_as_offered_scores() -> None:
    rng = random.Random(3)
    names = ["Amber Court", "amber court!", "Alborada Apartments", "The Oaks", "Oak Park"]
    truths = [rng.sample(names, rng.randint(0, 3)) for _ in range(400)]
    answers = [rng.choice([None, {}, {"offered": "Amber Court"},
                           {"offered": rng.sample([*names, "x", None], rng.randint(0, 4))}]) for _ in range(400)]
    preset = OfferedRecall()
    refs = [preset.reference({"offered": t}) for t in truths]
    new = _metrics(preset.score([preset.parse_answer(a, "") for a in answers], refs))
    # the former class compared only list answers
    lists = [a.get("offered") if isinstance(a, dict) and isinstance(a.get("offered"), list) else None for a in answers]
    old = _metrics(offered_scores(lists, truths))
    assert old == {k: new[k] for k in old} and preset.primary == "recall"


# -- kinds -------------------------------------------------------------------------------------------
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "party_size": {"type": "string"},
                                           "time": {"type": "string"}}}


def test_fields_kind_maps_keys_and_counts_unstated_predictions_as_false_positives() -> None:
    decl = TaskEvalSpec(truth="state.Restaurants_2", keys={"city": "location", "party_size": "number_of_seats",
                                                           "time": "time"},
                        normalize=["lower", "spacing", "absent", "numbers", "time"],
                        synonyms={"san francisco": ["sf", "san fran"]})
    ev = DeclaredEvaluator(decl, SCHEMA)
    truths = [{"state": {"Restaurants_2": {"location": "San Fran", "number_of_seats": "2", "time": "11:30 am"}}},
              {"state": {"Restaurants_2": {"location": "Palo Alto", "time": "7 pm"}}}]
    refs = [ev.reference(t) for t in truths]
    assert refs[0] == {"city": "San Fran", "party_size": "2", "time": "11:30 am"}
    preds = [{"city": "SF", "party_size": "two", "time": "11:30"},       # 3 right
             {"city": "palo alto", "party_size": "4", "time": "19:30"}]  # 1 right, 1 unstated (fp), 1 wrong
    m = _metrics(ev.score(preds, refs))
    assert m["city.f1"] == 1.0 and m["party_size.precision"] == 0.5 and m["party_size.recall"] == 1.0
    assert m["time.precision"] == 0.5 and m["time.recall"] == 0.5
    assert m["precision"] == pytest.approx(4 / 6) and m["recall"] == pytest.approx(4 / 5)
    with pytest.raises(KeyError):
        ev.reference({"state": {"Hotels_1": {}}})  # the service is not in this dialogue


def test_fields_kind_on_chinese_hotel_truth_with_collected_facilities() -> None:
    schema = {"type": "object", "properties": {"价格": {"type": "string"}, "评分": {"type": "string"},
                                               "设施": {"type": "array", "items": {"type": "string"}}}}
    decl = TaskEvalSpec(truth="constraints.酒店", keys={"价格": "价格", "评分": "评分", "设施": "酒店设施-*"},
                        normalize=["nfkc", "lower", "spacing", "zh_numbers", "units", "ranges", "absent", "booleans"],
                        synonyms={"wifi": ["无线网络"]})
    ev = DeclaredEvaluator(decl, schema)
    truth = {"constraints": {"酒店": {"价格": "400-500元", "评分": "4.5分以上", "酒店设施-早餐服务": "是",
                                      "酒店设施-wifi": "是", "酒店设施-暖气": "否"}}}
    ref = ev.reference(truth)
    assert ref == {"价格": "400-500元", "评分": "4.5分以上", "设施": ["早餐服务", "wifi"]}
    pred = {"价格": "４００到５００元", "评分": "四点五分以上", "设施": ["早餐服务", "无线网络", "游泳池"]}
    m = _metrics(ev.score([pred], [ref]))
    assert m["价格.f1"] == 1.0 and m["评分.f1"] == 1.0
    assert m["设施.precision"] == pytest.approx(2 / 3) and m["设施.recall"] == 1.0
    assert truth_value({"a": {"b": 1}}, "a.b?") is True and truth_value({"a": None}, "a?") is False


def test_accuracy_and_exact_kinds() -> None:
    schema = {"type": "object", "properties": {"booked": {"type": "boolean"}, "name": {"type": "string"}}}
    truths = [{"visit": {"name": "Amber Court"}}, {"visit": None}, {"visit": {"name": "The Oaks"}}]
    preds = [{"booked": True, "name": "amber court"}, {"booked": "no", "name": "whatever"},
             {"booked": True, "name": "Oak Park"}]
    for kind, main, value in (("accuracy", "accuracy", 1.0), ("exact", "exact_match", 2 / 3)):
        decl = TaskEvalSpec(truth="visit", kind=kind, keys={"booked": "?", "name": "name"},
                            normalize={"booked": ["default"], "name": ["name"]})
        ev = DeclaredEvaluator(decl, schema)
        m = _metrics(ev.score(preds, [ev.reference(t) for t in truths]))
        assert ev.primary == main and m[main] == pytest.approx(value)
        assert m["name.accuracy"] == 0.5  # compared only where the truth states a name
    # the decision key left out or unreadable is wrong even where the truth is "no"
    ev = DeclaredEvaluator(TaskEvalSpec(truth="visit", kind="accuracy", keys={"booked": "?", "name": "name"}), schema)
    unanswered = [None, {}, {"booked": "maybe"}, {"booked": False}]
    m = _metrics(ev.score(unanswered, [ev.reference({"visit": None})] * 4))
    assert m["accuracy"] == 0.25 and m["exact_match"] == 0.25


def test_text_kind_chrf_and_rouge_l() -> None:
    pytest.importorskip("sacrebleu", reason="kind 'text' needs the text-eval extra (sacrebleu)")
    pytest.importorskip("rouge_score", reason="kind 'text' needs the text-eval extra (rouge-score)")
    decl = TaskEvalSpec(truth="summary", kind="text", answer_key="summary")
    ev = DeclaredEvaluator(decl, None)
    refs = [ev.reference({"summary": "客户想订一家评分4.5分以上的经济型酒店"}),
            ev.reference({"summary": "The customer wants a table for two in Palo Alto."})]
    same = _metrics(ev.score([ev.parse_answer({"summary": r}, "") for r in refs], refs))
    assert same["chrf"] == pytest.approx(1.0) and same["rouge_l"] == pytest.approx(1.0)
    other = _metrics(ev.score(["客户想订经济型酒店", "A table for two, Palo Alto."], refs))
    assert 0.1 < other["chrf"] < 0.9 and 0.3 < other["rouge_l"] < 0.9  # Chinese scored by characters
    with pytest.raises(KeyError):
        ev.reference({"summary": ""})


class JudgeServer:
    """An OpenAI-compatible server on 127.0.0.1 that rates an answer 9 when it contains
    'Palo Alto' and 2 otherwise."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                rating = "9" if "Palo Alto" in body["messages"][-1]["content"] else "2"
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": f"{rating} - ok"},
                                                   "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    server = JudgeServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_judge_kind_rates_through_a_backend(judge_server: JudgeServer, tmp_path: Path) -> None:
    from dialinsight_engine.backends.client import GenerationClient
    from dialinsight_engine.backends.openai import OpenAIBackend, OpenAIConfig

    decl = TaskEvalSpec(kind="judge", rubric="A good answer names the city.")
    ev = DeclaredEvaluator(decl, None)
    ev.judge_client = GenerationClient(OpenAIBackend(OpenAIConfig(base_url=judge_server.url, model="m")),
                                       name="judge", cache_dir=tmp_path / "cache")
    m = _metrics(ev.score(["Dinner in Palo Alto at 7.", "No idea."], [None, None], ["Where?", "Where?"]))
    assert m["score"] == pytest.approx(((9 - 1) / 9 + (2 - 1) / 9) / 2) and m["judged_share"] == 1.0


# -- normalisers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "digits"), [("三", "3"), ("两", "2"), ("十五", "15"), ("二十", "20"),
                                              ("一百五", "150"), ("一百零五", "105"), ("两千", "2000"),
                                              ("二〇一九", "2019"), ("四点五", "4.5"), ("一万二", "12000")])
def test_zh_numeral(text: str, digits: str) -> None:
    assert zh_numeral(text) == digits


@pytest.mark.parametrize(("value", "expected"), [
    ("４００-５００元", "400-500"), ("400到500元", "400-500"), ("400~500块", "400-500"),
    ("4.5分以上", ">=4.5"), ("1000元以上", ">=1000"), ("五星", "5"), ("两位", "2"), ("三人", "3"),
    ("不限", None), ("是", "true"), ("否", "false"), ("经济型", "经济型"), ("¥300", "300"),
])
def test_chinese_value_normalisation(value: str, expected: str | None) -> None:
    norm = normaliser(["nfkc", "lower", "spacing", "zh_numbers", "units", "ranges", "absent", "booleans"])
    assert norm(value) == expected


@pytest.mark.parametrize(("value", "expected"), [("11:30 am", "11:30"), ("7 pm", "19:00"), ("12 pm", "12:00"),
                                                 ("6:45 PM", "18:45"), ("19:00", "19:00"), ("noon", "12:00"),
                                                 ("7", "7")])
def test_time_normaliser(value: str, expected: str) -> None:
    assert normaliser(["lower", "spacing", "time"])(value) == expected


def test_unknown_normaliser_is_a_spec_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="did you mean 'numbers'"):
        TaskEvalSpec(truth="x", normalize=["numbrs"])
