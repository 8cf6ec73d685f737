"""The run report: one self-contained HTML file (plotly.js inlined once, no CDN, works offline).

Sections, each shown only when the run has the data for it: rows per stage as bars with their
counts (stages multiply rows as well as drop them), what each stage's output cost and the last
run's time, stale stages after a partial rerun, each metric's score distribution with its
thresholds, the composite score, why rows were dropped, the scene x task mix (target vs
achieved, from the sample stage's sampling_report.json when present), duplicate clusters by
size, kept and dropped examples with their dialogue and reasons, and evaluation results (rows
of variant/metric/value from the eval stage).

The page is `templates/report.html.j2`, rendered with autoescape; this module turns the run's
data into its sections (figures, tables, notes).
"""

from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import plotly.graph_objects as go
import polars as pl
from markupsafe import Markup
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from .. import records as R
from ..metrics.combine import detail_col, score_col
from ..metrics.phases import SUMMARY
from ..run.atomic import write_text
from .runinfo import read_json, read_output, stage_rows, stale_stages

KEPT_COLOUR, DROPPED_COLOUR, ACCENT = "#2a9d8f", "#e76f51", "#264653"
PLOT_CONFIG = {"displaylogo": False, "responsive": True}

TEMPLATES = Path(__file__).with_name("templates")


@dataclass
class Cell:
    value: str | list[str]
    kind: str = "plain"  # "text": a long text that scrolls in its cell; "list": one reason a line


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]


@dataclass
class Section:
    """One `<section>`: a title, a note under it, then its parts in order: ("figure", markup),
    ("table", Table), ("heading", text) or ("paragraph", text)."""

    title: str
    parts: list[tuple[str, Any]] = field(default_factory=list)
    note: str = ""


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2")


def _figure(fig: go.Figure, height: int = 380, top: int = 40) -> tuple[str, Markup]:
    fig.update_layout(height=height, margin={"l": 50, "r": 20, "t": top, "b": 40}, template="plotly_white")
    # plotly's own markup (a div and the script that draws into it): trusted, not escaped
    return ("figure", Markup(fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG)))


def _rows_section(run_dir: Path) -> Section | None:
    data = stage_rows(run_dir)
    if data.height == 0:
        return None
    stages = data["stage"].to_list()
    fig = go.Figure()
    for column, colour, label in (("rows_out", "#9fb8c4", "rows written"), ("rows_kept", ACCENT, "rows kept")):
        values = data[column].to_list()
        fig.add_trace(go.Bar(y=stages, x=values, name=label, orientation="h", marker_color=colour,
                             text=values, textposition="outside", cliponaxis=False))
    fig.update_layout(barmode="group", title="rows written and kept by each stage",
                      xaxis_title="rows", yaxis_title="stage", yaxis={"autorange": "reversed"},
                      legend={"orientation": "h", "y": -0.15})
    return Section("Rows by stage", [_figure(fig, 120 + 48 * data.height), ("table", _table(data))],
                   "rows_out: rows a stage wrote (dropped ones included); rows_kept: still in play after it. "
                    "cost_s: what producing the output cost; last_run_s: the last run's time (small when "
                    "the rerun came from caches or reproduced the same output)")


def _stale_note(run_dir: Path, *stages: str) -> str:
    stale = stale_stages(run_dir)
    hit = [s for s in stages if s in stale]
    return f" STALE: {', '.join(hit)} built from older upstream outputs." if hit else ""


