"""Model-free stages on real example data: scene tagging, seed building, export formats."""

from __future__ import annotations

import json

import polars as pl

from dialinsight_engine.run.dataset import read_output
from dialinsight_engine.spec.models import SceneSpec
from dialinsight_engine.stages.scenes import SceneMatcher

from conftest import dialengine


def test_scene_rules_keywords_regex_roles_intents():
    turns = [{"role": "customer", "text": "I want a 2-bed flat, embedded in town"},
             {"role": "agent", "text": "Shall we book a viewing?"}]
    search = SceneMatcher(SceneSpec(name="s", keywords=["flat", "bed"], regex=[r"\b\d+-bed\b"], roles=["customer"]))
    # "flat", "bed" (a whole word in "2-bed") and the regex; "embedded" does not count as "bed"
    assert search.hits(turns, []) == 3
    viewing = SceneMatcher(SceneSpec(name="v", keywords=["viewing"], roles=["customer"]))
    assert viewing.hits(turns, []) == 0  # only the agent said it
    by_intent = SceneMatcher(SceneSpec(name="v", intents=["ScheduleVisit"], min_hits=2))
    assert by_intent.hits(turns, ["ScheduleVisit"]) == 2


def test_seeds_cover_tasks_scenes_and_carry_dialogue_and_truth(write_spec, tmp_path):
    result = dialengine("apply", str(write_spec()))
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "t"
    scenes = read_output(run / "scenes")
    assert scenes["scenes"].list.len().min() >= 1
    assert scenes.filter(pl.col("intents").list.contains("ScheduleVisit"))["scenes"].list.contains("viewing_booking").all()
    seeds = read_output(run / "seeds")
    # every dialogue in property_search gets one extraction seed; every dialogue one summary
    n_search = int(scenes["scenes"].list.contains("property_search").sum())
    assert seeds.filter(pl.col("task") == "extract_requirements").height == n_search
    assert seeds.filter(pl.col("task") == "summarise_needs").height == scenes.height
    assert seeds["instruction"].str.contains("{dialogue}", literal=True).all()
    row = seeds.row(0, named=True)
    assert row["dialogue_text"] in row["prompt"] and "{dialogue}" not in row["prompt"]
    assert json.loads(row["truth"])["requirements"]
    # both templates of the extraction task are used, picked per dialogue
    assert seeds.filter(pl.col("task") == "extract_requirements")["template_index"].n_unique() == 2
    assert seeds["instruction_id"].n_unique() == seeds.height
    summary = seeds.filter(pl.col("task") == "summarise_needs")
    assert summary["instruction"].str.contains(r"\((property_search|viewing_booking)\)").all()


def test_export_formats_are_valid_chat_sharegpt_alpaca(write_spec, tmp_path):
    assert dialengine("apply", str(write_spec('\n[export]\nsystem_prompt = "You help a letting agent."\n'))).returncode == 0
    folder = tmp_path / "runs" / "t" / "export"
    openai = [json.loads(x) for x in (folder / "openai.jsonl").read_text().splitlines()]
    sharegpt = [json.loads(x) for x in (folder / "sharegpt.jsonl").read_text().splitlines()]
    alpaca = [json.loads(x) for x in (folder / "alpaca.jsonl").read_text().splitlines()]
    assert len(openai) == len(sharegpt) == len(alpaca) > 0
    assert [m["role"] for m in openai[0]["messages"]] == ["system", "user"]
    assert sharegpt[0]["conversations"][0]["from"] == "human" and sharegpt[0]["system"]
    assert "{dialogue}" not in alpaca[0]["instruction"] and alpaca[0]["input"].startswith("Customer:")


def test_template_errors_name_the_task(write_spec):
    spec = write_spec()
    spec.write_text(spec.read_text().replace("({{ scene }})", "({{ scene_nmae }})"))
    result = dialengine("apply", str(spec))
    assert result.returncode == 2 and "tasks[1].template" in result.stderr and "scene_nmae" in result.stderr
