"""Typed stub of the compiled Rust core (`rust/src/lib.rs`).

Text arguments are any object with ``__arrow_c_stream__`` holding one string column
(``string``, ``large_string`` or ``string_view``): a ``polars.Series``, a pyarrow array
or chunked array, ... Tables come back as Arrow tables (objects with
``__arrow_c_stream__``; wrap them with ``polars.DataFrame(...)``). Use the typed wrappers
in :mod:`dialinsight_engine.fast` rather than calling these directly.
"""

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
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
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...

_Norm = tuple[bool, bool, bool, bool]
# (num_perm, seed, ngram, unit, norm, mode, scheme, language): how texts are hashed;
# language is resolved ("en", "zh", "ja", "ko", "th"; never "auto")
_Hashing = tuple[int, int, int, str, _Norm, str, str, str]

def version() -> str: ...
def minhash_signatures(
    texts: _ArrowStream,
    column: str,
    hashing: _Hashing,
) -> npt.NDArray[np.uint64]: ...
def near_duplicates(
    texts: _ArrowStream,
    column: str,
    quality: _ArrowStream | None,
    keep: str,
    threshold: float,
    hashing: _Hashing,
    bands: int | None = None,
    rows: int | None = None,
) -> Any: ...
def contamination(
    texts: _ArrowStream,
    column: str,
    reference: _ArrowStream,
    ref_column: str,
    threshold: float,
    hashing: _Hashing,
    bands: int | None = None,
    rows: int | None = None,
) -> Any: ...
def text_metrics(
    texts: _ArrowStream,
    column: str,
    instruction: bool = False,
    language: str = "en",
    cues: dict[str, list[str]] | None = None,
) -> Any: ...
def tokenize(texts: _ArrowStream, column: str, language: str, lowercase: bool = True) -> Any:
    """Words of every row: an Arrow table with one ``tokens`` column (list of strings)."""
def detect_language(texts: _ArrowStream, column: str) -> str:
    """"en", "zh", "ja", "ko" or "th", from the script shares of all the given rows."""
def language_info(language: str) -> tuple[str, str, int]:
    """(segmenter description, default MinHash unit, default MinHash ngram)."""
def optimal_lsh_params(threshold: float, num_perm: int) -> tuple[int, int]: ...
def permutations(
    num_perm: int, seed: int, mode: str = "datasketch", scheme: str = "legacy"
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]: ...
