"""Stage `sample`: draw N instructions by scene and task weights, seeded and reproducible.

Each cell (scene x task by default) gets a target share proportional to its weight; quotas
are apportioned exactly with the largest-remainder method. A cell with fewer rows than its
quota gives all it has and (with `redistribute`) the shortfall goes to the other cells by
weight. `sampling_report.json` and the manifest hold target vs achieved share per cell and
the total-variation distance between them. Only `kept` rows are drawn; the others stay in
the output with `kept=False` (reason `not_sampled` for rows that were eligible).
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

import click
import polars as pl

from .. import records as R
from ..run.stage import ORDER, Stage

if TYPE_CHECKING:
    from ..run.context import StageContext
    from ..spec import Spec

Cell = tuple[str, str]


def largest_remainder(n: int, weights: dict[Cell, float]) -> dict[Cell, int]:
    """Integer quotas summing to n, proportional to weights (Hamilton's method)."""
    total = sum(weights.values())
    if n <= 0 or total <= 0:
        return {c: 0 for c in weights}
    exact = {c: n * w / total for c, w in weights.items()}
    quotas = {c: math.floor(x) for c, x in exact.items()}
    left = n - sum(quotas.values())
    # ties broken by cell name so the result never depends on dict order
    for c in sorted(weights, key=lambda c: (-(exact[c] - quotas[c]), c))[:left]:
        quotas[c] += 1
    return quotas


def apportion(n: int, weights: dict[Cell, float], available: dict[Cell, int], redistribute: bool) -> dict[Cell, int]:
    """Quotas capped by what each cell has; shortfalls move to cells with room when asked."""
    quotas = largest_remainder(n, weights)
    if not redistribute:
        return {c: min(q, available.get(c, 0)) for c, q in quotas.items()}
    fixed: dict[Cell, int] = {}
    open_cells = dict(weights)
    remaining = n
    while True:
        quotas = largest_remainder(remaining, open_cells)
        over = {c for c, q in quotas.items() if q > available.get(c, 0)}
        if not over:
            return {**fixed, **quotas}
        for c in over:
            fixed[c] = available.get(c, 0)
            remaining -= fixed[c]
            del open_cells[c]
        if not open_cells or sum(open_cells.values()) <= 0:
            return {**fixed, **{c: 0 for c in open_cells}}


def cell_weights(spec: Spec, by: str, pool_cells: set[Cell]) -> dict[Cell, float]:
    scene_w = {s.name: s.weight for s in spec.scenes}
    task_w = {t.name: t.weight for t in spec.tasks}

    def task_weight(task: str) -> float:
        if task in spec.sampling.task_weights:
            return spec.sampling.task_weights[task]
        if task in task_w:
            return task_w[task]
        parent = task.rsplit("-", 1)[0]  # "<task>-breadth" from a breadth evolution
        return task_w.get(parent, 1.0)

    if by == "none":
        return {("*", "*"): 1.0}
    cells: set[Cell] = set(pool_cells)
    if by == "scene_task":  # every combination the spec allows, so absent ones show in the report
        cells |= {(s.name, t.name) for t in spec.tasks for s in spec.scenes if not t.scenes or s.name in t.scenes}
    elif by == "scene":
        cells |= {(s.name, "*") for s in spec.scenes}
    else:
        cells |= {("*", t.name) for t in spec.tasks}
    # sorted: a set's order changes between processes (string hashing), and the float sums
    # over these weights must not
    return {(s, t): (scene_w.get(s, 1.0) if s != "*" else 1.0) * (task_weight(t) if t != "*" else 1.0)
            for s, t in sorted(cells)}


def cell_of(row: dict[str, Any], by: str) -> Cell:
    scene = row[R.SCENE] if by in ("scene_task", "scene") else "*"
    task = row[R.TASK] if by in ("scene_task", "task") else "*"
    return scene, task


def pick(rows: list[dict[str, Any]], k: int, rng: random.Random, quality: str) -> list[dict[str, Any]]:
    rows = sorted(rows, key=lambda r: r[R.INSTRUCTION_ID])
    if k >= len(rows):
        return rows
    if quality == "top":
        return sorted(rows, key=lambda r: (-(r.get(R.QUALITY_SCORE) or 0.0), r[R.INSTRUCTION_ID]))[:k]
    if quality == "weighted":
        # Efraimidis-Spirakis: key u^(1/w), the k largest keys are a weighted draw without replacement
        scores = [r.get(R.QUALITY_SCORE) or 0.0 for r in rows]
        low = min(scores)
        keyed = [(rng.random() ** (1.0 / max(s - low + 1e-6, 1e-6)), r) for s, r in zip(scores, rows, strict=True)]
        return [r for _, r in sorted(keyed, key=lambda x: -x[0])[:k]]
    return rng.sample(rows, k)


class SampleStage(Stage):
    name = "sample"
    order = ORDER["sample"]
    config_keys = ("sampling", "project.seed")
    version = "2"  # 2: truth/meta/output_schema stored as structs where they fit (run/dataset.py)
    description = "weighted random sampling by scene and task, exact quotas, report"

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        return {"scene_weights": {s.name: s.weight for s in ctx.spec.scenes},
                "task_weights": {t.name: [t.weight, t.scenes] for t in ctx.spec.tasks}}

    def run(self, ctx: StageContext) -> pl.DataFrame:
        spec, cfg = ctx.spec, ctx.spec.sampling
        df = R.with_row_status(ctx.input)
        rows = df.to_dicts()
        pool = [r for r in rows if r[R.KEPT]]
        quality = cfg.quality
        if quality != "ignore" and R.QUALITY_SCORE not in df.columns:
            ctx.log.warning("sampling.quality = %r but the input has no quality_score: ignored", quality)
            ctx.stats["quality_ignored"] = "no quality_score column"
            quality = "ignore"
        by_cell: dict[Cell, list[dict[str, Any]]] = {}
        for r in pool:
            by_cell.setdefault(cell_of(r, cfg.by), []).append(r)
        weights = cell_weights(spec, cfg.by, set(by_cell))
        available = {c: len(by_cell.get(c, [])) for c in weights}
        n = cfg.n if cfg.n is not None else len(pool)
        quotas = apportion(min(n, len(pool)), weights, available, cfg.redistribute)
        rng = random.Random(cfg.seed if cfg.seed is not None else spec.project.seed)
        chosen: set[str] = set()
        for cell in sorted(weights):
            chosen.update(r[R.INSTRUCTION_ID] for r in pick(by_cell.get(cell, []), quotas[cell], rng, quality))
        for r in rows:
            if r[R.KEPT] and r[R.INSTRUCTION_ID] not in chosen:
                r[R.KEPT] = False
                r[R.REASONS] = [*r[R.REASONS], "not_sampled"]

        report = self._report(n, len(pool), weights, available, quotas)
        ctx.stats.update({k: v for k, v in report.items() if k != "cells"})
        ctx.write_json("sampling_report.json", report)
        ctx.log.info("sampled %d of %d (asked %d); total-variation distance to target %.4f",
                     report["achieved"], len(pool), n, report["total_variation_distance"])
        click.echo(f"sample   {report['achieved']}/{n} drawn from {len(pool)} kept; "
                   f"total-variation distance to target shares {report['total_variation_distance']:.3f}"
                   + (f"; short cells: {', '.join(report['short_cells'])}" if report["short_cells"] else ""),
                   err=True)
        return pl.DataFrame(rows, schema=df.schema)

    @staticmethod
    def _report(n: int, pool: int, weights: dict[Cell, float], available: dict[Cell, int],
                quotas: dict[Cell, int]) -> dict[str, Any]:
        total_w = sum(weights.values()) or 1.0
        achieved = sum(quotas.values())
        cells: list[dict[str, Any]] = []
        short: list[str] = []
        tvd = 0.0
        for cell in sorted(weights):
            target = weights[cell] / total_w
            got = quotas[cell] / achieved if achieved else 0.0
            tvd += abs(target - got)
            cells.append({"scene": cell[0], "task": cell[1], "weight": weights[cell],
                          "target_share": round(target, 6), "target_n": round(target * n, 3),
                          "available": available[cell], "achieved": quotas[cell], "achieved_share": round(got, 6)})
            if available[cell] < math.floor(target * n):
                short.append(f"{cell[0]}/{cell[1]} ({available[cell]} < {target * n:.1f})")
        return {"requested": n, "pool": pool, "achieved": achieved,
                "total_variation_distance": round(tvd / 2, 6), "short_cells": short, "cells": cells}
