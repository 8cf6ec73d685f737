"""`input_complexity`: how much there is to work with in the dialogue.

Turns, length, distinct entities and slot values mentioned (names, numbers, places, times),
lexical diversity (MTLD from the Rust core) and speaker balance (normalised entropy of the
words each role says), each saturating at a declared cap, blended into a 0..1 score.
"""

from __future__ import annotations

import math
import re

import polars as pl
from pydantic import Field, field_validator

from .. import records as R
from .base import Metric, MetricConfig, MetricContext
from .blend import check_measures, saturating_blend
from .textutil import split_turns

MEASURES = ("turns", "words", "entities", "mtld", "balance")

# Capitalised words not at a sentence start, numbers, times and prices: cheap entity/slot
# mentions that need no tagger. Sentence-initial capitals are skipped to avoid "The", "I"...
_ENTITY = re.compile(
    r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*"
    r"|\$?\d+(?:[.,:]\d+)*\s*(?:am|pm|dollars?)?",
    re.MULTILINE,
)
_STOP = {"I", "I'm", "Hi", "Hello", "Yes", "No", "Thanks", "Thank", "Okay", "Ok", "Sure", "Customer", "Agent"}


def distinct_entities(text: str) -> int:
    found = {m.group(0).strip().lower() for m in _ENTITY.finditer(text) if m.group(0).strip() not in _STOP}
    return len({f for f in found if f})


def speaker_balance(turns: list[tuple[str, str]]) -> float:
    """1.0 when every role says as many words, towards 0 when one role says everything."""
    per_role: dict[str, int] = {}
    for role, text in turns:
        per_role[role] = per_role.get(role, 0) + len(text.split())
    total = sum(per_role.values())
    if len(per_role) < 2 or total == 0:
        return 0.0
    entropy = -sum(n / total * math.log(n / total) for n in per_role.values() if n)
    return entropy / math.log(len(per_role))


class InputComplexityConfig(MetricConfig):
    column: str = Field(R.DIALOGUE_TEXT, description="Rendered dialogue ('Role: text' lines)")
    caps: dict[str, float] = Field(
        default_factory=lambda: {"turns": 16.0, "words": 300.0, "entities": 15.0, "mtld": 80.0, "balance": 1.0})
    weights: dict[str, float] = Field(
        default_factory=lambda: {"turns": 0.2, "words": 0.2, "entities": 0.25, "mtld": 0.15, "balance": 0.2})

    @field_validator("caps", "weights")
    @classmethod
    def _known(cls, value: dict[str, float]) -> dict[str, float]:
        return check_measures(value, MEASURES)


class InputComplexity(Metric):
    name = "input_complexity"
    phase = "instruction"
    Config = InputComplexityConfig
    description = "dialogue complexity: turns, length, entities/slots, diversity, speaker balance"
    config: InputComplexityConfig

    #: `language_texts` are the distinct dialogues: over the pool, distinct across partitions too
    language_unique = True

    def row_local(self) -> bool:
        return True

    def language_texts(self, df: pl.DataFrame) -> pl.Series:
        return df[self.config.column].fill_null("").unique(maintain_order=True)

    def score(self, df: pl.DataFrame, ctx: MetricContext) -> pl.DataFrame:
        from .. import fast

        cfg = self.config
        texts = df[cfg.column].fill_null("")
        # many instructions share a dialogue: measure each distinct dialogue once
        unique = self.language_texts(df)
        measures = fast.text_metrics(unique, language=ctx.text_language(self.name, unique))
        split = [split_turns(t) for t in unique.to_list()]
        per_dialogue = pl.DataFrame({
            "_text": unique,
            "turns": [len(t) for t in split],
            "words": measures["words"],
            "entities": [distinct_entities(t) for t in unique.to_list()],
            "mtld": measures["mtld"],
            "balance": [speaker_balance(t) for t in split],
        })
        per_dialogue = per_dialogue.with_columns(score=saturating_blend(cfg.weights, cfg.caps))
        out = pl.DataFrame({"_text": texts}).join(per_dialogue, on="_text", how="left", maintain_order="left")
        return out.drop("_text").select("score", "turns", "words", "entities", "mtld", "balance")
