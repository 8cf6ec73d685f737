"""Hostile but fair specs (issue 13): each minimised crashing or wrongly accepted input is a
regression case. Every one must end in a `UserError` (exit 2) that names `file:line: [key]`."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialinsight_engine.errors import SpecError, UserError
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.spec import Spec, load_spec

from conftest import dialengine

JSON_TASK = """
[[tasks]]
name = "extract"
template = "Extract as JSON.\\n{{ dialogue }}"
output_schema = SCHEMA
"""


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _top(write_spec, top: str) -> Path:
    """A spec with `top` inserted before the first table (where top-level keys live)."""
    path = write_spec()
    return _write(path, top + "\n" + path.read_text())


def _replace(write_spec, old: str, new: str) -> Path:
    path = write_spec()
    text = path.read_text()
    assert old in text
    return _write(path, text.replace(old, new, 1))


def _line_of(path: Path, needle: str) -> int:
    text = path.read_bytes().decode("utf-8", errors="replace")
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# (id, build(write_spec) -> path, needle on the expected line, expected key or None, message part)
CASES = [
    ("deep_inline_table", lambda w: w("x = " + "{a=" * 330 + "1" + "}" * 330 + "\n"), "x = {a=", None,
     "nested more than"),
    ("deep_arrays", lambda w: w("x = " + "[" * 500 + "]" * 500 + "\n"), "x = [[[", None, "nested more than"),
    ("deep_dotted_key", lambda w: w("a" + ".a" * 100 + " = 1\n"), "a.a.a", "tasks[1].a", "nested more than"),
    ("unknown_dotted_key", lambda w: _top(w, "foo.bar = 1"), "foo.bar", "foo", "unknown key 'foo'"),
    ("deep_header", lambda w: w("[t.t.t]\nx = 1\n"), "[t.t.t]", "t", "unknown key 't'"),
    ("truncated_string", lambda w: _write(w(), w().read_text() + 'x = "never closed'), 'never closed', None,
     "invalid TOML"),
    ("truncated_array", lambda w: _write(w(), w().read_text() + "x = [1, 2,"), "x = [1, 2,", None, "ends too early"),
    ("scene_weight_inf", lambda w: _replace(w, "weight = 2.0\nkeywords", "weight = inf\nkeywords"), "weight = inf",
     "scenes[0].weight", "inf is not allowed"),
    ("task_weight_inf", lambda w: w("weight = inf\n"), "weight = inf", "tasks[1].weight", "inf is not allowed"),
    ("task_weights_negative", lambda w: w("[sampling]\ntask_weights = { x = -5.0 }\n"), "task_weights",
     "sampling.task_weights.x", "greater than or equal to 0"),
    ("task_weights_nan", lambda w: w("[sampling]\ntask_weights = { x = nan }\n"), "task_weights",
     "sampling.task_weights.x", "nan is not allowed"),
    ("min_score_nan", lambda w: w("[quality]\nmin_score = nan\n"), "min_score", "quality.min_score",
     "nan is not allowed"),
    ("metric_min_nan", lambda w: w("[quality.metrics.prompt_complexity]\nmin = nan\n"), "min = nan",
     "quality.metrics.prompt_complexity.min", "nan is not allowed"),
    ("learning_rate_inf", lambda w: w("[train]\nlearning_rate = inf\n"), "learning_rate", "train.learning_rate",
     "inf is not allowed"),
    ("temperature_inf", lambda w: w("[labels]\ntemperature = inf\n"), "temperature", "labels.temperature",
     "inf is not allowed"),
    ("temperature_negative_inf", lambda w: w("[evolution]\ntemperature = -inf\n"), "temperature",
     "evolution.temperature", "-inf is not allowed"),
    ("seed_beyond_64_bits", lambda w: _replace(w, "seed = 3", f"seed = {2**64}"), "seed =", "project.seed",
     "64-bit"),
    ("min_turns_bool", lambda w: _replace(w, "min_turns = 2", "min_turns = true"), "min_turns", "data.min_turns",
     "valid integer"),
    ("weight_bool", lambda w: w("weight = true\n"), "weight = true", "tasks[1].weight", "valid number"),
    ("seed_string", lambda w: _replace(w, "seed = 3", 'seed = "3"'), "seed =", "project.seed", "valid integer"),
    ("schema_bad_type", lambda w: w(JSON_TASK.replace("SCHEMA", '{ type = "strnig" }')), "strnig",
     "tasks[2].output_schema", "not a valid JSON Schema"),
    ("schema_empty_enum", lambda w: w(JSON_TASK.replace("SCHEMA", '{ type = "object", properties = { a = { enum = [] } } }')),
     "enum = []", "tasks[2].output_schema", "enum"),
    ("schema_required_not_list", lambda w: w(JSON_TASK.replace("SCHEMA", '{ type = "object", required = "a" }')),
     "required", "tasks[2].output_schema", "not a valid JSON Schema"),
    ("internal_source", lambda w: _top(w, 'source = "/etc/passwd"'), "source", "source", "unknown key 'source'"),
    ("internal_base_dir", lambda w: _top(w, 'base_dir = "/"'), "base_dir", "base_dir", "unknown key 'base_dir'"),
    ("name_dotdot", lambda w: w(name=".."), 'name = ".."', "project.name", "should match pattern"),
    ("name_dot", lambda w: w(name="."), 'name = "."', "project.name", "should match pattern"),
    ("name_slash", lambda w: w(name="a/b"), 'name = "a/b"', "project.name", "should match pattern"),
    ("examples_escape", lambda w: w(data="@examples/../../../../etc/passwd"), "@examples", "data.paths[0]",
     "leaves the packaged examples folder"),
    ("eval_examples_escape", lambda w: w('[eval]\ndomain_data = ["@examples/x/../../y.jsonl"]\n'), "domain_data",
     "eval.domain_data[0]", "leaves the packaged examples folder"),
]


@pytest.mark.parametrize(("build", "needle", "key", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_spec_is_a_user_error_with_file_line_and_key(write_spec, build, needle, key, message):
    path = build(write_spec)
    with pytest.raises(UserError) as info:
        load_spec(path, build_registry())
    error = info.value
    line = _line_of(path, needle)
    assert error.line == line, error.render()
    assert message in error.message, error.render()
    if key is not None:
        assert error.key == key, error.render()
        assert error.render().startswith(f"{path}:{line}: [{key}] ")
    else:
        assert error.render().startswith(f"{path}:{line}: ")
    assert error.render().splitlines()[0].count(f"{path}:") == 1  # the location is never printed twice


def test_non_utf8_spec_names_the_line_not_a_byte_offset(write_spec):
    path = write_spec()
    lines = path.read_bytes().split(b"\n")
    lines[5] = lines[5] + b" # caf\xe9"
    _write(path, b"\n".join(lines))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.line == 6 and "not UTF-8: byte 0xe9" in info.value.message


def test_unknown_backend_name_has_its_line_and_survives_markup(write_spec):
    path = write_spec("""
        [labels]
        backend = "defualt"

        [backends.default]
        plugin = "llamacpp"
        """)
    result = dialengine("validate", str(path), plugins="core,generation")
    assert result.returncode == 2, result.stderr
    line = _line_of(path, 'backend = "defualt"')
    assert (f"{path}:{line}: [labels.backend] backend 'defualt' is not declared as [backends.defualt] "
            "(did you mean 'default'?)") in result.stderr


def test_several_problems_each_get_one_location(write_spec):
    path = write_spec("""
        [sampling]
        nn = 5
        task_weights = { x = -1.0 }
        """)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    text = info.value.render()
    first, second = _line_of(path, "nn = 5"), _line_of(path, "task_weights")
    assert text.startswith(f"{path}:{first}: [sampling.nn] unknown key 'nn'")
    assert f"\n  {path}:{second}: [sampling.task_weights.x] " in text
    assert text.count(f"{path}:{first}:") == 1


def test_plan_prints_section_names_in_brackets(write_spec):
    result = dialengine("plan", str(write_spec()), plugins=None)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "no [train] section in the spec" in out and "no  section" not in out


def test_internal_fields_are_not_in_the_schema_and_still_set_by_the_loader(write_spec, tmp_path):
    props = Spec.model_json_schema()["properties"]
    assert "source" not in props and "base_dir" not in props
    spec = load_spec(write_spec())
    assert spec.source == tmp_path / "spec.toml" and spec.base_dir == tmp_path.resolve()
    assert "source" not in spec.model_dump() and "base_dir" not in spec.model_dump()


def test_runs_dir_is_relative_to_the_spec_folder_and_validate_says_so(write_spec, tmp_path):
    path = _replace(write_spec, f'runs_dir = "{(tmp_path / "runs").as_posix()}"', 'runs_dir = "out/runs"')
    spec = load_spec(path)
    assert spec.run_dir() == (tmp_path / "out" / "runs" / "t").resolve()
    result = dialengine("validate", str(path), cwd=tmp_path.parent)
    assert result.returncode == 0, result.stderr
    assert f"runs go to {(tmp_path / 'out' / 'runs' / 't').resolve()}" in result.stderr
    assert "relative to the spec's folder" in result.stderr


def test_run_folder_that_resolves_outside_runs_dir_is_refused(write_spec, tmp_path):
    spec = load_spec(write_spec())
    (tmp_path / "runs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "t").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SpecError, match="outside runs_dir"):
        spec.run_dir()


def test_packaged_examples_resolve_inside_the_package(write_spec):
    spec = load_spec(write_spec())
    assert spec.resolve_path("@examples/realestate_dialogues.jsonl").is_file()
    with pytest.raises(SpecError, match="leaves the packaged examples folder"):
        spec.resolve_path("@examples/../../../etc/passwd")


def test_valid_json_schemas_and_finite_values_still_pass(write_spec):
    path = write_spec(JSON_TASK.replace(
        "SCHEMA", '{ type = "object", properties = { beds = { type = "integer", minimum = 0 }, '
                  'area = { enum = ["north", "south"] } }, required = ["beds"] }') + """
        [sampling]
        task_weights = { extract = 0.0, other = 2 }

        [quality]
        min_score = -1.5
        """)
    spec = load_spec(path, build_registry())
    assert spec.sampling.task_weights == {"extract": 0.0, "other": 2.0}
    assert spec.quality.min_score == -1.5
