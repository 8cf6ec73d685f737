"""`dialengine schema`: the spec's JSON Schema with every plugin's own keys, as an editor
(Taplo) uses it: the shipped specs validate against it, typos and keys of the wrong plugin
do not, internal fields are hidden, and the shipped schema file is the generated one."""

from __future__ import annotations

import json
import tomllib

import jsonschema
import pytest

from conftest import REPO, dialengine

BUILTINS = "core,generation,quality,training"
SHIPPED = REPO / "specs" / "spec.schema.json"


@pytest.fixture(scope="module")
def schema() -> dict:
    result = dialengine("schema", plugins=BUILTINS)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def errors(schema: dict, doc: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_header_and_internal_fields(schema) -> None:
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["$id"].startswith("urn:dialinsight-engine:spec:")
    assert "source" not in schema["properties"] and "base_dir" not in schema["properties"]
    assert "source" not in schema.get("required", [])


def test_shipped_specs_validate_and_carry_the_schema_line(schema) -> None:
    for path in sorted((REPO / "specs").glob("*.toml")):
        text = path.read_text(encoding="utf-8")
        assert text.startswith("#:schema ./spec.schema.json\n"), path
        assert errors(schema, tomllib.loads(text)) == [], path


def test_shipped_schema_file_is_up_to_date(schema) -> None:
    assert json.loads(SHIPPED.read_text(encoding="utf-8")) == schema, \
        "regenerate: DIALENGINE_PLUGINS=core,generation,quality,training dialengine schema > specs/spec.schema.json"


def _spec(**sections) -> dict:
    doc = tomllib.loads((REPO / "specs" / "realestate.toml").read_text(encoding="utf-8"))
    doc.update(sections)
    return doc


def test_trainer_keys_follow_the_chosen_trainer(schema) -> None:
    assert errors(schema, _spec(train={"trainer": "trl_sft", "packing": True, "r": 4})) == []
    assert errors(schema, _spec(train={"r": 4, "learning_rate": 1e-3})) == []  # default trainer peft_lora
    assert errors(schema, _spec(train={"packing": True}))  # a trl_sft key under peft_lora
    assert errors(schema, _spec(train={"trainer": "trl_sft", "learning_rte": 1e-3}))  # typo
    assert errors(schema, _spec(train={"trainer": "no_such_trainer"}))
    train = schema["$defs"]["TrainSpec"]
    assert "trl_sft" in train["properties"]["trainer"]["enum"]


def test_plugin_tables_get_their_configs(schema) -> None:
    good = _spec(backends={"default": {"plugin": "llamacpp", "batch_size": 4}})
    backend = schema["$defs"]["BackendSpec"]
    assert "llamacpp" in backend["properties"]["plugin"]["enum"]
    assert errors(schema, good) == []
    assert errors(schema, _spec(backends={"default": {"plugin": "llamacpp", "batch_sise": 4}}))
    # metric params by the table's name, and by `plugin`
    metrics = {"data_redundancy": {"params": {"threshold": 0.8}}}
    assert errors(schema, _spec(quality={"metrics": metrics})) == []
    assert errors(schema, _spec(quality={"metrics": {"data_redundancy": {"params": {"treshold": 0.8}}}}))
    aliased = {"dedup2": {"plugin": "data_redundancy", "params": {"treshold": 0.8}}}
    assert errors(schema, _spec(quality={"metrics": aliased}))
    metric_names = schema["$defs"]["QualitySpec"]["properties"]["metrics"]["properties"]
    assert {"prompt_complexity", "data_redundancy"} <= set(metric_names)
    # evaluators: their own keys beside plugin/guard
    ev = {"evaluators": {"requirements_f1": {"task": "extract_requirements", "guard": False}}}
    assert errors(schema, _spec(train={}, eval=ev)) == []
    bad = {"evaluators": {"requirements_f1": {"tsak": "extract_requirements"}}}
    assert errors(schema, _spec(train={}, eval=bad))
