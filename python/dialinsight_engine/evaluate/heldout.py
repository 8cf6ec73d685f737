"""Held-out dialogues for domain evaluation, and the contamination check that keeps them
apart from the training data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..dialogue import render_dialogue
from ..errors import DataError
from ..readers.base import normalize_record
from ..readers.jsonl import JsonlReader
from ..selection import Selection, record_view


@dataclass
class HeldOut:
    dialogue_id: str
    dialogue_text: str
    truth: dict[str, Any]


def read_heldout(paths: Sequence[Path], *, limit: int | None = None, key: str = "eval.domain_data",
                 role_alias: dict[str, str] | None = None, selection: Selection | None = None) -> list[HeldOut]:
    """Dialogues with a `truth` object, in file order (records without truth are skipped);
    roles are renamed through `role_alias` (lower-case keys) as ingest does. `selection`
    (`[eval] where`, `exclude_ids`, `sample`) picks among them."""
    alias = role_alias or {}
    out: list[HeldOut] = []
    reader = JsonlReader()
    for path in paths:
        if not path.exists():
            raise DataError(f"held-out dialogue file not found: {path}", key=key)
        for index, item in enumerate(reader.read(path)):
            if isinstance(item, DataError):
                raise item
            rec = normalize_record(item, index)
            truth = rec["truth"]
            if isinstance(truth, str):
                truth = json.loads(truth)
            if not isinstance(truth, dict):
                continue
            turns = [{"role": alias.get(t["role"].lower(), t["role"].lower()), "text": t["text"]} for t in rec["turns"]]
            if selection is not None and not selection.keeps(
                    record_view(rec["id"], turns, rec["intents"], truth, rec["meta"])):
                continue
            out.append(HeldOut(rec["id"], render_dialogue(turns), truth))
            if limit is not None and len(out) >= limit and (selection is None or selection.sample_n is None):
                return out
    if not out:
        raise DataError("no held-out dialogue with a `truth` object" + (" matching the selection" if selection else ""),
                        key=key)
    return selection.sample(out)[:limit] if selection is not None else out


def overlapping(texts: Sequence[str], reference: Sequence[str], threshold: float) -> list[bool]:
    """For each text, whether some reference text is at least `threshold` similar (MinHash
    estimate of the Jaccard similarity of word 3-grams, the Rust core's `contamination`)."""
    if not texts or not reference:
        return [False] * len(texts)
    from ..fast import contamination

    found = contamination(list(texts), list(reference), threshold=threshold)
    return [bool(flag) for flag in found["contaminated"].to_list()]
