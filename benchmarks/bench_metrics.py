"""Benchmark: text-complexity metrics in the Rust core vs a straightforward Python/Polars
implementation of the same formulas (docs/metrics.md), on the same data; results are
asserted identical before timing is reported.

    python benchmarks/bench_metrics.py                 # SGD dialogues (14k) + instructions
    python benchmarks/bench_metrics.py --limit 2000    # smaller

The Python reference below (``py_text_metrics``) is also what ``tests/test_fast_metrics.py``
checks the core against.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import resource
import string
import time
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

MTLD_THRESHOLD = 0.72
CHAR_REP_N = 10
WORD_REP_N = 10

CUES_DIR = Path(__file__).resolve().parents[1] / "python" / "dialinsight_engine" / "data" / "cues"


@functools.cache
def read_cues(language: str) -> dict[str, list[str]]:
    """The built-in cue lists the core compiles in: en.txt always, plus the language's file."""
    cues: dict[str, list[str]] = {"constraint": [], "format": [], "step": []}
    for code in dict.fromkeys(("en", language)):
        path = CUES_DIR / f"{code}.txt"
        if not path.exists():
            continue
        kind = None
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.split("#")[0].strip()
            if line.startswith("[") and line.endswith("]"):
                kind = line[1:-1]
            elif line and kind and line.lower() not in cues[kind]:
                cues[kind].append(line.lower())
    return cues


# Han, Kana, Hangul, Thai/Lao, Myanmar, Khmer (rust/src/tokenize.rs `script_of`)
_SEGMENTED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u3005\u3007\u3040-\u30ff"
    "\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
    "\uff66-\uff9f\U00020000-\U000323af]"
)
_SENT_SPLIT = re.compile(r"[.!?\n。！？；｡]")
_PUNCT = string.punctuation


def _segment(chunk: str, language: str) -> list[str]:
    """A chunk in an unspaced script: the core's segmenter (UAX #29 + jieba-rs), checked on
    its own against Python jieba in tests/test_cjk.py; this reference checks the formulas."""
    from dialinsight_engine import fast

    return fast.tokenize([chunk], language, lowercase=False).to_list()[0]


def lexical_words(text: str, language: str = "en") -> tuple[list[str], int]:
    """Lexical tokens of a lowercased text and its `words` count (docs/metrics.md)."""
    toks: list[str] = []
    words = 0
    for chunk in text.split():
        if _SEGMENTED.search(chunk):
            seg = _segment(chunk, language)
            toks.extend(seg)
            words += len(seg)
        else:
            words += 1
            w = chunk.strip(_PUNCT)
            if w:
                toks.append(w)
    return toks, words


def lexical_tokens(text: str, language: str = "en") -> list[str]:
    return lexical_words(text.lower(), language)[0]


def _mtld_pass(tokens: list[str]) -> float:
    factors = 0.0
    types: set[str] = set()
    count = 0
    for t in tokens:
        count += 1
        types.add(t)
        if len(types) / count <= MTLD_THRESHOLD:
            factors += 1.0
            types = set()
            count = 0
    if count > 0:
        factors += (1.0 - len(types) / count) / (1.0 - MTLD_THRESHOLD)
    return len(tokens) / factors if factors > 0 else float(len(tokens))


def char_rep_ratio(text: str, n: int = CHAR_REP_N) -> float:
    freq = Counter(text[i : i + n] for i in range(len(text) - n + 1))
    if not freq:
        return 0.0
    counts = sorted(freq.values(), reverse=True)
    singletons = sum(1 for c in counts if c == 1)
    k = min(int(math.sqrt(len(counts))), len(counts) - singletons)
    total = sum(counts)
    return sum(counts[:k]) / total if total else 0.0


