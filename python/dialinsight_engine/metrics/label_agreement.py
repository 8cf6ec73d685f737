"""Label agreement (verify, with `[labels] samples = k` > 1): labels worth training on from a
weak labeller.

A weak model's single label is often wrong in one field and right in the others. With k labels
per prompt (the first greedy, the others sampled), verify keeps their consensus:

- a task with an output schema: a per-field majority vote over the k answers, values compared
  after the evaluation normalisers ("two" == "2", "$3,500" == "3500", 三 == 3); a field is kept
  only when at least `min_agreement` of the k answers give its value and, with `ground_fields`,
  the value is found in the dialogue (normalised); other fields become "not stated". List values
  are voted item by item. Booleans and enum values are voted but not grounded;
- free text: the answer that agrees most with the others (mean word-overlap F1, a minimum Bayes
  risk pick), dropped when that agreement is below `min_text_agreement`.

`truth_scores` measures labels against the dialogues' `truth` with the evaluators the spec
declares for the tasks (`[tasks.eval]`, or `eval = "NAME"` of `[eval.evaluators.NAME]`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..evaluate.normalise import normaliser, zh_numeral
from ..jsonanswer import json_answer_or_error
from .textutil import NUMBER_WORDS, normalise, words

_STEPS = normaliser(["nfkc", "lower", "spacing", "zh_numbers", "units", "absent", "booleans", "numbers"])
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")


def canonical(value: Any) -> str | None:  # noqa: N802 - a normaliser, named like the evaluation ones
    """Value -> comparable text: the evaluation normalisers ("two" -> 2, "$3,500" -> 3500,
    三 -> 3, "2 bedrooms" -> 2), "not stated" -> None."""
    return _STEPS(_THOUSANDS.sub("", value) if isinstance(value, str) else value)
_ABSENT_CHOICES = ("unknown", "", None)
_EDGE = ".,;:!?\"'。，；：！？、"
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_HAN_NUMBER = re.compile(r"[零〇一二两三四五六七八九十百千万]+")


@dataclass(frozen=True)
class Consensus:
    """One row's consensus label: its text, agreement (mean share of the kept fields' votes, or
    the free-text pick's overlap), and why fields were left out (`key: reason`)."""

    text: str
    agreement: float
    dropped: tuple[str, ...] = ()


def dialogue_forms(dialogue: str) -> tuple[str, set[str]]:
    """The dialogue as normalised text (for phrases) and the set of numbers it states, with
    number words and Chinese numerals as digits."""
    text = normalise(dialogue)
    numbers = set(_NUMBER.findall(dialogue.replace(",", "")))
    numbers |= {str(v) for w, v in NUMBER_WORDS.items() if f" {w} " in text and w not in ("a", "an")}
    numbers |= {n for m in _HAN_NUMBER.findall(dialogue) if (n := zh_numeral(m))}
    return text, numbers


def is_grounded(value: Any, dialogue: tuple[str, set[str]]) -> bool:
    """Is the (stated) value in the dialogue: its words as a phrase, or its number?"""
    text, numbers = dialogue
    value_key = canonical(value)
    if value_key is None:
        return True
    if _NUMBER.fullmatch(value_key):
        return value_key in numbers
    phrase = normalise(str(value)).strip()
    if not phrase:
        return True
    if re.search(r"[\u3400-\u9fff]", phrase):  # unspaced script: a substring of the text
        return phrase.replace(" ", "") in text.replace(" ", "")
    return f" {phrase} " in text


def _absent_value(prop: dict[str, Any]) -> tuple[bool, Any]:
    """How a schema property says "not stated": (write the key?, value)."""
    enum = prop.get("enum")
    if enum:
        for choice in _ABSENT_CHOICES:
            if choice in enum:
                return True, choice
        return False, None
    types = prop.get("type")
    types = types if isinstance(types, list) else [types]
    if "null" in types:
        return True, None
    if "string" in types:
        return True, ""
    if "array" in types:
        return True, []
    return False, None


