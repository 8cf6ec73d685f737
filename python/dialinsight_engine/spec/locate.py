"""Map a dotted key path in a TOML document back to its line number.

tomllib gives no positions, so we scan the text: table headers (``[a.b]``, ``[[a]]`` with a
running index per array) and ``key = value`` lines. A path that points inside a multi-line
value falls back to the nearest enclosing key that has a line.
"""

from __future__ import annotations

import re
import tomllib

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")

Path_ = tuple[str | int, ...]


def _split_key(raw: str) -> list[str]:
    # Let tomllib parse the dotted key itself, so quoting rules are exactly TOML's.
    doc = tomllib.loads(f"{raw} = 0")
    parts: list[str] = []
    node = doc
    while isinstance(node, dict):
        (k, node), = node.items()
        parts.append(k)
    return parts


def key_lines(text: str) -> dict[Path_, int]:
    """Every key path that has a line of its own -> 1-based line number."""
    lines: dict[Path_, int] = {}
    table: Path_ = ()
    array_counts: dict[tuple[str, ...], int] = {}
    depth = 0  # open brackets of a multi-line value: keys inside are not top-level keys
    for number, line in enumerate(text.splitlines(), start=1):
        if depth == 0 and (m := _HEADER.match(line)):
            try:
                names = _split_key(m.group(2))
            except tomllib.TOMLDecodeError:
                continue
            if m.group(1) == "[[":
                key = tuple(names)
                index = array_counts.get(key, 0)
                array_counts[key] = index + 1
                # nested arrays of tables under a previous [[x]] keep x's index
                table = (*_resolve(names[:-1], array_counts), names[-1], index)
            else:
                table = _resolve(names, array_counts)
            lines.setdefault(table, number)
            if table and isinstance(table[-1], int):
                lines.setdefault(table[:-1], number)
            continue
        if depth == 0 and (m := _KEY.match(line)):
            try:
                names = _split_key(m.group(1))
            except tomllib.TOMLDecodeError:
                continue
            lines.setdefault((*table, *names), number)
        depth += _bracket_delta(line)
        depth = max(depth, 0)
    return lines


def _resolve(names: list[str], array_counts: dict[tuple[str, ...], int]) -> Path_:
    """Insert the current array index after every prefix that is an array of tables."""
    out: list[str | int] = []
    for i, name in enumerate(names):
        out.append(name)
        count = array_counts.get(tuple(names[: i + 1]))
        if count:
            out.append(count - 1)
    return tuple(out)


def _bracket_delta(line: str) -> int:
    # Count brackets outside strings and comments; good enough for arrays and inline tables.
    delta, quote = 0, ""
    for ch in line:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            delta += 1
        elif ch in "]}":
            delta -= 1
    return delta


def line_of(lines: dict[Path_, int], path: Path_) -> int | None:
    """The line of `path`, or of its nearest ancestor that has one."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None
