"""Selecting records by their fields: `where` conditions, a seeded `sample`, and excluded ids.

Used after reading, whatever the reader: by ingest (`[data]`), by the held-out set of the eval
stage (`[eval]`) and by scene rules (`[[scenes]] match`). A condition names a field by a dotted
path into the record (`services`, `truth.state.Restaurants_1.city`, `n_turns`) and tests it:

- a scalar: equality (`type = "单领域"`);
- a list: membership (`lang = ["zh", "en"]`);
- a table of operators, all of which must hold: `eq`, `ne`, `in`, `not_in`, `contains` /
  `not_contains` / `contains_any` / `contains_all` (a list field holds the value(s); on a string,
  a substring), `prefix` / `not_prefix`, `min` / `max` (numbers; on a list or a string, its
  length), `exists` (true: the field is present and not null).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import did_you_mean

OPERATORS = ("eq", "ne", "in", "not_in", "contains", "not_contains", "contains_any", "contains_all",
             "prefix", "not_prefix", "min", "max", "exists")
_MISSING = object()


def resolve(record: Any, path: str) -> Any:
    """The value at a dotted path (`_MISSING` when a step is absent). An empty path is the record."""
    value = record
    for part in path.split(".") if path else []:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def is_missing(value: Any) -> bool:
    return value is _MISSING


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, list | str | dict):
        return float(len(value))
    if isinstance(value, int | float):
        return float(value)
    return None


def _contains_test(op: str, wanted: list[Any], value: Any) -> bool:
    """`contains`/`contains_all` (every wanted item), `contains_any`, `not_contains` (none):
    substrings of a string, items of a list, keys of a table."""
    if isinstance(value, str):
        hits = [isinstance(w, str) and w in value for w in wanted]
    elif isinstance(value, list | dict):
        hits = [w in value for w in wanted]
    else:
        hits = [False] * len(wanted)
    if op == "not_contains":
        return not any(hits)
    return all(hits) if op in ("contains", "contains_all") else any(hits)


def _test(op: str, arg: Any, value: Any) -> bool:
    present = value is not _MISSING and value is not None
    if op == "exists":
        return present == bool(arg)
    if not present:
        return op in ("ne", "not_in", "not_contains", "not_prefix")
    if op == "eq":
        return bool(value == arg)
    if op == "ne":
        return bool(value != arg)
    if op == "in":
        return value in arg
    if op == "not_in":
        return value not in arg
    if op in ("contains", "not_contains", "contains_any", "contains_all"):
        return _contains_test(op, _as_list(arg), value)
    if op in ("prefix", "not_prefix"):
        starts = isinstance(value, str) and any(value.startswith(p) for p in _as_list(arg))
        return starts if op == "prefix" else not starts
    number = _number(value)
    if number is None:
        return False
    return number >= arg if op == "min" else number <= arg


def compile_condition(field: str, spec: Any) -> Callable[[Any], bool]:
    """One field's test; raises ValueError naming an unknown operator or a bad argument."""
    if isinstance(spec, dict):
        if not spec:
            raise ValueError(f"condition on {field!r} is an empty table")
        for op, arg in spec.items():
            if op not in OPERATORS:
                hint = did_you_mean(op, OPERATORS)
                raise ValueError(f"unknown condition {op!r} on {field!r}"
                                 + (f": {hint}" if hint else f" (allowed: {', '.join(OPERATORS)})"))
            if op in ("min", "max") and (isinstance(arg, bool) or not isinstance(arg, int | float)):
                raise ValueError(f"{field}.{op} must be a number, got {arg!r}")
            if op in ("in", "not_in") and not isinstance(arg, list):
                raise ValueError(f"{field}.{op} must be a list, got {arg!r}")
            if op == "exists" and not isinstance(arg, bool):
                raise ValueError(f"{field}.exists must be true or false, got {arg!r}")
        tests = list(spec.items())
    elif isinstance(spec, list):
        tests = [("in", spec)]
    else:
        tests = [("eq", spec)]

    def check(record: Any) -> bool:
        value = resolve(record, field)
        return all(_test(op, arg, value) for op, arg in tests)

    return check


def flatten(where: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted field, condition) pairs. A TOML dotted key (`truth.state.X = ...`, unquoted)
    arrives as nested tables: a table none of whose keys is an operator (or close to one, a
    likely typo) is a step of the path."""
    out: list[tuple[str, Any]] = []
    for key, value in where.items():
        field = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value and not any(
                k in OPERATORS or did_you_mean(k, OPERATORS, cutoff=0.75) for k in value):
            out += flatten(value, field)
        else:
            out.append((field, value))
    return out


def compile_where(where: dict[str, Any]) -> Callable[[Any], bool]:
    """All conditions together (an empty `where` keeps everything)."""
    checks = [compile_condition(field, spec) for field, spec in flatten(where)]
    return lambda record: all(check(record) for check in checks)


def read_id_file(path: Path) -> set[str]:
    """Ids from a file: JSON Lines (each object's `id`) or plain text (one id a line, `#` comments)."""
    ids: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict) and obj.get("id") is not None:
                    ids.add(str(obj["id"]))
                    continue
            ids.add(line)
    return ids


def record_view(record_id: str, turns: Sequence[Any], intents: Sequence[str], truth: Any,
                meta: dict[str, Any]) -> dict[str, Any]:
    """What conditions see of a normalised record: every field of the original record, plus
    `n_turns`."""
    return {**meta, "id": record_id, "turns": list(turns), "intents": list(intents), "truth": truth,
            "n_turns": len(turns)}


class Selection:
    """`where` + `exclude_ids` (+ an exclude file) per record, then a seeded `sample`."""

    def __init__(self, where: dict[str, Any] | None = None, *, sample: int | None = None,
                 exclude_ids: Iterable[str] = (), exclude_file: Path | None = None, seed: int = 0) -> None:
        self.keep_where = compile_where(where or {})
        self.excluded = set(exclude_ids) | (read_id_file(exclude_file) if exclude_file is not None else set())
        self.sample_n = sample
        self.seed = seed
        self.counts = {"not_matching_where": 0, "excluded_ids": 0}

    @classmethod
    def from_spec(cls, section: Any, spec: Any, where_key: str) -> Selection:
        """From a spec section with `where`, `sample`, `exclude_ids`, `exclude_file`; the
        sample is drawn with the project seed."""
        path = None
        if section.exclude_file is not None:
            path = spec.resolve_path(section.exclude_file)
            if not path.is_file():
                from .errors import DataError

                raise DataError(f"exclude file not found: {path}", file=spec.source, key=f"{where_key}.exclude_file")
        return cls(section.where, sample=section.sample, exclude_ids=section.exclude_ids, exclude_file=path,
                   seed=spec.project.seed)

    def keeps(self, view: dict[str, Any]) -> bool:
        if str(view.get("id")) in self.excluded:
            self.counts["excluded_ids"] += 1
            return False
        if not self.keep_where(view):
            self.counts["not_matching_where"] += 1
            return False
        return True

    def sample(self, items: list[Any]) -> list[Any]:
        """`sample` items drawn with the seed, kept in their original order (all when fewer)."""
        if self.sample_n is None or len(items) <= self.sample_n:
            return items
        chosen = sorted(random.Random(f"sample|{self.seed}").sample(range(len(items)), self.sample_n))
        self.counts["not_sampled"] = len(items) - self.sample_n
        return [items[i] for i in chosen]

    def stats(self) -> dict[str, int]:
        return dict(self.counts)
