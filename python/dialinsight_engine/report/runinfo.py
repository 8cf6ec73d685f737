"""Reading a finished (or partial) run folder: which stages have outputs, their manifests,
rows, costs and staleness per stage, and their side files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from ..run.dataset import read_output as read_dataset
from ..run.manifest import MANIFEST, Manifest
from ..run.stage import ORDER

#: where a stage goes when its manifest predates the `order` field and it is no built-in
LAST = 1000


def _loaded(run_dir: Path) -> list[tuple[Path, Manifest | None]]:
    """(folder, its manifest or None when unreadable) for every folder holding a manifest
    file, in pipeline order: the order each manifest records (the built-in order for
    manifests written before they recorded it)."""
    folders = sorted(p for p in Path(run_dir).iterdir() if p.is_dir()) if Path(run_dir).is_dir() else []
    found = [(f, Manifest.load(f)) for f in folders if (f / MANIFEST).exists()]

    def position(item: tuple[Path, Manifest | None]) -> tuple[int, str]:
        folder, manifest = item
        if manifest is not None and manifest.order is not None:
            return manifest.order, folder.name
        return ORDER.get(folder.name, LAST), folder.name

    return sorted(found, key=position)


def stage_dirs(run_dir: Path) -> list[tuple[str, Path]]:
    """(stage, folder) for every folder holding a manifest, in pipeline order."""
    return [(folder.name, folder) for folder, _ in _loaded(run_dir)]


def manifests(run_dir: Path) -> list[Manifest]:
    """Every readable stage manifest of the run folder, in pipeline order."""
    return [m for _, m in _loaded(run_dir) if m is not None]


ROWS_SCHEMA = {"stage": pl.String, "rows_in": pl.Int64, "rows_out": pl.Int64, "rows_kept": pl.Int64,
               "cost_s": pl.Float64, "last_run_s": pl.Float64, "status": pl.String}


def stage_rows(run_dir: Path, *, exclude: tuple[str, ...] = ("report",)) -> pl.DataFrame:
    """Rows per stage (stages multiply rows as well as drop them, so this is not a funnel),
    what producing each output cost (`cost_s`), the last run's time (`last_run_s`, small when
    it came from caches) and whether the output is stale after a partial rerun."""
    stale = stale_stages(run_dir)
    rows = [
        {"stage": m.stage, "rows_in": m.rows_in, "rows_out": m.rows_out,
         "rows_kept": m.rows_kept if m.rows_kept is not None else m.rows_out,
         "cost_s": round(m.cost, 2), "last_run_s": round(m.seconds, 2),
         "status": f"stale: {stale[m.stage]}" if m.stage in stale else "current"}
        for m in manifests(run_dir) if m.stage not in exclude
    ]
    return pl.DataFrame(rows, schema=ROWS_SCHEMA)


def stale_stages(run_dir: Path, *, exclude: tuple[str, ...] = ("report",)) -> dict[str, str]:
    """Stages whose output was built from an upstream output that has changed since (a
    partial rerun: `--until`, `--force` of an earlier stage), with why; a stage downstream of
    a stale one is stale too."""
    found = {m.stage: m for m in manifests(run_dir) if m.stage not in exclude}
    stale: dict[str, str] = {}
    for name, manifest in found.items():  # pipeline order: upstream verdicts come first
        for upstream, used_hash in manifest.inputs.items():
            current = found.get(upstream)
            if upstream in stale:
                stale[name] = f"built on stale {upstream}"
            elif current is None:
                stale[name] = f"input {upstream} has no output now"
            elif current.output_hash != used_hash:
                stale[name] = f"{upstream} output changed since it ran"
    return stale

def read_output(run_dir: Path, stage: str) -> pl.DataFrame | None:
    try:
        return read_dataset(Path(run_dir) / stage)
    except pl.exceptions.PolarsError:
        return None


def read_json(run_dir: Path, relpath: str) -> Any:
    path = Path(run_dir) / relpath
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    except (OSError, json.JSONDecodeError):
        return None
