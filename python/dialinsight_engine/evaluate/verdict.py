"""The guard: every variant against the base model. Domain metrics must gain at least
`min_domain_gain` (absolute); general metrics may worsen by at most `max_general_drop`
(relative, in each metric's bad direction)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Primary:
    """The main metric of one evaluator entry."""

    entry: str
    suite: str
    metric: str
    higher_is_better: bool
    guarded: bool
    in_replay: bool = False  # a general evaluator reading the training's replay file


@dataclass
class Check:
    variant: str
    entry: str
    suite: str
    metric: str
    base: float
    value: float
    change: float  # domain: absolute gain; general: relative drop (positive = worse)
    limit: float
    ok: bool
    guarded: bool
    in_replay: bool = False


def judge(rows: Sequence[dict[str, Any]], primaries: Sequence[Primary], *, min_domain_gain: float,
          max_general_drop: float) -> tuple[dict[str, str], list[Check]]:
    """(verdict per non-base variant: "pass" or "fail", every check). Variants missing a
    metric fail that check."""
    value = {(r["variant"], r["evaluator"], r["metric"]): float(r["value"]) for r in rows}
    variants = sorted({r["variant"] for r in rows} - {"base"})
    checks: list[Check] = []
    for variant in variants:
        for p in primaries:
            base = value.get(("base", p.entry, p.metric))
            got = value.get((variant, p.entry, p.metric))
            if base is None:
                continue
            if got is None:
                checks.append(Check(variant, p.entry, p.suite, p.metric, base, float("nan"), float("nan"),
                                    0.0, False, p.guarded, p.in_replay))
                continue
            sign = 1.0 if p.higher_is_better else -1.0
            if p.suite == "domain":
                change = sign * (got - base)
                ok = change >= min_domain_gain
                limit = min_domain_gain
            else:
                change = sign * (base - got) / abs(base) if base else (0.0 if got == base else float("inf"))
                ok = change <= max_general_drop
                limit = max_general_drop
            checks.append(Check(variant, p.entry, p.suite, p.metric, base, got, change, limit, ok, p.guarded, p.in_replay))
    verdicts = {v: "pass" if all(c.ok for c in checks if c.variant == v and c.guarded) else "fail"
                for v in variants}
    return verdicts, checks
