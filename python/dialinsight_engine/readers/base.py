"""Dialogue readers: each turns one file into records; `normalize_record` checks the shape.

A record is ``{"id": str, "turns": [{"role": str, "text": str}, ...], "truth": any | None,
"intents": [str], "meta": {...}}``. Broken input raises `DataError` naming file:line, or
with ``on_error = "skip"`` is counted and skipped (the ingest manifest lists every skip).
A file that cannot be read at all (corrupt archive, not Parquet) raises `UnreadableFile`,
which is never skipped: skipping it would silently drop every record it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..errors import DataError

if TYPE_CHECKING:
    from ..spec import Spec

#: deepest JSON nesting a record may have (real dialogues nest 3-5 levels; deeper input is
#: hostile or broken and would overflow the recursion of the JSON and Parquet writers later)
MAX_NESTING = 100


class UnreadableFile(DataError):
    """The whole file is unreadable (corrupt gzip, not a Parquet file): exit 2, never skipped."""


def nesting_depth(value: Any) -> int:
    """Depth of nested lists/dicts, without recursion (so hostile input cannot overflow it)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, depth)
            if depth > MAX_NESTING:
                return depth
            stack.extend((child, depth + 1) for child in node)
    return deepest


class ReaderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class RawRecord:
    """One record as read, with where it came from (for error messages)."""

    data: Any
    file: Path
    line: int | None  # 1-based line (JSONL) or row number (tables)


class Reader(ABC):
    name: ClassVar[str]
    #: file name endings this reader takes when `[data] format = "auto"`
    extensions: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[ReaderConfig]] = ReaderConfig
    description: ClassVar[str] = ""

    def __init__(self, config: ReaderConfig | None = None) -> None:
        self.config = config or self.Config()

    def accepts(self, path: Path) -> bool:
        return any(path.name.endswith(ext) for ext in self.extensions)

    @abstractmethod
    def read(self, path: Path) -> Iterator[RawRecord | DataError]:
        """Yield records; yield (not raise) a `DataError` for a broken one so the caller can
        decide between failing and skipping."""


TURN_KEYS = ("turns", "messages", "conversation", "dialogue")


def normalize_record(raw: RawRecord, index: int) -> dict[str, Any]:
    """Check and normalise one record; raises DataError naming file:line:key."""
    data = raw.data
    where: dict[str, Any] = {"file": raw.file, "line": raw.line}
    if not isinstance(data, dict):
        raise DataError(f"a record must be an object, got {type(data).__name__}", **where)
    turns_key = next((k for k in TURN_KEYS if k in data), None)
    if turns_key is None:
        raise DataError("record has no 'turns' list", key="turns", **where)
    turns_in = data[turns_key]
    if not isinstance(turns_in, list) or not turns_in:
        raise DataError(f"'{turns_key}' must be a non-empty list", key=turns_key, **where)
    turns = []
    for i, turn in enumerate(turns_in):
        if not isinstance(turn, dict):
            raise DataError("a turn must be an object with 'role' and 'text'", key=f"{turns_key}[{i}]", **where)
        role = turn.get("role", turn.get("speaker", turn.get("from")))
        text = turn.get("text", turn.get("content", turn.get("value", turn.get("utterance"))))
        if not isinstance(role, str) or not role.strip():
            raise DataError("turn has no 'role' string", key=f"{turns_key}[{i}].role", **where)
        if not isinstance(text, str):
            raise DataError("turn has no 'text' string", key=f"{turns_key}[{i}].text", **where)
        turns.append({"role": role.strip(), "text": text})
    record_id = data.get("id", data.get("dialogue_id"))
    if record_id is None:
        record_id = f"{raw.file.stem}-{raw.line if raw.line is not None else index}"
    intents = data.get("intents") or []
    meta = {k: v for k, v in data.items() if k not in (*TURN_KEYS, "id", "dialogue_id", "truth", "intents")}
    return {"id": str(record_id), "turns": turns, "truth": data.get("truth"),
            "intents": [str(i) for i in intents] if isinstance(intents, list) else [], "meta": meta}


def data_files(spec: Spec) -> list[Path]:
    """Every input file named by `[data] paths`: folders expand to their files, sorted (a folder
    holding `state.json` is one `datasets` folder, read whole by `readers/tables.py`)."""
    files: list[Path] = []
    for i, raw in enumerate(spec.data.paths):
        path = spec.resolve_path(raw)
        if path.is_dir() and not (path / "state.json").exists():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not found:
                raise DataError(f"data folder is empty: {path}", file=spec.source, key=f"data.paths[{i}]")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise DataError(f"data file not found: {path}", file=spec.source, key=f"data.paths[{i}]")
    return files