def _metric_section(run_dir: Path) -> Section | None:
    panels: list[tuple[str, pl.Series, pl.Series, float | None, float | None]] = []
    for stage in ("assess", "verify"):
        frame = read_output(run_dir, stage)
        summary = read_json(run_dir, f"{stage}/{SUMMARY}") or {}
        if frame is None:
            continue
        for name, conf in (summary.get("metrics") or {}).items():
            if conf.get("phase") is None or score_col(name) not in frame.columns:
                continue
            if stage == "verify" and conf.get("phase") != "label":
                continue
            scored = frame.filter(pl.col(score_col(name)).is_not_null())
            panels.append((f"{name} ({stage})", scored[score_col(name)], scored[R.KEPT],
                           conf.get("min"), conf.get("max")))
        if R.QUALITY_SCORE in frame.columns:
            scored = frame.filter(pl.col(R.QUALITY_SCORE).is_not_null())
            panels.append((f"quality_score ({stage})", scored[R.QUALITY_SCORE], scored[R.KEPT],
                           summary.get("min_score"), None))
    if not panels:
        return None
    cols = 2
    nrows = math.ceil(len(panels) / cols)
    height = 140 + 300 * nrows
    # thresholds go in the panel titles, not in annotations that collide with them; the gap
    # between rows leaves room for a title and the axis title of the panel above
    titles = [title + "".join(f" | {k} {v:g}" for k, v in (("min", lo), ("max", hi)) if v is not None)
              for title, _, _, lo, hi in panels]
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=titles, horizontal_spacing=0.1,
                        vertical_spacing=min(0.5, 110 / height) if nrows > 1 else 0.2)
    for i, (_title, values, kept, lo, hi) in enumerate(panels):
        r, c = i // cols + 1, i % cols + 1
        for label, mask, colour in (("kept", kept, KEPT_COLOUR), ("dropped", ~kept, DROPPED_COLOUR)):
            fig.add_trace(go.Histogram(x=values.filter(mask).to_list(), name=label, marker_color=colour,
                                       nbinsx=30, legendgroup=label, showlegend=i == 0, opacity=0.85), row=r, col=c)
        for bound in (lo, hi):
            if bound is not None:
                fig.add_vline(x=bound, line_dash="dash", line_color="#111", row=r, col=c)
        fig.update_xaxes(title_text="score", title_standoff=4, row=r, col=c)
        fig.update_yaxes(title_text="rows", title_standoff=4, row=r, col=c)
    fig.update_annotations(font_size=12)
    fig.update_layout(barmode="stack", title="score distributions (dashed lines: thresholds)",
                      # the legend in the figure's top margin, beside the title, clear of the panels
                      legend={"orientation": "h", "yref": "container", "y": 1, "yanchor": "top",
                              "x": 0.5, "xanchor": "center"})
    note = "raw scores of the rows in play; thresholds apply to raw scores." + _stale_note(run_dir, "assess", "verify")
    return Section("Quality metrics", [_figure(fig, height, top=80), *_summary_table(run_dir)], note)


def _summary_table(run_dir: Path) -> list[tuple[str, Any]]:
    rows = []
    for stage in ("assess", "verify"):
        summary = read_json(run_dir, f"{stage}/{SUMMARY}") or {}
        for name, m in (summary.get("metrics") or {}).items():
            if m.get("phase") is None or (stage == "verify" and m.get("phase") != "label"):
                continue
            rows.append({"stage": stage, "metric": name, "plugin": m.get("plugin"), "weight": m.get("weight"),
                         "normalize": m.get("normalize"), "min": m.get("min"), "max": m.get("max"),
                         "mean": round(m["mean"], 4) if isinstance(m.get("mean"), float) else None,
                         "flagged": m.get("flagged"), "below_min": m.get("below_min"),
                         "above_max": m.get("above_max"), "seconds": m.get("seconds")})
    return [("table", _table(pl.DataFrame(rows, infer_schema_length=None)))] if rows else []


def _reason_kind(reason: str) -> str:
    if reason.startswith(R.QUALITY_SCORE):
        return "quality_score below min_score"
    head, _, rest = reason.partition(":")
    rest = rest.strip()
    if rest.startswith("score ") and (" < min " in rest or " > max " in rest):
        return f"{head}: {'below min' if ' < min ' in rest else 'above max'}"
    if "contaminated" in rest:
        return f"{head}: contaminated"
    if "duplicate of" in rest:
        return f"{head}: {'semantic duplicate' if rest.startswith('semantic') else 'near duplicate'}"
    kind = rest.split(":", 1)[0].strip()
    return f"{head}: {kind}" if kind and len(kind) <= 24 else head


def _reasons_section(run_dir: Path) -> Section | None:
    counts: Counter[str] = Counter()
    for stage in ("review", "assess", "verify"):
        frame = read_output(run_dir, stage)
        if frame is None or R.REASONS not in frame.columns:
            continue
        for reasons in frame[R.REASONS].to_list():
            counts.update({_reason_kind(r) for r in reasons or []})
    if not counts:
        return None
    kinds = sorted(counts, key=counts.get, reverse=True)  # type: ignore[arg-type]
    fig = go.Figure(go.Bar(x=[counts[k] for k in kinds], y=kinds, orientation="h", marker_color=DROPPED_COLOUR))
    fig.update_layout(title="rows dropped, by reason (a row may have several)", yaxis={"autorange": "reversed"},
                      xaxis_title="rows dropped", yaxis_title="reason")
    return Section("Why rows were dropped", [_figure(fig, 100 + 28 * len(kinds))])


