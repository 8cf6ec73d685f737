"""Spec sections for generation: backends, evolution, review, sampling, labels.

Owned by the generation issue; the plugin-specific keys are validated by each plugin's
`Config` model (see `base.PluginRef`). Every key is documented in docs/spec.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from .base import PluginRef, Section, SpecPath, Weight

ReviewMode = Literal["required", "optional", "skip"]

#: phrases of the evolution prompts that must not leak into an evolved instruction
DEFAULT_COPIED_PHRASES = [
    "#rewritten", "rewritten instruction", "rewritten prompt", "given instruction",
    "given prompt", "#given", "#instruction#", "original instruction",
]
#: a rewrite that refuses or apologises is not an instruction
DEFAULT_REFUSAL_PATTERNS = [
    r"\bsorry\b", r"\bas an ai\b", r"\bi (?:cannot|can't|can not|am unable to)\b",
    r"\bi'm (?:sorry|unable)\b",
]


class BackendSpec(Section):
    """`[backends.NAME]`: `plugin` picks the backend; the client keys below are the engine's,
    every other key is the plugin's own (validated by the plugin's `Config`)."""

    model_config = ConfigDict(extra="allow")

    plugin: str = Field(description="Backend plugin: llamacpp, openai, vllm, ...")
    cache: bool = Field(True, description="Cache answers on disk (runs/<project>/cache/)")
    cache_dir: SpecPath | None = Field(None, description="Another cache folder (relative to the spec), e.g. shared by projects")
    batch_size: int = Field(16, ge=1, description="Requests handed to the backend at once")
    max_attempts: int = Field(3, ge=1, description="Tries per request when an answer fails or breaks its schema")
    retry_temperature: float = Field(
        0.7, ge=0, description="Temperature of retries after a schema-invalid answer (a greedy retry repeats itself)"
    )

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def plugin_refs(self, loc: tuple[str | int, ...]) -> list[PluginRef]:
        return [PluginRef("backend", self.plugin, (*loc, "plugin"), self.params(), loc)]


class OperatorSpec(Section):
    """One `[[evolution.operators]]` entry; keys other than name/weight go to the operator."""

    model_config = ConfigDict(extra="allow")

    name: str
    weight: Weight = 1.0

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EliminationSpec(Section):
    """`[evolution.elimination]`: rules that reject an evolved instruction (each a reason)."""

    unchanged: bool = Field(True, description="Reject a rewrite equal to its parent (case and spaces ignored)")
    placeholders: bool = Field(True, description="Reject a rewrite that lost {dialogue} or another {name} of the parent")
    keep_phrases: list[str] = Field(
        default_factory=list, description="Words that must survive when the parent has them (case-insensitive)"
    )
    min_chars: int = Field(20, ge=0)
    max_chars: int = Field(1500, ge=1)
    max_growth: float = Field(4.0, ge=0, description="Reject a rewrite more than this many times the parent's length (0: off)")
    copied_phrases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_COPIED_PHRASES),
        description="Evolution-prompt words that must not appear (case-insensitive)",
    )
    refusal_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFUSAL_PATTERNS),
        description="Regular expressions (case-insensitive) of refusals",
    )
    answered: bool = Field(
        True, description="Reject a rewrite holding a JSON object the parent lacks (the model answered instead)"
    )
    max_repetition: float = Field(
        0.5, gt=0, le=1, description="Reject a rewrite whose share of repeated word 3-grams is above this (1: off)"
    )
    scene_check: bool = Field(False, description="Ask the evolution backend whether the rewrite still fits the scene")
    task_kept: bool = Field(
        True, description="Reject a rewrite that no longer asks for the task: a schema task's required keys, "
        "a free-text task's goal (embedding similarity or goal words)"
    )
    key_aliases: dict[str, list[str]] = Field(
        default_factory=dict, description="Other spellings that name an output key (key -> spellings, case-insensitive)"
    )
    task_check: Literal["auto", "embeddings", "keywords"] = Field(
        "auto", description="Free-text tasks: goal words, and with auto/embeddings also embedding similarity when the embed extra works"
    )
    min_similarity: float = Field(
        0.6, ge=-1, le=1, description="Least embedding cosine of a free-text rewrite to its parent"
    )
    min_goal_share: float = Field(
        0.6, ge=0, le=1, description="Least share of the parent's goal words a free-text rewrite keeps (keyword check)"
    )
    information_gain: bool = Field(True, description="Reject a rewrite that adds fewer than min_new_words content words")
    min_new_words: int = Field(2, ge=0, description="Content words a rewrite must add to its parent")

    @model_validator(mode="after")
    def _lengths(self) -> EliminationSpec:
        import re

        if self.min_chars >= self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})")
        for pattern in self.refusal_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"refusal pattern {pattern!r} does not compile: {exc}") from exc
        return self


class EvolutionSpec(Section):
    rounds: int = Field(0, ge=0, description="Evolution rounds; 0 passes seeds through")
    backend: str = Field("default", description="Name of a [backends.NAME] table")
    operators: list[OperatorSpec] = Field(default_factory=list)
    seed: int | None = Field(None, description="Operator choice and sampling seed (default: project.seed)")
    max_tokens: int = Field(160, ge=1, description="Longest rewrite, in tokens")
    temperature: float = Field(0.7, ge=0)
    placeholder: Literal["reinsert", "keep"] = Field(
        "reinsert",
        description="reinsert: the model rewrites the text without {dialogue}, which is put back; "
        "keep: the model sees {dialogue} and must keep it",
    )
    variants: int = Field(
        1, ge=1, description="Distinct rewrites per instruction text, operator and round (rows beyond share them)"
    )
    keep_ancestors: bool = Field(
        True, description="Keep seeds and earlier rounds in the pool beside each lineage's latest evolution"
    )
    elimination: EliminationSpec = Field(default_factory=lambda: EliminationSpec.model_validate({}))

    @model_validator(mode="after")
    def _operators(self) -> EvolutionSpec:
        if self.rounds > 0 and self.operators and sum(op.weight for op in self.operators) <= 0:
            raise ValueError("at least one evolution operator needs a weight above 0")
        return self

    def plugin_refs(self, loc: tuple[str | int, ...]) -> list[PluginRef]:
        return [
            PluginRef("operator", op.name, (*loc, "operators", i, "name"), op.params(), (*loc, "operators", i))
            for i, op in enumerate(self.operators)
        ]


class SamplingSpec(Section):
    n: int | None = Field(None, ge=1, description="How many instructions to sample (default: all kept)")
    seed: int | None = Field(None, description="Sampling seed (default: project.seed)")
    by: Literal["scene_task", "scene", "task", "none"] = Field(
        "scene_task", description="Which weights set the quotas: scene x task, scene only, task only, none"
    )
    quality: Literal["ignore", "top", "weighted"] = Field(
        "ignore", description="Within a quota, ignore quality_score, take the best, or draw in proportion to it"
    )
    redistribute: bool = Field(True, description="Give a cell's shortfall to cells that still have rows")
    task_weights: dict[str, Weight] = Field(
        default_factory=dict, description="Weights of tasks not in [[tasks]] (e.g. ones a breadth evolution made)"
    )


class LabelsSpec(Section):
    backend: str = Field("default", description="Name of a [backends.NAME] table")
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
    system_prompt: str = Field("", description="System message of every label request")
    use_schema: bool = Field(True, description="Constrain answers to the row's output_schema")
    max_string_length: int = Field(
        64, ge=0, description="maxLength added to schema strings without one, 0: none (small models loop in open strings)"
    )
    drop_truncated: bool = Field(False, description="Reject answers cut off at max_tokens")
    samples: int = Field(
        1, ge=1, le=16, description="Labels per prompt; above 1, verify keeps the labels' consensus (label agreement)"
    )
    sample_temperature: float = Field(0.7, ge=0, description="Temperature of every label after the first")
    min_agreement: float = Field(
        0.5, gt=0, le=1, description="Least share of the samples that must give a field's value for it to be kept"
    )
    ground_fields: bool = Field(True, description="With samples > 1: drop a field whose value is not in the dialogue")
    ground_roles: dict[str, list[str]] = Field(
        default_factory=dict,
        description="With ground_fields: task name -> the roles whose turns its values must come from "
                    "(extract_requirements = [\"customer\"]: the customer's needs, not the agent's offers); other tasks: every turn",
    )
    min_text_agreement: float = Field(
        0.0, ge=0, le=1, description="With samples > 1: drop a free-text label whose word overlap with the others is below this"
    )
    max_failure_share: float = Field(
        0.25, ge=0, le=1, allow_inf_nan=False,
        description="Fail the stage (exit 1) when more than this share of label requests fail after all retries",
    )
