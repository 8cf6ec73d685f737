"""Held-out dialogues for domain evaluation, and the contamination check that keeps them
apart from the training data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..readers.base import normalize_record
from ..readers.jsonl import JsonlReader
from ..stages.ingest import render_dialogue


@dataclass
class HeldOut:
    dialogue_id: str
    dialogue_text: str
    truth: dict[str, Any]


def read_heldout(paths: Sequence[Path], *, limit: int | None = None, key: str = "eval.domain_data",
                 role_alias: dict[str, str] | None = None) -> list[HeldOut]:
    """Dialogues with a `truth` object, in file order (records without truth are skipped);
    roles are renamed through `role_alias` (lower-case keys) as ingest does."""
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
            out.append(HeldOut(rec["id"], render_dialogue(turns), truth))
            if limit is not None and len(out) >= limit:
                return out
    if not out:
        raise DataError("no held-out dialogue with a `truth` object", key=key)
    return out


def overlapping(texts: Sequence[str], reference: Sequence[str], threshold: float) -> list[bool]:
    """For each text, whether some reference text is at least `threshold` similar (MinHash
    estimate of the Jaccard similarity of word 5-grams). Uses the engine's Rust core when it
    provides `contamination`, else datasketch."""
    if not texts or not reference:
        return [False] * len(texts)
    try:
        from ..fast import contamination  # type: ignore[attr-defined]
    except ImportError:
        contamination = None
    if contamination is not None:
        result = contamination(list(texts), list(reference), threshold=threshold)
        return [bool(_flag(r, threshold)) for r in _as_list(result)]
    return _datasketch_overlap(texts, reference, threshold)


def _as_list(result: Any) -> list[Any]:
    if hasattr(result, "to_list"):
        return result.to_list()
    if hasattr(result, "columns") and hasattr(result, "get_column"):  # a frame: take its last column
        return result.get_column(result.columns[-1]).to_list()
    return list(result)


def _flag(value: Any, threshold: float) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value >= threshold
    return bool(value)


def _shingles(text: str, n: int = 5) -> set[bytes]:
    words = text.lower().split()
    if len(words) < n:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


def _datasketch_overlap(texts: Sequence[str], reference: Sequence[str], threshold: float) -> list[bool]:
    from datasketch import MinHash, MinHashLSH

    def signature(text: str) -> MinHash:
        m = MinHash(num_perm=128, seed=1)
        m.update_batch(list(_shingles(text)))
        return m

    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    ref_sigs = {}
    for i, text in enumerate(reference):
        ref_sigs[str(i)] = sig = signature(text)
        lsh.insert(str(i), sig)
    flags = []
    for text in texts:
        sig = signature(text)
        flags.append(any(sig.jaccard(ref_sigs[k]) >= threshold for k in lsh.query(sig)))
    return flags
