"""Value normalisation before comparing a prediction with ground truth: case, spacing,
number words ("two" == "2" == 2 == "2.0"), units ("2 bedrooms" == "2"), booleans
("yes" == "True" == true) and the many spellings of "not stated" (which mean absent)."""

from __future__ import annotations

import re
from typing import Any

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "single": 1, "a": 1, "an": 1,
}
_TRUE = {"true", "yes", "y", "allowed", "required"}
_FALSE = {"false", "no", "n", "not allowed", "not required"}
_ABSENT = {"", "null", "none", "unknown", "n/a", "na", "not mentioned", "not specified",
           "not stated", "unspecified", "any", "-"}
_UNIT = re.compile(r"^(\S+)\s*(?:bed(?:room)?s?|bath(?:room)?s?|br|ba|rooms?)$")


def _number(text: str) -> str | None:
    if text in _NUMBER_WORDS and text not in ("a", "an"):
        return str(_NUMBER_WORDS[text])
    try:
        value = float(text)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else str(value)


def normalise_value(value: Any) -> str | None:
    """A canonical string for `value`, or None when it means "not stated"."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(str(value))
    if isinstance(value, list | dict):
        return None
    text = re.sub(r"\s+", " ", str(value)).strip().strip(".,;:!?\"'").strip().lower()
    if text in _ABSENT:
        return None
    if text in _TRUE:
        return "true"
    if text in _FALSE:
        return "false"
    number = _number(text)
    if number is not None:
        return number
    unit = _UNIT.match(text)
    if unit:
        word = unit.group(1)
        number = str(_NUMBER_WORDS[word]) if word in _NUMBER_WORDS else _number(word)
        if number is not None:
            return number
    return text


def normalise_name(value: Any) -> str | None:
    """Property and place names: case, punctuation and spacing do not count."""
    if not isinstance(value, str):
        return None
    text = re.sub(r"[^\w\s]", " ", value.lower())
    text = re.sub(r"\s+", " ", text).strip()
    return text or None
