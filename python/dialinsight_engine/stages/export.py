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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..dialogue import chat_messages
from ..errors import UserError
from ..executors.base import PartitionContext, RowStage, merge_stats
from ..run import atomic, dataset, faults
from ..run.stage import ORDER

if TYPE_CHECKING:
    from ..run.context import StageContext

SPLIT, TRAIN, VALIDATION = R.SPLIT, R.TRAIN, R.VALIDATION
HF_FOLDER = "hf"
DATASET_INFO = "dataset_info.json"
CARD = "README.md"
FRAGMENTS = ".fragments"  # each partition's lines of every file, joined by `finish`
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


@dataclass(frozen=True)
class ExportPlan:
    """What every partition's map needs: the split (decided over the whole pool) and where its
    file fragments go."""

    held_out: frozenset[str]  # the dialogues in the validation split
    splits: tuple[str, ...]
    fragments: str  # <stage>/.fragments: one folder of fragments per partition
    add_response: bool  # the input has no responses (no label stage)
    partitions: int  # of the input, so of the output


class ExportStage(RowStage):
    """Row-parallel on either executor: `prepare` splits the dialogues over the whole pool,
    each partition writes its rows' lines of every file as fragments (and its output rows),
    `finish` joins the fragments in partition order into each file, atomically."""

    name = "export"
    order = ORDER["export"]
    config_keys = ("export",)
    version = "3"  # 3: `messages` is list<struct<role, content>>, truth/output_schema structs on disk
    description = "write the data set: OpenAI chat, TRL prompt-completion, ShareGPT, Alpaca (+ split, datasets)"

    def prepare(self, ctx: StageContext) -> ExportPlan:
        cfg = ctx.spec.export
        ids: list[str] = []
        has_response, partitions = True, 0
        for frame in ctx.iter_input():  # only the kept rows' dialogue ids are gathered
            ids += R.kept_rows(frame)[R.DIALOGUE_ID].cast(pl.String).to_list()
            has_response, partitions = R.RESPONSE in frame.columns, partitions + 1
        if not has_response:
            ctx.log.warning("input has no responses (no label stage): exporting prompts only")
        splits = assign_splits(ids, cfg.validation_fraction, cfg.split_seed)
        self._plan = ExportPlan(frozenset(d for d, s in splits.items() if s == VALIDATION),
                                (TRAIN, VALIDATION) if cfg.validation_fraction > 0 else (TRAIN,),
                                str(ctx.stage_dir / FRAGMENTS), not has_response, partitions)
        return self._plan

    def map_partition(self, pctx: PartitionContext, frame: pl.DataFrame, state: ExportPlan) -> pl.DataFrame:
        cfg = pctx.spec.export
        df = with_split(R.kept_rows(frame), state)
        folder = fragment_folder(state, pctx.index)
        for split in state.splits:
            rows = df.filter(pl.col(SPLIT) == split).to_dicts()
            for fmt in cfg.formats:
                lines = "".join(json.dumps(to_format(fmt, r, cfg.system_prompt), ensure_ascii=False) + "\n"
                                for r in rows)
                atomic.write_text(folder / split_file(fmt, split, len(state.splits) > 1), lines)
            pctx.stats.setdefault("splits", {})[split] = len(rows)
        pctx.stats["exported"] = df.height
        return output_rows(df, cfg.system_prompt)

    def finish(self, ctx: StageContext, rows_out: int) -> None:
        self.conclude(ctx, self._plan, None)

    def conclude(self, ctx: StageContext, plan: ExportPlan, output: pl.DataFrame | None) -> None:
        """Join each file's fragments; the dataset description, the `datasets` folder."""
        cfg = ctx.spec.export
        parts = plan.partitions if output is None else 1
        multi = len(plan.splits) > 1
        for split in plan.splits:
            for fmt in cfg.formats:
                name = split_file(fmt, split, multi)
                join_fragments(ctx.stage_dir / name, [fragment_folder(plan, i) / name for i in range(parts)])
        name = cfg.dataset_name or ctx.spec.project.name
        ctx.write_json(DATASET_INFO, dataset_info(name, list(cfg.formats), list(plan.splits),
                                                  system=bool(cfg.system_prompt)))
        if cfg.hf_dataset:
            df = output if output is not None else dataset.read_output(ctx.stage_dir)
            assert df is not None
            card = dataset_card(ctx, name, df, list(plan.splits))
            save_hf_dataset(ctx.stage_dir / HF_FOLDER, df, cfg.system_prompt, list(plan.splits), card)
            ctx.stats["hf_dataset"] = str(ctx.stage_dir / HF_FOLDER)
        shutil.rmtree(plan.fragments, ignore_errors=True)

    def __getstate__(self) -> dict[str, Any]:
        # the plan travels once as the map's argument, not again inside the stage
        return {k: v for k, v in self.__dict__.items() if k != "_plan"}

    def run(self, ctx: StageContext) -> pl.DataFrame:
        """The whole output in one frame, outside the runner (the files written as in a run)."""
        plan = self.prepare(ctx)
        pctx = PartitionContext(ctx.spec, self.name, 0, ctx.registry)
        out = self.map_partition(pctx, ctx.input, plan)
        merge_stats(ctx.stats, pctx.stats)
        self.conclude(ctx, plan, out)
        return out


def fragment_folder(plan: ExportPlan, index: int) -> Path:
    """Where partition `index` writes its lines of every file (named as its Parquet part)."""
    return Path(plan.fragments) / dataset.part_name(index).removesuffix(".parquet")


def with_split(df: pl.DataFrame, plan: ExportPlan) -> pl.DataFrame:
    """The kept rows with their dialogue's split (and a null response when there is none)."""
    if plan.add_response:
        df = df.with_columns(pl.lit(None, dtype=pl.String).alias(R.RESPONSE))
    held = pl.col(R.DIALOGUE_ID).cast(pl.String).is_in(list(plan.held_out))
    return df.with_columns(pl.when(held).then(pl.lit(VALIDATION)).otherwise(pl.lit(TRAIN)).alias(SPLIT))


def output_rows(df: pl.DataFrame, system: str) -> pl.DataFrame:
    """The stage's output rows: metadata, the texts, the split and the chat `messages`."""
    keep = [c for c in (*META_COLUMNS, R.INSTRUCTION, R.PROMPT, R.RESPONSE, R.TRUTH, R.OUTPUT_SCHEMA)
            if c in df.columns]
    messages = [chat_messages(system, prompt, response) for prompt, response in df.select(R.PROMPT, R.RESPONSE).iter_rows()]
    return df.select(*keep, SPLIT).with_columns(pl.Series(R.MESSAGES, messages, dtype=R.MESSAGES_DTYPE))


def join_fragments(target: Path, fragments: list[Path]) -> Path:
    """`target` as the fragments one after the other, swapped in whole once complete."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            for i, fragment in enumerate(fragments):
                with open(fragment, "rb") as part:
                    shutil.copyfileobj(part, out)
                if i == len(fragments) // 2:  # a named point mid-file, as atomic.write_bytes has
                    out.flush()
                    faults.point(f"write:{target.parent.name}/{target.name}:half")

    return atomic.write_with(target, write)


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
