"""The run report: one self-contained HTML file (plotly.js inlined once, no CDN, works offline).

Sections, each shown only when the run has the data for it: rows per stage as bars with their
counts (stages multiply rows as well as drop them), what each stage's output cost and the last
run's time, stale stages after a partial rerun, each metric's score distribution with its
thresholds, the composite score, why rows were dropped, the scene x task mix (target vs
achieved, from the sample stage's sampling_report.json when present), duplicate clusters by
size, kept and dropped examples with their dialogue and reasons, and evaluation results (rows
of variant/metric/value from the eval stage).
"""

from __future__ import annotations

import html
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import polars as pl
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from .. import records as R
from ..metrics.combine import score_col
from ..metrics.phases import SUMMARY
from ..run.atomic import write_text
from .runinfo import read_json, read_output, stage_rows, stale_stages

KEPT_COLOUR, DROPPED_COLOUR, ACCENT = "#2a9d8f", "#e76f51", "#264653"
PLOT_CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2d35;background:#f6f7f9}
header{background:#264653;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.8;font-size:13px}main{padding:16px 32px;max-width:1280px}
section{background:#fff;border-radius:8px;padding:12px 20px;margin:16px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:17px;margin:6px 0 10px}table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{border-bottom:1px solid #e5e7eb;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f5}td.text{max-width:520px;white-space:pre-wrap;word-break:break-word}
td.text .scroll{max-height:240px;overflow-y:auto}
.reason{color:#b5452b}.muted{color:#6b7280;font-size:13px}.kpis{display:flex;gap:16px;flex-wrap:wrap}
.kpi{background:#f1f5f9;border-radius:6px;padding:8px 14px}.kpi b{display:block;font-size:20px}
.stale{background:#fff4e5;border-left:4px solid #e9a23b}.stale b{color:#9a5b00}
"""


def _fig_html(fig: go.Figure, height: int = 380, top: int = 40) -> str:
    fig.update_layout(height=height, margin={"l": 50, "r": 20, "t": top, "b": 40}, template="plotly_white")
    return fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG)


def _section(title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="muted">{html.escape(note)}</p>' if note else ""
    return f"<section><h2>{html.escape(title)}</h2>{note_html}{body}</section>"


def _rows_section(run_dir: Path) -> str:
    data = stage_rows(run_dir)
    if data.height == 0:
        return ""
    stages = data["stage"].to_list()
    fig = go.Figure()
    for column, colour, label in (("rows_out", "#9fb8c4", "rows written"), ("rows_kept", ACCENT, "rows kept")):
        values = data[column].to_list()
        fig.add_trace(go.Bar(y=stages, x=values, name=label, orientation="h", marker_color=colour,
                             text=values, textposition="outside", cliponaxis=False))
    fig.update_layout(barmode="group", title="rows written and kept by each stage",
                      xaxis_title="rows", yaxis_title="stage", yaxis={"autorange": "reversed"},
                      legend={"orientation": "h", "y": -0.15})
    table = _table(data)
    return _section("Rows by stage", _fig_html(fig, 120 + 48 * data.height) + table,
                    "rows_out: rows a stage wrote (dropped ones included); rows_kept: still in play after it. "
                    "cost_s: what producing the output cost; last_run_s: the last run's time (small when "
                    "the rerun came from caches or reproduced the same output)")


def _stale_banner(run_dir: Path) -> str:
    stale = stale_stages(run_dir)
    if not stale:
        return ""
    items = "".join(f"<li><b>{html.escape(stage)}</b>: {html.escape(why)}</li>" for stage, why in stale.items())
    return ('<section class="stale" id="stale"><h2>Stale stages</h2><p>These outputs were built from older '
            "upstream outputs (a partial rerun with --until or --force); sections that read them show "
            "the old data. Run <code>dialengine apply SPEC</code> to refresh them.</p>"
            f"<ul>{items}</ul></section>")


def _stale_note(run_dir: Path, *stages: str) -> str:
    stale = stale_stages(run_dir)
    hit = [s for s in stages if s in stale]
    return f" STALE: {', '.join(hit)} built from older upstream outputs." if hit else ""


def _metric_section(run_dir: Path) -> str:
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
        return ""
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
    return _section("Quality metrics", _fig_html(fig, height, top=80) + _summary_table(run_dir), note)


def _summary_table(run_dir: Path) -> str:
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
    return _table(pl.DataFrame(rows, infer_schema_length=None)) if rows else ""


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


def _reasons_section(run_dir: Path) -> str:
    counts: Counter[str] = Counter()
    for stage in ("review", "assess", "verify"):
        frame = read_output(run_dir, stage)
        if frame is None or R.REASONS not in frame.columns:
            continue
        for reasons in frame[R.REASONS].to_list():
            counts.update({_reason_kind(r) for r in reasons or []})
    if not counts:
        return ""
    kinds = sorted(counts, key=counts.get, reverse=True)  # type: ignore[arg-type]
    fig = go.Figure(go.Bar(x=[counts[k] for k in kinds], y=kinds, orientation="h", marker_color=DROPPED_COLOUR))
    fig.update_layout(title="rows dropped, by reason (a row may have several)", yaxis={"autorange": "reversed"},
                      xaxis_title="rows dropped", yaxis_title="reason")
    return _section("Why rows were dropped", _fig_html(fig, 100 + 28 * len(kinds)))


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


def _mix_section(run_dir: Path) -> str:
    source = "sample"
    frame = read_output(run_dir, "sample")
    if frame is None:
        source, frame = "assess", read_output(run_dir, "assess")
    if frame is None or not {R.SCENE, R.TASK} <= set(frame.columns):
        return ""
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
    return _section("Scene x task mix", _fig_html(fig, 180 + 40 * len(scenes)),
                    note + _stale_note(run_dir, source))


def _clusters_section(run_dir: Path, top: int = 40) -> str:
    frame = read_output(run_dir, "assess")
    if frame is None:
        return ""
    column = next((c for c in frame.columns if c.endswith(".cluster_id")), None)
    if column is None:
        return ""
    frame = R.with_row_status(frame)
    text = R.INSTRUCTION if R.INSTRUCTION in frame.columns else column
    clusters = (frame.drop_nulls(column).group_by(column)
                .agg(size=pl.len(), kept=pl.col(R.KEPT).sum(), sample=pl.col(text).cast(pl.String).first())
                .filter(pl.col("size") > 1).sort(["size", column], descending=[True, False]))
    if clusters.height == 0:
        return _section("Duplicate clusters", "<p>No near-duplicate clusters: every row is unique.</p>")
    shown = clusters.head(top)
    labels = [f"#{i + 1}" for i in range(shown.height)]
    hover = [html.escape(t[:120]) for t in shown["sample"].to_list()]
    fig = go.Figure()
    for name, values, colour in (("kept", shown["kept"], KEPT_COLOUR),
                                 ("dropped", shown["size"] - shown["kept"], DROPPED_COLOUR)):
        fig.add_trace(go.Bar(x=labels, y=values.to_list(), name=name, marker_color=colour,
                             hovertext=hover, hovertemplate="%{hovertext}<br>%{y} rows<extra>" + name + "</extra>"))
    fig.update_layout(barmode="stack", title=f"the {shown.height} largest clusters, by size",
                      xaxis_title="cluster (largest first)", yaxis_title="rows in cluster",
                      yaxis={"tick0": 0, "dtick": max(1, math.ceil(int(shown["size"].max()) / 8))})
    sizes = clusters.group_by("size").agg(n=pl.len()).sort("size")
    spread = ", ".join(f"{r['n']} of size {r['size']}" for r in sizes.iter_rows(named=True))
    note = (f"{clusters.height} clusters hold {int(clusters['size'].sum())} rows ({spread}); "
            "hover a bar for its first instruction." + _stale_note(run_dir, "assess"))
    return _section("Duplicate clusters", _fig_html(fig, 340), note)


def _examples_section(run_dir: Path, n: int) -> str:
    frame = None
    for stage in ("verify", "assess"):
        frame = read_output(run_dir, stage)
        if frame is not None:
            break
    if frame is None or R.KEPT not in frame.columns or n == 0:
        return ""
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
    body = "<h3>Kept (highest quality_score)</h3>" + _table(kept.select(cols).rename(renamed, strict=False),
                                                           text_cols=text_cols | {"dialogue"})
    body += "<h3>Dropped</h3>" + _table(dropped.select(cols).head(n).rename(renamed, strict=False),
                                        text_cols=text_cols | {"dialogue"})
    return _section("Examples", body, _stale_note(run_dir, stage).strip())


def _eval_section(run_dir: Path) -> str:
    frame = read_output(run_dir, "eval")
    if frame is None or frame.height == 0:
        return ""
    if {"variant", "metric", "value"} <= set(frame.columns):
        fig = go.Figure()
        for variant in frame["variant"].unique(maintain_order=True).to_list():
            part = frame.filter(pl.col("variant") == variant)
            fig.add_trace(go.Bar(name=str(variant), x=part["metric"].cast(pl.String).to_list(),
                                 y=part["value"].cast(pl.Float64).to_list()))
        fig.update_layout(barmode="group", title="evaluation by variant", xaxis_title="metric",
                          yaxis_title="value")
        return _section("Evaluation", _fig_html(fig, 380) + _table(frame.head(200)),
                        _stale_note(run_dir, "eval").strip())
    return _section("Evaluation", _table(frame.head(200)), _stale_note(run_dir, "eval").strip())


def _kpis(run_dir: Path) -> str:
    data = stage_rows(run_dir)
    if data.height == 0:
        return ""
    items = [(f"{data['rows_out'][0]}", f"rows out of {data['stage'][0]}")]
    for stage in ("assess", "verify", "export"):
        part = data.filter(pl.col("stage") == stage)
        if part.height:
            items.append((f"{part['rows_kept'][0]}", f"kept after {stage}"))
    cells = "".join(f'<div class="kpi"><b>{html.escape(v)}</b>{html.escape(k)}</div>' for v, k in items)
    return f'<section><div class="kpis">{cells}</div></section>'


def _table(frame: pl.DataFrame, text_cols: set[str] | None = None) -> str:
    text_cols = text_cols or set()
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.iter_rows(named=True):
        cells = []
        for c, v in row.items():
            if isinstance(v, list):
                inner = "<br>".join(f'<span class="reason">{html.escape(str(x))}</span>' for x in v)
                cells.append(f"<td>{inner}</td>")
            else:
                text = "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
                if c in text_cols and len(text) > 4000:
                    text = text[:4000] + " ..."
                if c in text_cols:  # long texts scroll inside their cell
                    cells.append(f'<td class="text"><div class="scroll">{html.escape(text)}</div></td>')
                else:
                    cells.append(f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _study_section(run_dir: Path) -> str:
    from ..study.render import study_section  # rendered by the study package (dialengine study)

    return study_section(run_dir)


def build_report(run_dir: Path, *, examples: int | None = None) -> str:
    run_dir = Path(run_dir)
    summary = read_json(run_dir, f"assess/{SUMMARY}") or {}
    n_examples = examples if examples is not None else int(summary.get("examples", 8))
    sections = [_stale_banner(run_dir), _kpis(run_dir), _rows_section(run_dir), _metric_section(run_dir), _reasons_section(run_dir),
                _mix_section(run_dir), _clusters_section(run_dir), _examples_section(run_dir, n_examples),
                _eval_section(run_dir), _study_section(run_dir)]
    body = "".join(s for s in sections if s) or _section("Empty run", "<p>No stage outputs yet.</p>")
    title = f"dialinsight-engine report: {run_dir.name}"
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style>"
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(str(run_dir))} &middot; generated {generated}</p></header>"
        f"<main>{body}</main></body></html>"
    )


def write_report(run_dir: Path, path: Path, *, examples: int | None = None) -> Path:
    return write_text(Path(path), build_report(run_dir, examples=examples))
