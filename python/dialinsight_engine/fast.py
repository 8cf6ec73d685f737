"""Fast text kernels over Polars columns, backed by the Rust core (`_core`).

Text columns cross into Rust through the Arrow PyCapsule stream interface
(``__arrow_c_stream__``) without copying; the core works batch by batch with the GIL
released and on all cores. See ``docs/architecture.md`` ("Rust core and data exchange")
and ``docs/metrics.md``.

Functions:

* :func:`minhash_signatures` -- MinHash signatures (native or datasketch-compatible).
* :func:`minhash_settings` / :class:`MinHashSettings` -- how texts are hashed, one typed
  object checked once by the core (every MinHash function builds one from its keywords).
* :func:`near_duplicates` -- LSH near-duplicate clusters with a kept representative.
* :func:`contamination` -- rows near-duplicate to a reference corpus.
* :func:`text_metrics` -- text-complexity metrics as columns.
* :func:`optimal_lsh_params` -- LSH (bands, rows) for a Jaccard threshold.
* :func:`tokenize` -- the words every kernel uses (script-aware: jieba for Chinese).
* :func:`detect_language` / :func:`resolve_language` / :func:`language_info` -- which
  tokenizer fits a column (``language="auto"``) and how it cuts words.

Every text function takes ``language``: ``"auto"`` (default: detected from the script shares
of a sample of the column, :func:`detect_language`), or ``"en"`` (any language written with
spaces between words), ``"zh"``, ``"ja"``, ``"ko"``, ``"th"``. See ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import polars as pl

from dialinsight_engine import _core
from dialinsight_engine._core import MinHashSettings

__all__ = [
    "LANGUAGES",
    "NORMALIZE_STEPS",
    "MinHashSettings",
    "canonical_language",
    "contamination",
    "detect_language",
    "language_info",
    "minhash_settings",
    "minhash_signatures",
    "near_duplicates",
    "optimal_lsh_params",
    "resolve_language",
    "text_metrics",
    "tokenize",
]

#: Normalisation steps, in the order they run (``normalize`` maps any of them to a bool).
NORMALIZE_STEPS = ("lowercase", "nfkc", "punctuation", "whitespace")

Normalize = bool | Mapping[str, bool]
Unit = Literal["word", "char"]
Mode = Literal["native", "datasketch"]
Scheme = Literal["legacy", "affine32"]

#: Accepted ``language`` values ("auto" is resolved per column by :func:`detect_language`).
LANGUAGES = ("auto", "en", "zh", "ja", "ko", "th")
#: Rows looked at by :func:`detect_language` (evenly spaced over the column).
LANGUAGE_SAMPLE_ROWS = 1000

_STRING_TYPES = (pl.String, pl.Null)


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


#: Languages written without spaces that share a tokenizer with Thai (single characters).
_NO_DICTIONARY_UNSPACED = ("th", "lo", "km", "my")


def canonical_language(language: str) -> str:
    """The tokenizer language of a language code: ``"auto"``, ``"zh"`` (also ``zh-Hans``,
    ``zh_TW``...), ``"ja"``, ``"ko"``, ``"th"`` (also Lao, Khmer, Burmese), and ``"en"`` for
    every other code (languages written with spaces between words)."""
    if not isinstance(language, str) or not language.strip():
        raise ValueError(f"language must be a language code such as 'en', 'zh' or 'auto'; got {language!r}")
    code = language.strip().lower().replace("_", "-").split("-")[0]
    if code in ("auto", "zh", "ja", "ko", "th"):
        return code
    return "th" if code in _NO_DICTIONARY_UNSPACED else "en"


def _check_language(language: str) -> str:
    lang = canonical_language(language)
    if lang not in LANGUAGES:  # pragma: no cover - canonical_language maps every code
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}; got {language!r}")
    return lang


def detection_rows(n: int, sample: int = LANGUAGE_SAMPLE_ROWS) -> range:
    """The rows of an ``n``-row column that :func:`detect_language` reads: ``sample`` evenly
    spaced ones (all when there are fewer). A caller whose rows lie in several places (the
    partitions of a distributed pool) gathers exactly these to decide as one process would."""
    return range(n) if n <= sample else range(0, n, n // sample)[:sample]


def detect_language(
    texts: pl.Series | Sequence[str | None], *, sample: int = LANGUAGE_SAMPLE_ROWS
) -> str:
    """The language whose tokenizer fits ``texts``: ``"zh"``, ``"ja"``, ``"ko"``, ``"th"``,
    or ``"en"`` for any script written with spaces. Decided on letter counts per script over
    up to ``sample`` evenly spaced rows, Han/Kana/Thai letters weighing 5x a Latin letter
    (about a word each); Kana in at least a tenth of the Han+Kana letters means Japanese."""
    s = _as_text_series(texts)
    if sample < 1:
        raise ValueError(f"sample must be >= 1, got {sample!r}")
    rows = detection_rows(s.len(), sample)
    if len(rows) < s.len():
        s = s.gather_every(rows.step).head(sample)
    return _core.detect_language(s, _col_name(s, "texts"))


def resolve_language(texts: pl.Series | Sequence[str | None], language: str = "auto") -> str:
    """:func:`canonical_language` of ``language``, or for ``"auto"`` the
    :func:`detect_language` of ``texts``."""
    lang = _check_language(language)
    return detect_language(texts) if lang == "auto" else lang


def language_info(language: str) -> dict[str, str | int]:
    """How a (resolved) language is handled: ``segmenter`` (what cuts its words), and the
    MinHash shingles used when none are set (``minhash_unit``, ``minhash_ngram``). Stages
    record this in their manifests."""
    lang = _check_language(language)
    if lang == "auto":
        raise ValueError("language_info needs a resolved language (see resolve_language)")
    segmenter, unit, ngram = _core.language_info(lang)
    return {"language": lang, "segmenter": segmenter, "minhash_unit": unit,
            "minhash_ngram": ngram}


def tokenize(
    texts: pl.Series | Sequence[str | None], language: str = "auto", *, lowercase: bool = True
) -> pl.Series:
    """The words of each row, as the core's kernels see them: a ``List(String)`` Series
    (null for a null row). Words are whitespace-separated, ASCII punctuation trimmed at
    both ends; text in scripts written without spaces is cut by UAX #29 word boundaries and,
    for ``"zh"``, Han runs by jieba-rs (``docs/metrics.md``, "Words per script")."""
    s = _as_text_series(texts)
    lang = resolve_language(s, language)
    out = pl.DataFrame(_core.tokenize(s, _col_name(s, "texts"), lang, bool(lowercase)))
    return out.get_column("tokens").alias(s.name or "tokens")


def minhash_settings(
    texts: pl.Series,
    *,
    num_perm: int = 128,
    seed: int = 1,
    ngram: int | None = None,
    unit: Unit | None = None,
    normalize: Normalize = True,
    mode: Mode = "native",
    scheme: Scheme = "legacy",
    language: str = "auto",
) -> MinHashSettings:
    """The core's :class:`MinHashSettings` for hashing ``texts``: ``language="auto"`` is
    resolved on them (:func:`resolve_language`). Every other argument is checked by the core
    itself (``ValueError`` naming the argument), unset ``unit``/``ngram`` take the language's
    defaults there."""
    # a Mapping crosses as a dict (the core reads bool or dict)
    steps = dict(normalize) if isinstance(normalize, Mapping) else normalize
    return MinHashSettings(
        num_perm=num_perm,
        seed=seed,
        ngram=ngram,
        unit=unit,
        normalize=steps,
        mode=mode,
        scheme=scheme,
        language=resolve_language(texts, language),
    )


def minhash_signatures(
    texts: pl.Series | Sequence[str | None],
    *,
    num_perm: int = 128,
    seed: int = 1,
    ngram: int | None = None,
    unit: Unit | None = None,
    normalize: Normalize = True,
    mode: Mode = "native",
    scheme: Scheme = "legacy",
    language: str = "auto",
) -> np.ndarray:
    """MinHash signatures, shape ``(n, num_perm)``, dtype uint64.

    ``mode="datasketch"`` reproduces ``datasketch.MinHash(num_perm, seed, scheme=scheme)``
    fed with ``update_batch([s.encode("utf-8") for s in shingles])``, bit for bit, where
    a word shingle is ``ngram`` normalised words joined by single spaces and a char
    shingle is ``ngram`` consecutive code points. ``scheme="legacy"`` (default) is
    datasketch's only scheme before 2.0; ``"affine32"`` is datasketch 2.x's default.
    A row with no shingle (null, empty) has every value at ``2**32 - 1``, as
    datasketch's empty MinHash.

    Unset ``unit``/``ngram`` take the language's default (``language="auto"``: detected on
    the column): word 3-grams for languages written with spaces, character 3-grams for
    Chinese, Japanese and Thai. Words are the tokenizer's (:func:`tokenize`, without
    trimming punctuation), so for English they are the whitespace-separated words.
    """
    s = _as_text_series(texts)
    settings = minhash_settings(
        s, num_perm=num_perm, seed=seed, ngram=ngram, unit=unit, normalize=normalize,
        mode=mode, scheme=scheme, language=language,
    )
    return _core.minhash_signatures(s, _col_name(s, "texts"), settings)


def optimal_lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising 0.5*P(false positive) + 0.5*P(false negative), as
    datasketch's ``MinHashLSH`` does."""
    return _core.optimal_lsh_params(threshold, num_perm)


