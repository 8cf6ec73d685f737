"""Column names and conventions shared by the stages (the data contract between them).

Row-level conventions:
- a frame with a ``kept`` (Boolean) column carries rows that were filtered out too, so reports
  and ``dialengine explain`` can say why; downstream stages use only ``kept`` rows;
- ``reasons`` (List[String]) holds every reason a row was filtered (empty when kept).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import polars as pl

#: placeholder kept inside an instruction for the dialogue; filled in by `compose_prompt`
DIALOGUE_PLACEHOLDER = "{dialogue}"

# ingest
DIALOGUE_ID = "dialogue_id"
SOURCE = "source"
TURNS = "turns"  # List[Struct{role: String, text: String}]
DIALOGUE_TEXT = "dialogue_text"  # "Customer: ...\nAgent: ..." rendering of the turns
TRUTH = "truth"  # JSON text or null: ground truth carried through unchanged (a struct on disk, run/dataset.py)
META = "meta"  # JSON text: the record's other fields (a struct on disk where records agree)
N_TURNS = "n_turns"
# scenes
SCENES = "scenes"  # List[String]
ROLES = "roles"  # List[String]
# seeds / evolve
INSTRUCTION_ID = "instruction_id"
SCENE = "scene"
TASK = "task"
INSTRUCTION = "instruction"  # task instruction containing DIALOGUE_PLACEHOLDER
PROMPT = "prompt"  # instruction with the dialogue filled in: what a model sees
OUTPUT_SCHEMA = "output_schema"  # JSON schema text or null (a struct on disk where the tasks' schemas agree)
PARENT_ID = "parent_id"
OPERATOR = "operator"
ROUND = "round"
# filtering
KEPT = "kept"
REASONS = "reasons"
QUALITY_SCORE = "quality_score"
# labels
RESPONSE = "response"
# export
SPLIT = "split"  # TRAIN or VALIDATION when the export splits by dialogue
MESSAGES = "messages"  # List[Struct{role: String, content: String}]: the row as OpenAI chat messages
TRAIN, VALIDATION = "train", "validation"

TURNS_DTYPE = pl.List(pl.Struct({"role": pl.String, "text": pl.String}))
MESSAGES_DTYPE = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


def without_nulls(value: Any) -> Any:
    """`value` with every object key whose value is null dropped, at any depth (list items stay).
    An Arrow struct cannot tell an absent field from a null one, and the engine's selection
    and evaluators treat both as "not stated"."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def json_text(value: Any) -> str:
    """The canonical text of a record's JSON value (`truth`, `meta`): null keys dropped, keys
    sorted, so the same value is the same text and fits an Arrow struct on disk."""
    return json.dumps(without_nulls(value), sort_keys=True, default=str)


def compose_prompt(instruction: str, dialogue_text: str) -> str:
    """Fill the dialogue into an instruction (appended when the placeholder is missing)."""
    if DIALOGUE_PLACEHOLDER in instruction:
        return instruction.replace(DIALOGUE_PLACEHOLDER, dialogue_text)
    return f"{instruction}\n\nDialogue:\n{dialogue_text}"


def stable_id(*parts: object, length: int = 16) -> str:
    """A short content hash used for row ids, so ids survive reruns and reordering."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8"))
    return h.hexdigest()[:length]


def with_row_status(df: pl.DataFrame) -> pl.DataFrame:
    """The frame with the ``kept`` (default true) and ``reasons`` (default empty) columns
    every filtering stage reads and extends, added where an earlier stage did not write them."""
    if KEPT not in df.columns:
        df = df.with_columns(pl.lit(True).alias(KEPT))
    if REASONS not in df.columns:
        df = df.with_columns(pl.lit([], dtype=pl.List(pl.String)).alias(REASONS))
    return df


def kept_rows(df: pl.DataFrame) -> pl.DataFrame:
    """Only the rows still in play (all rows when the frame has no ``kept`` column)."""
    return df.filter(pl.col(KEPT)) if KEPT in df.columns else df


def training_rows(df: pl.DataFrame) -> pl.DataFrame:
    """The rows of an export frame a trainer may see: validation rows are held out."""
    return df.filter(pl.col(SPLIT) != VALIDATION) if SPLIT in df.columns else df
