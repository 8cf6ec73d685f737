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

CONSTRAINT_CUES = [
    "must", "must not", "should", "should not", "shall", "need to", "needs to", "required",
    "require", "requires", "at most", "at least", "exactly", "only", "do not", "don't",
    "don’t", "never", "always", "without", "no more than", "no less than", "no fewer than",
    "fewer than", "less than", "more than", "up to", "include", "includes", "including",
    "exclude", "excludes", "excluding", "within", "limit", "limited", "maximum", "minimum",
    "ensure", "avoid", "strictly",
]  # fmt: skip
FORMAT_CUES = {
    "json", "yaml", "xml", "csv", "tsv", "html", "markdown", "table", "tables", "bullet",
    "bullets", "bulleted", "list", "lists", "numbered", "format", "formatted", "formatting",
    "template", "schema", "field", "fields", "column", "columns", "heading", "headings",
    "header", "headers", "title", "paragraph", "paragraphs", "sentences", "words", "lines",
    "characters", "points",
}  # fmt: skip
_PHRASES = sorted((p.split(" ") for p in CONSTRAINT_CUES), key=len, reverse=True)
_SENT_SPLIT = re.compile(r"[.!?\n。！？]")
_PUNCT = string.punctuation


def lexical_tokens(text: str) -> list[str]:
    return [w for w in (w.strip(_PUNCT) for w in text.lower().split()) if w]


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
    return False


def _constraint_count(toks: list[str]) -> int:
    i = count = 0
    while i < len(toks):
        step = 1
        for p in _PHRASES:
            if toks[i : i + len(p)] == p:
                count += 1
                step = len(p)
                break
        i += step
    return count


def py_text_metrics(text: str | None, instruction: bool = False) -> dict[str, Any] | None:
    """Plain-Python implementation of every metric in docs/metrics.md."""
    if text is None:
        return None
    chars = len(text)
    ascii_chars = sum(1 for c in text if c.isascii())
    words = len(text.split())
    sentences = sum(1 for s in _SENT_SPLIT.split(text) if any(c.isalnum() for c in s))
    toks = lexical_tokens(text)
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
        m["constraint_cues"] = _constraint_count(toks)
        m["enumerated_steps"] = sum(1 for line in text.split("\n") if _is_enumerated(line))
        m["question_marks"] = text.count("?") + text.count("？")
        m["format_requirements"] = sum(1 for t in toks if t in FORMAT_CUES)
    return m


UINT_COLS = ["words", "chars", "approx_tokens", "sentences"]
UINT_INSTR = ["constraint_cues", "enumerated_steps", "question_marks", "format_requirements"]
FLOAT_COLS = [
    "mean_sentence_words", "ttr", "mtld", "word_entropy", "distinct_1", "distinct_2",
    "char_rep_ratio", "word_rep_ratio",
]  # fmt: skip


def py_metrics_frame(texts: pl.Series, instruction: bool = False) -> pl.DataFrame:
    """The reference over a Polars column: Python per row, assembled with Polars."""
    cols = UINT_COLS + FLOAT_COLS + (UINT_INSTR if instruction else [])
    rows = [py_text_metrics(t, instruction) for t in texts.to_list()]
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
