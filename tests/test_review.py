"""Manual screening: export for a person, import their decisions, apply them, resume."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dialinsight_engine import records as R
from dialinsight_engine.cli import cli
from dialinsight_engine.errors import DataError
from dialinsight_engine.plugins import build_registry, get_registry
from dialinsight_engine.run import Runner
from dialinsight_engine.run.dataset import read_output
from dialinsight_engine.spec import load_spec
from dialinsight_engine.stages.review import decisions_path, export_review, import_review

get_registry().add_commands(cli)  # what `dialengine` does at start-up


def _spec(write_spec, mode: str, name: str = "rv") -> Path:  # type: ignore[no-untyped-def]
    path = write_spec("\n[evolution]\nrounds = 0\n", name=name)
    path.write_text(f'review = "{mode}"\n' + path.read_text())
    return path


def _apply(path: Path, until: str = "review") -> Runner:
    registry = build_registry()
    runner = Runner(load_spec(path, registry), registry, quiet=True)
    runner.apply(until=until)
    return runner


def _decide(export_csv: Path, out: Path, choices: dict[int, tuple[str, str]]) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(export_csv.read_text(), newline="")))
    for index, (decision, edited) in choices.items():
        rows[index]["decision"], rows[index]["edited_instruction"] = decision, edited
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_required_review_stops_the_run_with_the_commands_to_use(write_spec) -> None:  # type: ignore[no-untyped-def]
    path = _spec(write_spec, "required")
    result = CliRunner().invoke(cli, ["apply", str(path)])
    assert result.exit_code == 3, result.output
    assert "dialengine review export" in result.output and "dialengine review import" in result.output


def test_export_import_and_apply_decisions(write_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _spec(write_spec, "optional")
    runner = _apply(path, until="evolve")
    paths = export_review(runner.run_dir)
    exported = list(csv.DictReader(io.StringIO(paths["csv"].read_text(), newline="")))
    assert {"instruction_id", "decision", "edited_instruction", "operator", "round", "parent_id",
            "parent_instruction", "chars", "reasons"} <= set(exported[0])
    assert len(paths["jsonl"].read_text().splitlines()) == len(exported)
    assert json.loads(paths["label_studio"].read_text())[0]["data"]["instruction_id"] == exported[0]["instruction_id"]

    edited = "List the customer's needs as bullet points.\n{dialogue}"
    rows = _decide(paths["csv"], tmp_path / "decisions.csv",
                   {0: ("accept", ""), 1: ("reject", ""), 2: ("edit", edited)})
    counts = import_review(tmp_path / "decisions.csv", runner.run_dir)
    assert counts["accept"] == counts["reject"] == counts["edit"] == 1 and counts["blank"] == len(rows) - 3

    registry = build_registry()
    spec = load_spec(path, registry)
    plan = {i.stage.name: i for i in Runner(spec, registry).plan(until="review")}
    assert plan["review"].action == "run" and plan["evolve"].action == "skip"
    out = read_output(_apply(path).run_dir / "review").to_dicts()
    by_id = {r[R.INSTRUCTION_ID]: r for r in out}
    accepted, rejected, changed = (by_id[rows[i]["instruction_id"]] for i in range(3))
    assert accepted["kept"] and accepted["review_decision"] == "accept"
    assert not rejected["kept"] and "review_rejected" in rejected["reasons"]
    assert changed["instruction"] == edited and changed["kept"]
    assert changed["prompt"] == R.compose_prompt(edited, changed["dialogue_text"])
    assert sum(1 for r in out if r["review_decision"] is None) == len(out) - 3
    # nothing new imported: the review stage is up to date
    plan = {i.stage.name: i for i in Runner(spec, registry).plan(until="review")}
    assert plan["review"].action == "skip"


def test_review_commands_infer_the_run_from_the_exported_file(write_spec) -> None:  # type: ignore[no-untyped-def]
    path = _spec(write_spec, "optional", name="cmd")
    runner = _apply(path, until="evolve")
    cli_runner = CliRunner()
    result = cli_runner.invoke(cli, ["review", "export", str(path)])
    assert result.exit_code == 0, result.output
    export_csv = runner.run_dir / "review" / "export" / "review.csv"
    _decide(export_csv, export_csv, {0: ("reject", "")})
    result = cli_runner.invoke(cli, ["review", "import", str(export_csv)])
    assert result.exit_code == 0, result.output
    stored = [json.loads(line) for line in decisions_path(runner.run_dir).read_text().splitlines()]
    assert [d["decision"] for d in stored] == ["reject"]


def test_bad_decisions_name_the_file_and_line(write_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _spec(write_spec, "optional", name="bad")
    runner = _apply(path, until="evolve")
    paths = export_review(runner.run_dir)
    rows = _decide(paths["csv"], tmp_path / "d.csv", {1: ("maybe", "")})
    with pytest.raises(DataError, match="'maybe'") as err:
        import_review(tmp_path / "d.csv", runner.run_dir)
    assert err.value.file == str(tmp_path / "d.csv") and err.value.line is not None
    # the line where that record starts (instructions span several lines)
    assert (tmp_path / "d.csv").read_text().splitlines()[err.value.line - 1].startswith(rows[1]["instruction_id"])
    _decide(paths["csv"], tmp_path / "e.csv", {0: ("edit", "")})
    with pytest.raises(DataError, match="edited_instruction"):
        import_review(tmp_path / "e.csv", runner.run_dir)
    assert not decisions_path(runner.run_dir).exists()


def test_label_studio_export_can_be_imported(write_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _spec(write_spec, "optional", name="ls")
    runner = _apply(path, until="evolve")
    tasks = json.loads(export_review(runner.run_dir)["label_studio"].read_text())
    tasks[0]["annotations"] = [{"result": [
        {"from_name": "decision", "type": "choices", "value": {"choices": ["edit"]}},
        {"from_name": "edited_instruction", "type": "textarea", "value": {"text": ["Say hi.\n{dialogue}"]}},
    ]}]
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    assert import_review(tmp_path / "ls.json", runner.run_dir)["edit"] == 1
    [stored] = [json.loads(line) for line in decisions_path(runner.run_dir).read_text().splitlines()]
    assert stored["instruction"] == "Say hi.\n{dialogue}"
