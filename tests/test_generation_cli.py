"""`dialengine apply` end to end on the embedded model: seeds -> evolve -> sample -> label."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from dialinsight_engine import records as R
from dialinsight_engine.cli import cli
from dialinsight_engine.run.dataset import read_output

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (the `llm` extra)")
pytestmark = pytest.mark.model

EXAMPLES = Path(__file__).resolve().parents[1] / "python" / "dialinsight_engine" / "data"

GENERATION = """
[[tasks]]
name = "detect_visit"
scenes = ["viewing_booking", "property_search"]
template = "Did the customer book a visit?\\n{{ dialogue }}\\nAnswer as JSON with visit_booked (true or false)."
[tasks.output_schema]
type = "object"
required = ["visit_booked"]
[tasks.output_schema.properties.visit_booked]
type = "boolean"

[evolution]
rounds = 1
max_tokens = 32

[[evolution.operators]]
name = "add_constraints"

[[evolution.operators]]
name = "increase_reasoning"

[sampling]
n = 4
seed = 5

[labels]
max_tokens = 24

[backends.default]
plugin = "llamacpp"
n_ctx = 2048
"""


def test_apply_evolves_samples_and_labels_then_resumes(write_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "dialogues.jsonl"
    data.write_text("\n".join((EXAMPLES / "realestate_dialogues.jsonl").read_text().splitlines()[:3]) + "\n")
    spec = write_spec(GENERATION, data=data, name="e2e")
    runner = CliRunner()
    result = runner.invoke(cli, ["apply", str(spec), "--until", "label"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "e2e"

    evolved = read_output(run_dir / "evolve")
    children = evolved.filter(pl.col(R.ROUND) == 1)
    assert children.height == evolved.filter(pl.col(R.ROUND) == 0).height
    assert set(children[R.OPERATOR]) <= {"add_constraints", "increase_reasoning"}
    assert children[R.PARENT_ID].is_in(evolved[R.INSTRUCTION_ID].implode()).all()

    labels = read_output(run_dir / "label")
    assert labels.height == 4
    assert {R.RESPONSE, "prompt_tokens", "completion_tokens", "finish_reason", "attempts",
            "label_error"} <= set(labels.columns)
    # wall-clock figures live beside the data, not in it (the data's hash must not move)
    assert "latency_s" not in labels.columns
    timings = pl.read_parquet(run_dir / "label" / "timings.parquet")
    assert timings["row"].to_list() == list(range(4)) and (timings["latency_s"] > 0).all()
    for row in labels.iter_rows(named=True):
        assert row[R.KEPT] == (row[R.RESPONSE] is not None)
        if row[R.KEPT]:
            assert row["completion_tokens"] > 0 and row["attempts"] >= 1
            if row[R.OUTPUT_SCHEMA]:
                assert isinstance(json.loads(row[R.RESPONSE])["visit_booked"], bool)
        else:
            assert row["label_error"] and row[R.REASONS]
    assert labels[R.KEPT].sum() >= 3
    report = json.loads((run_dir / "sample" / "sampling_report.json").read_text())
    assert report["achieved"] == 4

    # a rerun does nothing; a forced label rerun is served by the cache
    again = runner.invoke(cli, ["apply", str(spec), "--until", "label"])
    assert again.exit_code == 0 and "ran nothing" in again.output
    forced = runner.invoke(cli, ["apply", str(spec), "--until", "label", "--force", "label"])
    assert forced.exit_code == 0, forced.output
    stats = json.loads((run_dir / "label" / "manifest.json").read_text())["stats"]
    assert stats["backend"]["default"]["cache_hits"] == stats["backend"]["default"]["unique"]
    assert stats["backend"]["default"]["tokens"] == 0
    assert read_output(run_dir / "label")[R.RESPONSE].equals(labels[R.RESPONSE])
