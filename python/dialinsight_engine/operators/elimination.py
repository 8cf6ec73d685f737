"""Rules that eliminate a failed evolution (Evol-Instruct and its successors): each returns
reasons, never raises.

The text compared is the instruction without the `{dialogue}` placeholder, so a rewrite is
judged on what the model wrote. Every rule is one function in `CHECKS`, named by the reason
prefix it gives, so the evolution report can count eliminations per check:

- surface rules: unchanged, lost placeholders or phrases, length and growth, copied prompt
  words, an answer instead of an instruction, loops, refusals;
- `task_lost`: the rewrite no longer asks for the task. A task with an output schema must still
  name every required key its parent named (the key, its words, or an alias) and still ask for
  JSON when its parent did; a free-text task
  must keep its goal words (the parent's words that are also in the task's description) and,
  with the `embed` extra, stay close in meaning (embedding similarity to the parent);
- `no_information_gain`: the rewrite adds fewer than `min_new_words` content words to its
  parent (reordering, punctuation, a "please": surface edits, not a harder instruction).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ..records import DIALOGUE_PLACEHOLDER
from ..spec.generation import EliminationSpec

_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
_JSON_OBJECT = re.compile(r'\{\s*"')
_LABEL = re.compile(r"^\s*(?:new|rewritten|revised)?\s*(?:task|instruction|prompt)\s*:\s*", re.IGNORECASE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_WORD = re.compile(r"\w+", re.UNICODE)
#: a stem is the word's first letters: summarise/summary, extract/extraction share theirs
STEM_LETTERS = 6
STOPWORDS = frozenset("""
a an the and or but if of to in on at by for with from as into about over under than then that this these
those it its is are was were be been being do does did done have has had will would should could can may
must shall not no nor so such very just also only own same too each every any all both few more most other
some what which who whom whose when where why how i me my we our you your he she they them their his her
us here there please etc s t via per up out off again further once while during before after above below
between through own one
的 了 和 与 及 或 是 在 把 被 请 这 那 这段 那段 下面 以下 一个 一下 并 而 也 都 就 对 给 让 吗 呢 吧 啊 中 里 上 下
""".split())


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


@cache
def _tokens(text: str) -> tuple[str, ...]:
    """Lower-cased words; text in unspaced scripts is cut by the Rust core (jieba for Han)."""
    if not _CJK.search(text):
        return tuple(_WORD.findall(text.lower()))
    from .. import fast

    words = fast.tokenize([text], "auto").to_list()[0] or []
    return tuple(piece for word in words for piece in _WORD.findall(word))


def content_stems(text: str) -> set[str]:
    """The content words of `text` as stems (stopwords, digits-only and placeholders out)."""
    text = _PLACEHOLDER.sub(" ", text)
    return {w if _CJK.search(w) else w[:STEM_LETTERS] for w in _tokens(text)
            if w not in STOPWORDS and not w.isdigit()}


def _key_spellings(key: str, aliases: dict[str, list[str]]) -> list[str]:
    return [key.lower(), key.lower().replace("_", " "), *(a.lower() for a in aliases.get(key, []))]


def names_key(text: str, key: str, aliases: dict[str, list[str]]) -> bool:
    """Does `text` name the output key `key`: verbatim, with spaces for underscores, by an
    alias, or by all of its content words ("number of beds" names `number_of_beds`)?"""
    low = text.lower()
    if any(spelling in low for spelling in _key_spellings(key, aliases)):
        return True
    key_words = content_stems(key.replace("_", " ").replace("-", " "))
    return bool(key_words) and key_words <= content_stems(text)


@dataclass(frozen=True)
class Rewrite:
    """One evolution to judge: the parent and child instructions (with `{dialogue}` where it
    belongs) and what the task-kept check needs."""

    parent: str
    child: str
    required_keys: tuple[str, ...] = ()  # the output schema's required keys; () for free text
    goal: str = ""  # the task's description (its goal words, for the keyword check)
    similarity: float | None = None  # embedding cosine of parent and child texts, when measured
    new_task: bool = False  # a breadth operator's rewrite asks for another task on purpose
    parent_text: str = field(init=False)
    child_text: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parent_text", _norm(self.parent))
        object.__setattr__(self, "child_text", _norm(self.child))


Check = Callable[[Rewrite, EliminationSpec], list[str]]


def _unchanged(r: Rewrite, rules: EliminationSpec) -> list[str]:
    return ["unchanged"] if rules.unchanged and r.child_text == r.parent_text else []


def _placeholders(r: Rewrite, rules: EliminationSpec) -> list[str]:
    if not rules.placeholders:
        return []
    lost = sorted(set(_PLACEHOLDER.findall(r.parent)) - set(_PLACEHOLDER.findall(r.child)))
    return [f"placeholder_lost:{p}" for p in lost]


def _phrases(r: Rewrite, rules: EliminationSpec) -> list[str]:
    return [f"phrase_lost:{p}" for p in rules.keep_phrases
            if p.lower() in r.parent.lower() and p.lower() not in r.child.lower()]


def _length(r: Rewrite, rules: EliminationSpec) -> list[str]:
    n, parent_n = len(r.child_text), len(r.parent_text)
    out = [f"too_short:{n}<{rules.min_chars}"] if n < rules.min_chars else []
    if n > rules.max_chars:
        out.append(f"too_long:{n}>{rules.max_chars}")
    if rules.max_growth and parent_n and n > rules.max_growth * parent_n:
        out.append(f"too_much_growth:{n / parent_n:.1f}x")
    return out


def _copied(r: Rewrite, rules: EliminationSpec) -> list[str]:
    return [f"copied_prompt_words:{p}" for p in rules.copied_phrases
            if p.lower() in r.child_text and p.lower() not in r.parent_text]


def _answered(r: Rewrite, rules: EliminationSpec) -> list[str]:
    if rules.answered and _JSON_OBJECT.search(r.child) and not _JSON_OBJECT.search(r.parent):
        return ["answered_instead"]
    return []


def _repetitive(r: Rewrite, rules: EliminationSpec) -> list[str]:
    share = repetition(r.child_text)
    return [f"repetitive:{share:.2f}"] if share > rules.max_repetition else []


def _refusal(r: Rewrite, rules: EliminationSpec) -> list[str]:
    for pattern in _compiled(tuple(rules.refusal_patterns)):
        if pattern.search(r.child_text) and not pattern.search(r.parent_text):
            return [f"refusal:{pattern.pattern}"]
    return []


def goal_share(r: Rewrite) -> float:
    """Share of the parent's goal words the child keeps: the parent's content words that are
    also in the task's description, or all the parent's content words when none are."""
    parent = content_stems(r.parent_text)
    goal = parent & content_stems(r.goal) or parent
    return len(goal & content_stems(r.child_text)) / len(goal) if goal else 1.0


def _task_lost(r: Rewrite, rules: EliminationSpec) -> list[str]:
    if not rules.task_kept or r.new_task:
        return []
    if r.required_keys:
        lost = [k for k in r.required_keys if names_key(r.parent_text, k, rules.key_aliases)
                and not names_key(r.child_text, k, rules.key_aliases)]
        lost_format = "json" in r.parent_text and "json" not in r.child_text
        return [f"task_lost:key {k}" for k in lost] + (["task_lost:format json"] if lost_format else [])
    out = []
    if r.similarity is not None and r.similarity < rules.min_similarity:
        out.append(f"task_lost:similarity {r.similarity:.2f}<{rules.min_similarity}")
    share = goal_share(r)  # with embeddings too: drift that shares the parent's wording keeps its similarity
    if share < rules.min_goal_share:
        out.append(f"task_lost:goal words {share:.2f}<{rules.min_goal_share}")
    return out


def _information_gain(r: Rewrite, rules: EliminationSpec) -> list[str]:
    if not rules.information_gain or r.child_text == r.parent_text:
        return []  # an unchanged rewrite has its own reason
    new = content_stems(r.child_text) - content_stems(r.parent_text)
    return [] if len(new) >= rules.min_new_words else [f"no_information_gain:{len(new)}<{rules.min_new_words}"]


#: reason prefix -> rule; the order is the order of the reasons of a row
CHECKS: dict[str, Check] = {
    "unchanged": _unchanged, "placeholder_lost": _placeholders, "phrase_lost": _phrases,
    "length": _length, "copied_prompt_words": _copied, "answered_instead": _answered,
    "repetitive": _repetitive, "refusal": _refusal, "task_lost": _task_lost,
    "no_information_gain": _information_gain,
}


def judge(rewrite: Rewrite, rules: EliminationSpec) -> list[str]:
    """Reasons `rewrite` fails (empty: it passes)."""
    return [reason for check in CHECKS.values() for reason in check(rewrite, rules)]


def eliminate(parent: str, child: str, rules: EliminationSpec, **task: Any) -> list[str]:
    """Reasons the rewrite `child` of the instruction `parent` fails (empty: it passes).
    Both are full instructions (with `{dialogue}` where it belongs); `task` holds the
    `Rewrite` fields of the task-kept check (`required_keys`, `goal`, `similarity`)."""
    return judge(Rewrite(parent, child, **task), rules)


def required_keys(schema: dict[str, Any] | None) -> tuple[str, ...]:
    """The keys an answer must have: the schema's `required`, else its properties."""
    if not isinstance(schema, dict):
        return ()
    keys = schema.get("required") or list(schema.get("properties") or {})
    return tuple(str(k) for k in keys)
