"""Stage `review`: manual screening of the evolved instructions.

`dialengine review export RUN` writes every instruction with its lineage and metrics for a
person (CSV, JSONL, and a Label Studio import); `dialengine review import FILE [RUN]` reads
their accept / reject / edit decisions and stores them atomically in
`runs/<project>/review/decisions.jsonl` (later imports override earlier ones per
instruction). The stage applies them; its fingerprint holds the decisions' hash, so importing
new decisions reruns the pipeline from here. `review = "required"` with no decisions stops
the run (exit code 3) until a person has screened the instructions.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..errors import DataError, ReviewPending, UserError
from ..run import atomic
from ..run.dataset import read_output
from ..run.stage import ORDER, Stage

if TYPE_CHECKING:
    from ..run.context import StageContext
    from ..spec import Spec

DECISIONS = "decisions.jsonl"
DECISION = "review_decision"
NOTE = "review_note"
VALID = {"accept", "reject", "edit"}
EXPORT_COLUMNS = [
    R.INSTRUCTION_ID, "decision", "edited_instruction", "note", R.INSTRUCTION, R.KEPT, R.REASONS, R.SCENE,
    R.TASK, R.OPERATOR, R.ROUND, R.PARENT_ID, "parent_instruction", R.DIALOGUE_ID, "chars", "growth",
]


def decisions_path(run_dir: Path) -> Path:
    return run_dir / "review" / DECISIONS


def load_decisions(run_dir: Path) -> dict[str, dict[str, Any]]:
    path = decisions_path(run_dir)
    if not path.exists():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            out[item[R.INSTRUCTION_ID]] = item
    return out


def review_source(run_dir: Path) -> pl.DataFrame:
    """What the person screens: the evolve stage's output (the seeds' when evolve never ran)."""
    for stage in ("evolve", "seeds"):
        found = read_output(run_dir / stage)
        if found is not None:
            return found
    raise UserError(f"nothing to review in {run_dir}: run `dialengine apply SPEC --until evolve` first")


class ReviewStage(Stage):
    name = "review"
    order = ORDER["review"]
    config_keys = ("review",)
    version = "2"  # 2: metric detail columns NAME__DETAIL (was NAME.DETAIL); JSON columns as structs on disk
    description = "apply a person's accept / reject / edit decisions to the evolved instructions"

    def disabled_reason(self, spec: Spec) -> str | None:
        return 'review = "skip"' if spec.review == "skip" else None

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        path = decisions_path(ctx.run_dir)
        return {"decisions": atomic.file_sha256(path) if path.exists() else None}

    def run(self, ctx: StageContext) -> pl.DataFrame:
        df = R.with_row_status(ctx.input)
        decisions = load_decisions(ctx.run_dir)
        if not decisions and ctx.spec.review == "required":
            spec_arg = str(ctx.spec.source or ctx.run_dir)
            raise ReviewPending(
                f"{df.height} instructions await manual screening (review = \"required\"). Run "
                f"`dialengine review export {spec_arg}`, mark accept / reject / edit in the exported "
                f"file, then `dialengine review import FILE {spec_arg}` and apply again."
            )
        rows = df.to_dicts()
        counts = {"accept": 0, "reject": 0, "edit": 0, "undecided": 0}
        ids = set()
        for row in rows:
            ids.add(row[R.INSTRUCTION_ID])
            d = decisions.get(row[R.INSTRUCTION_ID])
            row[DECISION], row[NOTE] = (d["decision"], d.get("note") or None) if d else (None, None)
            if d is None:
                counts["undecided"] += 1  # keeps the automatic verdict
                continue
            counts[d["decision"]] += 1
            if d["decision"] == "reject":
                row[R.KEPT] = False
                row[R.REASONS] = [*row[R.REASONS], "review_rejected"]
                continue
            if d["decision"] == "edit":
                row[R.INSTRUCTION] = d["instruction"]
                row[R.PROMPT] = R.compose_prompt(d["instruction"], row[R.DIALOGUE_TEXT])
            row[R.KEPT], row[R.REASONS] = True, []  # a person's accept overrides the rules
        ctx.stats.update(counts, stale_decisions=len(set(decisions) - ids))
        schema: dict[str, Any] = {**df.schema, DECISION: pl.String, NOTE: pl.String}
        return pl.DataFrame(rows, schema=schema)


# -- export ----------------------------------------------------------------------------------
def export_rows(df: pl.DataFrame, decisions: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    by_id = {r[R.INSTRUCTION_ID]: r for r in df.select(R.INSTRUCTION_ID, R.INSTRUCTION).to_dicts()}
    rows = []
    for row in df.to_dicts():
        parent = by_id.get(row.get(R.PARENT_ID) or "")
        parent_text = parent[R.INSTRUCTION] if parent else None
        chars = len(row[R.INSTRUCTION])
        d = decisions.get(row[R.INSTRUCTION_ID], {})
        rows.append({
            R.INSTRUCTION_ID: row[R.INSTRUCTION_ID], "decision": d.get("decision", ""),
            "edited_instruction": d.get("instruction", ""), "note": d.get("note", ""),
            R.INSTRUCTION: row[R.INSTRUCTION], R.KEPT: row.get(R.KEPT, True), R.REASONS: row.get(R.REASONS) or [],
            R.SCENE: row[R.SCENE], R.TASK: row[R.TASK], R.OPERATOR: row[R.OPERATOR], R.ROUND: row[R.ROUND],
            R.PARENT_ID: row[R.PARENT_ID], "parent_instruction": parent_text, R.DIALOGUE_ID: row[R.DIALOGUE_ID],
            "chars": chars, "growth": round(chars / len(parent_text), 2) if parent_text else None,
            **({R.QUALITY_SCORE: row[R.QUALITY_SCORE]} if R.QUALITY_SCORE in row else {}),
        })
    # evolved rows first, identical texts together: a person judges each text once
    rows.sort(key=lambda r: (r[R.ROUND] == 0, r[R.TASK], r[R.INSTRUCTION], r[R.INSTRUCTION_ID]))
    return rows


LABEL_STUDIO_CONFIG = """<View>
  <Header value="$scene / $task / $operator (round $round)"/>
  <Text name="parent" value="$parent_instruction"/>
  <Text name="instruction" value="$instruction"/>
  <Choices name="decision" toName="instruction" choice="single" required="true">
    <Choice value="accept"/><Choice value="reject"/><Choice value="edit"/>
  </Choices>
  <TextArea name="edited_instruction" toName="instruction" placeholder="edited instruction (keep {dialogue})"/>
  <TextArea name="note" toName="instruction"/>
