"""A readability metric for dialinsight-engine: Flesch reading ease of a text column.

Everything a metric plugin needs is in this file: a `Metric` subclass with a `name`, a
`phase`, a pydantic `Config` for its spec params and a `score` method, and a `register_metrics`
hook that returns it.
"""

from __future__ import annotations

import re

import polars as pl
from pydantic import Field

from dialinsight_engine.hookspecs import hookimpl
from dialinsight_engine.metrics.base import Metric, MetricConfig, MetricContext

_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_VOWEL_GROUPS = re.compile(r"[aeiouy]+")


def syllables(word: str) -> int:
    """Vowel groups, less a silent final e; at least one."""
    word = word.lower()
    count = len(_VOWEL_GROUPS.findall(word))
    if word.endswith("e") and not word.endswith(("le", "ee")) and count > 1:
        count -= 1
    return max(count, 1)


def flesch(text: str) -> tuple[float, float]:
    """(Flesch reading ease, mean words per sentence) of `text`."""
    words = _WORD.findall(text or "")
    if not words:
        return 0.0, 0.0
    sentences = max(len(_SENTENCE_END.findall(text)), 1)
    words_per_sentence = len(words) / sentences
    syllables_per_word = sum(syllables(w) for w in words) / len(words)
    return 206.835 - 1.015 * words_per_sentence - 84.6 * syllables_per_word, words_per_sentence


class ReadabilityConfig(MetricConfig):
    column: str = Field("instruction", description="Text column to score")
    max_sentence_words: float | None = Field(None, gt=0, description="Flag rows with longer sentences on average")


class Readability(Metric):
    name = "readability"
    phase = "instruction"
    Config = ReadabilityConfig
    description = "Flesch reading ease of a text column (0..1, higher is easier)"
    version = "1"
    config: ReadabilityConfig

    def score(self, df: pl.DataFrame, ctx: MetricContext) -> pl.DataFrame:
        texts = df[self.config.column].fill_null("").str.replace_all("{dialogue}", "", literal=True)
        ease, per_sentence = zip(*(flesch(t) for t in texts.to_list()), strict=True) if df.height else ((), ())
        limit = self.config.max_sentence_words
        reasons = [
            f"sentences average {w:.0f} words (max {limit:g})" if limit is not None and w > limit else None
            for w in per_sentence
        ]
        return pl.DataFrame({
            "score": [min(max(e / 100.0, 0.0), 1.0) for e in ease],
            "flesch": list(ease),
            "words_per_sentence": list(per_sentence),
            "reason": reasons,
        }, schema={"score": pl.Float64, "flesch": pl.Float64, "words_per_sentence": pl.Float64, "reason": pl.String})


@hookimpl
def register_metrics() -> list[type]:
    return [Readability]
