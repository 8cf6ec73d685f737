"""The Python boundary of the Rust core: the typed stub matches the built extension
(stubtest), mypy is clean on the stub and on ``fast.py``, and MinHash settings are one typed
object checked once, in Rust, with messages that name the argument."""

from __future__ import annotations

import os
import subprocess
import sys

import polars as pl
import pytest

from dialinsight_engine import _core, fast
from dialinsight_engine._core import MinHashSettings

from conftest import REPO

PYTHON_DIR = REPO / "python"


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR)}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_stub_matches_the_extension() -> None:
    pytest.importorskip("mypy")
    result = _run([sys.executable, "-m", "mypy.stubtest", "dialinsight_engine._core"])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_mypy_is_clean_on_the_boundary() -> None:
    pytest.importorskip("mypy")
    files = ["python/dialinsight_engine/fast.py", "python/dialinsight_engine/_core.pyi"]
    result = _run([sys.executable, "-m", "mypy", *files])
    assert result.returncode == 0, result.stdout[-4000:]


def test_settings_are_keyword_only_frozen_and_resolved() -> None:
    s = MinHashSettings(num_perm=64, seed=3, language="zh", normalize={"nfkc": False})
    # unset shingles take the language's defaults, in Rust
    assert (s.unit, s.ngram) == ("char", 3)
    assert MinHashSettings(language="en").unit == "word"
    assert MinHashSettings(unit="word", language="zh").ngram == 3
    assert s.normalize == {"lowercase": True, "nfkc": False, "punctuation": True, "whitespace": True}
    assert repr(s) == (
        "MinHashSettings(num_perm=64, seed=3, ngram=3, unit='char', normalize={'lowercase': True, "
        "'nfkc': False, 'punctuation': True, 'whitespace': True}, mode='native', "
        "scheme='legacy', language='zh')"
    )
    assert s == MinHashSettings(num_perm=64, seed=3, ngram=3, unit="char", language="zh",
                                normalize={"nfkc": False})
    assert s != MinHashSettings(num_perm=64, seed=3, language="zh")
    with pytest.raises(AttributeError):
        s.num_perm = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        MinHashSettings(64)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"num_perm": 0}, "num_perm"),
        ({"num_perm": 5000}, "num_perm"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**33, "mode": "datasketch"}, "seed"),
        ({"ngram": 0}, "ngram"),
        ({"unit": "line"}, "unit"),
        ({"mode": "fast"}, "mode"),
        ({"scheme": "affine64"}, "scheme"),
        ({"normalize": {"accents": True}}, "normalize"),
        ({"normalize": "yes"}, "normalize"),
        ({"language": "auto"}, "language"),
        ({"language": "xx"}, "language"),
    ],
)
def test_bad_settings_name_the_argument(kwargs: dict[str, object], argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument}\b"):
        MinHashSettings(**kwargs)  # type: ignore[arg-type]
    if argument != "language":  # fast resolves/canonicalises the language first
        with pytest.raises(ValueError, match=rf"^{argument}\b"):
            fast.minhash_signatures(["a b c"], **kwargs)  # type: ignore[arg-type]


def test_lsh_arguments_are_checked_once_in_rust() -> None:
    df = pl.DataFrame({"t": ["a b c d", "a b c d", "x y z"]})
    with pytest.raises(ValueError, match=r"^threshold"):
        fast.near_duplicates(df, "t", threshold=1.5)
    with pytest.raises(ValueError, match=r"^bands and rows"):
        fast.near_duplicates(df, "t", bands=4)
    with pytest.raises(ValueError, match=r"^threshold"):
        fast.contamination(["a"], ["b"], threshold=-0.1)
    with pytest.raises(ValueError, match=r"^keep"):
        _core.near_duplicates(df.get_column("t"), "t", MinHashSettings(), threshold=0.8, keep="best")
    with pytest.raises(ValueError, match=r"^cue kinds"):
        fast.text_metrics(["x"], instruction=True, cues={"tone": ["calm"]})


def test_fast_uses_the_same_settings_object() -> None:
    texts = pl.Series("t", ["我想找一家餐馆", "the quick brown fox jumps"])
    settings = fast.minhash_settings(texts, num_perm=32, language="zh-Hans")
    assert settings.language == "zh" and settings.num_perm == 32
    direct = _core.minhash_signatures(texts, "t", settings)
    via_fast = fast.minhash_signatures(texts, num_perm=32, language="zh")
    assert direct.shape == (2, 32)
    assert (direct == via_fast).all()