</View>
"""


def export_review(run_dir: Path, out_dir: Path | None = None, *, evolved_only: bool = False) -> dict[str, Path]:
    df = review_source(run_dir)
    if evolved_only:
        df = df.filter(pl.col(R.ROUND) > 0)
    rows = export_rows(df, load_decisions(run_dir))
    out = out_dir or run_dir / "review" / "export"
    flat = [{**r, R.REASONS: "; ".join(r[R.REASONS])} for r in rows]
    columns = [c for c in EXPORT_COLUMNS if c in (rows[0] if rows else {})] + (
        [R.QUALITY_SCORE] if rows and R.QUALITY_SCORE in rows[0] else [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns or EXPORT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(flat)
    paths = {
        "csv": atomic.write_text(out / "review.csv", buf.getvalue()),
        "jsonl": atomic.write_text(out / "review.jsonl",
                                   "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)),
        "label_studio": atomic.write_json(out / "label_studio.json", [
            {"data": {k: ("" if v is None else v) for k, v in r.items() if k not in ("decision", "edited_instruction", "note")}}
            for r in flat
        ]),
        "label_studio_config": atomic.write_text(out / "label_studio_config.xml", LABEL_STUDIO_CONFIG),
    }
    return paths


# -- import ----------------------------------------------------------------------------------
def _read_decision_file(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, record) pairs from CSV, JSONL or a Label Studio JSON export."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read decisions: {exc.strerror or exc}", file=path) from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))  # fields may hold newlines
        if reader.fieldnames is None or R.INSTRUCTION_ID not in reader.fieldnames:
            raise DataError(f"CSV needs an {R.INSTRUCTION_ID} column", file=path, line=1)
        out, start = [], reader.line_num + 1
        for row in reader:
            out.append((start, dict(row)))  # the line where the record starts
            start = reader.line_num + 1
        return out
    if path.suffix.lower() == ".jsonl":
        out = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append((i, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"broken JSON: {exc.msg}", file=path, line=i) from None
        return out
    if path.suffix.lower() == ".json":
        try:
            tasks = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"broken JSON: {exc.msg}", file=path, line=exc.lineno) from None
        return [(0, _from_label_studio(t)) for t in tasks if isinstance(t, dict)]
    raise DataError("decisions must be .csv, .jsonl or a Label Studio .json export", file=path)


def _from_label_studio(task: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {R.INSTRUCTION_ID: (task.get("data") or {}).get(R.INSTRUCTION_ID)}
    annotations = task.get("annotations") or []
    for item in (annotations[-1].get("result") or []) if annotations else []:
        value = item.get("value") or {}
        if item.get("type") == "choices" and value.get("choices"):
            record["decision"] = value["choices"][0]
        elif item.get("type") == "textarea" and value.get("text"):
            record[item.get("from_name", "note")] = "\n".join(value["text"])
    return record


def import_review(path: Path, run_dir: Path) -> dict[str, int]:
    """Validate a person's decisions and merge them into the run's decisions file."""
    known = set(review_source(run_dir)[R.INSTRUCTION_ID].to_list())
    decisions = load_decisions(run_dir)
    counts = {"accept": 0, "reject": 0, "edit": 0, "blank": 0}
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for line, rec in _read_decision_file(path):
        iid = str(rec.get(R.INSTRUCTION_ID) or "").strip()
        decision = str(rec.get("decision") or "").strip().lower()
        if not decision:
            counts["blank"] += 1
            continue
        if decision not in VALID:
            raise DataError(f"decision {decision!r} is not one of accept, reject, edit", key="decision", file=path, line=line or None)
        if iid not in known:
            raise DataError(f"unknown instruction_id {iid!r} (not in this run)", key=R.INSTRUCTION_ID, file=path, line=line or None)
        item: dict[str, Any] = {R.INSTRUCTION_ID: iid, "decision": decision, "note": str(rec.get("note") or ""),
                                "source": str(path), "time": now}
        if decision == "edit":
            edited = str(rec.get("edited_instruction") or "").strip()
            if not edited:
                raise DataError("decision 'edit' needs the new text in edited_instruction",
                                key="edited_instruction", file=path, line=line or None)
            item["instruction"] = edited
        decisions[iid] = item
        counts[decision] += 1
    atomic.write_text(decisions_path(run_dir), "".join(
        json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n" for _, d in sorted(decisions.items())))
    counts["total_stored"] = len(decisions)
    return counts

