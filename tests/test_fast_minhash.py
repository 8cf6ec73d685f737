"""MinHash / LSH / contamination in the Rust core, checked against datasketch and exact
Jaccard."""

from __future__ import annotations

import json
import random
import re
import unicodedata
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from dialinsight_engine import _core, fast

SGD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sgd-all" / "dialogues.jsonl"

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "I need to find a 2 bathroom apartment in Fremont, please!",
    "Привет, мир! Как у тебя дела сегодня?",
    "日本語 の テキスト です よ ね",
    "ＦＵＬＬ－ｗｉｄｔｈ ＴＥＸＴ and ﬁne ligatures",
    "one",
    "two words",
    "",
    "   \t\n ",
    "emoji 😀 party 🎉 time",
]


# --- a plain Python mirror of the core's normalisation and shingling --------------


def py_normalize(text: str) -> str:
    out: list[str] = []
    last_space = True
    for c in unicodedata.normalize("NFKC", text):
        for ch in c.lower():
            if not ch.isalnum() and not ch.isspace():
                ch = " "
            if ch.isspace():
                if not last_space:
                    out.append(" ")
                    last_space = True
                continue
            last_space = False
            out.append(ch)
    s = "".join(out)
    return s[:-1] if s.endswith(" ") else s


# Han, Kana, Hangul, Thai...: chunks the core's tokenizer cuts into words (docs/metrics.md)
_SEGMENTED = re.compile("[\u0e00-\u0eff\u1000-\u11ff\u1780-\u17ff\u3005-\u3007\u3040-\u30ff"
                        "\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
                        "\uf900-\ufaff\uff66-\uff9f]")


def py_words(text: str, language: str = "en") -> list[str]:
    """Whitespace words; a chunk in an unspaced script is cut by the core's tokenizer
    (checked on its own in tests/test_cjk.py)."""
    out: list[str] = []
    for chunk in text.split():
        if _SEGMENTED.search(chunk):
            out.extend(fast.tokenize([chunk], language, lowercase=False).to_list()[0])
        else:
            out.append(chunk)
    return out


def py_shingles(text: str, ngram: int, unit: str, normalize: bool = True) -> list[str]:
    t = py_normalize(text) if normalize else text
    if unit == "word":
        units = py_words(t)
        if not units:
            return []
        if len(units) < ngram:
            return [" ".join(units)]
        return [" ".join(units[i : i + ngram]) for i in range(len(units) - ngram + 1)]
    if not t:
        return []
    if len(t) < ngram:
        return [t]
    return [t[i : i + ngram] for i in range(len(t) - ngram + 1)]


def exact_jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def load_sgd(limit: int) -> list[str]:
    if not SGD.exists():
        pytest.skip(f"shared SGD data not found at {SGD} (needs /work/shared/data/sgd-all)")
    out: list[str] = []
    with SGD.open() as f:
        for line in f:
            d = json.loads(line)
            out.append("\n".join(t["text"] for t in d["turns"]))
            if len(out) >= limit:
                break
    return out


# --- datasketch compatibility -------------------------------------------------------


@pytest.mark.parametrize("scheme", ["legacy", "affine32"])
@pytest.mark.parametrize("seed", [1, 7, 2**32 - 1])
def test_permutations_equal_datasketch(scheme: str, seed: int) -> None:
    settings = _core.MinHashSettings(num_perm=200, seed=seed, mode="datasketch", scheme=scheme)  # type: ignore[arg-type]
    a, b = _core.permutations(settings)
    m = MinHash(num_perm=200, seed=seed, scheme=scheme)
    assert np.array_equal(np.asarray(m.permutations[0], dtype=np.uint64), a)
    assert np.array_equal(np.asarray(m.permutations[1], dtype=np.uint64), b)


@pytest.mark.parametrize("scheme", ["legacy", "affine32"])
@pytest.mark.parametrize(("unit", "ngram"), [("word", 3), ("word", 1), ("char", 5)])
def test_hashvalues_equal_datasketch(scheme: str, unit: str, ngram: int) -> None:
    texts = [*TEXTS, *load_sgd_or_small(40)]
    sig = fast.minhash_signatures(
        texts, num_perm=128, seed=1, ngram=ngram, unit=unit, mode="datasketch", scheme=scheme
    )
    assert sig.shape == (len(texts), 128) and sig.dtype == np.uint64
    for text, row in zip(texts, sig, strict=True):
        m = MinHash(num_perm=128, seed=1, scheme=scheme)
        sh = py_shingles(text, ngram, unit)
        if sh:
            m.update_batch([s.encode("utf-8") for s in sh])
        assert np.array_equal(row, m.hashvalues.astype(np.uint64)), text[:60]


