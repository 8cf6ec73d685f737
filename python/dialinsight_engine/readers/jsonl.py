"""JSON Lines dialogues, one object per line (the format of ../shared/data)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import DataError
from .base import RawRecord, Reader


class JsonlReader(Reader):
    name = "jsonl"
    extensions = (".jsonl", ".jsonl.gz", ".ndjson")
    description = "JSON Lines: one dialogue object per line"

    def read(self, path: Path) -> Iterator[RawRecord | DataError]:
        opener = _open_gz if path.name.endswith(".gz") else _open_text
        with opener(path) as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield RawRecord(json.loads(line), path, number)
                except json.JSONDecodeError as exc:
                    yield DataError(f"broken JSON line: {exc.msg} (column {exc.colno})", file=path, line=number)


def _open_text(path: Path):  # type: ignore[no-untyped-def]
    return open(path, encoding="utf-8", errors="strict")


def _open_gz(path: Path):  # type: ignore[no-untyped-def]
    import gzip

    return gzip.open(path, "rt", encoding="utf-8")
