"""Spec loading: every error names the file, the line and the dotted key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dialinsight_engine.errors import PluginError, SpecError
from dialinsight_engine.hookspecs import hookimpl
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.spec import Spec, load_spec
from dialinsight_engine.spec.locate import key_lines

from conftest import REPO


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_valid_spec_loads_with_paths_relative_to_the_spec(write_spec, tmp_path):
    spec = load_spec(write_spec())
    assert spec.project.name == "t"
    assert [s.name for s in spec.scenes] == ["property_search", "viewing_booking"]
    assert spec.tasks[0].templates()[1].startswith("{{ business }}")
    assert spec.resolve_path("data/x.jsonl") == tmp_path / "data" / "x.jsonl"
    assert spec.resolve_path("@examples/realestate_dialogues.jsonl").exists()


def test_malformed_toml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[project]\nname = "x"\nseed = = 3\n')
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert err.value.line == 3
    assert str(path) in err.value.render() and ":3:" in err.value.render()


def test_unknown_key_gets_did_you_mean_and_line(write_spec):
    path = write_spec('\n[sampling]\nnn = 5\n')
    text = path.read_text().replace("weight = 2.0\nkeywords", "wieght = 2.0\nkeywords", 1)
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = err.value.render()
    assert f":{_line_of(path, 'wieght')}: [scenes[0].wieght] unknown key 'wieght': did you mean 'weight'?" in message
    assert f":{_line_of(path, 'nn = 5')}: [sampling.nn] unknown key 'nn'" in message


def test_wrong_type_names_key_and_value(write_spec):
    path = write_spec()
    path.write_text(path.read_text().replace("seed = 3", 'seed = "three"'))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert err.value.key == "project.seed"
    assert err.value.line == _line_of(path, 'seed = "three"')
    assert "'three'" in err.value.render()


def test_missing_required_section_and_bad_regex(write_spec):
    path = write_spec()
    path.write_text(path.read_text().replace('keywords = ["visit", "viewing"]', 'regex = ["(unclosed"]'))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "does not compile" in err.value.render() and "scenes[1].regex" in err.value.render()
    path.write_text("[project]\nname = 'x'\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "[data] required key is missing" in err.value.render()


def test_task_naming_unknown_scene_is_rejected(write_spec):
    path = write_spec()
    path.write_text(path.read_text().replace('scenes = ["property_search"]', 'scenes = ["property_serch"]'))
    with pytest.raises(SpecError, match="unknown scenes"):
        load_spec(path)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.toml")


# -- plugin names and plugin-owned sections -----------------------------------------------------
def _registry():
    from pydantic import BaseModel, ConfigDict

    class LengthConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        min_words: int = 1

    class LengthMetric:
        name = "length"
        Config = LengthConfig

    class Shout:
        name = "shout"

    class Plugin:
        @staticmethod
        @hookimpl
        def register_metrics():
            return [LengthMetric]

        @staticmethod
        @hookimpl
        def register_operators():
            return [Shout]

    return build_registry(extra_plugins=[Plugin])


def test_unknown_plugin_names_get_did_you_mean(write_spec):
    path = write_spec("""
        [quality.metrics.lenght]
        weight = 1.0

        [evolution]
        rounds = 1
        [[evolution.operators]]
        name = "shuot"
        """)
    with pytest.raises(PluginError) as err:
        load_spec(path, _registry())
    message = err.value.render()
    assert f":{_line_of(path, 'quality.metrics.lenght')}: [quality.metrics.lenght] unknown metric 'lenght' (did you mean 'length'?)" in message
    assert f":{_line_of(path, 'shuot')}: [evolution.operators[0].name] unknown operator 'shuot' (did you mean 'shout'?)" in message


def test_plugin_section_validated_by_the_plugins_own_model(write_spec):
    path = write_spec("""
        [quality.metrics.length]
        weight = 1.0
        params = { min_words = "many" }
        """)
    with pytest.raises(PluginError) as err:
        load_spec(path, _registry())
    assert "quality.metrics.length.params.min_words" in err.value.render()
    assert err.value.line == _line_of(path, "min_words")
    ok = write_spec("""
        [quality.metrics.length]
        params = { min_words = 3 }
        """, filename="ok.toml")
    assert load_spec(ok, _registry()).quality.metrics["length"].params == {"min_words": 3}


def test_key_lines_follow_arrays_of_tables():
    text = '[project]\nname = "x"\n[[tasks]]\nname = "a"\n[[tasks]]\nname = "b"\n[tasks.output_schema]\ntype = "object"\n'
    lines = key_lines(text)
    assert lines[("tasks", 1, "name")] == 6
    assert lines[("tasks", 1, "output_schema", "type")] == 8


def test_json_schema_of_spec_is_valid_json():
    schema = Spec.model_json_schema()
    assert {"project", "data", "scenes", "tasks", "quality", "backends"} <= set(schema["properties"])
    json.dumps(schema)


def test_example_specs_parse_without_plugin_checks():
    for spec in sorted((REPO / "specs").glob("*.toml")):
        loaded = load_spec(spec, check_plugins=False)
        assert loaded.tasks and loaded.scenes
