"""Reading a finished (or partial) run folder: which stages have outputs, their manifests,
the funnel of rows through them, and their side files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from ..run.manifest import MANIFEST, OUTPUT, Manifest
from ..stages.base import ORDER


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


def funnel(run_dir: Path, *, exclude: tuple[str, ...] = ("report",)) -> pl.DataFrame:
    rows = [
        {"stage": m.stage, "rows_in": m.rows_in, "rows_out": m.rows_out,
         "rows_kept": m.rows_kept if m.rows_kept is not None else m.rows_out, "seconds": m.seconds}
        for m in manifests(run_dir) if m.stage not in exclude
    ]
    schema = {"stage": pl.String, "rows_in": pl.Int64, "rows_out": pl.Int64, "rows_kept": pl.Int64, "seconds": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


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
