"""Shared base for spec sections: unknown keys are errors, and plugin references are collected."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A spec table: unknown keys are rejected (with a "did you mean" from the loader).

    Values are taken as TOML typed them (`strict`): `true` is not the integer 1 and `"2"` is
    not a number. Floats must be finite: `inf` or `nan` would silently switch off a threshold
    or swamp a weighted draw."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True, allow_inf_nan=False)

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


#: a share in a weighted draw: finite (Section config) and not negative
Weight = Annotated[float, Field(ge=0)]

#: the prefix of paths that name data shipped inside the package
EXAMPLES_PREFIX = "@examples/"


def _confined_examples(path: str) -> str:
    """`@examples/x` must stay inside the package's data folder (no `..`, no absolute part)."""
    if "\x00" in path:
        raise ValueError("a path cannot hold a NUL character")
    if path.startswith(EXAMPLES_PREFIX):
        rest = posixpath.normpath(path.removeprefix(EXAMPLES_PREFIX).replace("\\", "/"))
        if rest in (".", "") or rest.startswith(("../", "/")) or rest == "..":
            raise ValueError(f"{path!r} leaves the packaged examples folder ({EXAMPLES_PREFIX}NAME names a "
                             "file shipped with the package)")
    return path


#: a path from the spec: relative to the spec file, or `@examples/NAME` (confined to the package data)
SpecPath = Annotated[str, AfterValidator(_confined_examples)]


def compiled_patterns(value: list[str], what: str = "pattern") -> list[str]:
    """Validator body for lists of regular expressions: each must compile."""
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{what} {pattern!r} does not compile: {exc}") from exc
    return value
