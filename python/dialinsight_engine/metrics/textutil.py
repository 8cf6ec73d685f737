"""Support module, not a metric plugin. Small text helpers shared by the built-in metrics
(parsing rendered dialogues, grounding values in a dialogue)."""

from __future__ import annotations

import re
from typing import Any

# JSON answers are parsed by `jsonanswer` (`json_answer_or_error` gives (value, error))

_TURN = re.compile(r"^([A-Za-z][\w -]{0,30}):\s?(.*)$")
# Scripts written without spaces (Han, Kana, Thai, Lao, Khmer, Myanmar): each character is a
# word of its own here, so that a value glued to its neighbours ("评分4.5分以上", "北京云天酒店附近")
# is still found between word boundaries by the grounding checks.
UNSPACED = "\u3005\u3007\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\u0e00-\u0eff\u1780-\u17ff\u1000-\u109f"
_WORD = re.compile(rf"[{UNSPACED}]|[^\W{UNSPACED}]+", re.UNICODE)

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "single": 1, "a": 1, "an": 1,
}


def split_turns(dialogue_text: str) -> list[tuple[str, str]]:
    """`"Customer: hi\\nAgent: hello"` -> [("customer", "hi"), ("agent", "hello")]; lines
    without a role prefix continue the previous turn."""
    turns: list[tuple[str, str]] = []
    for line in (dialogue_text or "").splitlines():
        m = _TURN.match(line)
        if m:
            turns.append((m.group(1).strip().lower(), m.group(2)))
        elif turns:
            role, text = turns[-1]
            turns[-1] = (role, f"{text}\n{line}")
        elif line.strip():
            turns.append(("unknown", line))
    return turns


def words(text: str | None) -> list[str]:
    return _WORD.findall((text or "").lower())


def normalise(text: str | None) -> str:
    """Lower case, punctuation to spaces, single spaces: for substring grounding checks."""
    return " " + " ".join(words(text)) + " "


def looks_cut_json(text: str) -> bool:
    """Unbalanced braces/brackets or an open string: the answer stopped mid-structure."""
    depth, in_str, escaped = 0, False, False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
    return in_str or depth > 0


def scalar_leaves(value: Any) -> list[Any]:
    """All scalar values inside a JSON value (dict values, list items), depth first."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in scalar_leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in scalar_leaves(v)]
    return [value]


def number_forms(n: int) -> list[str]:
    forms = [str(n)]
    forms += [w for w, v in NUMBER_WORDS.items() if v == n and w not in ("a", "an", "single")]
    return forms


def grounded(value: str, dialogue_norm: str) -> bool:
    """Does `value` appear in the (normalised) dialogue? Numbers match digits or words."""
    value_norm = normalise(value).strip()
    if not value_norm:
        return True
    if f" {value_norm} " in dialogue_norm:
        return True
    tokens = value_norm.split()
    if len(tokens) == 1 and (tokens[0].isdigit() or tokens[0] in NUMBER_WORDS):
        n = int(tokens[0]) if tokens[0].isdigit() else NUMBER_WORDS[tokens[0]]
        return any(f" {form} " in dialogue_norm for form in number_forms(n))
    return False


def numbers_in(text: str | None) -> list[int]:
    """Integers written as digits (not parts of dates, phone numbers or prices)."""
    out = []
    for m in re.finditer(r"(?<![\w$.,:/-])(\d{1,3})(?![\w.,:/-]|\.\d)", text or ""):
        out.append(int(m.group(1)))
    return out


def dialogue_numbers(dialogue_norm: str) -> set[int]:
    found = {int(t) for t in dialogue_norm.split() if t.isdigit() and len(t) <= 6}
    found |= {v for w, v in NUMBER_WORDS.items() if f" {w} " in dialogue_norm and w not in ("a", "an")}
    return found
