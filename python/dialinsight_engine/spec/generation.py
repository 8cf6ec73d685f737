"""Spec sections for generation: backends, evolution, review, sampling, labels.

Owned by the generation issue; the plugin-specific keys are validated by each plugin's
`Config` model (see `base.PluginRef`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from .base import PluginRef, Section

ReviewMode = Literal["required", "optional", "skip"]


class BackendSpec(Section):
    """`[backends.NAME]`: `plugin` picks the backend; every other key is the plugin's own."""

    model_config = ConfigDict(extra="allow")

    plugin: str = Field(description="Backend plugin: llamacpp, openai, vllm, ...")

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def plugin_refs(self, loc: tuple[str | int, ...]) -> list[PluginRef]:
        return [PluginRef("backend", self.plugin, (*loc, "plugin"), self.params(), loc)]


class OperatorSpec(Section):
    """One `[[evolution.operators]]` entry; keys other than name/weight go to the operator."""

    model_config = ConfigDict(extra="allow")

    name: str
    weight: float = Field(1.0, ge=0)

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EvolutionSpec(Section):
    rounds: int = Field(0, ge=0, description="Evolution rounds; 0 passes seeds through")
    backend: str = Field("default", description="Name of a [backends.NAME] table")
    operators: list[OperatorSpec] = Field(default_factory=list)

    def plugin_refs(self, loc: tuple[str | int, ...]) -> list[PluginRef]:
        return [
            PluginRef("operator", op.name, (*loc, "operators", i, "name"), op.params(), (*loc, "operators", i))
            for i, op in enumerate(self.operators)
        ]


class SamplingSpec(Section):
    n: int | None = Field(None, ge=1, description="How many instructions to sample (default: all kept)")
    seed: int | None = None


class LabelsSpec(Section):
    backend: str = Field("default", description="Name of a [backends.NAME] table")
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0)