def _vote_scalar(values: list[Any], k: int, min_agreement: float) -> tuple[Any, float, str | None]:
    """(value, share of votes, why it was not kept) of one field over the k answers."""
    votes = Counter(canonical(v) for v in values)
    votes.update({None: k - len(values)})  # an unreadable answer states nothing
    winner, count = votes.most_common(1)[0]
    if winner is None:
        return None, count / k, None
    if count / k < min_agreement:
        return None, count / k, f"agreement {count}/{k}"
    original = next(v for v in values if canonical(v) == winner)  # the greedy answer's spelling first
    if isinstance(original, str):  # a weak labeller's ", 2" is the value 2: train on the clean form
        original = original.strip().strip(_EDGE).strip() or original
    return original, count / k, None


def _vote_list(values: list[Any], k: int, min_agreement: float) -> list[Any]:
    votes: Counter[str] = Counter()
    first: dict[str, Any] = {}
    for value in values:
        items = value if isinstance(value, list) else []
        for item in items:
            key = canonical(item)
            if key is not None and key not in first:
                first[key] = item
        votes.update({key for key in (canonical(i) for i in items) if key is not None})
    return [first[key] for key, count in votes.items() if count / k >= min_agreement]


def schema_consensus(answers: list[str | None], schema: dict[str, Any], dialogue: str, *,
                     min_agreement: float, ground: bool) -> Consensus | None:
    """The per-field majority of the answers (None when no answer is a JSON object)."""
    parsed = [p for p, _ in (json_answer_or_error(a) for a in answers if a) if isinstance(p, dict)]
    if not parsed:
        return None
    k = len(answers)
    props: dict[str, Any] = schema.get("properties") or {}
    keys = list(props) + [key for p in parsed for key in p if key not in props]
    keys = list(dict.fromkeys(keys))
    forms = dialogue_forms(dialogue)
    out: dict[str, Any] = {}
    shares, dropped = [], []
    for key in keys:
        prop = props.get(key) or {}
        values = [p[key] for p in parsed if key in p]
        if prop.get("type") == "array" or any(isinstance(v, list) for v in values):
            out[key] = [v for v in _vote_list(values, k, min_agreement)
                        if not ground or "enum" in (prop.get("items") or {}) or is_grounded(v, forms)]
            continue
        value, share, why = _vote_scalar(values, k, min_agreement)
        checked = ground and value is not None and not isinstance(value, bool) and "enum" not in prop
        if why is None and checked and not is_grounded(value, forms):
            why = "not in the dialogue"
        if value is not None and why is None:
            out[key] = value
            shares.append(share)
            continue
        if why is not None:
            dropped.append(f"{key}: {why}")
        write, absent = _absent_value(prop)
        if write or key in (schema.get("required") or []):
            out[key] = absent
    agreement = sum(shares) / len(shares) if shares else 0.0
    return Consensus(json.dumps(out, ensure_ascii=False), agreement, tuple(dropped))


def _overlap(a: list[str], b: list[str]) -> float:
    """Word-overlap F1 of two token lists (bags of words)."""
    common = sum((Counter(a) & Counter(b)).values())
    return 2 * common / (len(a) + len(b)) if a and b and common else 0.0


def _text_tokens(text: str) -> list[str]:
    if re.search(r"[\u3400-\u9fff]", text):
        return [c for c in text if not c.isspace()]
    return words(text)


def text_consensus(answers: list[str | None]) -> Consensus | None:
    """The answer with the highest mean overlap with the other answers (the first on ties)."""
    texts = [a for a in answers if a and a.strip()]
    if not texts:
        return None
    if len(texts) == 1:
        return Consensus(texts[0], 0.0)
    tokens = [_text_tokens(t) for t in texts]
    means = [sum(_overlap(t, o) for j, o in enumerate(tokens) if j != i) / (len(tokens) - 1)
             for i, t in enumerate(tokens)]
    best = max(range(len(texts)), key=lambda i: (means[i], -i))
    return Consensus(texts[best], means[best])
