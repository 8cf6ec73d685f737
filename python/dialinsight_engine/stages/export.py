"""Stage `export`: the final data set in the files the usual trainers read directly.

- `openai.jsonl`: OpenAI chat (`messages`), TRL's conversational format;
- `prompt_completion.jsonl`: TRL's conversational prompt-completion format (`prompt`,
  `completion`), on which SFTTrainer takes the loss on the completion only;
- `sharegpt.jsonl` and `alpaca.jsonl`: LLaMA-Factory's two formats, described in
  `dataset_info.json` (copy its entries into LLaMA-Factory's own, or point `dataset_dir` here);
- optionally a train/validation split by dialogue (seeded: a dialogue's rows never straddle
  the split), written as `<format>.train.jsonl` and `<format>.validation.jsonl`;
- optionally a Hugging Face `datasets` folder (`hf/`, `save_to_disk`) with a dataset card.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..dialogue import chat_messages
from ..errors import UserError
from ..run.stage import ORDER, Stage

if TYPE_CHECKING:
    from ..run.context import StageContext

SPLIT, TRAIN, VALIDATION = R.SPLIT, R.TRAIN, R.VALIDATION
HF_FOLDER = "hf"
DATASET_INFO = "dataset_info.json"
CARD = "README.md"
#: columns carried from the input frame into the output frame and the `datasets` folder
META_COLUMNS = (R.INSTRUCTION_ID, R.DIALOGUE_ID, R.SCENE, R.TASK, R.OPERATOR, R.QUALITY_SCORE)


def prompt_completion(system: str, prompt: str, response: str | None) -> dict[str, list[dict[str, str]]]:
    """TRL's conversational prompt-completion row: the loss goes on `completion` only."""
    completion = [{"role": "assistant", "content": response}] if response is not None else []
    return {"prompt": chat_messages(system, prompt, None), "completion": completion}


def to_format(fmt: str, row: dict[str, Any], system: str) -> dict[str, Any]:
    prompt, response = row[R.PROMPT], row.get(R.RESPONSE)
    if fmt == "openai":
        return {"messages": chat_messages(system, prompt, response)}
    if fmt == "prompt_completion":
        return prompt_completion(system, prompt, response)
    if fmt == "sharegpt":
        turns = [{"from": "human", "value": prompt}]
        if response is not None:
            turns.append({"from": "gpt", "value": response})
        return {"system": system, "conversations": turns} if system else {"conversations": turns}
    # alpaca: the instruction without the dialogue, which goes to `input`
    instruction = row[R.INSTRUCTION].replace(R.DIALOGUE_PLACEHOLDER, "").strip()
    return {"instruction": instruction, "input": row[R.DIALOGUE_TEXT], "output": response or "",
            **({"system": system} if system else {})}


def assign_splits(dialogue_ids: list[str], fraction: float, seed: int) -> dict[str, str]:
    """train/validation per dialogue: dialogues ordered by a seeded hash, the first
    round(fraction * n) (at least one when fraction > 0 and there are two or more) held out.
    A hash order, not a shuffle, so adding a dialogue moves no other dialogue's split."""
    unique = sorted(set(dialogue_ids))
    if fraction <= 0 or len(unique) < 2:
        return dict.fromkeys(unique, TRAIN)
    order = sorted(unique, key=lambda d: hashlib.sha256(f"{seed}|{d}".encode()).hexdigest())
    n_val = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    held = set(order[:n_val])
    return {d: VALIDATION if d in held else TRAIN for d in unique}


