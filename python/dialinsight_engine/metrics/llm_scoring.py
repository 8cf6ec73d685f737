"""Support module, not a metric plugin. Reading a score out of a model's answer, DEITA style.

DEITA's scorers ask for a 1..N rating and take the expected score over the probabilities of
the tokens "1".."N" at the answer position. Where the backend returns no log-probabilities
(`GenerationResult.logprobs` is None) the stated rating is used instead.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..backends.base import GenerationResult


def _digit(token: str) -> int | None:
    stripped = token.strip().strip('"')
    return int(stripped) if stripped.isdigit() and len(stripped) <= 2 else None


def expected_from_logprobs(logprobs: list[dict[str, float]] | None, lo: int, hi: int) -> float | None:
    """Expected rating at the first output position whose top candidates hold a valid rating;
    probabilities are renormalised over the valid ratings only."""
    for candidates in logprobs or []:
        probs: dict[int, float] = {}
        for token, lp in candidates.items():
            value = _digit(token)
            if value is not None and lo <= value <= hi:
                probs[value] = probs.get(value, 0.0) + math.exp(lp)
        total = sum(probs.values())
        if total > 0:
            return sum(v * p for v, p in probs.items()) / total
    return None


def stated_rating(text: str | None, lo: int, hi: int, key: str = "score") -> float | None:
    """The rating in the answer: `{"score": 4}` or the first integer in range."""
    if not text:
        return None
    m = re.search(rf'"{key}"\s*:\s*"?(\d+(?:\.\d+)?)', text)
    candidates = [m.group(1)] if m else re.findall(r"\d+(?:\.\d+)?", text)
    for c in candidates:
        value = float(c)
        if lo <= value <= hi:
            return value
    return None


def rating(result: GenerationResult, lo: int, hi: int) -> tuple[float | None, str]:
    """(rating, how it was read: "logprobs" | "stated" | "failed")."""
    if not result.ok:
        return None, "failed"
    value = expected_from_logprobs(result.logprobs, lo, hi)
    if value is not None:
        return value, "logprobs"
    value = stated_rating(result.text, lo, hi)
    return (value, "stated") if value is not None else (None, "failed")


def rating_schema(lo: int, hi: int, with_reason: bool = False) -> dict[str, Any]:
    props: dict[str, Any] = {"score": {"type": "integer", "minimum": lo, "maximum": hi}}
    required = ["score"]
    if with_reason:
        # score first: its log-probabilities are then read at the first digit of the answer
        props["reason"] = {"type": "string", "maxLength": 300}
        required = ["score", "reason"]
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}
