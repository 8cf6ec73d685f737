"""JSON Lines dialogues, one object per line (the format of ../shared/data).

Lines are read as bytes and decoded one at a time, so a bad byte, a lone surrogate escape or a
line nested too deeply is one broken record naming its file:line (skippable with
``on_error = "skip"``), never an exception that stops the whole ingest. A damaged gzip stream
is a file-level error (`UnreadableFile`) naming the file and the last good line. A UTF-8 byte
order mark at the start of the file is accepted.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import DataError
from .base import MAX_NESTING, RawRecord, Reader, UnreadableFile, nesting_depth

BOM = b"\xef\xbb\xbf"
# a \uD800-\uDFFF escape: json.loads turns an unpaired one into a str that no UTF-8 writer accepts
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# errors a damaged gzip stream raises part-way through (BadGzipFile is an OSError)
_GZIP_ERRORS = (OSError, EOFError, zlib.error)


class JsonlReader(Reader):
    name = "jsonl"
    extensions = (".jsonl", ".jsonl.gz", ".ndjson")
    description = "JSON Lines: one dialogue object per line"

    def read(self, path: Path) -> Iterator[RawRecord | DataError]:
        gz = path.name.endswith(".gz")
        number = 0
        try:
            with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
                for number, line in _lines(fh):
                    item = parse_line(line, path, number)
                    if item is not None:
                        yield item
        except _GZIP_ERRORS as exc:
            after = f" after line {number}" if number else ""
            kind = "corrupt or truncated gzip file" if gz else "cannot read the file"
            raise UnreadableFile(f"{kind}{after}: {type(exc).__name__}: {exc}", file=path) from None


def _lines(fh: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(fh, start=1):
        if number == 1 and line.startswith(BOM):
            line = line[len(BOM):]
        yield number, line


def parse_line(line: bytes, path: Path, number: int) -> RawRecord | DataError | None:
    """One JSONL line -> a record, a `DataError` naming path:number, or None for a blank line."""
    where = {"file": path, "line": number}
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = line[exc.start:exc.start + 1].hex()
        return DataError(f"not UTF-8: byte 0x{byte} at column {exc.start + 1}", **where,
                         hint="convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8")
    if not text.strip():
        return None
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        return DataError(f"broken JSON line: {exc.msg} (column {exc.colno})", **where)
    except RecursionError:
        return DataError(f"JSON nested too deeply (more than {MAX_NESTING} levels)", **where)
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        return DataError(f"unreadable JSON value: {exc}", **where)
    # a cheap bound first: a line with few brackets cannot nest deeply
    if line.count(b"[") + line.count(b"{") > MAX_NESTING and nesting_depth(data) > MAX_NESTING:
        return DataError(f"JSON nested too deeply (more than {MAX_NESTING} levels)", **where)
    if _SURROGATE_ESCAPE.search(line) and _has_lone_surrogate(data):
        found = _SURROGATE_ESCAPE.search(line)
        column = found.start() + 1 if found else 0
        return DataError(f"lone surrogate escape in a string (not valid Unicode), near column {column}", **where)
    return RawRecord(data, path, number)


def _has_lone_surrogate(data: Any) -> bool:
    # a valid pair was already joined into one character by json.loads; what remains unpaired
    # cannot be encoded, and would stop the Parquet writer later
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
