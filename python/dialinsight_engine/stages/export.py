"""Stage `export`: the final data set as OpenAI-chat JSONL, ShareGPT and Alpaca files, so
LLaMA-Factory, TRL or any other trainer can use it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from .base import ORDER, Stage

if TYPE_CHECKING:
    from ..run.context import StageContext


def chat_messages(system: str, prompt: str, response: str | None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def to_format(fmt: str, row: dict[str, Any], system: str) -> dict[str, Any]:
    prompt, response = row[R.PROMPT], row.get(R.RESPONSE)
    if fmt == "openai":
        return {"messages": chat_messages(system, prompt, response)}
    if fmt == "sharegpt":
        turns = [{"from": "human", "value": prompt}]
        if response is not None:
            turns.append({"from": "gpt", "value": response})
        return {"system": system, "conversations": turns} if system else {"conversations": turns}
    # alpaca: the instruction without the dialogue, which goes to `input`
    instruction = row[R.INSTRUCTION].replace(R.DIALOGUE_PLACEHOLDER, "").strip()
    return {"instruction": instruction, "input": row[R.DIALOGUE_TEXT], "output": response or "",
            **({"system": system} if system else {})}


class ExportStage(Stage):
    name = "export"
    order = ORDER["export"]
    config_keys = ("export",)
    description = "write the final data set as OpenAI-chat, ShareGPT and Alpaca JSONL"

    def run(self, ctx: StageContext) -> pl.DataFrame:
        df = R.kept_rows(ctx.input)
        system = ctx.spec.export.system_prompt
        if R.RESPONSE not in df.columns:
            ctx.log.warning("input has no responses (no label stage): exporting prompts only")
            df = df.with_columns(pl.lit(None, dtype=pl.String).alias(R.RESPONSE))
        rows = df.to_dicts()
        for fmt in ctx.spec.export.formats:
            lines = [json.dumps(to_format(fmt, r, system), ensure_ascii=False) for r in rows]
            ctx.write_text(f"{fmt}.jsonl", "\n".join(lines) + ("\n" if lines else ""))
        ctx.stats["exported"] = len(rows)
        keep = [c for c in (R.INSTRUCTION_ID, R.DIALOGUE_ID, R.SCENE, R.TASK, R.OPERATOR, R.INSTRUCTION,
                            R.PROMPT, R.RESPONSE, R.TRUTH, R.OUTPUT_SCHEMA, R.QUALITY_SCORE) if c in df.columns]
        messages = [json.dumps(chat_messages(system, r[R.PROMPT], r[R.RESPONSE]), ensure_ascii=False)
                    for r in rows]
        return df.select(keep).with_columns(pl.Series("messages", messages, dtype=pl.String))