def near_duplicates(
    df: pl.DataFrame,
    column: str,
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    seed: int = 1,
    ngram: int | None = None,
    unit: Unit | None = None,
    normalize: Normalize = True,
    keep: str = "first",
    id_column: str | None = None,
    mode: Mode = "native",
    scheme: Scheme = "legacy",
    bands: int | None = None,
    rows: int | None = None,
    language: str = "auto",
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
    if column not in df.columns:
        raise ValueError(f"column {column!r} not in frame (columns: {df.columns})")
    s = _as_text_series(df.get_column(column))
    settings = minhash_settings(
        s, num_perm=num_perm, seed=seed, ngram=ngram, unit=unit, normalize=normalize,
        mode=mode, scheme=scheme, language=language,
    )
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
            s, column, settings, threshold=threshold, keep=keep_mode, quality=quality,
            bands=bands, rows=rows,
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
    ngram: int | None = None,
    unit: Unit | None = None,
    normalize: Normalize = True,
    mode: Mode = "native",
    scheme: Scheme = "legacy",
    bands: int | None = None,
    rows: int | None = None,
    language: str = "auto",
) -> pl.DataFrame:
    """For each row of ``texts``: the most similar ``reference`` row found by LSH.

    Columns: ``ref_index`` (UInt64 row index into ``reference``; null when LSH found no
    candidate), ``max_jaccard`` (Float64 estimated Jaccard to it, 0.0 if none) and
    ``contaminated`` (Boolean, ``max_jaccard >= threshold``).
    """
    s = _as_text_series(texts, "texts")
    r = _as_text_series(reference, "reference")
    # "auto" looks at both sides: they must be hashed alike
    both = pl.concat([x.head(LANGUAGE_SAMPLE_ROWS).cast(pl.String).alias("t") for x in (s, r)])
    settings = minhash_settings(
        both, num_perm=num_perm, seed=seed, ngram=ngram, unit=unit, normalize=normalize,
        mode=mode, scheme=scheme, language=language,
    )
    return pl.DataFrame(
        _core.contamination(
            s, _col_name(s, "texts"), r, _col_name(r, "reference"), settings,
            threshold=threshold, bands=bands, rows=rows,
        )
    )


