"""`dialengine validate` checks before a run: templates rendered against a sample record,
declared evaluators (keys in the schema, known normalisers, truth paths resolving on a sample)
and reader options whatever the format. Each bad input exits 2 naming file, line and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dialinsight_engine.errors import SpecError
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.spec import load_spec
from dialinsight_engine.spec.checks import require_truth

from conftest import EXAMPLES, dialengine

HELDOUT = (EXAMPLES / "realestate_heldout.jsonl").as_posix()

DECLARED = """
[[tasks]]
name = "extract"
template = "Extract the requirements as JSON.\\n{{{{ dialogue }}}}"
[tasks.output_schema]
type = "object"
[tasks.output_schema.properties.area]
type = "string"
[tasks.output_schema.properties.number_of_beds]
type = "string"

[tasks.eval]
truth = "{truth}"
keys = {keys}
normalize = {normalize}

[eval]
domain_data = ["{heldout}"]
"""


def _declared(write_spec, truth: str = "requirements", keys: str = '["area", "number_of_beds"]',
              normalize: str = '["lower", "numbers"]', heldout: str = HELDOUT) -> Path:
    return write_spec(DECLARED.format(truth=truth, keys=keys, normalize=normalize, heldout=heldout))


def _validate(spec: Path):  # type: ignore[no-untyped-def]
    """`dialengine validate SPEC`; its messages with line wraps undone."""
    out = dialengine("validate", str(spec), env={"COLUMNS": "4000"})
    out.stderr = " ".join(out.stderr.split())
    return out


def _line(path: Path, starts: str, after: int = 0) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, t in enumerate(lines, 1) if n > after and t.startswith(starts))


def test_a_valid_declared_evaluator_passes(write_spec) -> None:
    out = _validate(_declared(write_spec))
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stderr and "warning" not in out.stderr


def test_key_not_in_schema(write_spec) -> None:
    spec = _declared(write_spec, keys='["area", "number_of_bedz"]')
    out = _validate(spec)
    assert out.returncode == 2
    assert f"{spec}:{_line(spec, 'keys =')}: [tasks[2].eval.keys] key 'number_of_bedz'" in out.stderr
    assert "did you mean 'number_of_beds'" in out.stderr


def test_unknown_normaliser(write_spec) -> None:
    spec = _declared(write_spec, normalize='["lower", "numbrs"]')
    out = _validate(spec)
    assert out.returncode == 2
    assert f"{spec}:{_line(spec, 'normalize =')}: [tasks[2].eval.normalize" in out.stderr
    assert "unknown normaliser 'numbrs'" in out.stderr and "did you mean 'numbers'" in out.stderr


def test_truth_path_that_never_resolves(write_spec) -> None:
    spec = _declared(write_spec, truth="state.Homes_1")
    out = _validate(spec)
    assert out.returncode == 2
    assert f"{spec}:{_line(spec, 'truth =')}: [tasks[2].eval.truth] truth path 'state.Homes_1' resolves in none" \
        in out.stderr
    assert "requirements" in out.stderr  # what the records do have


def test_truth_path_missing_in_most_records_warns(write_spec, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in Path(HELDOUT).read_text().splitlines()][:10]
    for i, row in enumerate(rows):
        row["truth"] = {"requirements": row["truth"]["requirements"]} if i < 2 else {"other": 1}
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = _declared(write_spec, heldout=data.as_posix())
    out = _validate(spec)
    assert out.returncode == 0, out.stderr
    assert "warning" in out.stderr and "missing in 8 of 10 sampled records" in out.stderr


def test_unknown_template_variable_names_its_line(write_spec) -> None:
    spec = write_spec('''
[[tasks]]
name = "extract"
template = [
  """First template.
{{ dialogue }}""",
  """Second template, line one.
For {{ custmer_name }} only.
{{ dialogue }}""",
]
''')
    out = _validate(spec)
    assert out.returncode == 2
    line = _line(spec, "For {{ custmer_name }}")
    assert f"{spec}:{line}: [tasks[2].template[1]] template uses unknown variable 'custmer_name'" in out.stderr


def test_unknown_variable_in_a_template_file(write_spec, tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("Line one\nLine two {{ buisness }}\n{{ dialogue }}\n", encoding="utf-8")
    spec = write_spec('\n[[tasks]]\nname = "from_file"\ntemplate_file = "t.j2"\n')
    out = _validate(spec)
    assert out.returncode == 2
    assert f"{tmp_path / 't.j2'}:2: [tasks[2].template_file] template uses unknown variable 'buisness'" in out.stderr
    assert "did you mean 'business'" in out.stderr


def test_unknown_reader_option_fails_whatever_the_format(write_spec) -> None:
    spec = write_spec()
    text = spec.read_text(encoding="utf-8").replace('on_error = "fail"', 'on_error = "fail"\noptions = { delimter = "," }')
    spec.write_text(text, encoding="utf-8")
    out = _validate(spec)
    assert out.returncode == 2
    assert f"{spec}:{_line(spec, 'options =')}: [data.options.delimter] unknown option 'delimter' for reader 'jsonl'" \
        in out.stderr


def test_key_whose_truth_path_never_resolves(write_spec) -> None:
    # the answer key exists in the schema, but the slot it reads is misspelt: every answer
    # would count as a false positive
    spec = _declared(write_spec, keys='{ area = "area", number_of_beds = "number_of_bedz" }')
    out = _validate(spec)
    assert out.returncode == 2
    assert (f"{spec}:{_line(spec, 'keys =')}: [tasks[2].eval.keys.number_of_beds] key 'number_of_beds' reads "
            "truth path 'requirements.number_of_bedz', stated in none of") in out.stderr
    assert "at requirements the records have: " in out.stderr and "number_of_beds" in out.stderr


def test_key_paths_that_ask_what_is_stated_are_not_checked(write_spec) -> None:
    spec = _declared(write_spec, keys='{ area = "area", number_of_beds = "no_such_slot?" }')
    assert _validate(spec).returncode == 0


def test_eval_stage_stops_on_a_truth_path_that_never_resolves(write_spec) -> None:
    # `apply` need not follow `validate`: the eval stage checks the held-out records it read
    truths = [json.loads(line)["truth"] for line in Path(HELDOUT).read_text().splitlines()]
    good = load_spec(_declared(write_spec), build_registry())
    require_truth(good, truths, "the held-out dialogues")
    spec_path = _declared(write_spec, truth="state.Homes_1")
    with pytest.raises(SpecError) as err:
        require_truth(load_spec(spec_path, build_registry()), truths, "the held-out dialogues")
    assert err.value.exit_code == 2
    assert err.value.render().startswith(
        f"{spec_path}:{_line(spec_path, 'truth =')}: [tasks[2].eval.truth] truth path 'state.Homes_1' resolves in "
        f"none of the {len(truths)} records of the held-out dialogues; at truth the records have: requirements")