def dataset_info(name: str, formats: list[str], splits: list[str], *, system: bool) -> dict[str, Any]:
    """LLaMA-Factory `dataset_info.json` entries for the ShareGPT, Alpaca and OpenAI files
    (the `system` column is mapped only when the rows have one)."""
    chat_tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"}
    with_system = {"system": "system"} if system else {}
    entries = {
        "sharegpt": {"formatting": "sharegpt", "columns": {"messages": "conversations", **with_system}},
        "alpaca": {"formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input",
                                                       "response": "output", **with_system}},
        "openai": {"formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": chat_tags},
    }
    info: dict[str, Any] = {}
    for fmt in formats:
        if fmt not in entries:
            continue
        for split in splits:
            key = f"{name}_{fmt}" + ("" if split == TRAIN else f"_{split}")
            info[key] = {"file_name": split_file(fmt, split, len(splits) > 1), **entries[fmt]}
    return info


def split_file(fmt: str, split: str, has_split: bool) -> str:
    return f"{fmt}.{split}.jsonl" if has_split else f"{fmt}.jsonl"


class ExportStage(Stage):
    name = "export"
    order = ORDER["export"]
    config_keys = ("export",)
    version = "3"  # 3: `messages` is list<struct<role, content>>, truth/output_schema structs on disk
    description = "write the data set: OpenAI chat, TRL prompt-completion, ShareGPT, Alpaca (+ split, datasets)"

    def run(self, ctx: StageContext) -> pl.DataFrame:
        cfg = ctx.spec.export
        df = R.kept_rows(ctx.input)
        system = cfg.system_prompt
        if R.RESPONSE not in df.columns:
            ctx.log.warning("input has no responses (no label stage): exporting prompts only")
            df = df.with_columns(pl.lit(None, dtype=pl.String).alias(R.RESPONSE))
        splits = assign_splits(df[R.DIALOGUE_ID].cast(pl.String).to_list(), cfg.validation_fraction, cfg.split_seed)
        df = df.with_columns(pl.col(R.DIALOGUE_ID).cast(pl.String).replace_strict(splits, default=TRAIN).alias(SPLIT))
        names = [TRAIN, VALIDATION] if cfg.validation_fraction > 0 else [TRAIN]
        for split in names:
            rows = df.filter(pl.col(SPLIT) == split).to_dicts()
            for fmt in cfg.formats:
                lines = [json.dumps(to_format(fmt, r, system), ensure_ascii=False) for r in rows]
                ctx.write_text(split_file(fmt, split, len(names) > 1), "\n".join(lines) + ("\n" if lines else ""))
            ctx.stats.setdefault("splits", {})[split] = len(rows)
        name = cfg.dataset_name or ctx.spec.project.name
        ctx.write_json(DATASET_INFO, dataset_info(name, list(cfg.formats), names, system=bool(system)))
        ctx.stats["exported"] = df.height
        keep = [c for c in (*META_COLUMNS, R.INSTRUCTION, R.PROMPT, R.RESPONSE, R.TRUTH, R.OUTPUT_SCHEMA)
                if c in df.columns]
        messages = [chat_messages(system, prompt, response) for prompt, response in df.select(R.PROMPT, R.RESPONSE).iter_rows()]
        out = df.select(*keep, SPLIT).with_columns(pl.Series(R.MESSAGES, messages, dtype=R.MESSAGES_DTYPE))
        if cfg.hf_dataset:
            card = dataset_card(ctx, name, df, names)
            save_hf_dataset(ctx.stage_dir / HF_FOLDER, df, system, names, card)
            ctx.stats["hf_dataset"] = str(ctx.stage_dir / HF_FOLDER)
        return out


# -- Hugging Face `datasets` folder ----------------------------------------------------------------
def hf_records(df: pl.DataFrame, system: str) -> list[dict[str, Any]]:
    """One `datasets` row per exported row: both TRL formats side by side, plus metadata."""
    meta = [c for c in META_COLUMNS if c in df.columns]
    records = []
    for row in df.to_dicts():
        response = row[R.RESPONSE]
        records.append({**{c: row[c] for c in meta},
                        "messages": chat_messages(system, row[R.PROMPT], response),
                        **prompt_completion(system, row[R.PROMPT], response)})
    return records