def test_hashvalues_equal_datasketch_bulk_unnormalised() -> None:
    texts = ["Hello,  World  again and again", "x\ty z", "Ünïcödé ТЕКСТ 漢字 かな"]
    sig = fast.minhash_signatures(texts, num_perm=64, seed=42, normalize=False, mode="datasketch")
    ms = MinHash.bulk(
        [[s.encode() for s in py_shingles(t, 3, "word", normalize=False)] for t in texts],
        num_perm=64,
        seed=42,
        scheme="legacy",
    )
    for row, m in zip(sig, ms, strict=True):
        assert np.array_equal(row, m.hashvalues)


def load_sgd_or_small(limit: int) -> list[str]:
    if SGD.exists():
        return load_sgd(limit)
    return [
        " ".join(random.Random(i).choices(["a", "b", "c", "d", "e"], k=30)) for i in range(limit)
    ]


def test_empty_rows_are_datasketch_empty() -> None:
    sig = fast.minhash_signatures(pl.Series("t", [None, "", "  ", "!!"]), mode="datasketch")
    assert (sig == 2**32 - 1).all()
    assert np.array_equal(sig[0], MinHash(num_perm=128, scheme="legacy").hashvalues)
    nat = fast.minhash_signatures(pl.Series("t", [None, ""]), mode="native")
    assert (nat == 2**32 - 1).all()


# --- estimation accuracy on real text --------------------------------------------


