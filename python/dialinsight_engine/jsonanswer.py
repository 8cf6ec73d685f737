"""JSON out of a model's answer: the one parser the generation client, the metrics and the
evaluators share. Models wrap JSON in a Markdown code fence, or in prose."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_json_answer(text: str) -> Any:
    """The JSON value of an answer, tolerating a code fence around it; raises
    `json.JSONDecodeError` (its `msg` and `pos` say where) when it is not JSON."""
    fence = _FENCE.match(text)
    return json.loads(fence.group(1) if fence else text)


def json_answer_or_error(text: str | None) -> tuple[Any, str | None]:
    """(value, None), or (None, why): "empty" for no answer, else the decoder's message."""
    if text is None or not text.strip():
        return None, "empty"
    try:
        return parse_json_answer(text.strip()), None
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg} at char {exc.pos}"


def first_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object anywhere in `text` (prose or a fence around it), or None."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text[start:])
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
        start = text.find("{", start + 1)
    return None
