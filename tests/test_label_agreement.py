"""Label agreement in verify: k labels per prompt, a per-field vote, grounding, the consensus pick
for free text, and the labels' precision against `truth` before and after."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl

from dialinsight_engine import records as R
from dialinsight_engine.evaluate.declared import DeclaredEvaluator
from dialinsight_engine.metrics.label_agreement import (
    canonical,
    dialogue_forms,
    is_grounded,
    schema_consensus,
    text_consensus,
)
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.run.context import StageContext
from dialinsight_engine.run.dataset import read_output, write_partition
from dialinsight_engine.spec import load_spec
from dialinsight_engine.spec.evaluation import TaskEvalSpec
from dialinsight_engine.stages.verify import VerifyStage, truth_scores

from conftest import dialengine

SCHEMA = {
    "type": "object", "required": ["area", "number_of_beds", "number_of_baths"],
    "properties": {"area": {"type": "string"}, "number_of_beds": {"type": "string"},
                   "number_of_baths": {"type": "string"},
                   "pets_allowed": {"type": "string", "enum": ["True", "False", "unknown"]},
                   "amenities": {"type": "array", "items": {"type": "string"}}},
}
DIALOGUE = ("Customer: I need a place in San Jose with three bedrooms and 2 baths, my budget is $3,500.\n"
            "Agent: Would a garden or a pool matter?\nCustomer: A garden, yes. I have a cat.")


def _answer(**fields: object) -> str:
    return json.dumps(fields)


def test_normalised_values_and_grounding() -> None:
    assert canonical("two") == canonical("2") == canonical(2.0) == "2"
    assert canonical("$3,500") == canonical("3500") == "3500"
    assert canonical("三") == "3" and canonical("unknown") is None
    forms = dialogue_forms(DIALOGUE)
    assert is_grounded("3", forms) and is_grounded("3500", forms) and is_grounded("san jose", forms)
    assert not is_grounded(".01", forms) and not is_grounded("Fremont", forms) and not is_grounded("4", forms)
    assert is_grounded("3", dialogue_forms("客户：我要三间房，价格四百到五百。")) and is_grounded("五百", dialogue_forms("价格500元"))


def test_a_field_is_kept_by_majority_only_when_grounded() -> None:
    answers = [
        _answer(area=".01", number_of_beds="3", number_of_baths="2", pets_allowed="True", amenities=["garden"]),
        _answer(area="San Jose", number_of_beds="three", number_of_baths="1", pets_allowed="True",
                amenities=["garden", "pool"]),
        _answer(area="san jose", number_of_beds="4", number_of_baths="5", pets_allowed="unknown", amenities=[]),
        "not JSON at all",
    ]
    consensus = schema_consensus(answers, SCHEMA, DIALOGUE, min_agreement=0.5, ground=True)
    assert consensus is not None
    label = json.loads(consensus.text)
    # area: 2 of 4 say San Jose (the first spelling that won is kept); beds: 3 == three, 2 of 4;
    # baths: 2, 1, 5 (no majority) -> not stated; pets: enum, not grounded; amenities: by item
    assert label == {"area": "San Jose", "number_of_beds": "3", "number_of_baths": "", "pets_allowed": "True",
                     "amenities": ["garden"]}
    assert consensus.dropped == ("number_of_baths: agreement 1/4",)
    assert consensus.agreement == 0.5
    # a stricter threshold keeps nothing but the schema's required keys, as "not stated"
    strict = schema_consensus(answers, SCHEMA, DIALOGUE, min_agreement=0.75, ground=True)
    assert strict is not None and json.loads(strict.text)["area"] == ""
    # a unanimous value that is not in the dialogue is dropped when grounding is on
    fremont = [_answer(area="Fremont", number_of_beds="3", number_of_baths="2")] * 3
    grounded = schema_consensus(fremont, SCHEMA, DIALOGUE, min_agreement=0.5, ground=True)
    assert grounded is not None and grounded.dropped == ("area: not in the dialogue",)
    ungrounded = schema_consensus(fremont, SCHEMA, DIALOGUE, min_agreement=0.5, ground=False)
    assert ungrounded is not None and json.loads(ungrounded.text)["area"] == "Fremont"
    # a value is kept in its clean form: the edge punctuation a weak labeller adds goes
    messy = [_answer(area="San Jose.", number_of_beds=", 3", number_of_baths="2")] * 2
    clean = schema_consensus(messy, SCHEMA, DIALOGUE, min_agreement=0.5, ground=True)
    assert clean is not None and json.loads(clean.text) == {"area": "San Jose", "number_of_beds": "3",
                                                            "number_of_baths": "2", "pets_allowed": "unknown",
                                                            "amenities": []}
    assert schema_consensus(["oops", None], SCHEMA, DIALOGUE, min_agreement=0.5, ground=True) is None


OFFER = ("Customer: I need a 2 bathroom apartment in Fremont.\nAgent: How many bedrooms do you need?\n"
         "Customer: I need 3 bedrooms.\nAgent: Alborada Apartments in Newark has 4 bedrooms, 1 bath.")


def test_grounding_in_the_customers_turns_next_to_the_fields_words() -> None:
    customer = dialogue_forms(OFFER, ["customer"])
    assert is_grounded("Fremont", customer) and not is_grounded("Newark", customer)
    assert is_grounded("Newark", dialogue_forms(OFFER))  # every turn when no role is named
    assert is_grounded("3", customer, "number_of_beds") and is_grounded("2", customer, "number_of_baths")
    # the numbers are the customer's, but said of the other field, or not at all by the customer
    assert not is_grounded("2", customer, "number_of_beds") and not is_grounded("3", customer, "number_of_baths")
    assert not is_grounded("4", customer, "number_of_beds") and is_grounded("4", dialogue_forms(OFFER), "number_of_beds")
    assert is_grounded("3", customer, "floor")  # words the dialogue never uses: any stated number
    assert is_grounded("two", dialogue_forms("Customer: a two bedroom flat"), "bedrooms")
    money = dialogue_forms("Customer: my budget is $3,500 for 2.5 baths", ["customer"])
    assert is_grounded("$3,500", money, "budget") and is_grounded("2.5", money, "number_of_baths")
    assert dialogue_forms(OFFER, ["landlord"]).text == dialogue_forms(OFFER).text  # nobody speaks: all turns
    # an unspaced script is a word a character: "3间bedroom" says 3 next to "bedroom"
    mixed = dialogue_forms("Customer: 我们要3间bedroom，2个bath", ["customer"])
    assert is_grounded("3", mixed, "number_of_beds") and is_grounded("2", mixed, "number_of_baths")


def test_an_ungrounded_value_is_no_vote_and_unsettled_rows_are_flagged() -> None:
    def vote(answers: list[str], min_agreement: float) -> tuple[dict[str, object], bool]:
        consensus = schema_consensus(answers, SCHEMA, OFFER, min_agreement=min_agreement, ground=True,
                                     roles=["customer"])
        assert consensus is not None
        return json.loads(consensus.text), consensus.settled

    # the agent's offer (Newark, 4, 1) twice and the customer's values once: with one grounded
    # answer enough (1/3), the customer's values win; the offer no longer outvotes them
    offer = _answer(area="Newark", number_of_beds="4", number_of_baths="1")
    right = _answer(area="Fremont", number_of_beds="three", number_of_baths="2")
    label, settled = vote([offer, right, offer], 0.3)
    assert settled and (label["area"], label["number_of_beds"], label["number_of_baths"]) == ("Fremont", "three", "2")
    label, settled = vote([offer, right, offer], 0.5)  # one answer of three is not enough here
    assert not settled and label["area"] == label["number_of_beds"] == label["number_of_baths"] == ""
    # "not stated" settles a field only when most answers leave it out
    unstated = _answer(area="", number_of_beds="", number_of_baths="")
    label, settled = vote([unstated, unstated, offer], 0.3)
    assert settled and label["number_of_beds"] == ""
    # punctuation alone (", ") is a broken answer, not a "not stated" vote: the one right answer wins
    broken = _answer(area=",", number_of_beds=", ", number_of_baths=")")
    label, settled = vote([broken, right, broken], 0.3)
    assert settled and (label["area"], label["number_of_beds"], label["number_of_baths"]) == ("Fremont", "three", "2")
    # two grounded values that tie settle nothing: 2 and 3 are both the customer's numbers
    swapped = _answer(area="", number_of_beds="2", number_of_baths="3")
    consensus = schema_consensus([right, swapped], SCHEMA, OFFER, min_agreement=0.3, ground=False)
    assert consensus is not None and json.loads(consensus.text)["number_of_beds"] == ""
    assert "number_of_beds: agreement 1/2" in consensus.dropped


def test_a_boolean_keeps_the_greedy_answer_unless_it_lacks_agreement() -> None:
    """Seen on sgd-homes with the 135M labeller: the greedy `visit_booked` was right for every
    row and two sampled answers said false, so a plain vote made 7 of 16 labels wrong."""
    schema = {"type": "object", "required": ["visit_booked", "property_name"],
              "properties": {"visit_booked": {"type": "boolean"}, "property_name": {"type": ["string", "null"]}}}
    dialogue = "Customer: Can I visit Oak Court on Friday?\nAgent: Booked: Oak Court, Friday."
    greedy, sampled = _answer(visit_booked=True, property_name="Oak Court"), _answer(visit_booked=False,
                                                                                      property_name="Elm Row")
    label = json.loads(schema_consensus([greedy, sampled, sampled], schema, dialogue, min_agreement=0.3,
                                        ground=True).text)
    assert label == {"visit_booked": True, "property_name": "Oak Court"}  # Elm Row is not in the dialogue
    # below min_agreement the vote decides, as for any field
    label = json.loads(schema_consensus([greedy, sampled, sampled], schema, dialogue, min_agreement=0.5,
                                        ground=True).text)
    assert label["visit_booked"] is False
    # an enum is the same kind of field
    pets = [_answer(area="San Jose", pets_allowed=v) for v in ("True", "False", "False")]
    assert json.loads(schema_consensus(pets, SCHEMA, DIALOGUE, min_agreement=0.3, ground=True).text)[
        "pets_allowed"] == "True"


def test_free_text_consensus_picks_the_answer_the_others_agree_with() -> None:
    answers = ["I like turtles and the sea.", "The customer wants three bedrooms in San Jose with a garden.",
               "Customer wants three bedrooms in San Jose.", None]
    consensus = text_consensus(answers)
    assert consensus is not None and consensus.text == answers[1] and 0.3 < consensus.agreement < 1
    zh = text_consensus(["客户想要三间卧室的房子。", "客户想要三间卧室的房子，预算五百。", "今天天气很好。"])
    assert zh is not None and zh.text == "客户想要三间卧室的房子。"
    assert text_consensus([None, " "]) is None


def test_truth_scores_use_the_declared_evaluator() -> None:
    evaluator = DeclaredEvaluator(TaskEvalSpec(name="slots", truth="requirements", kind="fields",
                                               keys=["area", "number_of_beds"], normalize=["default"]))
    truth = json.dumps({"requirements": {"area": "San Jose", "number_of_beds": "3"}})
    rows = [{R.TRUTH: truth, R.RESPONSE: _answer(area="San Jose", number_of_beds="three")},
            {R.TRUTH: truth, R.RESPONSE: _answer(area=".01", number_of_beds="3")},
            {R.TRUTH: None, R.RESPONSE: _answer(area="x")}]
    scores = truth_scores(rows, evaluator, R.RESPONSE)
    assert scores["n"] == 2 and scores["precision"] == 0.75 and scores["recall"] == 0.75


EXTRA = """
[[tasks]]
name = "extract_slots"
scenes = ["property_search"]
template = "Extract area, number_of_beds and number_of_baths as JSON.\\n{{ dialogue }}"
[tasks.eval]
name = "slots_f1"
truth = "requirements"
kind = "fields"
keys = ["area", "number_of_beds", "number_of_baths"]
normalize = ["default"]

