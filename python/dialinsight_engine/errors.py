"""Error types. A `UserError` is the user's to fix (exit 2); anything else is a failure (exit 1)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


def did_you_mean(name: str, known: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """`did you mean 'x'?` naming the closest of `known` to a mistyped `name`, or None when
    nothing is close (then the message usually lists what is known instead)."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return f"did you mean {close[0]!r}?" if close else None


class UserError(Exception):
    """Bad input: names the file, the line and the dotted key where they are known."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = key
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        key = f"[{self.key}] " if self.key else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}{key}{self.message}{hint}"


class SpecError(UserError):
    """The spec (TOML) is malformed or invalid."""


class DataError(UserError):
    """An input data file is missing, empty or has a broken record."""


class PluginError(UserError):
    """An unknown plugin name, or a plugin's own section is invalid."""


class StageFailed(Exception):
    """A stage failed for a reason that is not the user's input (model error, disk full...)."""

    exit_code = 1


class ReviewPending(Exception):
    """The run stops at the review stage until a person imports decisions."""

    exit_code = 3