def _target_table(report: Any) -> pl.DataFrame | None:
    """Find a list of {scene, task, target...} records anywhere in sampling_report.json."""
    stack = [report]
    while stack:
        node = stack.pop()
        if isinstance(node, list) and node and all(isinstance(x, dict) for x in node):
            if {"scene", "task"} <= set(node[0]):
                try:
                    return pl.DataFrame(node, infer_schema_length=None)
                except (pl.exceptions.PolarsError, TypeError, ValueError):
                    return None
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _mix_section(run_dir: Path) -> Section | None:
    source = "sample"
    frame = read_output(run_dir, "sample")
    if frame is None:
        source, frame = "assess", read_output(run_dir, "assess")
    if frame is None or not {R.SCENE, R.TASK} <= set(frame.columns):
        return None
    achieved = frame.filter(pl.col(R.KEPT)) if R.KEPT in frame.columns else frame
    mix = achieved.group_by(R.SCENE, R.TASK).agg(n=pl.len())
    targets = _target_table(read_json(run_dir, "sample/sampling_report.json"))
    target_col = next((c for c in ("target", "target_n", "planned", "quota") if targets is not None and c in targets.columns), None)
    scenes = sorted(set(mix[R.SCENE].to_list()) | (set(targets[R.SCENE].to_list()) if target_col and targets is not None else set()))
    tasks = sorted(set(mix[R.TASK].to_list()) | (set(targets[R.TASK].to_list()) if target_col and targets is not None else set()))

    def grid(df: pl.DataFrame, col: str) -> list[list[float]]:
        lookup = {(r[R.SCENE], r[R.TASK]): r[col] for r in df.iter_rows(named=True)}
        return [[lookup.get((s, t), 0) or 0 for t in tasks] for s in scenes]

    panels = [("achieved", grid(mix, "n"))]
    if target_col and targets is not None:
        panels.insert(0, ("target", grid(targets, target_col)))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels])
    for i, (_, z) in enumerate(panels):
        fig.add_trace(go.Heatmap(z=z, x=tasks, y=scenes, colorscale="Teal", texttemplate="%{z}",
                                 showscale=i == len(panels) - 1), row=1, col=i + 1)
    fig.update_xaxes(title_text="task")
    fig.update_yaxes(title_text="scene", col=1)
    note = f"achieved: kept rows of the {source} stage" + ("" if len(panels) > 1 else "; no sampling targets found")
    return Section("Scene x task mix", [_figure(fig, 180 + 40 * len(scenes))],
                   note + _stale_note(run_dir, source))


def _clusters_section(run_dir: Path, top: int = 40) -> Section | None:
    frame = read_output(run_dir, "assess")
    if frame is None:
        return None
    column = next((c for c in frame.columns if c.endswith(detail_col("", "cluster_id"))), None)
    if column is None:
        return None
    frame = R.with_row_status(frame)
    text = R.INSTRUCTION if R.INSTRUCTION in frame.columns else column
    clusters = (frame.drop_nulls(column).group_by(column)
                .agg(size=pl.len(), kept=pl.col(R.KEPT).sum(), sample=pl.col(text).cast(pl.String).first())
                .filter(pl.col("size") > 1).sort(["size", column], descending=[True, False]))
    if clusters.height == 0:
        return Section("Duplicate clusters", [("paragraph", "No near-duplicate clusters: every row is unique.")])
    shown = clusters.head(top)
    labels = [f"#{i + 1}" for i in range(shown.height)]
    hover = [html.escape(t[:120]) for t in shown["sample"].to_list()]
    fig = go.Figure()
    for name, values, colour in (("kept", shown["kept"], KEPT_COLOUR),
                                 ("dropped", shown["size"] - shown["kept"], DROPPED_COLOUR)):
        fig.add_trace(go.Bar(x=labels, y=values.to_list(), name=name, marker_color=colour,
                             hovertext=hover, hovertemplate="%{hovertext}<br>%{y} rows<extra>" + name + "</extra>"))
    dtick = max(1, math.ceil(max(shown["size"].to_list()) / 8))
    fig.update_layout(barmode="stack", title=f"the {shown.height} largest clusters, by size",
                      xaxis_title="cluster (largest first)", yaxis_title="rows in cluster",
                      yaxis={"tick0": 0, "dtick": dtick})
    sizes = clusters.group_by("size").agg(n=pl.len()).sort("size")
    spread = ", ".join(f"{r['n']} of size {r['size']}" for r in sizes.iter_rows(named=True))
    note = (f"{clusters.height} clusters hold {int(clusters['size'].sum())} rows ({spread}); "
            "hover a bar for its first instruction." + _stale_note(run_dir, "assess"))
    return Section("Duplicate clusters", [_figure(fig, 340)], note)


