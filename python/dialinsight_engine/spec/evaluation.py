"""`[tasks.eval]`: a domain evaluator declared in the spec (documented in docs/spec.md,
"Declared evaluators"). The real-estate evaluators are presets of these declarations
(`evaluate/presets.py`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..errors import did_you_mean
from .base import Section

EvalKind = Literal["fields", "exact", "accuracy", "text", "judge"]
#: main metric per kind
PRIMARY = {"fields": "f1", "exact": "exact_match", "accuracy": "accuracy", "text": "chrf", "judge": "score"}


def _check_normalisers(names: list[str]) -> None:
    from ..evaluate.normalise import NORMALISERS

    for name in names:
        if name not in NORMALISERS:
            hint = did_you_mean(name, NORMALISERS)
            raise ValueError(f"unknown normaliser {name!r}"
                             + (f": {hint}" if hint else f" (known: {', '.join(NORMALISERS)})"))


class TaskEvalSpec(Section):
    """How the answers of one task are scored against the record's `truth`."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$",
                             description="Evaluator name in the results (default: the task's name)")
    truth: str | None = Field(None, description="Dotted path into the record's truth ('' = all of it)")
    kind: EvalKind = "fields"
    keys: list[str] | dict[str, str] | None = Field(
        None, description="Answer keys scored (default: the output schema's), or answer key -> truth path")
    normalize: list[str] | dict[str, list[str]] = Field(
        default_factory=lambda: ["default"], description="Value normalisers, in order (a table: per key, '*' for the rest)")
    synonyms: dict[str, list[str]] = Field(
        default_factory=dict, description="Canonical value -> other spellings that count as it")
    answer_key: str | None = Field(None, description="text: the answer's JSON key holding the text (none: the whole answer)")
    backend: str = Field("default", description="judge: the [backends.NAME] that rates answers")
    rubric: str = Field("", description="judge: what a good answer does (the judge rates 1..10)")
    max_tokens: int = Field(64, ge=8, description="judge: longest rating reply")
    primary: str | None = Field(None, description="Main metric (default by kind: f1, exact_match, accuracy, chrf, score)")
    guard: bool = Field(True, description="Whether the main metric counts in the verdict")

    @field_validator("normalize")
    @classmethod
    def _known_normalisers(cls, value: list[str] | dict[str, list[str]]) -> list[str] | dict[str, list[str]]:
        for names in (value.values() if isinstance(value, dict) else [value]):
            _check_normalisers(names)
        return value

    @model_validator(mode="after")
    def _needs_truth(self) -> TaskEvalSpec:
        if self.kind != "judge" and self.truth is None:
            raise ValueError(f"kind {self.kind!r} needs `truth` (a dotted path into the record's truth)")
        if self.kind == "judge" and not self.rubric.strip():
            raise ValueError("kind 'judge' needs a `rubric`")
        return self

    def key_map(self, schema: dict[str, Any] | None) -> dict[str, str]:
        """answer key -> truth path relative to `truth` (defaults: the schema's keys, same names)."""
        if isinstance(self.keys, dict):
            return dict(self.keys)
        if self.keys is not None:
            return {k: k for k in self.keys}
        props = (schema or {}).get("properties")
        return {k: k for k in props} if isinstance(props, dict) else {}

    def main_metric(self) -> str:
        return self.primary or PRIMARY[self.kind]

    def steps_for(self, key: str) -> list[str]:
        if isinstance(self.normalize, dict):
            return self.normalize.get(key, self.normalize.get("*", ["default"]))
        return self.normalize