def test_native_estimates_track_exact_jaccard() -> None:
    docs = load_sgd(300)
    rng = random.Random(0)
    # Build pairs with a spread of Jaccard values: a dialogue vs an edited copy.
    left, right = [], []
    for d in docs[:200]:
        words = d.split()
        k = rng.randint(0, max(1, len(words) // 2))
        edited = words[:]
        for _ in range(k):
            edited[rng.randrange(len(edited))] = f"w{rng.randrange(10**6)}"
        left.append(d)
        right.append(" ".join(edited))
    sl = fast.minhash_signatures(left, num_perm=256)
    sr = fast.minhash_signatures(right, num_perm=256)
    est = (sl == sr).mean(axis=1)
    exact = np.array(
        [
            exact_jaccard(py_shingles(a, 3, "word"), py_shingles(b, 3, "word"))
            for a, b in zip(left, right, strict=True)
        ]
    )
    err = np.abs(est - exact)
    # Standard error of the estimator is sqrt(J(1-J)/256) <= 0.031.
    assert err.mean() < 0.03
    assert err.max() < 0.15
    assert np.corrcoef(est, exact)[0, 1] > 0.97


# --- LSH parameters and clustering ---------------------------------------------------


@pytest.mark.parametrize(("t", "n"), [(0.5, 128), (0.8, 128), (0.9, 64), (0.85, 256)])
def test_optimal_params_match_datasketch(t: float, n: int) -> None:
    assert fast.optimal_lsh_params(t, n) == _optimal_param(t, n, 0.5, 0.5)


def test_near_duplicates_clusters_and_keep_rules() -> None:
    base = "please book a table for two at the italian place downtown tonight at seven thirty"
    df = pl.DataFrame(
        {
            "text": [
                base,
                "completely unrelated sentence about the weather in paris during spring",
                base + " thanks",
                None,
                base.upper() + "!!",
                "",
            ],
            "id": ["a", "b", "c", "d", "e", "f"],
            "score": [0.1, 0.9, 0.8, 1.0, 0.5, 0.0],
        }
    )
    out = fast.near_duplicates(df, "text", threshold=0.7)
    assert out.columns == ["cluster_id", "duplicate_of", "max_jaccard", "is_duplicate"]
    assert out.schema["cluster_id"] == pl.UInt64 and out.schema["duplicate_of"] == pl.UInt64
    assert out["cluster_id"].to_list() == [0, 1, 0, 3, 0, 5]
    assert out["duplicate_of"].to_list() == [None, None, 0, None, 0, None]
    assert out["is_duplicate"].to_list() == [False, False, True, False, True, False]
    mj = out["max_jaccard"].to_list()
    assert mj[4] == 1.0 and 0.7 <= mj[2] < 1.0 and mj[3] == 0.0 and mj[5] == 0.0

    longest = fast.near_duplicates(df, "text", threshold=0.7, keep="longest", id_column="id")
    assert longest["duplicate_of"].to_list() == ["c", None, None, None, "c", None]
    assert longest.schema["duplicate_of"] == pl.String
    best = fast.near_duplicates(df, "text", threshold=0.7, keep="score")
    assert best["duplicate_of"].to_list() == [2, None, None, None, 2, None]


def test_near_duplicates_on_real_dialogues_against_exact() -> None:
    docs = load_sgd(2000)
    rng = random.Random(1)
    # plant copies with a few words changed
    planted = []
    for i in range(0, 400, 4):
        words = docs[i].split()
        for _ in range(max(1, len(words) // 60)):
            words[rng.randrange(len(words))] = "zzz"
        planted.append(" ".join(words))
    texts = docs + planted
    out = fast.near_duplicates(pl.DataFrame({"t": texts}), "t", threshold=0.8)
    assert out.height == len(texts)
    sh = [set(py_shingles(t, 3, "word")) for t in texts]
    n0 = len(docs)
    hits = eligible = 0
    for k in range(len(planted)):
        j = exact_jaccard(list(sh[k * 4]), list(sh[n0 + k]))
        row = out.row(n0 + k, named=True)
        if j >= 0.9:
            eligible += 1
            hits += row["cluster_id"] == out["cluster_id"][k * 4]
    # LSH banding (9 bands of 13 rows for 0.8) finds a J=0.91 pair with p ~0.96
    assert eligible >= 80 and hits >= 0.9 * eligible
    # Every flagged duplicate is truly similar to its representative.
    for i, rep in enumerate(out["duplicate_of"].to_list()):
        if rep is not None:
            assert exact_jaccard(list(sh[i]), list(sh[rep])) > 0.5


def test_contamination_against_reference() -> None:
    ref = pl.Series(
        "ref",
        [
            "what is two plus two and why is it four exactly",
            "name the capital city of france please now",
        ],
    )
    texts = pl.Series(
        "t",
        [
            "What is two plus two, and why is it four exactly?",
            "tell me something entirely different about cooking pasta well",
            None,
        ],
    )
    out = fast.contamination(texts, ref, threshold=0.8)
    assert out.columns == ["ref_index", "max_jaccard", "contaminated"]
    assert out["contaminated"].to_list() == [True, False, False]
    assert out["ref_index"].to_list()[0] == 0 and out["ref_index"].to_list()[2] is None
    assert out["max_jaccard"][0] == 1.0


# --- inputs ----------------------------------------------------------------------------


def test_string_layouts_and_sequences() -> None:
    import pyarrow as pa

    vals = ["alpha beta gamma delta", None, "Ωμέγα κείμενο εδώ"]
    ref = fast.minhash_signatures(pl.Series(vals), num_perm=32)
    assert np.array_equal(fast.minhash_signatures(vals, num_perm=32), ref)
    for typ in (pa.string(), pa.large_string(), pa.string_view()):
        s = pl.from_arrow(pa.array(vals, type=typ))
        assert isinstance(s, pl.Series)
        assert np.array_equal(fast.minhash_signatures(s, num_perm=32), ref)
    # A chunked Series crosses as several stream batches.
    chunked = pl.concat([pl.Series(vals[:1]), pl.Series(vals[1:])], rechunk=False)
    assert chunked.n_chunks() == 2
    assert np.array_equal(fast.minhash_signatures(chunked, num_perm=32), ref)


def test_non_string_rejected_naming_column() -> None:
    with pytest.raises(TypeError, match="'score'"):
        fast.minhash_signatures(pl.Series("score", [1, 2, 3]))
    df = pl.DataFrame({"n": [1, 2]})
    with pytest.raises(TypeError, match="'n'"):
        fast.near_duplicates(df, "n")
    with pytest.raises(ValueError, match="'missing'"):
        fast.near_duplicates(df, "missing")
    with pytest.raises(TypeError):
        fast.minhash_signatures([b"bytes"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        fast.minhash_signatures(["x"], mode="other")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fast.minhash_signatures(["x"], mode="datasketch", seed=2**33)


def test_huge_document_and_long_column() -> None:
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(5000)]
    big = " ".join(rng.choices(vocab, k=1_800_000))  # ~10 MB
    assert len(big) > 10_000_000
    sig = fast.minhash_signatures([big, big[: len(big) // 2]], num_perm=64)
    assert (sig[0] != 2**32 - 1).all()
    # Set of 3-grams of the half is a subset of the whole: estimate close to |half|/|whole|
    assert 0.3 < (sig[0] == sig[1]).mean() < 0.7
    many = pl.Series("t", [f"doc {i % 1000} text {i % 7}" for i in range(50_000)])
    out = fast.near_duplicates(pl.DataFrame({"t": many}), "t")
    assert out.height == 50_000
    # 7,000 distinct texts (lcm of 1000 and 7), each repeated; different texts share at
    # most 1 of 2 shingles (Jaccard <= 1/3) so only exact copies cluster.
    assert out["cluster_id"].n_unique() == 7000
    assert out["cluster_id"][1000] == 1000 and out["duplicate_of"][1000] is None
    assert out["cluster_id"][7000] == 0 and out["duplicate_of"][7000] == 0
    assert out["is_duplicate"].sum() == 50_000 - 7000
