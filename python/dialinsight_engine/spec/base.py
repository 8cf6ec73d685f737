"""Shared base for spec sections: unknown keys are errors, and plugin references are collected."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A spec table: unknown keys are rejected (with a "did you mean" from the loader)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def plugin_refs(self, loc: tuple[str | int, ...]) -> list[PluginRef]:
        """The plugins this section names (overridden by sections that name any)."""
        return []


@dataclass
class PluginRef:
    """A plugin named in the spec; the loader checks the name exists and validates `params`
    with the plugin's own `Config` model, reporting errors at `params_loc`."""

    kind: str  # registry kind: reader, metric, operator, backend, trainer, evaluator
    name: str
    name_loc: tuple[str | int, ...]
    params: dict[str, Any] | None = None
    params_loc: tuple[str | int, ...] = ()


def compiled_patterns(value: list[str], what: str = "pattern") -> list[str]:
    """Validator body for lists of regular expressions: each must compile."""
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{what} {pattern!r} does not compile: {exc}") from exc
    return value