def save_hf_dataset(target: Path, df: pl.DataFrame, system: str, splits: list[str], card: str) -> Path:
    """`DatasetDict(...).save_to_disk(target)` plus README.md, swapped in whole (a kill never
    leaves half a folder)."""
    try:
        import datasets
    except ImportError:
        raise UserError("export.hf_dataset = true needs the `datasets` package", key="export.hf_dataset",
                        hint="pip install 'dialinsight-engine[hf]'") from None
    parts = {split: datasets.Dataset.from_list(hf_records(df.filter(pl.col(SPLIT) == split), system))
             for split in splits}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{target.name}-", dir=target.parent))
    try:
        datasets.DatasetDict(parts).save_to_disk(str(tmp / "d"))
        (tmp / "d" / CARD).write_text(card, encoding="utf-8")
        old = target.with_name(f".old-{target.name}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp / "d", target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def dataset_card(ctx: StageContext, name: str, df: pl.DataFrame, splits: list[str]) -> str:
    """A short dataset card: where the data came from, how many rows per split, scene and
    task, and what filtered it on the way (each stage's rows in and kept, the thresholds)."""
    spec = ctx.spec
    counts = {s: df.filter(pl.col(SPLIT) == s).height for s in splits}
    yaml_splits = "".join(f"  - split: {s}\n    path: {s}/*.arrow\n" for s in splits)
    lines = [
        "---", "configs:", "- config_name: default", "  data_files:", yaml_splits.rstrip("\n"),
        "task_categories:", "- text-generation", f"language:\n- {spec.project.language}", "---", "",
        f"# {name}", "",
        spec.project.description or "Supervised fine-tuning data built by dialinsight-engine.", "",
        f"- spec: `{Path(spec.source).name if spec.source else '?'}` (project `{spec.project.name}`)",
        "- rows: " + ", ".join(f"{s} {n}" for s, n in counts.items()),
        f"- split: by dialogue, validation fraction {spec.export.validation_fraction}, seed {spec.export.split_seed}"
        if len(splits) > 1 else "- split: none (every row in `train`)",
        "- columns: `messages` (conversational), `prompt`/`completion` (prompt-completion), metadata",
        "", "## Rows by scene and task", "", "| scene | task | rows |", "| --- | --- | --- |",
    ]
    if {R.SCENE, R.TASK} <= set(df.columns):
        mix = df.group_by(R.SCENE, R.TASK).agg(n=pl.len()).sort(R.SCENE, R.TASK)
        lines += [f"| {r[R.SCENE]} | {r[R.TASK]} | {r['n']} |" for r in mix.iter_rows(named=True)]
    lines += ["", "## Filters applied", "", *filter_lines(ctx), ""]
    return "\n".join(lines)


def filter_lines(ctx: StageContext) -> list[str]:
    """One line per upstream stage that dropped rows, and the quality thresholds in force."""
    from ..metrics.phases import SUMMARY
    from ..run.manifest import Manifest

    out = []
    for stage in ("ingest", "review", "assess", "sample", "verify"):
        manifest = Manifest.load(ctx.run_dir / stage)
        if manifest is None:
            continue
        kept = manifest.rows_kept if manifest.rows_kept is not None else manifest.rows_out
        out.append(f"- `{stage}`: {manifest.rows_in} rows in, {manifest.rows_out} out, {kept} kept")
        summary_path = ctx.run_dir / stage / SUMMARY
        if summary_path.exists():
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
            for metric, conf in (summary.get("metrics") or {}).items():
                bounds = [f"{k} {conf[k]}" for k in ("min", "max") if conf.get(k) is not None]
                if bounds:
                    out.append(f"  - {metric}: {', '.join(bounds)} ({conf.get('flagged', 0)} flagged)")
            if summary.get("min_score") is not None:
                out.append(f"  - quality_score: min {summary['min_score']}")
    if ctx.spec.review != "skip":
        out.append(f"- manual review: {ctx.spec.review}")
    return out or ["- none recorded"]
