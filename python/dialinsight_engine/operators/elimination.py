"""Rules that eliminate a failed evolution (Evol-Instruct): each returns reasons, never raises.

The text compared is the instruction without the `{dialogue}` placeholder, so a rewrite is
judged on what the model wrote.
"""

from __future__ import annotations

import re
from functools import cache

from ..records import DIALOGUE_PLACEHOLDER
from ..spec.generation import EliminationSpec

_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_JSON_OBJECT = re.compile(r'\{\s*"')
_LABEL = re.compile(r"^\s*(?:new|rewritten|revised)?\s*(?:task|instruction|prompt)\s*:\s*", re.IGNORECASE)


def clean_rewrite(text: str) -> str:
    """Strip what small models wrap around an answer: spaces, quotes, a leading "New task:"."""
    out = text.strip()
    out = _LABEL.sub("", out, count=1).strip()
    if len(out) >= 2 and out[0] == out[-1] and out[0] in "\"'`":
        out = out[1:-1].strip()
    return out


def _norm(text: str) -> str:
    return " ".join(text.replace(DIALOGUE_PLACEHOLDER, " ").lower().split())


@cache
def _compiled(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(p, re.IGNORECASE) for p in patterns]


def repetition(text: str) -> float:
    """Share of word 3-grams that repeat an earlier one (0: none, near 1: a loop)."""
    words = text.split()
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def eliminate(parent: str, child: str, rules: EliminationSpec) -> list[str]:
    """Reasons the rewrite `child` of the instruction `parent` fails (empty: it passes).
    Both are full instructions (with `{dialogue}` where it belongs)."""
    reasons: list[str] = []
    parent_text, child_text = _norm(parent), _norm(child)
    if rules.unchanged and child_text == parent_text:
        reasons.append("unchanged")
    if rules.placeholders:
        lost = sorted(set(_PLACEHOLDER.findall(parent)) - set(_PLACEHOLDER.findall(child)))
        reasons += [f"placeholder_lost:{p}" for p in lost]
    for phrase in rules.keep_phrases:
        if phrase.lower() in parent.lower() and phrase.lower() not in child.lower():
            reasons.append(f"phrase_lost:{phrase}")
    n = len(child_text)
    if n < rules.min_chars:
        reasons.append(f"too_short:{n}<{rules.min_chars}")
    if n > rules.max_chars:
        reasons.append(f"too_long:{n}>{rules.max_chars}")
    if rules.max_growth and parent_text and n > rules.max_growth * len(parent_text):
        reasons.append(f"too_much_growth:{n / len(parent_text):.1f}x")
    for phrase in rules.copied_phrases:
        if phrase.lower() in child_text and phrase.lower() not in parent_text:
            reasons.append(f"copied_prompt_words:{phrase}")
    if rules.answered and _JSON_OBJECT.search(child) and not _JSON_OBJECT.search(parent):
        reasons.append("answered_instead")
    if repetition(child_text) > rules.max_repetition:
        reasons.append(f"repetitive:{repetition(child_text):.2f}")
    for pattern in _compiled(tuple(rules.refusal_patterns)):
        if pattern.search(child_text) and not pattern.search(parent_text):
            reasons.append(f"refusal:{pattern.pattern}")
            break
    return reasons
