"""Benchmark: MinHash end to end (raw text -> signatures) and near-duplicate detection.

Side by side, num_perm=128, word 3-gram shingles:

* this core (``dialinsight_engine.fast``), native mode and datasketch-compatible mode;
* datasketch ``MinHash.bulk`` fed by Python shingling;
* rensa ``RMinHash`` fed by the same Python shingling;
* hashing alone on pre-made shingles for the peers (the core takes raw text only).

Data: SGD dialogues (turn texts joined) and a synthetic set of ``--n`` documents with
planted near-duplicates at known Jaccard; precision/recall of the planted pairs at
threshold 0.8 is measured against exact Jaccard.

    python benchmarks/bench_minhash.py                   # 1,000,000 synthetic docs
    python benchmarks/bench_minhash.py --n 100000 --peer-n 5000
    python benchmarks/bench_minhash.py --cjk-only        # Chinese and mixed-script rows only

Chinese rows (CrossWOZ dialogues, the engine's defaults for Chinese: character 3-grams) and
mixed-script rows (each CrossWOZ turn followed by an English SGD turn) are timed per core
(documents per CPU-second; run with ``RAYON_NUM_THREADS=1``; the rows take turns in
``--cjk-rounds`` rounds of ``--cjk-sample-s`` CPU-seconds each and the best round counts, as
is usual on a shared machine) against ASCII SGD dialogues
(word 3-grams), with ``language="auto"`` (detected on a sample, as a spec without
``language``) and with the language given, and against rensa and datasketch fed by Python
character shingling.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from dialinsight_engine import fast

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
NUM_PERM = 128
NGRAM = 3


def py_shingles(text: str) -> list[str]:
    """Peers' shingling: lowercase, whitespace split, word 3-grams joined by spaces."""
    w = text.lower().split()
    if len(w) < NGRAM:
        return [" ".join(w)] if w else []
    return [" ".join(w[i : i + NGRAM]) for i in range(len(w) - NGRAM + 1)]


def rss_now_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), out


def run_peers(name: str, texts: list[str], peer_n: int) -> dict[str, float]:
    from datasketch import MinHash
    from rensa import RMinHash

    sub = texts[:peer_n]
    rates: dict[str, float] = {}

    def ours_native() -> object:
        return fast.minhash_signatures(
            pl.Series(texts), num_perm=NUM_PERM, ngram=NGRAM, unit="word", language="en"
        )

    def ours_ds() -> object:
        return fast.minhash_signatures(
            pl.Series(sub), num_perm=NUM_PERM, ngram=NGRAM, unit="word", language="en",
            mode="datasketch",
        )

    def ds_e2e() -> object:
        return MinHash.bulk(
            [[s.encode() for s in py_shingles(t)] for t in sub], num_perm=NUM_PERM, seed=1
        )

    def rensa_e2e() -> object:
        out = []
        for t in sub:
            m = RMinHash(num_perm=NUM_PERM, seed=1)
            m.update(py_shingles(t))
            out.append(m.digest())
        return out

    pre_b = [[s.encode() for s in py_shingles(t)] for t in sub]
    pre_s = [py_shingles(t) for t in sub]

    def ds_hash_only() -> object:
        return MinHash.bulk(pre_b, num_perm=NUM_PERM, seed=1)

    def rensa_hash_only() -> object:
        out = []
        for sh in pre_s:
            m = RMinHash(num_perm=NUM_PERM, seed=1)
            m.update(sh)
            out.append(m.digest())
        return out

    runs = [
        ("core native (end to end)", ours_native, len(texts)),
        ("core datasketch-mode (end to end)", ours_ds, len(sub)),
        ("datasketch MinHash.bulk (end to end)", ds_e2e, len(sub)),
        ("rensa RMinHash (end to end)", rensa_e2e, len(sub)),
        ("datasketch MinHash.bulk (pre-made shingles)", ds_hash_only, len(sub)),
        ("rensa RMinHash (pre-made shingles)", rensa_hash_only, len(sub)),
    ]
    print(f"\n## {name}: {len(texts):,} docs (peers on the first {len(sub):,})")
    for label, fn, n in runs:
        # best of 3 for every side: the first call also pays thread start-up and page faults
        wall, cpu, _ = min((timed(fn) for _ in range(3)), key=lambda t: t[0])
        rates[label] = n / wall
        print(f"{label:48s} {n / wall:>12,.0f} docs/s  (wall {wall:.2f} s, cpu {cpu:.2f} s)")
    core = rates["core native (end to end)"]
    print(
        f"ratios end to end: core/datasketch {core / rates['datasketch MinHash.bulk (end to end)']:.1f}x, "
        f"core/rensa {core / rates['rensa RMinHash (end to end)']:.1f}x"
    )
    return rates


