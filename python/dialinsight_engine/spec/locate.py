"""Map a dotted key path in a TOML document back to its line number.

tomllib gives no positions, so we scan the text: table headers (``[a.b]``, ``[[a]]`` with a
running index per array) and ``key = value`` lines. A path that points inside a multi-line
value falls back to the nearest enclosing key that has a line. The same scan finds values
nested too deeply (tomllib recurses per level and would end in a RecursionError).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from typing import Any

#: deepest nesting of arrays and tables a spec may use (far beyond any real spec or schema)
MAX_DEPTH = 64

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
    """Every key path that has a line of its own -> 1-based line number. Each prefix of a
    dotted key or header gets the line too, so `foo.bar = 1` locates an unknown `foo`."""
    lines: dict[Path_, int] = {}
    table: Path_ = ()
    array_counts: dict[tuple[str, ...], int] = {}
    for number, (line, inside) in enumerate(_lines_outside_values(text), start=1):
        if inside:  # within a multi-line array, inline table or string: not a key line
            continue
        if m := _HEADER.match(line):
            try:
                names = _split_key(m.group(2))
            except (tomllib.TOMLDecodeError, RecursionError):
                continue
            if m.group(1) == "[[":
                key = tuple(names)
                index = array_counts.get(key, 0)
                array_counts[key] = index + 1
                # nested arrays of tables under a previous [[x]] keep x's index
                table = (*_resolve(names[:-1], array_counts), names[-1], index)
            else:
                table = _resolve(names, array_counts)
            for end in range(1, len(table) + 1):
                lines.setdefault(table[:end], number)
            continue
        if m := _KEY.match(line):
            try:
                names = _split_key(m.group(1))
            except (tomllib.TOMLDecodeError, RecursionError):
                continue
            for end in range(1, len(names) + 1):
                lines.setdefault((*table, *names[:end]), number)
    return lines


def _lines_outside_values(text: str) -> Iterator[tuple[str, bool]]:
    """Each line, and whether it starts inside a multi-line value (bracket or string)."""
    depth, string = 0, ""
    for line in text.splitlines():
        yield line, bool(depth or string)
        depth, string, _ = _scan(line, depth, string)


def nesting_line(text: str) -> int | None:
    """The first line where arrays and inline tables nest deeper than MAX_DEPTH, if any."""
    depth, string = 0, ""
    for number, line in enumerate(text.splitlines(), start=1):
        depth, string, deepest = _scan(line, depth, string)
        if deepest > MAX_DEPTH:
            return number
    return None


def _scan(line: str, depth: int, string: str) -> tuple[int, str, int]:
    """Bracket depth after `line`, the multi-line string still open, and the deepest point.
    Brackets inside strings and comments do not count."""
    deepest, i, n = depth, 0, len(line)
    while i < n:
        ch = line[i]
        if string:
            if ch == "\\" and string in ('"', '"""'):
                i += 2
                continue
            if line.startswith(string, i):
                i += len(string)
                string = ""
                continue
        elif ch == "#":
            break
        elif ch in "\"'":
            string = ch * 3 if line.startswith(ch * 3, i) else ch
            i += len(string)
            continue
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(depth - 1, 0)
        i += 1
    if string in ('"', "'"):  # a single-line string cannot continue on the next line
        string = ""
    return depth, string, deepest


def deepest_path(value: Any) -> Path_ | None:
    """A key path deeper than MAX_DEPTH in a parsed document (dotted keys nest without
    brackets), found without recursion; None when the document is shallow enough."""
    stack: list[tuple[Any, Path_]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_DEPTH:
            return path
        if isinstance(node, dict):
            stack.extend((v, (*path, k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(node))
    return None


def _resolve(names: list[str], array_counts: dict[tuple[str, ...], int]) -> Path_:
    """Insert the current array index after every prefix that is an array of tables."""
    out: list[str | int] = []
    for i, name in enumerate(names):
        out.append(name)
        count = array_counts.get(tuple(names[: i + 1]))
        if count:
            out.append(count - 1)
    return tuple(out)


def line_of(lines: dict[Path_, int], path: Path_) -> int | None:
    """The line of `path`, or of its nearest ancestor that has one."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None
