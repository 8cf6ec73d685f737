"""Weighted random sampling: exact quotas, shortfalls, reproducibility, quality options."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from dialinsight_engine import records as R
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.run import Runner
from dialinsight_engine.run.context import StageContext
from dialinsight_engine.run.dataset import read_output, write_partition
from dialinsight_engine.spec import load_spec
from dialinsight_engine.stages.sample import SampleStage, apportion, largest_remainder


def test_largest_remainder_is_exact_and_proportional() -> None:
    q = largest_remainder(10, {("a", "x"): 1.0, ("b", "x"): 1.0, ("c", "x"): 1.0})
    assert sum(q.values()) == 10 and sorted(q.values()) == [3, 3, 4]
    assert largest_remainder(14, {("a", "x"): 4, ("b", "x"): 2, ("c", "x"): 1}) == {
        ("a", "x"): 8, ("b", "x"): 4, ("c", "x"): 2}
    assert largest_remainder(0, {("a", "x"): 1}) == {("a", "x"): 0}


def test_apportion_moves_a_shortfall_to_cells_with_rows() -> None:
    weights = {("a", "x"): 2.0, ("b", "x"): 1.0, ("c", "x"): 1.0}
    capped = apportion(12, weights, {("a", "x"): 2, ("b", "x"): 10, ("c", "x"): 10}, redistribute=True)
    assert capped == {("a", "x"): 2, ("b", "x"): 5, ("c", "x"): 5}
    strict = apportion(12, weights, {("a", "x"): 2, ("b", "x"): 10, ("c", "x"): 10}, redistribute=False)
    assert strict == {("a", "x"): 2, ("b", "x"): 3, ("c", "x"): 3}


SAMPLING = """
[sampling]
n = {n}
seed = {seed}
by = "{by}"
{extra}
"""


def _sample(write_spec, name: str, n: int = 14, seed: int = 1, by: str = "scene_task", extra: str = "") -> tuple[pl.DataFrame, dict]:  # type: ignore[no-untyped-def]
    registry = build_registry()
    spec = load_spec(write_spec(SAMPLING.format(n=n, seed=seed, by=by, extra=extra), name=name,
                                filename=f"{name}.toml"), registry)
    runner = Runner(spec, registry, quiet=True)
    runner.apply(until="sample")
    folder = runner.run_dir / "sample"
    return read_output(folder), json.loads((folder / "sampling_report.json").read_text())


def _cells(df: pl.DataFrame) -> Counter[tuple[str, str]]:
    return Counter((r[R.SCENE], r[R.TASK]) for r in df.filter(pl.col(R.KEPT)).iter_rows(named=True))


def test_sample_meets_scene_times_task_quotas_exactly(write_spec) -> None:  # type: ignore[no-untyped-def]
    out, report = _sample(write_spec, "exact")
    # weights: property_search 2 x extract 2 = 4, property_search x summarise 2, viewing x summarise 1
    assert _cells(out) == {("property_search", "extract_requirements"): 8,
                           ("property_search", "summarise_needs"): 4, ("viewing_booking", "summarise_needs"): 2}
    assert report["achieved"] == 14 and report["total_variation_distance"] == 0.0 and not report["short_cells"]
    unpicked = out.filter(~pl.col(R.KEPT))
    assert unpicked.height > 0 and all(list(rs) == ["not_sampled"] for rs in unpicked[R.REASONS])


def test_sample_is_seeded(write_spec) -> None:  # type: ignore[no-untyped-def]
    a, _ = _sample(write_spec, "a", seed=1)
    b, _ = _sample(write_spec, "b", seed=1)
    c, _ = _sample(write_spec, "c", seed=2)
    ids = [set(df.filter(pl.col(R.KEPT))[R.INSTRUCTION_ID]) for df in (a, b, c)]
    assert ids[0] == ids[1] and ids[0] != ids[2]


def test_short_cells_are_reported_and_redistributed(write_spec) -> None:  # type: ignore[no-untyped-def]
    out, report = _sample(write_spec, "short", n=45)
    cells = {(c["scene"], c["task"]): c for c in report["cells"]}
    viewing = cells[("viewing_booking", "summarise_needs")]
    assert viewing["available"] < viewing["target_n"] and viewing["achieved"] == viewing["available"]
    assert report["short_cells"] and report["total_variation_distance"] > 0
    assert out[R.KEPT].sum() == report["achieved"] == min(45, report["pool"])
    no_move, report2 = _sample(write_spec, "short2", n=45, extra="redistribute = false")
    assert report2["achieved"] < report["achieved"] and no_move[R.KEPT].sum() == report2["achieved"]


def test_by_task_ignores_scene_weights(write_spec) -> None:  # type: ignore[no-untyped-def]
    out, report = _sample(write_spec, "bytask", n=12, by="task")
    per_task = Counter(out.filter(pl.col(R.KEPT))[R.TASK])
    assert per_task == {"extract_requirements": 8, "summarise_needs": 4}
    assert {(c["scene"], c["task"]) for c in report["cells"]} == {("*", "extract_requirements"), ("*", "summarise_needs")}


@pytest.mark.parametrize("mode", ["top", "weighted"])
def test_quality_score_steers_the_draw(write_spec, tmp_path: Path, mode: str) -> None:  # type: ignore[no-untyped-def]
    registry = build_registry()
    spec = load_spec(write_spec(SAMPLING.format(n=10, seed=3, by="none", extra=f'quality = "{mode}"')), registry)
    rows = [{R.INSTRUCTION_ID: f"i{i:02d}", R.SCENE: "s", R.TASK: "t", R.KEPT: True, R.REASONS: [],
             R.QUALITY_SCORE: float(i % 2)} for i in range(40)]
    write_partition(tmp_path / "run" / "assess", 0, pl.DataFrame(rows))
    ctx = StageContext(spec=spec, registry=registry, run_dir=tmp_path / "run", stage="sample",
                       input_stage="assess", log=logging.getLogger("test"))
    out = SampleStage().run(ctx)
    picked = out.filter(pl.col(R.KEPT))
    assert picked.height == 10 and (picked[R.QUALITY_SCORE] == 1.0).all()
