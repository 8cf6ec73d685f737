"""Scores of domain predictions against ground truth (pure functions, exact numbers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .normalise import normalise_name, normalise_value


@dataclass
class Score:
    metric: str
    value: float
    n: int


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def slot_scores(predictions: Sequence[dict[str, Any] | None], truths: Sequence[dict[str, Any]],
                slots: Sequence[str]) -> list[Score]:
    """Precision, recall and F1 per slot and micro-averaged over `slots`. A slot counts when
    its normalised value is stated: a stated wrong value is both a false positive and a false
    negative; an unparseable prediction states nothing."""
    counts = {slot: [0, 0, 0] for slot in slots}  # tp, fp, fn
    for pred, truth in zip(predictions, truths, strict=True):
        pred = pred if isinstance(pred, dict) else {}
        for slot in slots:
            p, t = normalise_value(pred.get(slot)), normalise_value(truth.get(slot))
            if p is not None and p == t:
                counts[slot][0] += 1
                continue
            if p is not None:
                counts[slot][1] += 1
            if t is not None:
                counts[slot][2] += 1
    n = len(truths)
    out: list[Score] = []
    for slot, (tp, fp, fn) in counts.items():
        precision, recall, f1 = _prf(tp, fp, fn)
        out += [Score(f"{slot}.precision", precision, n), Score(f"{slot}.recall", recall, n),
                Score(f"{slot}.f1", f1, n)]
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    precision, recall, f1 = _prf(tp, fp, fn)
    out += [Score("precision", precision, n), Score("recall", recall, n), Score("f1", f1, n)]
    return out


def visit_scores(predictions: Sequence[dict[str, Any] | None],
                 truths: Sequence[dict[str, Any] | None]) -> list[Score]:
    """`accuracy`: booked-or-not is right; `property_accuracy`: that and, when booked, the
    property name is right too. An answer without a readable `visit_booked` (no JSON, the
    key left out, "maybe") is wrong: counted as "no" it would score every unbooked case."""
    right = right_property = 0
    for pred, truth in zip(predictions, truths, strict=True):
        pred = pred if isinstance(pred, dict) else {}
        decision = normalise_value(pred.get("visit_booked"))
        if decision not in ("true", "false"):
            continue
        booked = decision == "true"
        truly_booked = truth is not None
        if booked != truly_booked:
            continue
        right += 1
        if not truly_booked or (normalise_name(pred.get("property_name"))
                                == normalise_name((truth or {}).get("property_name"))):
            right_property += 1
    n = len(truths)
    return [Score("accuracy", right / n if n else 0.0, n),
            Score("property_accuracy", right_property / n if n else 0.0, n)]


def offered_scores(predictions: Sequence[Sequence[Any] | None], truths: Sequence[Sequence[str]]) -> list[Score]:
    """Micro recall and precision of the offered property names."""
    tp = n_pred = n_truth = 0
    for pred, truth in zip(predictions, truths, strict=True):
        got = {normalise_name(p) for p in (pred or []) if isinstance(p, str)} - {None}
        want = {normalise_name(t) for t in truth} - {None}
        tp += len(got & want)
        n_pred += len(got)
        n_truth += len(want)
    n = len(truths)
    precision, recall, f1 = _prf(tp, n_pred - tp, n_truth - tp)
    return [Score("recall", recall, n), Score("precision", precision, n), Score("f1", f1, n)]
