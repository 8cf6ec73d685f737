"""Reading a finished (or partial) run folder: which stages have outputs, their manifests,
rows, costs and staleness per stage, and their side files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from ..run.manifest import MANIFEST, OUTPUT, Manifest
from ..run.stage import ORDER


def stage_dirs(run_dir: Path) -> list[tuple[str, Path]]:
    """(stage, folder) for every folder holding a manifest, in pipeline order."""
    found = []
    for folder in sorted(p for p in Path(run_dir).iterdir() if p.is_dir()) if Path(run_dir).is_dir() else []:
        if (folder / MANIFEST).exists():
            found.append((folder.name, folder))
    return sorted(found, key=lambda item: (ORDER.get(item[0], 1000), item[0]))


def manifests(run_dir: Path) -> list[Manifest]:
    out = []
    for _, folder in stage_dirs(run_dir):
        manifest = Manifest.load(folder)
        if manifest is not None:
            out.append(manifest)
    return out


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
    path = Path(run_dir) / stage / OUTPUT
    try:
        return pl.read_parquet(path) if path.exists() else None
    except pl.exceptions.PolarsError:
        return None


def read_json(run_dir: Path, relpath: str) -> Any:
    path = Path(run_dir) / relpath
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    except (OSError, json.JSONDecodeError):
        return None