def accuracy(texts: list[str], pairs: int = 1000) -> None:
    """Mean |estimate - exact| on SGD dialogues vs edited copies: core native, core
    datasketch-mode, datasketch."""
    from datasketch import MinHash

    rng = random.Random(0)
    left, right = [], []
    for t in texts[:pairs]:
        w = t.split()
        for _ in range(rng.randint(0, max(1, len(w) // 3))):
            w[rng.randrange(len(w))] = f"x{rng.randrange(10**6)}"
        left.append(t)
        right.append(" ".join(w))
    exact = []
    for a, b in zip(left, right, strict=True):
        sa, sb = set(py_shingles(a)), set(py_shingles(b))
        exact.append(len(sa & sb) / len(sa | sb) if sa | sb else 0.0)
    ex = np.array(exact)
    nl = {"normalize": {"lowercase": True, "nfkc": False, "punctuation": False, "whitespace": True}}
    for label, mode in (("core native", "native"), ("core datasketch-mode", "datasketch")):
        sl = fast.minhash_signatures(left, mode=mode, **nl)  # type: ignore[arg-type]
        sr = fast.minhash_signatures(right, mode=mode, **nl)  # type: ignore[arg-type]
        err = np.abs((sl == sr).mean(axis=1) - ex)
        print(
            f"{label:24s} mean |err| {err.mean():.4f}  p95 {np.quantile(err, 0.95):.4f}  max {err.max():.4f}"
        )
    for scheme in ("legacy", "affine32"):
        ml = MinHash.bulk(
            [[s.encode() for s in py_shingles(t)] for t in left], num_perm=NUM_PERM, scheme=scheme
        )
        mr = MinHash.bulk(
            [[s.encode() for s in py_shingles(t)] for t in right], num_perm=NUM_PERM, scheme=scheme
        )
        err = np.abs(np.array([a.jaccard(b) for a, b in zip(ml, mr, strict=True)]) - ex)
        print(
            f"{'datasketch ' + scheme:24s} mean |err| {err.mean():.4f}  p95 {np.quantile(err, 0.95):.4f}  max {err.max():.4f}"
        )


def synthetic(
    n: int, length: int = 60, vocab: int = 200_000, seed: int = 0
) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    """n docs of `length` random words; 4% of them are edited copies of earlier docs with
    0..4 words substituted (exact Jaccard of 3-gram sets ~1.0, 0.90, 0.81, 0.73, 0.66).
    Returns texts, (source, copy) pairs and the number of substitutions per pair."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(n, length), dtype=np.int64)
    n_pairs = n // 25
    copies = rng.choice(np.arange(n // 2, n), size=n_pairs, replace=False)
    sources = rng.integers(0, n // 2, size=n_pairs)
    subs = rng.integers(0, 5, size=n_pairs)
    ids[copies] = ids[sources]
    for k in range(1, 5):
        rows = copies[subs == k]
        for _ in range(k):
            # positions spread over the interior so each substitution touches 3 shingles
            pos = rng.integers(2, length - 2, size=rows.size)
            ids[rows, pos] = rng.integers(vocab, 2 * vocab, size=rows.size)
    words = pl.Series("w", [f"w{i}" for i in range(2 * vocab)])
    texts = (
        pl.DataFrame({"w": words.gather(ids.reshape(-1)), "doc": np.repeat(np.arange(n), length)})
        .group_by("doc", maintain_order=True)
        .agg(pl.col("w").str.join(" "))
        .get_column("w")
        .alias("text")
    )
    del ids
    return texts, np.stack([sources, copies], axis=1), subs


def exact_j(a: str, b: str) -> float:
    sa, sb = set(py_shingles(a)), set(py_shingles(b))
    return len(sa & sb) / len(sa | sb)


def planted_eval(n: int, peer_n: int) -> None:
    print(f"\n## synthetic: {n:,} docs with planted near-duplicates")
    t0 = time.perf_counter()
    texts, pairs, _subs = synthetic(n)
    print(f"generated in {time.perf_counter() - t0:.1f} s; {len(pairs):,} planted pairs")
    # the core gets 200k docs (its time is then ~0.2 s, long enough to be steady); peers peer_n
    run_peers("synthetic", texts.head(200_000).to_list(), peer_n) if peer_n else None
    df = pl.DataFrame({"text": texts})
    del texts
    tl = df.get_column("text")
    exact = np.array([exact_j(tl[int(s)], tl[int(c)]) for s, c in pairs])
    truth = exact >= 0.8
    for label, bands, rows in (
        ("datasketch-optimal banding", None, None),
        ("recall-oriented banding (optimal for 0.7)", *fast.optimal_lsh_params(0.7, NUM_PERM)),
    ):
        base = rss_now_mib()
        reset_peak_rss()
        wall, cpu, out = timed(
            lambda b=bands, r=rows: fast.near_duplicates(df, "text", threshold=0.8, bands=b, rows=r)
        )
        call_peak = hwm_mib()
        assert isinstance(out, pl.DataFrame)
        cid = out.get_column("cluster_id").to_numpy()
        same = cid[pairs[:, 0]] == cid[pairs[:, 1]]
        tp = int((same & truth).sum())
        fp_planted = int((same & ~truth).sum())
        # flagged rows that are neither planted copies nor sources of a planted pair
        planted_rows = np.zeros(len(cid), dtype=bool)
        planted_rows[pairs.ravel()] = True
        fp_random = int((out.get_column("is_duplicate").to_numpy() & ~planted_rows).sum())
        prec = tp / max(tp + fp_planted + fp_random, 1)
        rec = tp / max(int(truth.sum()), 1)
        # Pairs within +-0.05 of the threshold sit inside one standard error of a 128-slot
        # estimate (~0.035 at J=0.8): no 128-permutation estimator separates them reliably,
        # so P/R is also given for the pairs clearly on either side.
        clear = np.abs(exact - 0.8) >= 0.05
        tp_c = int((same & truth & clear).sum())
        fp_c = int((same & ~truth & clear).sum())
        prec_c = tp_c / max(tp_c + fp_c + fp_random, 1)
        rec_c = tp_c / max(int((truth & clear).sum()), 1)
        bands_rows = (bands, rows) if bands else fast.optimal_lsh_params(0.8, NUM_PERM)
        print(
            f"{label} {bands_rows}: {n / wall:,.0f} docs/s end to end (signatures+LSH+clusters, "
            f"wall {wall:.1f} s, cpu {cpu:.1f} s); precision {prec:.4f} recall {rec:.4f} "
            f"(tp {tp}, fp planted {fp_planted}, fp random {fp_random}); "
            f"RSS before call {base:.0f} MiB, peak RSS during call {call_peak:.0f} MiB "
            f"(+{call_peak - base:.0f} MiB)"
        )
        print(
            f"    pairs with |exact J - 0.8| >= 0.05 ({int(clear.sum()):,} of {len(clear):,}): "
            f"precision {prec_c:.4f} recall {rec_c:.4f}"
        )
        for lo, hi in ((0.99, 1.01), (0.85, 0.99), (0.8, 0.85), (0.7, 0.8), (0.0, 0.7)):
            m = (exact >= lo) & (exact < hi)
            if m.any():
                print(
                    f"    exact J in [{lo:.2f},{min(hi, 1.0):.2f}): {int(m.sum()):>6} pairs, clustered {same[m].mean():.3f}"
                )


def py_char_shingles(text: str, n: int = 3) -> list[str]:
    """Peers' character shingling: lowercase, whitespace runs folded, n-grams of code points."""
    t = " ".join(text.lower().split())
    return [t[i : i + n] for i in range(len(t) - n + 1)] if len(t) >= n else ([t] if t else [])


def cpu_per_call(fn: Callable[[], object], calls: int) -> float:
    """CPU seconds of one call, averaged over `calls` back-to-back calls."""
    return timed(lambda: [fn() for _ in range(calls)])[1] / calls


def interleaved_per_core(
    variants: list[tuple[str, Callable[[], object], int, int]], rounds: int, sample_s: float
) -> dict[str, tuple[float, float]]:
    """(docs, chars) per CPU-second of each variant: the best of `rounds` samples, the
    variants taking turns within each round so that a burst of load on the shared machine
    hits them alike; a sample repeats the call for about `sample_s` CPU-seconds (one call
    lasts ~20 ms, near the clock's resolution)."""
    calls = {name: max(1, round(sample_s / max(cpu_per_call(fn, 1), 1e-4))) for name, fn, _, _ in variants}
    samples: dict[str, list[float]] = {name: [] for name, _, _, _ in variants}
    for _ in range(rounds):
        for name, fn, _, _ in variants:
            samples[name].append(cpu_per_call(fn, calls[name]))
    rates = {}
    for name, _, docs, chars in variants:
        best, median = min(samples[name]), float(np.median(samples[name]))
        rates[name] = (docs / best, chars / best)
        print(f"{name:58s} {docs / best:>11,.0f} docs/cpu-s {chars / best / 1e6:>7.2f} M chars/cpu-s "
              f"(median of {rounds}: {docs / median:,.0f}; {calls[name]} calls a sample)")
    return rates


def cjk_rows(peer_n: int, repeat: int, rounds: int, sample_s: float) -> None:
    """Chinese and mixed-script throughput per core, against ASCII and the peers."""
    from datasketch import MinHash
    from rensa import RMinHash

    def dialogues(path: Path) -> list[list[str]]:
        with path.open(encoding="utf-8") as f:
            return [[t["text"] for t in json.loads(line)["turns"]] for line in f if line.strip()]

    zh_turns = dialogues(DATA / "crosswoz-zh" / "dev.jsonl")
    sgd_turns = dialogues(DATA / "sgd-all" / "dialogues.jsonl")
    zh = ["\n".join(t) for t in zh_turns] * repeat
    mixed = [
        "\n".join(x for pair in zip(a, b, strict=False) for x in pair)
        for a, b in zip(zh_turns * repeat, sgd_turns, strict=False)
    ]
    ascii_ = ["\n".join(t) for t in sgd_turns][: len(zh)]
    print(f"\n## Chinese and mixed-script text, per core (rounds interleaved, best kept; RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'all')})")
    print(f"languages detected: sgd {fast.detect_language(ascii_)}, crosswoz {fast.detect_language(zh)}, "
          f"mixed {fast.detect_language(mixed)}")
    # language "auto" (detected on a sample of each column, as a spec without `language`)
    # and given (as a spec with it: no detection)
    rows = (("ASCII SGD (word 3-grams)", ascii_, "auto"), ("Chinese CrossWOZ (char 3-grams)", zh, "auto"),
            ("Chinese CrossWOZ, language given", zh, "zh"), ("mixed zh+en turns (char 3-grams)", mixed, "auto"),
            ("mixed zh+en turns, language given", mixed, "zh"))
    variants = []
    for name, texts, lang in rows:
        s = pl.Series(texts)
        variants.append((name, lambda s=s, lang=lang: fast.minhash_signatures(s, language=lang),
                         len(texts), int(s.str.len_chars().sum())))
    rates = interleaved_per_core(variants, rounds, sample_s)
    base_docs, base_chars = rates["ASCII SGD (word 3-grams)"]
    for name, _, _ in rows[1:]:
        d, c = rates[name]
        print(f"{name}: {d / base_docs:.0%} of ASCII docs/cpu-s, {c / base_chars:.0%} of ASCII chars/cpu-s")
    sub = zh[:peer_n]
    nsub = int(pl.Series(sub).str.len_chars().sum())

    def rensa_e2e() -> object:
        out = []
        for t in sub:
            m = RMinHash(num_perm=NUM_PERM, seed=1)
            m.update(py_char_shingles(t))
            out.append(m.digest())
        return out

    def ds_e2e() -> object:
        return MinHash.bulk([[x.encode() for x in py_char_shingles(t)] for t in sub], num_perm=NUM_PERM, seed=1)

    peers = interleaved_per_core([
        ("core native, Chinese (first peer_n docs)", lambda: fast.minhash_signatures(pl.Series(sub)), len(sub), nsub),
        ("core datasketch-mode, Chinese", lambda: fast.minhash_signatures(pl.Series(sub), mode="datasketch"),
         len(sub), nsub),
        ("rensa RMinHash + Python char 3-grams, Chinese", rensa_e2e, len(sub), nsub),
        ("datasketch MinHash.bulk + Python char 3-grams, Chinese", ds_e2e, len(sub), nsub),
    ], max(3, rounds // 2), sample_s)
    ours, ours_ds, rensa, ds = peers.values()
    print(f"ratios per core on Chinese: core/rensa {ours[0] / rensa[0]:.1f}x, core/datasketch {ours[0] / ds[0]:.1f}x, "
          f"core datasketch-mode/datasketch {ours_ds[0] / ds[0]:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000, help="synthetic docs")
    ap.add_argument("--peer-n", type=int, default=3000, help="docs given to datasketch/rensa")
    ap.add_argument("--skip-sgd", action="store_true")
    ap.add_argument("--cjk-only", action="store_true", help="only the Chinese/mixed-script rows")
    ap.add_argument("--cjk-repeat", type=int, default=10, help="copies of the 500 CrossWOZ dialogues")
    ap.add_argument("--cjk-rounds", type=int, default=7, help="timed rounds of the Chinese rows (best kept)")
    ap.add_argument("--cjk-sample-s", type=float, default=0.5, help="CPU-seconds of each timed sample")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
    if (DATA / "crosswoz-zh" / "dev.jsonl").exists():
        cjk_rows(args.peer_n, args.cjk_repeat, args.cjk_rounds, args.cjk_sample_s)
    else:
        print("crosswoz-zh not found: Chinese rows skipped")
    if args.cjk_only:
        return
    if not args.skip_sgd:
        path = DATA / "sgd-all" / "dialogues.jsonl"
        texts = []
        with path.open() as f:
            for line in f:
                texts.append("\n".join(t["text"] for t in json.loads(line)["turns"]))
        run_peers("sgd-all dialogues", texts, args.peer_n)
        print("\n## estimate error vs exact Jaccard (SGD dialogue vs edited copy, num_perm 128)")
        accuracy(texts)
    planted_eval(args.n, args.peer_n)
    print(f"\npeak RSS (process) {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
