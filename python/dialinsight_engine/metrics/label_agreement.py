"""Label agreement (verify, with `[labels] samples = k` > 1): labels worth training on from a
weak labeller.

A weak model's single label is often wrong in one field and right in the others. With k labels
per prompt (the first greedy, the others sampled), verify keeps their consensus:

- a task with an output schema: a per-field vote over the k answers, values compared after the
  evaluation normalisers ("two" == "2", "$3,500" == "3500", 三 == 3). With `ground_fields`, only
  values found in the dialogue vote: in the turns of the task's `ground_roles` (the customer's
  needs, not the agent's offers), a number next to its field name's words ("3 bedrooms" is no
  bath count). A field keeps the value at least `min_agreement` of the k answers give; it is
  "not stated" when most answers leave it out; otherwise it is unsettled, written as not
  stated, and a row none of whose grounded fields is settled is dropped. List values are voted
  item by item. Booleans and enum values are not grounded: the greedy answer's value stands
  when at least `min_agreement` of the answers give it, else the vote decides;
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
from .textutil import NUMBER_WORDS, UNSPACED, normalise, split_turns, words

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
# words of a field's name that say nothing about what it counts ("number_of_beds": "bed" does)
_KEY_FILLER = frozenset({"number", "num", "count", "total", "amount", "the", "and", "for", "with", "has", "max", "min"})
_ALNUM = re.compile(r"\w")
_FIELD_WINDOW = 3  # "2 bathroom", "two bedroom apartment", "bedrooms: 3", "3 bed rooms"
# "2.5 baths" keeps its number whole; an unspaced script (Han, Kana, Thai...) is a token a
# character, so "住3晚" gives 3 as a number instead of one glued word
_TOKEN = re.compile(rf"\d+(?:\.\d+)?|[{UNSPACED}]|[^\W{UNSPACED}]+")


@dataclass(frozen=True)
class Consensus:
    """One row's consensus label: its text, agreement (mean share of the settled fields' votes, or
    the free-text pick's overlap), why fields were left out (`key: reason`), and whether any field
    was settled (a value most samples give, or "not stated" most samples agree on): a row with
    none teaches nothing right and is dropped."""

    text: str
    agreement: float
    dropped: tuple[str, ...] = ()
    settled: bool = True


@dataclass(frozen=True)
class DialogueForms:
    """What values are grounded against: the normalised text of the turns they may come from
    (`[labels] ground_roles`, else every turn), the numbers those turns state, and their words
    turn by turn (a number counts for a field only next to the field's words, see `is_grounded`)."""

    text: str
    numbers: frozenset[str]
    turns: tuple[tuple[str, ...], ...]
    all_words: frozenset[str]


def _turn_numbers(text: str) -> set[str]:
    numbers = set(_NUMBER.findall(text.replace(",", "")))
    padded = normalise(text)
    numbers |= {str(v) for w, v in NUMBER_WORDS.items() if f" {w} " in padded and w not in ("a", "an")}
    return numbers | {n for m in _HAN_NUMBER.findall(text) if (n := zh_numeral(m))}


def dialogue_forms(dialogue: str, roles: tuple[str, ...] | list[str] = ()) -> DialogueForms:
    """The dialogue's turns by `roles` (all turns when none is given or none of them speaks) as
    normalised text, stated numbers (number words and Chinese numerals as digits) and words."""
    turns = split_turns(dialogue)
    wanted = {r.lower() for r in roles}
    chosen = [text for role, text in turns if role in wanted] if wanted else []
    texts = chosen or [text for _, text in turns] or [dialogue]
    joined = "\n".join(texts)
    return DialogueForms(text=normalise(joined), numbers=frozenset(_turn_numbers(joined)),
                         turns=tuple(tuple(_TOKEN.findall(_THOUSANDS.sub("", t).lower())) for t in texts),
                         all_words=frozenset(words(dialogue)))


def field_stems(key: str) -> tuple[str, ...]:
    """The words a field's name is made of, as stems ("number_of_beds" -> ("bed",)): a
    number is its value only when the customer says it next to one of them."""
    parts = re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", key).lower())
    return tuple(dict.fromkeys(p[:-1] if p.endswith("s") and len(p) > 3 else p
                               for p in parts if len(p) >= 3 and p not in _KEY_FILLER))


def _number_words(token: str) -> str | None:
    if _NUMBER.fullmatch(token):
        return token
    value = NUMBER_WORDS.get(token)
    return str(value) if value is not None and token not in ("a", "an") else None


def _number_next_to(number: str, stems: tuple[str, ...], forms: DialogueForms) -> bool:
    """Is `number` said within `_FIELD_WINDOW` words of one of the field's stems in one turn?"""
    for tokens in forms.turns:
        for i, token in enumerate(tokens):
            if _number_words(token) != number:
                continue
            near = tokens[max(0, i - _FIELD_WINDOW): i + _FIELD_WINDOW + 1]
            if any(t.startswith(stem) for t in near for stem in stems):
                return True
    return False


def is_grounded(value: Any, dialogue: DialogueForms, key: str | None = None) -> bool:
    """Is the (stated) value in the dialogue: its words as a phrase, or its number? With the
    field's `key`, a number must be said next to the key's words (3 in "3 bedrooms" is not the
    number of baths) wherever the dialogue uses those words at all."""
    value_key = canonical(value)
    if value_key is None:
        return True
    if _NUMBER.fullmatch(value_key):
        if value_key not in dialogue.numbers:
            return False
        stems = field_stems(key) if key else ()
        used = [s for s in stems if any(w.startswith(s) for w in dialogue.all_words)]
        return not used or _number_next_to(value_key, tuple(used), dialogue)
    phrase = normalise(str(value)).strip()
    if not phrase:
        return True
    if re.search(f"[{UNSPACED}]", phrase):  # unspaced script: a substring of the text
        return phrase.replace(" ", "") in dialogue.text.replace(" ", "")
    return f" {phrase} " in dialogue.text


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


@dataclass(frozen=True)
class FieldVote:
    """One field's outcome over the k answers: the value kept (None: not stated), the share of
    the answers behind the outcome, whether the answers settled it, and why not."""

    value: Any
    share: float
    settled: bool
    why: str | None = None


def _vote_scalar(values: list[Any], k: int, min_agreement: float, grounded: Any = None,
                 greedy: Any = None) -> FieldVote:
    """The field's value over the k answers. With `grounded` (value -> bool), a value not found
    in the dialogue is no vote for anything. The answers that give a grounded value vote for it
    and it is kept with `min_agreement` of the k answers (and no fewer than say "not stated", no
    tie with another value); the field is settled as not stated when most answers leave it out
    (or are unreadable; a value of punctuation alone is no vote either way); otherwise it is
    unsettled, and written as not stated."""
    stated = [v for v in values if canonical(v) is not None]
    usable = [v for v in stated if grounded is None or grounded(v)]
    broken = sum(1 for v in values if isinstance(v, str) and v.strip() and not _ALNUM.search(v))
    unstated = k - len(stated) - broken  # ", " is a broken answer, not the labeller saying "not stated"
    votes = Counter(canonical(v) for v in usable)
    backing = votes[canonical(greedy)] if canonical(greedy) is not None else 0
    if backing and backing / k >= min_agreement and backing >= unstated:  # the greedy answer's value stands
        return FieldVote(greedy, backing / k, True)
    ranked = votes.most_common(2)
    count = ranked[0][1] if ranked else 0
    tied = len(ranked) == 2 and ranked[1][1] == count
    if count and count >= unstated and not tied and count / k >= min_agreement:
        original = next(v for v in usable if canonical(v) == ranked[0][0])  # the greedy answer's spelling first
        if isinstance(original, str):  # a weak labeller's ", 2" is the value 2: train on the clean form
            original = original.strip().strip(_EDGE).strip() or original
        return FieldVote(original, count / k, True)
    if unstated > k / 2:  # "not stated" is a label too: only when most answers agree on it
        return FieldVote(None, unstated / k, True)
    if stated and not usable:
        return FieldVote(None, 0.0, False, "not in the dialogue")
    return FieldVote(None, max(count, unstated) / k, False, f"agreement {max(count, unstated)}/{k}")


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
                     min_agreement: float, ground: bool, roles: tuple[str, ...] | list[str] = ()) -> Consensus | None:
    """The per-field majority of the answers (None when no answer is a JSON object); with
    `ground`, values must be found in the turns of `roles` (all turns when empty)."""
    read = [json_answer_or_error(a)[0] if a else None for a in answers]
    parsed = [p for p in read if isinstance(p, dict)]
    if not parsed:
        return None
    first = read[0] if isinstance(read[0], dict) else None  # the label asked for at [labels] temperature
    k = len(answers)
    props: dict[str, Any] = schema.get("properties") or {}
    keys = list(dict.fromkeys(list(props) + [key for p in parsed for key in p if key not in props]))
    forms = dialogue_forms(dialogue, roles)
    out: dict[str, Any] = {}
    shares, dropped, settled, checked = [], [], 0, 0
    for key in keys:
        prop = props.get(key) or {}
        values = [p[key] for p in parsed if key in p]
        if prop.get("type") == "array" or any(isinstance(v, list) for v in values):
            out[key] = [v for v in _vote_list(values, k, min_agreement)
                        if not ground or "enum" in (prop.get("items") or {}) or is_grounded(v, forms)]
            continue
        free = "enum" not in prop and not any(isinstance(v, bool) for v in values)
        grounds = (lambda v, key=key: is_grounded(v, forms, key)) if ground and free else None
        # a boolean or an enum cannot be found in the dialogue: sampled answers (temperature,
        # other templates) would outvote the labeller's most likely one, so it stands unless
        # it lacks min_agreement (measured: detect_visit labels 1.00 -> 0.56 accurate otherwise)
        greedy = first.get(key) if not free and first is not None else None
        vote = _vote_scalar(values, k, min_agreement, grounds, greedy)
        checked += free
        settled += free and vote.settled
        if vote.value is not None:
            out[key] = vote.value
            shares.append(vote.share)
            continue
        if vote.why is not None:
            dropped.append(f"{key}: {vote.why}")
        write, absent = _absent_value(prop)
        if write or key in (schema.get("required") or []):
            out[key] = absent
    agreement = sum(shares) / len(shares) if shares else 0.0
    return Consensus(json.dumps(out, ensure_ascii=False), agreement, tuple(dropped), settled > 0 or not checked)


def _overlap(a: list[str], b: list[str]) -> float:
    """Word-overlap F1 of two token lists (bags of words)."""
    common = sum((Counter(a) & Counter(b)).values())
    return 2 * common / (len(a) + len(b)) if a and b and common else 0.0


def _text_tokens(text: str) -> list[str]:
    if re.search(f"[{UNSPACED}]", text):
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
