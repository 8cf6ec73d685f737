"""Reading a run folder: stages come in the order their manifests record, so a plugin
stage's place is known without its class; manifests written before `order` still sort."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from dialinsight_engine.report.runinfo import manifests, stage_dirs
from dialinsight_engine.run.manifest import Manifest


def _write(run: Path, stage: str, order: int | None) -> None:
    manifest = Manifest(stage=stage, fingerprint="f", config_hash="c", config_keys=[], inputs={},
                        plugin_versions={}, extra={}, rows_in=0, rows_out=1, rows_kept=None,
                        output_hash="h", order=order)
    data = asdict(manifest)
    if order is None:  # as written before manifests carried the order
        del data["order"]
    (run / stage).mkdir(parents=True)
    (run / stage / "manifest.json").write_text(json.dumps(data))


def test_stages_sort_by_the_order_their_manifests_record(tmp_path: Path) -> None:
    # a plugin stage at 35 goes between seeds (30) and evolve (40), whatever its name
    for stage, order in [("evolve", 40), ("aaa_plugin", 35), ("seeds", 30), ("ingest", 10)]:
        _write(tmp_path, stage, order)
    assert [m.stage for m in manifests(tmp_path)] == ["ingest", "seeds", "aaa_plugin", "evolve"]
    assert [name for name, _ in stage_dirs(tmp_path)] == ["ingest", "seeds", "aaa_plugin", "evolve"]


def test_old_manifests_without_order_fall_back_to_the_built_in_order(tmp_path: Path) -> None:
    for stage in ("report", "ingest", "zz_plugin", "label"):
        _write(tmp_path, stage, None)
    loaded = manifests(tmp_path)
    assert all(m.order is None for m in loaded)
    # built-ins in pipeline order, an unknown stage last
    assert [m.stage for m in loaded] == ["ingest", "label", "report", "zz_plugin"]