def _examples_section(run_dir: Path, n: int) -> Section | None:
    frame = None
    for stage in ("verify", "assess"):
        frame = read_output(run_dir, stage)
        if frame is not None:
            break
    if frame is None or R.KEPT not in frame.columns or n == 0:
        return None
    # the dialogue beside the instruction, so a reader can check a label against its source
    text_cols = {R.INSTRUCTION, R.DIALOGUE_TEXT, R.RESPONSE}
    cols = [c for c in (R.INSTRUCTION_ID, R.SCENE, R.TASK, R.QUALITY_SCORE, R.INSTRUCTION, R.DIALOGUE_TEXT,
                        R.RESPONSE, R.REASONS) if c in frame.columns]
    kept = frame.filter(pl.col(R.KEPT)).sort(R.QUALITY_SCORE, descending=True, nulls_last=True).head(n) \
        if R.QUALITY_SCORE in frame.columns else frame.filter(pl.col(R.KEPT)).head(n)
    dropped = frame.filter(~pl.col(R.KEPT))
    if R.REASONS in dropped.columns and dropped.height:
        # one example per kind of reason first, so every cause shows up
        kinds = dropped.with_columns(_kind=pl.col(R.REASONS).list.first().map_elements(
            lambda r: _reason_kind(r or ""), return_dtype=pl.String))
        dropped = pl.concat([kinds.unique("_kind", keep="first", maintain_order=True),
                             kinds]).unique(R.INSTRUCTION_ID, keep="first", maintain_order=True).head(n).drop("_kind") \
            if R.INSTRUCTION_ID in kinds.columns else kinds.head(n).drop("_kind")
    renamed = {R.DIALOGUE_TEXT: "dialogue"}
    text_cols |= {"dialogue"}
    parts = [("heading", "Kept (highest quality_score)"),
             ("table", _table(kept.select(cols).rename(renamed, strict=False), text_cols=text_cols)),
             ("heading", "Dropped"),
             ("table", _table(dropped.select(cols).head(n).rename(renamed, strict=False), text_cols=text_cols))]
    return Section("Examples", parts, _stale_note(run_dir, stage).strip())


def _eval_section(run_dir: Path) -> Section | None:
    frame = read_output(run_dir, "eval")
    if frame is None or frame.height == 0:
        return None
    note = _stale_note(run_dir, "eval").strip()
    if {"variant", "metric", "value"} <= set(frame.columns):
        fig = go.Figure()
        for variant in frame["variant"].unique(maintain_order=True).to_list():
            part = frame.filter(pl.col("variant") == variant)
            fig.add_trace(go.Bar(name=str(variant), x=part["metric"].cast(pl.String).to_list(),
                                 y=part["value"].cast(pl.Float64).to_list()))
        fig.update_layout(barmode="group", title="evaluation by variant", xaxis_title="metric",
                          yaxis_title="value")
        return Section("Evaluation", [_figure(fig, 380), ("table", _table(frame.head(200)))], note)
    return Section("Evaluation", [("table", _table(frame.head(200)))], note)


def _kpis(run_dir: Path) -> list[tuple[str, str]]:
    """(figure, label) pairs: rows in, and rows kept after the filtering stages."""
    data = stage_rows(run_dir)
    if data.height == 0:
        return []
    items = [(f"{data['rows_out'][0]}", f"rows out of {data['stage'][0]}")]
    for stage in ("assess", "verify", "export"):
        part = data.filter(pl.col("stage") == stage)
        if part.height:
            items.append((f"{part['rows_kept'][0]}", f"kept after {stage}"))
    return items


def _table(frame: pl.DataFrame, text_cols: set[str] | None = None) -> Table:
    text_cols = text_cols or set()
    return Table(frame.columns, [[_cell(c, v, c in text_cols) for c, v in row.items()]
                                 for row in frame.iter_rows(named=True)])


def _cell(column: str, value: Any, long_text: bool) -> Cell:
    if isinstance(value, list):
        return Cell([str(x) for x in value], "list")
    text = "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
    if long_text:
        return Cell(text[:4000] + " ..." if len(text) > 4000 else text, "text")
    return Cell(text)


def _study_section(run_dir: Path) -> Section | None:
    from ..study.render import study_section  # built by the study package (dialengine study)

    return study_section(run_dir)


def build_report(run_dir: Path, *, examples: int | None = None) -> str:
    run_dir = Path(run_dir)
    summary = read_json(run_dir, f"assess/{SUMMARY}") or {}
    n_examples = examples if examples is not None else int(summary.get("examples", 8))
    sections = [_rows_section(run_dir), _metric_section(run_dir), _reasons_section(run_dir), _mix_section(run_dir),
                _clusters_section(run_dir), _examples_section(run_dir, n_examples), _eval_section(run_dir),
                _study_section(run_dir)]
    return _template().render(
        title=f"dialinsight-engine report: {run_dir.name}", run_dir=str(run_dir),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        plotly_js=Markup(get_plotlyjs()),  # inlined once: the page works offline
        stale=stale_stages(run_dir), kpis=_kpis(run_dir), sections=[s for s in sections if s is not None],
    )


def write_report(run_dir: Path, path: Path, *, examples: int | None = None) -> Path:
    return write_text(Path(path), build_report(run_dir, examples=examples))
