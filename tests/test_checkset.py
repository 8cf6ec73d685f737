"""The proof: a labelled check set built from real dialogues (SGD Homes) with planted defects,
run through the quality framework (assess then verify phases, built-in metrics, default
params); the flags must find each defect type with precision and recall >= 0.9.

Clean rows are real dialogues with labels written from the data set's own annotations
(`truth`), so they are correct by construction. Planted defects, each on distinct rows:
exact duplicates, near duplicates (a few words changed), truncated labels, empty or refusal
labels, labels that contradict the dialogue (a value changed to one the dialogue never
says), and contaminated rows (dialogues of the evaluation split, dev.jsonl, in the data).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from dialinsight_engine import records as R
from dialinsight_engine.dialogue import render_dialogue
from dialinsight_engine.metrics.base import MetricContext
from dialinsight_engine.metrics.combine import assess_phase
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.spec.quality import QualitySpec

EXTRACT_SCHEMA = {
    "type": "object", "required": ["area", "number_of_beds", "number_of_baths"],
    "properties": {
        "area": {"type": "string"}, "number_of_beds": {"type": "string"}, "number_of_baths": {"type": "string"},
        "pets_allowed": {"type": "string", "enum": ["True", "False", "unknown"]},
        "furnished": {"type": "string", "enum": ["True", "False", "unknown"]},
    },
}
VISIT_SCHEMA = {"type": "object", "required": ["visit_booked", "property_name"],
                "properties": {"visit_booked": {"type": "boolean"}, "property_name": {"type": ["string", "null"]}}}
INSTRUCTIONS = {
    "extract_requirements": "Read this conversation between a customer and an agent.\n{dialogue}\nExtract the "
                            "customer's requirements as JSON with the keys area, number_of_beds, number_of_baths, "
                            "pets_allowed, furnished. Only include values the customer stated.",
    "summarise_needs": "Summarise in one or two sentences what the customer needs, for a colleague.\n{dialogue}",
    "detect_visit": "Did the customer book a visit in this conversation?\n{dialogue}\nAnswer as JSON with "
                    "visit_booked (true or false) and property_name (or null).",
}
CITIES = ["Sacramento", "Modesto", "Fresno", "Vallejo", "Napa", "Petaluma", "Gilroy", "Salinas", "Stockton", "Tracy"]
REFUSALS = ["I'm sorry, but I can't help with that request.",
            "As an AI language model, I cannot access personal conversations.",
            "I cannot assist with this task."]
DEFECTS = ["exact_duplicate", "near_duplicate", "truncated", "empty_or_refusal", "contradiction", "contaminated"]
PER_DEFECT = 20
QUALITY = {
    "metrics": {
        "prompt_complexity": {"weight": 1.0},
        "input_complexity": {"weight": 1.0},
        "data_richness": {"weight": 1.0, "params": {"embeddings": "off"}},
        "data_redundancy": {"weight": 1.0, "params": {"references": [{"path": "", "name": "eval"}]}},
        "label_quality": {"weight": 2.0},
    },
}


def _labels(truth: dict[str, Any]) -> dict[str, tuple[str, str | None]] | None:
    req = truth.get("requirements") or {}
    if not all(k in req for k in ("area", "number_of_beds", "number_of_baths")):
        return None
    extract = {k: req[k] for k in ("area", "number_of_beds", "number_of_baths", "pets_allowed", "furnished") if k in req}
    visit = truth.get("visit")
    summary = (f"The customer is looking for a home with {req['number_of_beds']} bedrooms and "
               f"{req['number_of_baths']} bathrooms in {req['area']}.")
    if visit:
        summary += f" They booked a visit to {visit['property_name']}."
    return {
        "extract_requirements": (json.dumps(extract), json.dumps(EXTRACT_SCHEMA)),
        "summarise_needs": (summary, None),
        "detect_visit": (json.dumps({"visit_booked": bool(visit), "property_name": visit["property_name"] if visit else None}),
                         json.dumps(VISIT_SCHEMA)),
    }


def _row(dialogue: dict[str, Any], task: str, response: str, schema: str | None, suffix: str = "") -> dict[str, Any]:
    text = render_dialogue(dialogue["turns"])
    instruction = INSTRUCTIONS[task]
    return {
        R.INSTRUCTION_ID: R.stable_id(dialogue["id"], task, suffix), R.DIALOGUE_ID: dialogue["id"],
        R.SCENE: "property_search", R.TASK: task, R.INSTRUCTION: instruction,
        R.PROMPT: R.compose_prompt(instruction, text), R.DIALOGUE_TEXT: text, R.TRUTH: json.dumps(dialogue["truth"]),
        R.OUTPUT_SCHEMA: schema, R.RESPONSE: response, R.KEPT: True, R.REASONS: [], "defect": None,
    }


def _near_copy(dialogue: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Change three words in three different turns: the content stays, the text differs."""
    turns = [dict(t) for t in dialogue["turns"]]
    for i in rng.sample(range(len(turns)), k=min(3, len(turns))):
        tokens = turns[i]["text"].split()
        j = rng.randrange(len(tokens))
        tokens[j] = rng.choice(["well", "so", "okay", "right", "indeed"])
        turns[i]["text"] = " ".join(tokens)
    return {**dialogue, "turns": turns}


