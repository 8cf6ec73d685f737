"""Fast text kernels over Polars columns, backed by the Rust core (`_core`).

Text columns cross into Rust through the Arrow PyCapsule stream interface
(``__arrow_c_stream__``) without copying; the core works batch by batch with the GIL
released and on all cores. See ``docs/architecture.md`` ("Rust core and data exchange")
and ``docs/metrics.md``.

Functions:

* :func:`minhash_signatures` -- MinHash signatures (native or datasketch-compatible).
* :func:`near_duplicates` -- LSH near-duplicate clusters with a kept representative.
* :func:`contamination` -- rows near-duplicate to a reference corpus.
* :func:`text_metrics` -- text-complexity metrics as columns.
* :func:`optimal_lsh_params` -- LSH (bands, rows) for a Jaccard threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import polars as pl

from dialinsight_engine import _core

__all__ = [
    "NORMALIZE_STEPS",
    "contamination",
    "minhash_signatures",
    "near_duplicates",
    "optimal_lsh_params",
    "text_metrics",
]

#: Normalisation steps, in the order of the tuple handed to the core.
NORMALIZE_STEPS = ("lowercase", "nfkc", "punctuation", "whitespace")

Normalize = bool | Mapping[str, bool]
Unit = Literal["word", "char"]
Mode = Literal["native", "datasketch"]
Scheme = Literal["legacy", "affine32"]

_STRING_TYPES = (pl.String, pl.Null)


def _norm(normalize: Normalize) -> tuple[bool, bool, bool, bool]:
    """``True``: every step; ``False``: none; a mapping toggles steps (missing = on)."""
    if isinstance(normalize, bool):
        return (normalize,) * 4  # type: ignore[return-value]
    unknown = set(normalize) - set(NORMALIZE_STEPS)
    if unknown:
        raise ValueError(f"unknown normalize steps {sorted(unknown)}; known: {NORMALIZE_STEPS}")
    lo, nf, pu, ws = (bool(normalize.get(k, True)) for k in NORMALIZE_STEPS)
    return (lo, nf, pu, ws)


def _as_text_series(texts: pl.Series | Sequence[str | None], what: str = "texts") -> pl.Series:
    """A Polars string Series (no copy when given one); rejects non-string dtypes."""
    if isinstance(texts, pl.Series):
        s = texts
    elif isinstance(texts, str | bytes):
        raise TypeError(
            f"{what} must be a sequence of strings, not a single {type(texts).__name__}"
        )
    else:
        try:
            s = pl.Series(what, list(texts), dtype=pl.String, strict=True)
        except (TypeError, pl.exceptions.PolarsError) as e:
            raise TypeError(f"{what} must hold only str or None values: {e}") from e
    if s.dtype not in _STRING_TYPES:
        name = s.name or what
        raise TypeError(
            f"column {name!r} has dtype {s.dtype}; expected a string column (pl.String)"
        )
    return s


def _col_name(s: pl.Series, default: str) -> str:
    return s.name or default


def _hashing(
    num_perm: int, seed: int, ngram: int, unit: str, normalize: Normalize, mode: str, scheme: str
) -> tuple[int, int, int, str, tuple[bool, bool, bool, bool], str, str]:
    """The core's `hashing` tuple, after checking each part (the core checks again)."""
    if not isinstance(num_perm, int) or num_perm < 1:
        raise ValueError(f"num_perm must be a positive int, got {num_perm!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(ngram, int) or ngram < 1:
        raise ValueError(f"ngram must be a positive int, got {ngram!r}")
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    if mode not in ("native", "datasketch"):
        raise ValueError(f"mode must be 'native' or 'datasketch', got {mode!r}")
    return (num_perm, seed, ngram, unit, _norm(normalize), mode, scheme)


def minhash_signatures(
    texts: pl.Series | Sequence[str | None],
    *,
    num_perm: int = 128,
    seed: int = 1,
    ngram: int = 3,
    unit: Unit = "word",
    normalize: Normalize = True,
    mode: Mode = "native",
    scheme: Scheme = "legacy",
) -> np.ndarray:
    """MinHash signatures, shape ``(n, num_perm)``, dtype uint64.

    ``mode="datasketch"`` reproduces ``datasketch.MinHash(num_perm, seed, scheme=scheme)``
    fed with ``update_batch([s.encode("utf-8") for s in shingles])``, bit for bit, where
    a word shingle is ``ngram`` normalised words joined by single spaces and a char
    shingle is ``ngram`` consecutive code points. ``scheme="legacy"`` (default) is
    datasketch's only scheme before 2.0; ``"affine32"`` is datasketch 2.x's default.
    A row with no shingle (null, empty) has every value at ``2**32 - 1``, as
    datasketch's empty MinHash.
    """
    hashing = _hashing(num_perm, seed, ngram, unit, normalize, mode, scheme)
    s = _as_text_series(texts)
    return _core.minhash_signatures(s, _col_name(s, "texts"), hashing)


def optimal_lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising 0.5*P(false positive) + 0.5*P(false negative), as
    datasketch's ``MinHashLSH`` does."""
    return _core.optimal_lsh_params(float(threshold), int(num_perm))


def near_duplicates(
    df: pl.DataFrame,
    column: str,
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    seed: int = 1,
    ngram: int = 3,
    unit: Unit = "word",
    normalize: Normalize = True,
    keep: str = "first",
    id_column: str | None = None,
    mode: Mode = "native",
    scheme: Scheme = "legacy",
    bands: int | None = None,
    rows: int | None = None,
) -> pl.DataFrame:
    """Near-duplicate clusters of ``df[column]``, one output row per input row.

    Rows are MinHashed, candidate pairs come from LSH banding (``bands`` x ``rows``,
    default :func:`optimal_lsh_params`), pairs whose estimated Jaccard is at least
    ``threshold`` are joined with union-find. Null rows and rows without a shingle are
    never duplicates.

    ``keep`` picks the representative of each cluster: ``"first"`` (smallest row index),
    ``"longest"`` (most characters), or the name of a numeric column (highest value kept;
    nulls lowest). Ties go to the smallest row index.

    Returns columns ``cluster_id`` (UInt64, smallest row index in the cluster),
    ``duplicate_of`` (the representative's ``id_column`` value, or its UInt64 row index;
    null for representatives and singletons), ``max_jaccard`` (Float64, best estimated
    Jaccard to any LSH candidate, 0.0 if none) and ``is_duplicate`` (Boolean).
    """
    hashing = _hashing(num_perm, seed, ngram, unit, normalize, mode, scheme)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if column not in df.columns:
        raise ValueError(f"column {column!r} not in frame (columns: {df.columns})")
    s = _as_text_series(df.get_column(column))
    quality = None
    keep_mode = keep
    if keep not in ("first", "longest"):
        if keep not in df.columns:
            raise ValueError(
                f"keep must be 'first', 'longest' or a numeric column name; no column {keep!r}"
            )
        q = df.get_column(keep)
        if not q.dtype.is_numeric():
            raise TypeError(f"keep column {keep!r} has dtype {q.dtype}; expected a numeric column")
        quality = q.cast(pl.Float64)
        keep_mode = "quality"
    if id_column is not None and id_column not in df.columns:
        raise ValueError(f"id_column {id_column!r} not in frame (columns: {df.columns})")
    out = pl.DataFrame(
        _core.near_duplicates(
            s,
            column,
            quality,
            keep_mode,
            float(threshold),
            hashing,
            bands,
            rows,
        )
    )
    dup = out.get_column("duplicate_of")
    if id_column is not None:
        dup = df.get_column(id_column).gather(dup).alias("duplicate_of")
    return out.with_columns(dup, dup.is_not_null().alias("is_duplicate")).select(
        "cluster_id", "duplicate_of", "max_jaccard", "is_duplicate"
    )


def contamination(
    texts: pl.Series | Sequence[str | None],
    reference: pl.Series | Sequence[str | None],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    seed: int = 1,
    ngram: int = 3,
    unit: Unit = "word",
    normalize: Normalize = True,
    mode: Mode = "native",
    scheme: Scheme = "legacy",
    bands: int | None = None,
    rows: int | None = None,
) -> pl.DataFrame:
    """For each row of ``texts``: the most similar ``reference`` row found by LSH.

    Columns: ``ref_index`` (UInt64 row index into ``reference``; null when LSH found no
    candidate), ``max_jaccard`` (Float64 estimated Jaccard to it, 0.0 if none) and
    ``contaminated`` (Boolean, ``max_jaccard >= threshold``).
    """
    hashing = _hashing(num_perm, seed, ngram, unit, normalize, mode, scheme)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    s = _as_text_series(texts, "texts")
    r = _as_text_series(reference, "reference")
    return pl.DataFrame(
        _core.contamination(
            s,
            _col_name(s, "texts"),
            r,
            _col_name(r, "reference"),
            float(threshold),
            hashing,
            bands,
            rows,
        )
    )


def text_metrics(
    texts: pl.Series | Sequence[str | None], *, instruction: bool = False
) -> pl.DataFrame:
    """Text-complexity metrics, one row per input row (all null for a null input).

    UInt64: ``words, chars, approx_tokens, sentences``; Float64: ``mean_sentence_words,
    ttr, mtld, word_entropy, distinct_1, distinct_2, char_rep_ratio, word_rep_ratio``; with
    ``instruction=True`` also UInt64 ``constraint_cues, enumerated_steps, question_marks,
    format_requirements``. Formulas: ``docs/metrics.md``.
    """
    s = _as_text_series(texts)
    return pl.DataFrame(_core.text_metrics(s, _col_name(s, "texts"), bool(instruction)))
