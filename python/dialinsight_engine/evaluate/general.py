"""General-capability evaluators: gold-answer log-likelihood on GSM8K-style questions,
perplexity on general text, and multiple-choice accuracy by log-likelihood.

All three read local files; the packaged defaults (`general_text.txt`, `mc_example.jsonl`)
were written for this project."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from ..errors import DataError
from .base import EvaluatorConfig, GeneralEvaluator
from .scoring import Score

if TYPE_CHECKING:
    from .lm import LanguageModel, ModelHandle


def packaged(name: str) -> Path:
    """A file shipped in the package's data folder (`@examples/NAME`), confined to it."""
    from ..spec.models import examples_path

    return examples_path(name)


def resolve(path: str, base_dir: Path | None) -> Path:
    if path.startswith("@examples/"):
        return packaged(path.removeprefix("@examples/"))
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else base_dir / p


def read_jsonl(path: Path, key: str) -> list[tuple[int, dict]]:
    if not path.exists():
        raise DataError(f"evaluation file not found: {path}", key=key)
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append((lineno, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataError(f"invalid JSON: {exc.msg}", file=path, line=lineno) from None
    return rows


class Gsm8kConfig(EvaluatorConfig):
    path: str = Field(description="JSONL with `question` and `answer` (GSM8K's format)")
    n: int = Field(100, ge=1, description="How many questions to score")
    offset: int = Field(0, ge=0, description="Skip this many rows first")


class Gsm8kLoglik(GeneralEvaluator):
    name = "gsm8k_loglik"
    Config = Gsm8kConfig
    primary = "loglik_per_token"
    description = "mean log-likelihood per token of the gold worked answer to GSM8K questions"
    config: Gsm8kConfig

    def evaluate(self, lm: LanguageModel, *, base_dir: Path | None, exclude: set[str]) -> list[Score]:
        pairs, skipped = self._pairs(lm, base_dir, exclude)
        scored = lm.continuation_logprobs(pairs)
        total, tokens = sum(s for s, _ in scored), sum(n for _, n in scored)
        return [Score("loglik_per_token", total / tokens, len(pairs)),
                Score("loglik_per_answer", sum(s / n for s, n in scored) / len(scored), len(pairs)),
                Score("skipped_in_training", float(skipped), len(pairs))]

    def item_scores(self, handle: ModelHandle, *, base_dir: Path | None, exclude: set[str]) -> tuple[str, list[float]]:
        """Per question: the gold answer's log-likelihood per token (for paired comparisons)."""
        pairs, _ = self._pairs(handle.lm, base_dir, exclude)
        return "loglik_per_token", [s / n for s, n in handle.lm.continuation_logprobs(pairs)]

    def _pairs(self, lm: LanguageModel, base_dir: Path | None, exclude: set[str]) -> tuple[list[tuple[str, str]], int]:
        key = f"eval.evaluators.{self.name}.path"
        rows = read_jsonl(resolve(self.config.path, base_dir), key)[self.config.offset:]
        pairs: list[tuple[str, str]] = []
        skipped = 0
        for lineno, rec in rows:
            if len(pairs) == self.config.n:
                break
            if not isinstance(rec.get("question"), str) or not isinstance(rec.get("answer"), str):
                raise DataError("a row needs string `question` and `answer`", file=self.config.path, line=lineno)
            if rec["question"] in exclude:
                skipped += 1
                continue
            pairs.append((lm.chat_prefix(rec["question"]), rec["answer"]))
        if not pairs:
            raise DataError("no GSM8K question left to score", key=key)
        return pairs, skipped


class PerplexityConfig(EvaluatorConfig):
    path: str = Field("@examples/general_text.txt", description="Text file; paragraphs split on blank lines")
    max_paragraphs: int | None = Field(None, ge=1)


class Perplexity(GeneralEvaluator):
    name = "perplexity"
    Config = PerplexityConfig
    primary = "perplexity"
    higher_is_better = False
    description = "perplexity on general text (plain language modelling, no chat template)"
    config: PerplexityConfig

    def evaluate(self, lm: LanguageModel, *, base_dir: Path | None, exclude: set[str]) -> list[Score]:
        scored = lm.text_logprobs(self._paragraphs(base_dir))
        total, tokens = sum(s for s, _ in scored), sum(n for _, n in scored)
        return [Score("perplexity", math.exp(-total / tokens), len(scored)),
                Score("loglik_per_token", total / tokens, len(scored))]

    def item_scores(self, handle: ModelHandle, *, base_dir: Path | None, exclude: set[str]) -> tuple[str, list[float]]:
        """Per paragraph: the negative log-likelihood per token (lower is better, like perplexity)."""
        return "nll_per_token", [-s / n for s, n in handle.lm.text_logprobs(self._paragraphs(base_dir))]

    def _paragraphs(self, base_dir: Path | None) -> list[str]:
        path = resolve(self.config.path, base_dir)
        if not path.exists():
            raise DataError(f"evaluation file not found: {path}", key=f"eval.evaluators.{self.name}.path")
        paragraphs = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        return paragraphs[:self.config.max_paragraphs]


class MultipleChoiceConfig(EvaluatorConfig):
    path: str = Field("@examples/mc_example.jsonl",
                      description='JSONL: {"question": str, "choices": [str, ...], "answer": index}')
    n: int | None = Field(None, ge=1)


class MultipleChoice(GeneralEvaluator):
    name = "multiple_choice"
    Config = MultipleChoiceConfig
    primary = "accuracy"
    description = "multiple-choice accuracy: the choice with the highest log-likelihood wins"
    config: MultipleChoiceConfig

    def evaluate(self, lm: LanguageModel, *, base_dir: Path | None, exclude: set[str]) -> list[Score]:
        picks = self._picks(lm, base_dir)
        n = len(picks)
        return [Score("accuracy", sum(raw for raw, _ in picks) / n, n),
                Score("accuracy_norm", sum(norm for _, norm in picks) / n, n)]

    def item_scores(self, handle: ModelHandle, *, base_dir: Path | None, exclude: set[str]) -> tuple[str, list[float]]:
        """Per question: 1 when the most likely choice is the answer, else 0."""
        return "accuracy", [float(raw) for raw, _ in self._picks(handle.lm, base_dir)]

    def _picks(self, lm: LanguageModel, base_dir: Path | None) -> list[tuple[bool, bool]]:
        """Per question: whether the most likely choice (raw, and per token) is the answer."""
        path = resolve(self.config.path, base_dir)
        rows = read_jsonl(path, f"eval.evaluators.{self.name}.path")[:self.config.n]
        items = []
        for lineno, rec in rows:
            choices, answer = rec.get("choices"), rec.get("answer")
            if (not isinstance(rec.get("question"), str) or not isinstance(choices, list) or len(choices) < 2
                    or not all(isinstance(c, str) and c for c in choices)
                    or not isinstance(answer, int) or not 0 <= answer < len(choices)):
                raise DataError("a row needs `question`, `choices` (2+ strings) and `answer` (an index "
                                "into choices)", file=path, line=lineno)
            items.append((lm.chat_prefix(rec["question"]), choices, answer))
        if not items:
            raise DataError("multiple-choice file is empty", file=path)
        pairs = [(prefix, choice) for prefix, choices, _ in items for choice in choices]
        scored = iter(lm.continuation_logprobs(pairs))
        picks = []
        for _, choices, answer in items:
            scores = [next(scored) for _ in choices]
            picks.append((max(range(len(choices)), key=lambda k: scores[k][0]) == answer,
                          max(range(len(choices)), key=lambda k: scores[k][0] / scores[k][1]) == answer))
        return picks


GENERAL_EVALUATORS: list[type[GeneralEvaluator]] = [Gsm8kLoglik, Perplexity, MultipleChoice]
