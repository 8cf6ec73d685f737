"""Typed stub of the compiled Rust core (``rust/src/lib.rs``), checked against the built
extension by ``python -m mypy.stubtest dialinsight_engine._core`` (``tests/test_core_stub.py``).

Text arguments are any object with ``__arrow_c_stream__`` holding one string column
(``string``, ``large_string`` or ``string_view``): a ``polars.Series``, a pyarrow array or
chunked array, ... ``column`` is the name used in error messages. Tables come back as Arrow
tables (objects with ``__arrow_c_stream__``; wrap them with ``polars.DataFrame(...)``).
Arguments are checked here, in the core: a bad value raises ``ValueError`` naming the
argument, a non-string column ``TypeError`` naming the column, invalid UTF-8 ``ValueError``
naming the row. Use the wrappers in :mod:`dialinsight_engine.fast` rather than calling these
directly.
"""

from typing import Literal, Protocol, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "MinHashSettings",
    "contamination",
    "detect_language",
    "language_info",
    "minhash_signatures",
    "near_duplicates",
    "optimal_lsh_params",
    "permutations",
    "text_metrics",
    "tokenize",
    "version",
]

class _ArrowStream(Protocol):
    """An Arrow C stream producer (PyCapsule interface)."""

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...

_Language = Literal["en", "zh", "ja", "ko", "th"]

@final
class MinHashSettings:
    """How texts are MinHashed: one frozen object, checked when built (``ValueError`` naming
    the argument) and taken by every MinHash function.

    * ``num_perm``: permutations per signature, 1..4096.
    * ``seed``: >= 0; datasketch mode needs it below ``2**32`` (numpy ``RandomState``).
    * ``ngram``, ``unit`` (``"word"`` or ``"char"``): shingles; unset ones take the
      language's defaults (character 3-grams for zh/ja/th, word 3-grams otherwise; an
      explicit non-default unit takes 3-grams).
    * ``normalize``: ``None``/``True`` every step, ``False`` none, or a dict of step ->
      bool over ``lowercase``, ``nfkc``, ``punctuation``, ``whitespace`` (missing steps on).
    * ``mode``: ``"native"`` or ``"datasketch"`` (bit-exact with datasketch's MinHash);
      ``scheme``: datasketch's permutations, ``"legacy"`` or ``"affine32"``.
    * ``language``: the tokenizer language, resolved (``"auto"`` is refused: detect first).
    """

    def __new__(
        cls,
        *,
        num_perm: int = 128,
        seed: int = 1,
        ngram: int | None = None,
        unit: Literal["word", "char"] | None = None,
        normalize: bool | dict[str, bool] | None = None,
        mode: Literal["native", "datasketch"] = "native",
        scheme: Literal["legacy", "affine32"] = "legacy",
        language: str = "en",
    ) -> MinHashSettings: ...
    @property
    def num_perm(self) -> int:
        """Permutations per signature."""
    @property
    def seed(self) -> int:
        """Seed of the permutations."""
    @property
    def ngram(self) -> int:
        """Units per shingle (resolved: never None)."""
    @property
    def unit(self) -> Literal["word", "char"]:
        """Shingle unit (resolved: never None)."""
    @property
    def normalize(self) -> dict[str, bool]:
        """Each normalisation step and whether it runs."""
    @property
    def mode(self) -> Literal["native", "datasketch"]:
        """Hash mode."""
    @property
    def scheme(self) -> Literal["legacy", "affine32"]:
        """datasketch's permutation scheme (ignored in native mode)."""
    @property
    def language(self) -> _Language:
        """The tokenizer language whose words make word shingles."""
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...

def version() -> str:
    """Version of the compiled core (the crate version in ``Cargo.toml``)."""

def minhash_signatures(
    texts: _ArrowStream, column: str, settings: MinHashSettings
) -> npt.NDArray[np.uint64]:
    """MinHash signatures of every row, shape ``(n, num_perm)``; a null or shingle-less row
    has every value at ``2**32 - 1`` (datasketch's empty MinHash)."""

def near_duplicates(
    texts: _ArrowStream,
    column: str,
    settings: MinHashSettings,
    *,
    threshold: float,
    keep: str = "first",
    quality: _ArrowStream | None = None,
    bands: int | None = None,
    rows: int | None = None,
) -> _ArrowStream:
    """Near-duplicate clusters: a table of ``cluster_id`` (uint64, smallest row of the
    cluster), ``duplicate_of`` (uint64 row kept in its place, null if kept) and
    ``max_jaccard`` (float64), one row per row. ``threshold`` in [0, 1]; ``bands`` and
    ``rows`` both or neither (default: datasketch's optimum for ``threshold``);
    ``keep="quality"`` keeps the highest value of the float64 ``quality`` column."""

def contamination(
    texts: _ArrowStream,
    column: str,
    reference: _ArrowStream,
    ref_column: str,
    settings: MinHashSettings,
    *,
    threshold: float,
    bands: int | None = None,
    rows: int | None = None,
) -> _ArrowStream:
    """For each row of ``texts``, its best LSH candidate in ``reference``: a table of
    ``ref_index`` (uint64, null when none), ``max_jaccard`` (float64) and ``contaminated``
    (bool, ``max_jaccard >= threshold``)."""

def text_metrics(
    texts: _ArrowStream,
    column: str,
    instruction: bool = False,
    language: str = "en",
    cues: dict[str, list[str]] | None = None,
) -> _ArrowStream:
    """Text-complexity metrics, a table with one row per row (``docs/metrics.md``);
    ``instruction`` adds the cue columns, ``cues`` extra phrases by kind (``constraint``,
    ``format``, ``step``)."""

def tokenize(
    texts: _ArrowStream, column: str, language: str, lowercase: bool = True
) -> _ArrowStream:
    """Words of every row: a table with one ``tokens`` column (list of strings, null for a
    null row)."""

def detect_language(texts: _ArrowStream, column: str) -> _Language:
    """The language whose tokenizer fits all the given rows, from their script shares."""

def language_info(language: str) -> tuple[str, Literal["word", "char"], int]:
    """(segmenter description, default MinHash unit, default MinHash ngram)."""

def optimal_lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's ``_optimal_param(threshold, num_perm, 0.5, 0.5)``: (bands, rows);
    ``threshold`` in (0, 1)."""

def permutations(
    settings: MinHashSettings,
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """The permutation parameters (a, b) of ``settings`` (for checks against datasketch)."""