[labels]
samples = 3

[quality.metrics.label_quality]
weight = 1.0
"""


def test_verify_keeps_the_consensus_and_reports_precision_against_truth(write_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec_path = write_spec(EXTRA, name="agree")
    run = tmp_path / "runs" / "agree"
    result = dialengine("apply", str(spec_path), "--until", "assess", plugins="core,quality")
    assert result.returncode == 0, result.stderr
    rows = read_output(run / "assess").filter(pl.col(R.KEPT) & pl.col(R.TRUTH).is_not_null())
    rows = rows.filter(pl.col(R.TRUTH).str.contains('"number_of_beds"')).head(4)
    samples, responses = [], []
    for truth in rows[R.TRUTH].to_list():
        req = json.loads(truth)["requirements"]
        right = _answer(area=req.get("area", ""), number_of_beds=req["number_of_beds"],
                        number_of_baths=req.get("number_of_baths", ""))
        wrong = _answer(area=".01", number_of_beds="9", number_of_baths=req.get("number_of_baths", ""))
        samples.append([wrong, right, right])  # the greedy label is the weak one
        responses.append(wrong)
    # one more row whose three labels state three different values, none in the dialogue
    rows = pl.concat([rows, rows.head(1)])
    samples.append([_answer(area=f"Nowhere {i}", number_of_beds=f"9{i}", number_of_baths=f"8{i}") for i in range(3)])
    responses.append(samples[-1][0])
    labelled = rows.with_columns(
        pl.lit("extract_slots").alias(R.TASK), pl.lit(json.dumps(SCHEMA)).alias(R.OUTPUT_SCHEMA),
        pl.Series(R.RESPONSE, responses, dtype=pl.String),
        pl.Series("label_samples", samples, dtype=pl.List(pl.String)))
    write_partition(run / "label", 0, labelled)
    registry = build_registry()
    ctx = StageContext(spec=load_spec(spec_path, registry), registry=registry, run_dir=run, stage="verify",
                       input_stage="label", log=logging.getLogger("test"))
    out = VerifyStage().run(ctx)
    # before: '.01' is not in the dialogue; the last row's labels settle no field
    assert out[R.KEPT].to_list() == [True] * (rows.height - 1) + [False]
    assert out[R.REASONS].to_list()[-1][-1] == "label_disagreement:no field settled"
    assert out["response_original"].to_list() == responses
    assert [json.loads(r)["number_of_beds"] for r in out[R.RESPONSE]][:-1] == [
        json.loads(t)["requirements"]["number_of_beds"] for t in rows[R.TRUTH]][:-1]
    report = json.loads((run / "verify" / "label_truth.json").read_text())["extract_slots"]
    assert report["evaluator"] == "declared" and report["all_labels"]["n"] == rows.height
    assert report["kept"]["f1"] == 1.0 and report["all_labels"]["f1"] < 0.6
    assert ctx.stats["label_agreement"]["samples"] == 3 and ctx.stats["label_agreement"]["rows_dropped"] == 1


SCRIPTED = """
[[tasks]]
name = "detect_visit"
scenes = ["viewing_booking", "property_search"]
template = "Did the customer book a visit?\\n{{ dialogue }}\\nAnswer as JSON with visit_booked (true or false)."
[tasks.output_schema]
type = "object"
required = ["visit_booked"]
[tasks.output_schema.properties.visit_booked]
type = "boolean"

