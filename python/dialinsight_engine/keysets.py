"""`SeenKeys`: a set of fixed-width integer keys held as sorted numpy runs, for the passes that
must tell what they have seen across a whole pool a partition at a time (ingest's ids, the
language sample's distinct texts) without a Python set of the values."""

from __future__ import annotations

import hashlib

import numpy as np


class SeenKeys:
    """Keys of one or more 64-bit words (rows of a `(n, width)` uint64 array), in sorted runs
    merged as a binary counter's digits, so adding n keys sorts O(n log n) and a lookup
    searches O(log n) runs. Strings go in as their 128-bit BLAKE2b digests (`keys_of`): 16
    bytes a string, where a dict of the strings took ~93 (10^6 ids: 16 MB instead of 93 MB of
    driver heap); two different ids share a digest with probability ~n^2 / 2^129 (10^-21 for
    10^9 ids). Runs are sorted by the first word; keys equal in it are compared on the rest."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, ...]] = []  # one array per word, ordered by the first

    @staticmethod
    def keys_of(texts: list[str]) -> np.ndarray:
        digests = b"".join(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                           for t in texts)
        return np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        found = np.zeros(len(keys), dtype=bool)
        words = [keys[:, w].copy() for w in range(keys.shape[1])]
        for run in self.runs:
            at = np.searchsorted(run[0], words[0])
            # where the first words are equal, compare the rest; a collision of first words
            # (rare) puts several keys with the same first word in a run: look at each in turn
            looking = ~found & (at < len(run[0]))
            while (rows := np.flatnonzero(looking)).size:
                where = at[rows]
                same_first = run[0][where] == words[0][rows]
                match = same_first.copy()
                for run_word, word in zip(run[1:], words[1:], strict=True):
                    match &= run_word[where] == word[rows]
                found[rows[match]] = True
                at[rows] += 1
                looking[rows[~same_first | match]] = False
                looking &= at < len(run[0])
        return found

    def add(self, keys: np.ndarray) -> None:
        """Add keys not in the set yet."""
        if not len(keys):
            return
        order = np.argsort(keys[:, 0], kind="stable")
        self.runs.append(tuple(keys[order, w] for w in range(keys.shape[1])))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            top = self.runs.pop()
            self.runs[-1] = _merged(self.runs[-1], top)


def _merged(below: tuple[np.ndarray, ...], top: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Two runs as one, each key put at its place: 9 bytes per key and word besides the runs,
    and 8 per key of `top`. (Concatenating and sorting anew took 40 per 2-word key: the
    concatenation, the order, the reordered copy; at 10^6 ids that merge set ingest's peak.)"""
    at = np.searchsorted(below[0], top[0], side="right") + np.arange(len(top[0]))
    from_top = np.zeros(len(below[0]) + len(top[0]), bool)
    from_top[at] = True
    merged = []
    for below_word, top_word in zip(below, top, strict=True):
        out = np.empty(len(from_top), np.uint64)
        out[at] = top_word
        out[~from_top] = below_word
        merged.append(out)
    return tuple(merged)
