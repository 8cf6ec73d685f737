"""Record selection (`[data]` / `[eval]` where, sample, exclude_ids, exclude_file), scene rules
on record fields, and keywords in unspaced scripts, through the real runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dialinsight_engine.errors import SpecError
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.run.dataset import read_output
from dialinsight_engine.run.runner import Runner
from dialinsight_engine.selection import Selection, compile_where, read_id_file
from dialinsight_engine.spec import load_spec
from dialinsight_engine.stages.scenes import keyword_pattern

RECORD = {"id": "dev/7", "services": ["Restaurants_2", "RideSharing_1"], "n_turns": 12, "type": "单领域",
          "truth": {"state": {"Restaurants_2": {"location": "SF", "number_of_seats": "2"}}}}


@pytest.mark.parametrize(("where", "keeps"), [
    ({"services": {"contains": "Restaurants_2"}}, True),
    ({"services": {"contains": ["Restaurants_2", "Hotels_1"]}}, False),
    ({"services": {"contains_any": ["Hotels_1", "RideSharing_1"]}}, True),
    ({"services": {"not_contains": "Hotels_1"}, "id": {"prefix": "dev/"}}, True),
    ({"id": {"not_prefix": ["dev/", "test/"]}}, False),
    ({"n_turns": {"min": 4, "max": 12}}, True),
    ({"n_turns": {"max": 10}}, False),
    ({"services": {"min": 2}}, True),             # on a list: its length
    ({"type": "单领域"}, True),
    ({"type": ["多领域", "单领域"]}, True),
    ({"truth.state.Restaurants_2.location": "SF"}, True),
    ({"truth": {"state": {"Restaurants_2": {"number_of_seats": "2"}}}}, True),  # TOML dotted keys nest
    ({"truth.state.Hotels_1": {"exists": True}}, False),
    ({"truth.state.Hotels_1": {"exists": False}}, True),
    ({"lang": {"ne": "zh"}}, True),               # a missing field is not equal to anything
    ({"lang": "zh"}, False),
])
def test_where_conditions(where: dict, keeps: bool) -> None:
    assert compile_where(where)(RECORD) is keeps


@pytest.mark.parametrize(("where", "message"), [
    ({"services": {"contians": "x"}}, "did you mean 'contains'"),
    ({"n_turns": {"min": "four"}}, "must be a number"),
    ({"id": {"in": "dev/7"}}, "must be a list"),
])
def test_bad_conditions(where: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_where(where)


def test_sample_is_seeded_and_keeps_file_order(tmp_path: Path) -> None:
    items = list(range(100))
    first = Selection(sample=10, seed=4).sample(items)
    assert first == Selection(sample=10, seed=4).sample(items) == sorted(first) and len(first) == 10
    assert first != Selection(sample=10, seed=5).sample(items)
    assert Selection(sample=500).sample(items) == items
    ids = tmp_path / "ids.jsonl"
    ids.write_text('{"id": "a", "turns": []}\n# a comment\nplain-id\n\n{"id": 7}\n', encoding="utf-8")
    assert read_id_file(ids) == {"a", "plain-id", "7"}


DATA_SELECTION = """
[data]
paths = ["{data}"]
where = {{ intents = {{ contains = "ScheduleVisit" }}, n_turns = {{ min = 12 }} }}
exclude_ids = ["ex_002"]
exclude_file = "exclude.txt"
sample = 5
"""


def _spec(write_spec, tmp_path: Path, data_block: str, extra: str = "") -> Path:
    base = write_spec(extra)
    text = base.read_text(encoding="utf-8")
    start = text.index("[data]")
    end = text.index("[[roles]]")
    data = text[start:end].splitlines()[1].split("=", 1)[1].strip()[2:-2]
    base.write_text(text[:start] + data_block.format(data=data).strip() + "\n\n" + text[end:], encoding="utf-8")
    return base


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setenv("DIALENGINE_PLUGINS", "core")
    return build_registry()


def test_ingest_selects_by_where_excludes_and_samples(write_spec, registry, tmp_path: Path) -> None:
    (tmp_path / "exclude.txt").write_text("ex_003\n", encoding="utf-8")
    spec = load_spec(_spec(write_spec, tmp_path, DATA_SELECTION), registry)
    Runner(spec, registry, quiet=True).apply(until="ingest")
    run = tmp_path / "runs" / "t" / "ingest"
    rows = read_output(run)
    examples = [json.loads(line) for line in
                (Path(spec.resolve_path("@examples/realestate_dialogues.jsonl"))).read_text().splitlines()]
    eligible = [r["id"] for r in examples if "ScheduleVisit" in r["intents"] and len(r["turns"]) >= 12
                and r["id"] not in ("ex_002", "ex_003")]
    assert rows.height == 5 and set(rows["dialogue_id"]) <= set(eligible) and len(eligible) > 5
    assert rows["dialogue_id"].to_list() == [i for i in eligible if i in set(rows["dialogue_id"])]  # file order
    stats = json.loads((run / "manifest.json").read_text())["stats"]
    assert stats["selection"]["excluded_ids"] == 2 and stats["selection"]["not_sampled"] == len(eligible) - 5
    assert stats["selection"]["not_matching_where"] == 32 - 2 - len(eligible)


def test_unknown_condition_fails_at_its_line(write_spec, registry, tmp_path: Path) -> None:
    path = _spec(write_spec, tmp_path, '[data]\npaths = ["{data}"]\nwhere = {{ services = {{ contians = "Homes" }} }}\n')
    with pytest.raises(SpecError) as err:
        load_spec(path, registry)
    line = next(n for n, t in enumerate(path.read_text().splitlines(), 1) if t.startswith("where"))
    assert err.value.line == line and "data.where" in str(err.value) and "did you mean 'contains'" in str(err.value)


def test_keywords_in_unspaced_scripts_match_inside_text() -> None:
    pattern = keyword_pattern(["酒店", "bed", "ホテル"])
    assert pattern is not None
    assert len(pattern.findall("我想找一家评分高的酒店，离酒店近的餐馆也行")) == 2
    assert pattern.findall("an embedded bed") == ["bed"]  # spaced scripts keep whole words
    assert pattern.findall("駅に近いホテルを探しています") == ["ホテル"]


CHINESE = [
    {"id": "zh1", "services": ["酒店"], "turns": [{"role": "customer", "text": "你好，我想订一家经济型酒店。"},
                                                 {"role": "agent", "text": "好的，为您推荐如家酒店。"}]},
    {"id": "zh2", "services": ["餐馆", "景点"], "turns": [{"role": "customer", "text": "附近有什么好吃的？"},
                                                         {"role": "agent", "text": "推荐全聚德。"}]},
]

SCENES = """
[[scenes]]
name = "hotel"
keywords = ["酒店"]
min_hits = 2

[[scenes]]
name = "food"
match = {{ services = {{ contains = "餐馆" }} }}

[[tasks]]
name = "summarise"
template = "总结对话。\\n{{{{ dialogue }}}}"
"""


def test_scenes_match_chinese_keywords_and_record_fields(write_spec, registry, tmp_path: Path) -> None:
    data = tmp_path / "zh.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in CHINESE), encoding="utf-8")
    base = write_spec()
    text = base.read_text(encoding="utf-8")
    head = text[:text.index("[[scenes]]")].replace(
        next(line for line in text.splitlines() if line.startswith("paths")), f'paths = ["{data.as_posix()}"]')
    base.write_text(head + SCENES.format(), encoding="utf-8")
    spec = load_spec(base, registry)
    Runner(spec, registry, quiet=True).apply(until="scenes")
    scenes = read_output(tmp_path / "runs" / "t" / "scenes")
    assert dict(zip(scenes["dialogue_id"], scenes["scenes"].to_list(), strict=True)) == {
        "zh1": ["hotel"], "zh2": ["food"]}