[backends.fake]
plugin = "scripted"

[quality.metrics.label_quality]

[sampling]
n = 8

[labels]
backend = "fake"
samples = 3
"""


def test_the_label_stage_asks_k_times_and_verify_votes(write_spec, tmp_path: Path, scripted_backend) -> None:  # type: ignore[no-untyped-def]
    spec_path = write_spec(SCRIPTED, name="k")
    result = dialengine("apply", str(spec_path), "--until", "verify", env=scripted_backend,
                        plugins="core,generation,quality,scripted")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "k"
    label = read_output(run / "label")
    assert label.height > 0 and label["label_samples"].list.len().to_list() == [3] * label.height
    assert label["label_samples"].list.first().to_list() == label[R.RESPONSE].to_list()
    manifest = json.loads((run / "label" / "manifest.json").read_text())
    assert manifest["stats"]["backend"]["fake"]["generated"] == 3 * label.height
    verify = read_output(run / "verify")
    assert verify["response_original"].to_list() == label[R.RESPONSE].to_list()
    visits = verify.filter(pl.col(R.TASK) == "detect_visit")
    for samples, response in zip(visits["label_samples"].to_list(), visits[R.RESPONSE].to_list(), strict=True):
        votes = [json.loads(s)["visit_booked"] for s in samples]
        assert json.loads(response)["visit_booked"] == max(set(votes), key=votes.count)  # the majority
    stats = json.loads((run / "verify" / "manifest.json").read_text())["stats"]
    assert stats["label_agreement"]["samples"] == 3


def test_ground_roles_must_name_a_task_and_its_roles(write_spec) -> None:  # type: ignore[no-untyped-def]
    good = write_spec('[labels]\nground_roles = { extract_requirements = ["customer"] }\n', filename="good.toml")
    assert dialengine("validate", str(good)).returncode == 0
    for table, says in (('{ extract_requirement = ["customer"] }', "unknown task 'extract_requirement'"),
                        ('{ extract_requirements = ["user"] }', "extract_requirements names unknown roles ['user']")):
        bad = write_spec(f"[labels]\nground_roles = {table}\n", filename="bad.toml")
        done = dialengine("validate", str(bad))
        assert done.returncode == 2 and "bad.toml" in done.stderr and says in done.stderr, done.stderr