def text_metrics(
    texts: pl.Series | Sequence[str | None],
    *,
    instruction: bool = False,
    language: str = "auto",
    cues: Mapping[str, Sequence[str]] | None = None,
) -> pl.DataFrame:
    """Text-complexity metrics, one row per input row (all null for a null input).

    UInt64: ``words, chars, approx_tokens, sentences``; Float64: ``mean_sentence_words,
    ttr, mtld, word_entropy, distinct_1, distinct_2, char_rep_ratio, word_rep_ratio``; with
    ``instruction=True`` also UInt64 ``constraint_cues, enumerated_steps, question_marks,
    format_requirements``. Formulas: ``docs/metrics.md``.

    Words are :func:`tokenize`'s for ``language`` (``"auto"``: detected on the column).
    Instruction cues come from the built-in lists (``data/cues/en.txt`` always, plus the
    language's own file) and ``cues``: ``{"constraint": [...], "format": [...], "step": [...]}``
    phrases added to them.
    """
    s = _as_text_series(texts)
    lang = resolve_language(s, language)
    # the core checks the cue kinds; phrases are handed over as plain lists of str
    extra = None if cues is None else {k: [str(p) for p in v] for k, v in cues.items()}
    return pl.DataFrame(
        _core.text_metrics(s, _col_name(s, "texts"), bool(instruction), lang, extra)
    )
