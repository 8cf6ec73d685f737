"""Spec sections `[train]` and `[eval]` (documented key by key in docs/spec.md).

`[train]` names a trainer plugin; every other key of the table is the trainer's own and is
validated by the trainer's `Config` model (so a typo in `lora_r` points at its line).
`[eval]` holds the held-out domain data, the evaluators (each `[eval.evaluators.NAME]`
table is validated by that evaluator's `Config`), the ablations and the guard thresholds.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from .base import PluginRef, Section, SpecPath
from .selection import SelectionKeys


class TrainSpec(Section):
    """`[train]`: `trainer` picks the plugin; the other keys are its parameters."""

    model_config = ConfigDict(extra="allow")

    trainer: str = Field("peft_lora", description="Trainer plugin")

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def plugin_refs(self, loc: tuple[str | int, ...]) -> list[PluginRef]:
        return [PluginRef("trainer", self.trainer, (*loc, "trainer"), self.params(), loc)]


class EvaluatorSpec(Section):
    """`[eval.evaluators.NAME]`: `plugin` defaults to NAME; other keys go to the evaluator."""

    model_config = ConfigDict(extra="allow")

    plugin: str | None = Field(None, description="Evaluator plugin (default: the table's name)")
    guard: bool | None = Field(
        None, description="Whether this evaluator's main metric counts in the verdict (default: yes, but not "
                          "for a general evaluator reading the [train] mix_general file, whose score training "
                          "on that file raises by sharing its format)")

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class GuardSpec(Section):
    """`[eval.guard]`: the verdict thresholds (domain gain and general drop of each variant)."""

    min_domain_gain: float = Field(
        0.0, description="Smallest gain over base of every guarded domain metric (absolute, 0-1 scale)")
    max_general_drop: float = Field(
        0.02, ge=0, description="Largest relative worsening of every guarded general metric")


#: the ablations the eval stage knows how to build
Ablation = Literal["unfiltered", "no_evolution"]


class EvalSpec(SelectionKeys, Section):
    domain_data: list[SpecPath] = Field(
        default_factory=lambda: ["@examples/realestate_heldout.jsonl"],
        description="Held-out dialogues with `truth` (never the training data)")
    max_dialogues: int | None = Field(60, ge=1, description="Use only the first N held-out dialogues")
    contamination_threshold: float = Field(
        0.8, gt=0, le=1, description="Drop eval dialogues this similar (MinHash Jaccard) to training text")
    decoding: Literal["both", "slots", "free"] = Field(
        "both", description="JSON tasks: 'slots' fills the schema's keys (constrained), 'free' parses free text, "
                            "'both' reports both (free-text metrics as free.*)")
    max_new_tokens: int = Field(160, ge=1, description="Generation limit for free decoding")
    batch_size: int = Field(8, ge=1, description="Rows per forward pass in scoring and free generation")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    variants: list[Literal["base", "tuned"]] = Field(
        default=["base", "tuned"], description="Which models to evaluate")
    ablations: list[Ablation] = Field(
        default_factory=list, description="Train and evaluate these variants too, with the same budget")
    guard: GuardSpec = Field(default_factory=GuardSpec)
    evaluators: dict[str, EvaluatorSpec] = Field(
        default_factory=dict,
        description="Evaluators to run; empty: the tasks' `eval` evaluators plus perplexity and multiple_choice")

    def plugin_refs(self, loc: tuple[str | int, ...]) -> list[PluginRef]:
        return [
            PluginRef("evaluator", entry.plugin or name, (*loc, "evaluators", name), entry.params(),
                      (*loc, "evaluators", name))
            for name, entry in self.evaluators.items()
        ]