def _truncate(response: str, rng: random.Random) -> str:
    cut = response[: int(len(response) * rng.uniform(0.4, 0.7))]
    return re.sub(r"[\s.!?,;:]+$", "", cut.rsplit(" ", 1)[0] if " " in cut else cut)


def _contradict(row: dict[str, Any], rng: random.Random) -> str | None:
    """Change one value to something the dialogue never says."""
    dia = " " + re.sub(r"[^\w]+", " ", row[R.DIALOGUE_TEXT].lower()) + " "
    city = next((c for c in rng.sample(CITIES, len(CITIES)) if f" {c.lower()} " not in dia), None)
    number = next((n for n in (7, 8, 9, 11) if f" {n} " not in dia), None)
    response = row[R.RESPONSE]
    if row[R.TASK] == "extract_requirements" and city:
        value = json.loads(response)
        value["area"] = city
        return json.dumps(value)
    if row[R.TASK] == "summarise_needs" and number:
        return re.sub(r"with \d+ bedrooms", f"with {number} bedrooms", response)
    if row[R.TASK] == "detect_visit" and city:
        value = json.loads(response)
        value["visit_booked"], value["property_name"] = True, f"{city} Gardens"
        return json.dumps(value)
    return None


def build_checkset(data: Path, seed: int = 11) -> pl.DataFrame:
    rng = random.Random(seed)
    train = [json.loads(line) for line in (data / "sgd-homes" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    dev = [json.loads(line) for line in (data / "sgd-homes" / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    usable = [d for d in train if _labels(d["truth"])]
    rng.shuffle(usable)
    base = usable[:180]
    rows = []
    for d in base:
        for task, (response, schema) in (_labels(d["truth"]) or {}).items():
            rows.append(_row(d, task, response, schema))
    clean = list(range(len(rows)))
    rng.shuffle(clean)
    picks = {name: clean[i * PER_DEFECT:(i + 1) * PER_DEFECT] for i, name in enumerate(DEFECTS[2:5])}
    for i in picks["truncated"]:
        rows[i] |= {R.RESPONSE: _truncate(rows[i][R.RESPONSE], rng), "defect": "truncated"}
    for n, i in enumerate(picks["empty_or_refusal"]):
        rows[i] |= {R.RESPONSE: "" if n % 2 == 0 else REFUSALS[n % len(REFUSALS)], "defect": "empty_or_refusal"}
    for i in picks["contradiction"]:
        changed = _contradict(rows[i], rng)
        assert changed is not None and changed != rows[i][R.RESPONSE]
        rows[i] |= {R.RESPONSE: changed, "defect": "contradiction"}
    untouched = clean[3 * PER_DEFECT:]
    by_id = {d["id"]: d for d in base}
    for i in untouched[:PER_DEFECT]:
        rows.append(dict(rows[i]) | {R.INSTRUCTION_ID: R.stable_id(rows[i][R.INSTRUCTION_ID], "copy"), "defect": "exact_duplicate"})
    for i in untouched[PER_DEFECT:2 * PER_DEFECT]:
        src = rows[i]
        copy = _near_copy(by_id[src[R.DIALOGUE_ID]], rng)
        rows.append(_row(copy, src[R.TASK], src[R.RESPONSE], src[R.OUTPUT_SCHEMA], "near") | {"defect": "near_duplicate"})
    for d in rng.sample([d for d in dev if _labels(d["truth"])], PER_DEFECT):
        task = rng.choice(list(INSTRUCTIONS))
        response, schema = (_labels(d["truth"]) or {})[task]
        rows.append(_row(d, task, response, schema, "eval") | {"defect": "contaminated"})
    # copies come after their originals (keep = "first" keeps the original), as in real data
    return pl.DataFrame(rows, infer_schema_length=None)


FLAG_PATTERNS = {
    "exact_duplicate": r"data_redundancy: near duplicate of \S+ \(jaccard 1\.00\)",
    "near_duplicate": r"data_redundancy: near duplicate of \S+ \(jaccard 0\.\d\d\)",
    "truncated": r"label_quality: .*truncated",
    "empty_or_refusal": r"label_quality: (empty|.*refusal)",
    "contradiction": r"label_quality: .*grounding",
    "contaminated": r"contaminated: matches eval",
}


def run_checkset(frame: pl.DataFrame, data: Path) -> pl.DataFrame:
    quality = json.loads(json.dumps(QUALITY))
    quality["metrics"]["data_redundancy"]["params"]["references"][0]["path"] = str(data / "sgd-homes" / "dev.jsonl")
    spec = QualitySpec.model_validate(quality)
    registry = build_registry()
    ctx = MetricContext.standalone()
    assessed = assess_phase(frame, spec, registry, ctx, "instruction").frame
    # the label phase scores every row, so label defects on rows dropped as duplicates still count
    relabelled = assessed.with_columns(pl.lit(True).alias(R.KEPT), _assess=pl.col(R.REASONS))
    verified = assess_phase(relabelled.with_columns(pl.lit([], dtype=pl.List(pl.String)).alias(R.REASONS)),
                            spec, registry, ctx, "label").frame
    return verified.with_columns(all_reasons=pl.concat_list("_assess", R.REASONS))


def score_table(result: pl.DataFrame) -> pl.DataFrame:
    rows = []
    reasons = result["all_reasons"].to_list()
    defects = result["defect"].to_list()
    for defect, pattern in FLAG_PATTERNS.items():
        flagged = [any(re.search(pattern, r) for r in rs) for rs in reasons]
        planted = [d == defect for d in defects]
        tp = sum(f and p for f, p in zip(flagged, planted, strict=True))
        precision = tp / sum(flagged) if sum(flagged) else 0.0
        recall = tp / sum(planted) if sum(planted) else 0.0
        rows.append({"defect": defect, "planted": sum(planted), "flagged": sum(flagged), "true_pos": tp,
                     "precision": round(precision, 3), "recall": round(recall, 3)})
    clean = [d is None for d in defects]
    false_alarms = sum(c and bool(rs) for c, rs in zip(clean, reasons, strict=True))
    rows.append({"defect": "(clean rows flagged)", "planted": sum(clean), "flagged": false_alarms,
                 "true_pos": 0, "precision": None, "recall": None})
    return pl.DataFrame(rows)


def test_checkset_flags_reach_precision_and_recall(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = build_checkset(shared_data)
    assert frame.height > 500 and frame["defect"].drop_nulls().len() == PER_DEFECT * len(DEFECTS)
    result = run_checkset(frame, shared_data)
    table = score_table(result)
    with capsys.disabled():
        with pl.Config(tbl_rows=20, tbl_cols=10, tbl_hide_dataframe_shape=True):
            print(f"\n\nQuality check set: {frame.height} rows from SGD Homes, {PER_DEFECT} planted per defect\n{table}\n")
    for row in table.filter(pl.col("precision").is_not_null()).iter_rows(named=True):
        assert row["precision"] >= 0.9 and row["recall"] >= 0.9, row
    clean_row = table.filter(pl.col("defect") == "(clean rows flagged)").row(0, named=True)
    assert clean_row["flagged"] <= 0.05 * clean_row["planted"], clean_row
