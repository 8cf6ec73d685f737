"""Spec section `[study]`: does each quality dimension predict fine-tuning outcome on this data?

`dialengine study SPEC` trains equal-size subsets of the verify pool picked by each metric
(top, bottom) and one random subset with the `[train]` trainer at a small budget, evaluates
each with the `[eval]` evaluators and reports top-vs-bottom gains with bootstrap intervals.
Documented key by key in docs/spec.md ("Study").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class StudySpec(Section):
    metrics: list[str] = Field(
        default_factory=list,
        description="Quality metrics to study (names in [quality.metrics]); empty: every one with scores in the pool")
    composite: bool = Field(True, description="Also study the composite quality_score")
    subset_size: int = Field(32, ge=2, description="Rows in every training subset (capped at half the scored pool)")
    include_dropped: bool = Field(
        True, description="Rows the quality filters dropped are in the pool (the bottom subsets need them)")
    max_steps: int = Field(20, ge=1, description="Training steps per subset (overrides [train] max_steps)")
    seed: int | None = Field(None, description="Seed of the random subset, tie-breaks and the bootstrap "
                                               "(default: [project] seed)")
    evaluators: list[str] = Field(
        default_factory=list, description="[eval] evaluator entries to run per subset (empty: all of them)")
    max_dialogues: int | None = Field(
        None, ge=1, description="Held-out dialogues per evaluation (default: [eval] max_dialogues)")
    decoding: Literal["slots", "free"] = Field(
        "slots", description="Domain decoding per subset: 'slots' (schema-constrained) or 'free'")
    bootstrap: int = Field(1000, ge=100, le=100_000, description="Bootstrap resamples of the dev items")
    usefulness: Literal["label_correctness"] = Field(
        "label_correctness",
        description="Per-row usefulness the metrics are rank-correlated with: the row's label scored against "
                    "its dialogue's truth by the task's domain evaluator")
