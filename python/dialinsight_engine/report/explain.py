"""`dialengine explain RUN ROW_ID`: follow one row through the stage outputs of a run and say
why it was kept or dropped, with every metric's score, normalised score, weight, thresholds
and flag, read from the outputs and the `quality_summary.json` the quality stages write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from .. import records as R
from ..errors import UserError
from ..metrics.combine import detail_col, flag_col, norm_col, score_col
from ..metrics.phases import SUMMARY
from ..run.dataset import filter_output, has_output, output_schema
from .runinfo import stage_dirs, stale_stages

ID_COLUMNS = (R.INSTRUCTION_ID, R.DIALOGUE_ID)


def _match(folder: Path, row_id: str) -> tuple[str | None, pl.DataFrame]:
    schema = output_schema(folder) or {}
    for column in ID_COLUMNS:
        if column not in schema:
            continue
        found = filter_output(folder, pl.col(column).cast(pl.String).str.starts_with(row_id))
        if found.height:
            return column, found
    return None, pl.DataFrame()


def explain_row(run_dir: Path, row_id: str) -> dict[str, Any]:
    stages = stage_dirs(run_dir)
    if not stages:
        raise UserError(f"no stage outputs in {run_dir}", hint="run `dialengine apply SPEC` first")
    trail: list[dict[str, Any]] = []
    full_id: str | None = None
    id_column: str | None = None
    for name, folder in stages:
        if not has_output(folder):
            continue
        column, rows = _match(folder, row_id)
        if column is None:
            if full_id is not None and id_column in (output_schema(folder) or {}):
                trail.append({"stage": name, "present": False})
            continue
        ids = rows[column].cast(pl.String).unique().to_list()
        if len(ids) > 1 and row_id not in ids:
            raise UserError(f"row id {row_id!r} is ambiguous in stage {name}: {', '.join(sorted(ids)[:5])}...")
        chosen = row_id if row_id in ids else ids[0]
        if full_id is None:
            full_id, id_column = chosen, column
        elif column != id_column:
            continue
        row = rows.filter(pl.col(column).cast(pl.String) == chosen).row(0, named=True)
        trail.append(_stage_entry(name, folder, row))
    if full_id is None:
        raise UserError(f"no row {row_id!r} in {run_dir}", hint="ids are in the instruction_id column of any stage")
    # after a partial rerun, downstream outputs predate their inputs: say so at each of them
    stale = stale_stages(run_dir)
    for entry in trail:
        if entry["stage"] in stale:
            entry["stale"] = stale[entry["stage"]]
    last = [t for t in trail if t.get("present", True)]
    verdict = _verdict(trail)
    return {"run": str(run_dir), "id_column": id_column, "row_id": full_id, "verdict": verdict,
            "last_stage": last[-1]["stage"] if last else None, "stages": trail,
            "stale": {e["stage"]: e["stale"] for e in trail if "stale" in e}}


def _verdict(trail: list[dict[str, Any]]) -> str:
    for i, entry in enumerate(trail):
        if not entry.get("present", True):
            before = trail[i - 1]["stage"] if i else "?"
            return f"kept through {before}, not passed on to {entry['stage']} (e.g. not sampled)"
        if entry.get("kept") is False:
            return f"dropped at {entry['stage']}: " + "; ".join(entry.get("reasons") or ["no reason recorded"])
    return f"kept through {trail[-1]['stage']}" if trail else "unknown"


def _stage_entry(name: str, folder: Path, row: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"stage": name, "present": True}
    if R.KEPT in row:
        entry["kept"] = row[R.KEPT]
        entry["reasons"] = list(row.get(R.REASONS) or [])
    summary_path = folder / SUMMARY
    if summary_path.exists():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        metrics = {}
        for metric, conf in summary.get("metrics", {}).items():
            if score_col(metric) not in row:
                continue
            metrics[metric] = {
                "score": row.get(score_col(metric)), "normalised": row.get(norm_col(metric)),
                "flag": row.get(flag_col(metric)), "weight": conf.get("weight"),
                "normalize": conf.get("normalize"), "min": conf.get("min"), "max": conf.get("max"),
                "phase": conf.get("phase"),
                "details": {k.removeprefix(detail_col(metric, "")): v for k, v in row.items()
                            if k.startswith(detail_col(metric, ""))},
            }
        entry["metrics"] = metrics
        entry["quality_score"] = row.get(R.QUALITY_SCORE)
        entry["min_score"] = summary.get("min_score")
    return entry


def render_explanation(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"[bold]{result['id_column']} {result['row_id']}[/bold] in {result['run']}")
    console.print(f"verdict: [bold]{result['verdict']}[/bold]")
    if result.get("stale"):
        console.print(f"[yellow]stale[/yellow]: {', '.join(result['stale'])} predate their inputs "
                      "(a partial rerun); rerun `dialengine apply` to refresh them")
    for entry in result["stages"]:
        stale = f" [yellow]stale ({entry['stale']})[/yellow]" if entry.get("stale") else ""
        if not entry.get("present", True):
            console.print(f"  {entry['stage']:<8} [yellow]absent[/yellow]{stale}")
            continue
        state = "" if "kept" not in entry else ("[green]kept[/green]" if entry["kept"] else "[red]dropped[/red]")
        console.print(f"  {entry['stage']:<8} {state}{stale}")
        for reason in entry.get("reasons") or []:
            console.print(f"           - {reason}", markup=False)
        if entry.get("metrics"):
            table = Table("metric", "score", "norm", "weight", "min", "max", "flag", title=f"{entry['stage']} scores")
            for metric, m in entry["metrics"].items():
                table.add_row(metric, _fmt(m["score"]), _fmt(m["normalised"]), _fmt(m["weight"]),
                              _fmt(m["min"]), _fmt(m["max"]), m["flag"] or "")
            qs = entry.get("quality_score")
            table.add_row("[bold]quality_score[/bold]", _fmt(qs), "", "", _fmt(entry.get("min_score")), "", "")
            console.print(table)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
