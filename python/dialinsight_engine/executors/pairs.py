"""Pairs of pool rows in an ``(n, 2)`` int64 array (the near-duplicate steps' candidate pairs,
``i < j``, and the components' links), kept distinct and sorted by (i, j) through one uint64
key per pair where positions fit in 32 bits."""

from __future__ import annotations

import numpy as np

__all__ = ["key_pairs", "merged_pairs", "pair_keys", "unique_pairs"]


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """The distinct rows of an ``(n, 2)`` array of pool positions, sorted by (i, j). Through
    one uint64 key per pair when positions fit in 32 bits: ``np.unique(axis=0)`` sorts a
    structured view of the pairs, with more copies and a slower comparison."""
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64)
    if int(pairs.max()) >= 2**32:
        return np.unique(pairs, axis=0)
    return key_pairs(np.unique(pair_keys(pairs)))


def merged_pairs(pairs: np.ndarray, more: np.ndarray) -> np.ndarray:
    """The distinct pairs of two arrays of distinct pairs sorted by (i, j), sorted: `more`'s
    new ones inserted where they go (linear), not the two sorted again."""
    if len(pairs) == 0 or len(more) == 0:
        return more if len(pairs) == 0 else pairs
    if max(int(pairs.max()), int(more.max())) >= 2**32:
        return unique_pairs(np.concatenate([pairs, more]))
    held, keys = pair_keys(pairs), pair_keys(more)
    at = np.searchsorted(held, keys)
    new = held[np.minimum(at, len(held) - 1)] != keys
    new |= at == len(held)
    return key_pairs(np.insert(held, at[new], keys[new]))


def pair_keys(pairs: np.ndarray) -> np.ndarray:
    """Each pair of 32-bit positions as one uint64, ordered as the pairs are by (i, j)."""
    return (pairs[:, 0].astype(np.uint64) << np.uint64(32)) | pairs[:, 1].astype(np.uint64)


def key_pairs(keys: np.ndarray) -> np.ndarray:
    """The pairs of `pair_keys`' keys."""
    return np.stack([(keys >> np.uint64(32)).astype(np.int64), (keys & np.uint64(2**32 - 1)).astype(np.int64)],
                    axis=1)
