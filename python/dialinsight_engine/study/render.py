"""The study's results as Markdown (study.md), as a spec patch (weights.patch.toml) and as a
section of the HTML report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..report.html import Section
    from ..spec import Spec

RESULTS = Path("study") / "results.json"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def _interval(iv: dict[str, Any]) -> str:
    if iv.get("mean") is None:
        return "-"
    if iv.get("n", 0) <= 1:
        return f"{_num(iv['mean'])} (one aggregate, no interval)"
    return f"{_num(iv['mean'])} [{_num(iv['low'])}, {_num(iv['high'])}]"


def verdict(metric: dict[str, Any]) -> str:
    gain = metric["domain_gain"]
    if gain.get("low") is not None and gain["low"] > 0:
        word = "helped"
    elif gain.get("high") is not None and gain["high"] < 0:
        word = "hurt"
    else:
        word = "no clear effect"
    return word + (" (but hurt a general capability)" if metric.get("general_harm") else "")


def summary_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """One row per metric, in ranking order: what the tables of the report and study.md show."""
    by_name = {m["metric"]: m for m in results["metrics"]}
    rows = []
    for name in results["ranking"]:
        m = by_name[name]
        general = "; ".join(f"{g['evaluator']}.{g['metric']} {_interval(g['top_vs_bottom'])}" for g in m["general"])
        rows.append({"metric": name, "domain gain, top - bottom [95% CI]": _interval(m["domain_gain"]),
                     "general change, top - bottom [95% CI]": general or "-",
                     "spearman with usefulness": "-" if m["spearman"] is None
                     else f"{m['spearman']:+.3f} (n={m['spearman_rows']})",
                     "verdict": verdict(m)})
    return rows


def study_markdown(results: dict[str, Any]) -> str:
    rows = summary_rows(results)
    head = list(rows[0]) if rows else []
    lines = ["# Study: do the quality metrics predict fine-tuning outcome?", "",
             f"Pool: {results['pool_rows']} labelled rows; every subset {results['subset_size']} rows, "
             f"{results['max_steps']} training steps, seed {results['seed']}; intervals: paired bootstrap over the "
             f"dev items, {results['bootstrap']} resamples. Usefulness: `{results['usefulness']['estimate']}` "
             f"(known for {results['usefulness']['rows']} rows).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r.values()) + " |" for r in rows]
    lines += ["", "## Per evaluator", "", "| metric | evaluator | top | bottom | random | top - bottom | top - random |",
              "|---|---|---|---|---|---|---|"]
    for m in results["metrics"]:
        for e in m["evaluators"]:
            lines.append(f"| {m['metric']} | {e['evaluator']}.{e['metric']} | {_plain(e['top'])} | "
                         f"{_plain(e['bottom'])} | {_plain(e['random'])} | {_interval(e['top_vs_bottom'])} | "
                         f"{_interval(e['top_vs_random'])} |")
    lines += ["", "## Suggested weights", ""]
    if results["weights"]:
        lines += [f"- `{name}`: {w} (now {results['current_weights'].get(name)})"
                  for name, w in results["weights"].items()]
    else:
        lines.append("No metric's domain gain has an interval above zero: no weights are suggested.")
    return "\n".join(lines) + "\n"


def _plain(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def weights_patch(spec: Spec, results: dict[str, Any]) -> str:
    """A TOML fragment with `[quality.metrics.NAME] weight` for every studied metric: paste
    its tables over the spec's (or merge them) and rerun `dialengine apply`."""
    lines = ["# Suggested [quality] weights from `dialengine study` "
             f"({results['pool_rows']} rows, subsets of {results['subset_size']}, {results['max_steps']} steps).",
             "# Each weight is proportional to the lower bound of its metric's domain gain (top - bottom, 95%",
             "# bootstrap interval) where that bound is above zero; 0 where it is not. Merge into the spec."]
    if not results["weights"]:
        lines.append("# No metric's gain had an interval above zero: nothing to change.")
        return "\n".join(lines) + "\n"
    for name, weight in results["weights"].items():
        lines += ["", f"[quality.metrics.{json.dumps(name) if not name.isidentifier() else name}]",
                  f"weight = {weight}  # was {spec.quality.metrics[name].weight}"]
    return "\n".join(lines) + "\n"


def study_section(run_dir: Path) -> Section | None:
    """The report's study section (None when the run has no study results)."""
    from ..report.html import Cell, Section, Table

    path = run_dir / RESULTS
    if not path.is_file():
        return None
    results = json.loads(path.read_text(encoding="utf-8"))
    rows = summary_rows(results)
    table = Table(list(rows[0]) if rows else [], [[Cell(v) for v in r.values()] for r in rows])
    weights = ", ".join(f"{k} {v}" for k, v in results["weights"].items()) or "none (no gain above zero)"
    note = (f"{results['pool_rows']} pool rows; subsets of {results['subset_size']} rows, {results['max_steps']} "
            f"steps each; paired bootstrap over dev items ({results['bootstrap']} resamples).")
    return Section("Study: do the quality metrics predict fine-tuning outcome?",
                   [("table", table), ("paragraph", f"Suggested weights: {weights} (study/weights.patch.toml)")],
                   note=note)
