"""Text-complexity metrics in the Rust core vs the plain-Python reference of the same
formulas (benchmarks/bench_metrics.py, docs/metrics.md)."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import sys
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

from dialinsight_engine import fast

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"


def _load_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_metrics_ref", ROOT / "benchmarks" / "bench_metrics.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


ref = _load_reference()

SAMPLES = [
    "Hello world. How are you? Fine!",
    "",
    "   ",
    "one",
    "I need to find a 2 bathroom apartment in Fremont. It must allow pets!",
    "Write a summary in at most 50 words. Do not use bullet points; output JSON only.\n"
    "1. Read the dialogue\n2) Extract the area\n- list the offers\n* and visits\nStep 3: answer?\n"
    "3.5 is not a step\n-not a bullet either",
    "Привет, мир! Как дела? Всё хорошо.",
    "你好，世界。今天天气很好！你呢？",
    "مرحبا بالعالم. كيف حالك؟",
    "the cat sat on the mat " * 30,
    "abcdefghij" * 50,
    "Don’t include more than three items, and no more than 2 tables, within 5 lines.",
    "emoji 😀 party 🎉 time... ΣΟΦΙΑ ΟΔΟΣ",
]


def test_matches_python_reference_on_samples() -> None:
    s = pl.Series("t", [*SAMPLES, None])
    for instruction in (False, True):
        got = fast.text_metrics(s, instruction=instruction)
        want = ref.py_metrics_frame(s, instruction)
        ref.assert_identical(got, want)


def test_schema_and_nulls() -> None:
    out = fast.text_metrics(pl.Series("t", ["a b", None, ""]), instruction=True)
    assert out.height == 3
    assert out.columns == ref.UINT_COLS + ref.FLOAT_COLS + ref.UINT_INSTR
    for c in ref.UINT_COLS + ref.UINT_INSTR:
        assert out.schema[c] == pl.UInt64
    for c in ref.FLOAT_COLS:
        assert out.schema[c] == pl.Float64
    assert out.row(1) == (None,) * len(out.columns)
    assert all(v == 0 for v in out.row(2))
    plain = fast.text_metrics(["x"])
    assert "constraint_cues" not in plain.columns


def test_known_values() -> None:
    out = fast.text_metrics([SAMPLES[5]], instruction=True).row(0, named=True)
    # at most / do not / only
    assert out["constraint_cues"] == 3
    assert out["enumerated_steps"] == 5
    assert out["question_marks"] == 1
    # words, bullet, points, json, list, bullet ("-not a bullet either")
    assert out["format_requirements"] == 6
    rep = fast.text_metrics(["the cat sat on the mat " * 30]).row(0, named=True)
    assert rep["word_rep_ratio"] == 1.0
    # 690 chars, 681 10-grams over 23 distinct (14 seen 30x, 9 seen 29x); top
    # floor(sqrt(23)) = 4 of them: 120 / 681 (Data-Juicer's formula)
    assert rep["char_rep_ratio"] == 120 / 681
    assert rep["ttr"] == pytest.approx(5 / 180)
    assert rep["distinct_2"] == pytest.approx(6 / 179)
    assert rep["word_entropy"] == pytest.approx(
        -(2 / 6) * math.log2(2 / 6) - 4 * (1 / 6) * math.log2(1 / 6)
    )
    uniq = fast.text_metrics(["alpha beta gamma delta"]).row(0, named=True)
    assert uniq["ttr"] == 1.0 and uniq["mtld"] == 4.0 and uniq["word_rep_ratio"] == 0.0


def test_matches_reference_on_real_dialogues() -> None:
    path = SHARED / "sgd-all" / "dialogues.jsonl"
    if not path.exists():
        pytest.skip(f"shared SGD data not found at {path}")
    texts = []
    with path.open() as f:
        for i, line in enumerate(f):
            if i % 50 == 0:
                d = json.loads(line)
                texts.append("\n".join(t["text"] for t in d["turns"]))
    s = pl.Series("t", texts)
    ref.assert_identical(fast.text_metrics(s, instruction=True), ref.py_metrics_frame(s, True))


@pytest.mark.parametrize("language", ["en", "zh"])
def test_random_unicode_matches_reference(language: str) -> None:
    rng = random.Random(5)
    alphabet = "abc XYZ.!?\n\t-*1234567890’'\"()ßéΣσçñ日本語한국어Жж😀،。？！ \u00a0\u2003必须格式然后；（）、"
    texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 200))) for _ in range(300)]
    s = pl.Series("t", texts)
    ref.assert_identical(
        fast.text_metrics(s, instruction=True, language=language),
        ref.py_metrics_frame(s, True, language),
    )


def test_huge_document() -> None:
    rng = random.Random(9)
    words = [f"w{i}" for i in range(20000)]
    big = " ".join(rng.choices(words, k=1_700_000)) + ". Done?"
    assert len(big) > 10_000_000
    out = fast.text_metrics([big], instruction=True).row(0, named=True)
    assert out["words"] == 1_700_001 and out["chars"] == len(big)
    assert out["question_marks"] == 1 and out["sentences"] == 2
    assert 0.0 <= out["char_rep_ratio"] <= 1.0 and 0.0 <= out["word_rep_ratio"] <= 1.0


def test_rejects_non_string_column() -> None:
    with pytest.raises(TypeError, match="'score'"):
        fast.text_metrics(pl.Series("score", [1.0, 2.0]))
    with pytest.raises(TypeError):
        fast.text_metrics([1, 2])  # type: ignore[list-item]