def word_rep_ratio(tokens: list[str], n: int = WORD_REP_N) -> float:
    freq = Counter(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(freq.values())
    if not total:
        return 0.0
    return sum(c for c in freq.values() if c > 1) / total


_CJK_NUM = set("0123456789０１２３４５６７８９一二三四五六七八九十")


def _is_cjk_enumerated(s: str) -> bool:
    opening, closing = {"（": ("（", "）"), "第": ("第", "步")}.get(s[:1], ("", "、．"))
    rest = s[len(opening):]
    n = len(rest) - len(rest.lstrip("".join(_CJK_NUM)))
    return 1 <= n <= 3 and rest[n : n + 1] != "" and rest[n] in closing


def _is_enumerated(line: str) -> bool:
    s = line.lstrip()
    digits = len(s) - len(s.lstrip("0123456789"))
    if 1 <= digits <= 3 and len(s) > digits and s[digits] in ".)":
        rest = s[digits + 1 :]
        return not rest or rest[0].isspace()
    if s[:1] in ("-", "*", "+", "•"):
        return len(s) > 1 and s[1].isspace()
    if len(s) >= 5 and s[:4].lower() == "step" and s[:4].isascii():
        rest = s[4:].lstrip()
        return rest[:1] in tuple("0123456789") and rest != ""
    return _is_cjk_enumerated(s)


def _cue_count(phrases: list[str], lower: str, toks: list[str]) -> int:
    """Spaced phrases as word sequences (longest first, left to right), phrases in unspaced
    scripts as substrings (leftmost-longest, non-overlapping)."""
    spaced = sorted((p.split() for p in phrases if not _SEGMENTED.search(p)), key=len, reverse=True)
    unspaced = sorted((p for p in phrases if _SEGMENTED.search(p)), key=len, reverse=True)
    i = count = 0
    while spaced and i < len(toks):
        step = 1
        for p in spaced:
            if toks[i : i + len(p)] == p:
                count += 1
                step = len(p)
                break
        i += step
    i = 0
    while unspaced and i < len(lower):
        hit = next((p for p in unspaced if lower.startswith(p, i)), None)
        count += hit is not None
        i += len(hit) if hit else 1
    return count


def py_text_metrics(
    text: str | None, instruction: bool = False, language: str = "en"
) -> dict[str, Any] | None:
    """Plain-Python implementation of every metric in docs/metrics.md."""
    if text is None:
        return None
    chars = len(text)
    ascii_chars = sum(1 for c in text if c.isascii())
    sentences = sum(1 for s in _SENT_SPLIT.split(text) if any(c.isalnum() for c in s))
    lower = text.lower()
    toks, words = lexical_words(lower, language)
    n = len(toks)
    counts = Counter(toks)
    m: dict[str, Any] = {
        "words": words,
        "chars": chars,
        "approx_tokens": (ascii_chars + 2 * (chars - ascii_chars) + 3) // 4,
        "sentences": sentences,
        "mean_sentence_words": words / sentences if sentences else 0.0,
        "ttr": len(counts) / n if n else 0.0,
        "mtld": (_mtld_pass(toks) + _mtld_pass(toks[::-1])) / 2.0 if n else 0.0,
        "word_entropy": 0.0,
        "distinct_1": len(counts) / n if n else 0.0,
        "distinct_2": len(set(zip(toks, toks[1:], strict=False))) / (n - 1) if n > 1 else 0.0,
        "char_rep_ratio": char_rep_ratio(text),
        "word_rep_ratio": word_rep_ratio(toks),
    }
    h = 0.0
    for c in counts.values():
        p = c / n
        h -= p * math.log2(p)
    m["word_entropy"] = h
    if instruction:
        cues = read_cues(language)
        m["constraint_cues"] = _cue_count(cues["constraint"], lower, toks)
        m["enumerated_steps"] = sum(
            1 for line in text.split("\n") if _is_enumerated(line)
        ) + _cue_count(cues["step"], lower, toks)
        m["question_marks"] = text.count("?") + text.count("？")
        m["format_requirements"] = _cue_count(cues["format"], lower, toks)
    return m


UINT_COLS = ["words", "chars", "approx_tokens", "sentences"]
UINT_INSTR = ["constraint_cues", "enumerated_steps", "question_marks", "format_requirements"]
FLOAT_COLS = [
    "mean_sentence_words", "ttr", "mtld", "word_entropy", "distinct_1", "distinct_2",
    "char_rep_ratio", "word_rep_ratio",
]  # fmt: skip


def py_metrics_frame(
    texts: pl.Series, instruction: bool = False, language: str = "en"
) -> pl.DataFrame:
    """The reference over a Polars column: Python per row, assembled with Polars."""
    cols = UINT_COLS + FLOAT_COLS + (UINT_INSTR if instruction else [])
    rows = [py_text_metrics(t, instruction, language) for t in texts.to_list()]
    schema = {c: (pl.Float64 if c in FLOAT_COLS else pl.UInt64) for c in cols}
    data = {c: [None if r is None else r[c] for r in rows] for c in cols}
    return pl.DataFrame(data, schema=schema)


def assert_identical(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert a.columns == b.columns, (a.columns, b.columns)
    assert a.schema == b.schema, (a.schema, b.schema)
    for c in a.columns:
        x, y = a[c], b[c]
        same = (x == y) | (x.is_null() & y.is_null())
        if not same.all():
            i = int((~same).arg_max() or 0)
            raise AssertionError(f"column {c} differs at row {i}: {x[i]!r} vs {y[i]!r}")


def load_texts(limit: int | None) -> tuple[pl.Series, pl.Series]:
    dialogues: list[str] = []
    with (DATA / "sgd-all" / "dialogues.jsonl").open() as f:
        for line in f:
            d = json.loads(line)
            dialogues.append("\n".join(t["text"] for t in d["turns"]))
    questions: list[str] = []
    with (DATA / "gsm8k" / "train.jsonl").open() as f:
        for line in f:
            questions.append(json.loads(line)["question"])
    if limit:
        dialogues, questions = dialogues[:limit], questions[:limit]
    return pl.Series("text", dialogues), pl.Series("instruction", questions)


def main() -> None:
    from dialinsight_engine import fast

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit", type=int, default=None, help="rows per data set")
    ap.add_argument("--repeat", type=int, default=3, help="best of N for the Rust timing")
    args = ap.parse_args()
    dialogues, instructions = load_texts(args.limit)
    for name, s, instr in (
        ("sgd dialogues", dialogues, False),
        ("gsm8k questions", instructions, True),
    ):
        t0 = time.perf_counter()
        ref = py_metrics_frame(s, instr)
        t_py = time.perf_counter() - t0
        t_rs = math.inf
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            got = fast.text_metrics(s, instruction=instr)
            t_rs = min(t_rs, time.perf_counter() - t0)
        assert_identical(got, ref)
        mb = s.str.len_bytes().sum() / 1e6
        print(
            f"{name}: {s.len()} rows, {mb:.1f} MB, instruction={instr}: identical results; "
            f"python {s.len() / t_py:,.0f} rows/s ({t_py:.2f} s), "
            f"rust {s.len() / t_rs:,.0f} rows/s ({t_rs:.3f} s), speed-up {t_py / t_rs:.1f}x"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
