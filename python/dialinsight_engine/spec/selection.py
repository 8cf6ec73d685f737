"""Spec keys that select records (documented in docs/spec.md, "Selecting records"): shared
by `[data]` (what the pipeline reads) and `[eval]` (the held-out dialogues)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from ..selection import compile_where


class SelectionKeys(BaseModel):
    """`where`, `sample`, `exclude_ids`, `exclude_file` (a mixin for spec sections)."""

    where: dict[str, Any] = Field(
        default_factory=dict, description="Conditions on record fields (dotted paths), all of which must hold")
    sample: int | None = Field(None, ge=1, description="Keep N records drawn with the project seed")
    exclude_ids: list[str] = Field(default_factory=list, description="Record ids to leave out")
    exclude_file: str | None = Field(
        None, description="File of ids to leave out: JSONL (each object's id) or one id a line")

    @field_validator("where")
    @classmethod
    def _conditions_compile(cls, value: dict[str, Any]) -> dict[str, Any]:
        compile_where(value)
        return value
