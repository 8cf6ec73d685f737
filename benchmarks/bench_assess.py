"""Throughput of quality assessment (docs/performance.md, "Quality assessment").

1. The whole instruction phase of `assess` (prompt_complexity, input_complexity,
   data_richness with n-gram novelty, data_redundancy with MinHash/LSH in the Rust core) on
   the 14k SGD dialogues (`../shared/data/sgd-all`), one instruction per dialogue: rows/s.
   Optionally (`--embedding-rows N`) data_richness with all-MiniLM-L6-v2 embeddings on the
   first N rows (CPU encoding is ~10 rows/s on 2 cores, so not on all 14k by default).
2. Peer in the same run: within-set near duplicates with datasketch (MinHash + MinHashLSH,
   `update_batch`, pure Python shingling) against `fast.near_duplicates` on the same rows.
3. The label phase (`label_quality`) on SGD Homes rows with labels from the data set's
   annotations: rules only (all rows), and with the LLM judge on the embedded SmolLM2-135M
   through llama.cpp on a small subsample (`--judge-rows`, 0 to skip): rows/s.

    python benchmarks/bench_assess.py [--rows N] [--embedding-rows 500] [--judge-rows 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import polars as pl

from dialinsight_engine import records as R
from dialinsight_engine.dialogue import render_dialogue
from dialinsight_engine.metrics.base import MetricContext
from dialinsight_engine.metrics.combine import assess_phase
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.spec.quality import QualitySpec

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = {
    "summarise_needs": "Summarise in two sentences what the customer needs.\n{dialogue}",
    "extract_requirements": "Read the conversation.\n{dialogue}\nExtract the customer's requirements as JSON. "
                            "Only include values the customer stated; numbers as digits.",
    "next_reply": "You are the agent. Write the agent's next message: polite, short, and it must move the "
                  "customer towards a booking.\n{dialogue}",
}


def instruction_rows(limit: int | None) -> pl.DataFrame:
    rows = []
    with (DATA / "sgd-all" / "dialogues.jsonl").open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if limit is not None and i >= limit:
                break
            d = json.loads(line)
            task = list(TASKS)[i % len(TASKS)]
            text = render_dialogue(d["turns"])
            rows.append({R.INSTRUCTION_ID: R.stable_id(d["id"], task), R.DIALOGUE_ID: d["id"],
                         R.SCENE: (d.get("services") or ["none"])[0].split("_")[0], R.TASK: task,
                         R.INSTRUCTION: TASKS[task], R.PROMPT: R.compose_prompt(TASKS[task], text),
                         R.DIALOGUE_TEXT: text, R.KEPT: True, R.REASONS: []})
    return pl.DataFrame(rows)


def bench_instruction_phase(frame: pl.DataFrame, embeddings: bool) -> dict[str, object]:
    quality = QualitySpec.model_validate({"metrics": {
        "prompt_complexity": {}, "input_complexity": {},
        "data_richness": {"params": {"embeddings": "on" if embeddings else "off"}},
        "data_redundancy": {"weight": 0.5},
    }})
    t0 = time.perf_counter()
    result = assess_phase(frame, quality, build_registry(), MetricContext.standalone(), "instruction")
    seconds = time.perf_counter() - t0
    per_metric = {n: m.get("seconds") for n, m in result.summary["metrics"].items()}
    return {"rows": frame.height, "seconds": round(seconds, 2), "rows_per_s": round(frame.height / seconds, 1),
            "per_metric_s": per_metric, "near_duplicates": result.summary["metrics"]["data_redundancy"]["flagged"]}


def bench_dedup_peer(frame: pl.DataFrame) -> dict[str, object]:
    from datasketch import MinHash, MinHashLSH

    from dialinsight_engine import fast

    texts = frame[R.PROMPT].to_list()
    t0 = time.perf_counter()
    ours = fast.near_duplicates(frame, R.PROMPT, threshold=0.8, num_perm=128, ngram=3)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    sigs = []
    for i, text in enumerate(texts):
        words = re.sub(r"[^\w\s]", " ", text.lower()).split()
        shingles = {" ".join(words[j:j + 3]).encode() for j in range(max(len(words) - 2, 1))}
        m = MinHash(num_perm=128, seed=1)
        m.update_batch(list(shingles))
        sigs.append(m)
        lsh.insert(str(i), m)
    peer_dups = sum(1 for i, m in enumerate(sigs) if any(int(j) < i for j in lsh.query(m)))
    t_peer = time.perf_counter() - t0
    return {"rows": len(texts), "rust_s": round(t_ours, 3), "datasketch_s": round(t_peer, 3),
            "speedup": round(t_peer / t_ours, 1), "rust_duplicates": int(ours["is_duplicate"].sum()),
            "datasketch_duplicates": peer_dups}


def label_rows(n: int) -> pl.DataFrame:
    rows = []
    with (DATA / "sgd-homes" / "dev.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            req = d["truth"].get("requirements") or {}
            if "area" not in req:
                continue
            text = render_dialogue(d["turns"])
            response = (f"The customer wants a home in {req['area']}"
                        + (f" with {req['number_of_beds']} bedrooms" if "number_of_beds" in req else "") + ".")
            rows.append({R.INSTRUCTION_ID: d["id"], R.TASK: "summarise_needs", R.INSTRUCTION: TASKS["summarise_needs"],
                         R.DIALOGUE_TEXT: text, R.OUTPUT_SCHEMA: None, R.RESPONSE: response, R.KEPT: True,
                         R.REASONS: []})
            if len(rows) >= n:
                break
    return pl.DataFrame(rows)


def bench_label_phase(frame: pl.DataFrame, judge_rows: int) -> dict[str, object]:
    registry = build_registry()
    rules = QualitySpec.model_validate({"metrics": {"label_quality": {}}})
    t0 = time.perf_counter()
    assess_phase(frame, rules, registry, MetricContext.standalone(), "label")
    t_rules = time.perf_counter() - t0
    out: dict[str, object] = {"rules_rows": frame.height, "rules_rows_per_s": round(frame.height / t_rules, 1)}
    if judge_rows:
        from dialinsight_engine.backends.client import GenerationClient
        from dialinsight_engine.backends.llamacpp import LlamaCppBackend, LlamaCppConfig

        client = GenerationClient(LlamaCppBackend(LlamaCppConfig()), name="default", cache_dir=None)
        judged = QualitySpec.model_validate({"metrics": {"label_quality": {"params": {"judge_backend": "default"}}}})
        sub = frame.head(judge_rows)
        ctx = MetricContext.standalone(backends={"default": client})
        t0 = time.perf_counter()
        result = assess_phase(sub, judged, registry, ctx, "label")
        t_judge = time.perf_counter() - t0
        scores = result.frame["label_quality.judge_score"].to_list()
        out |= {"judge_rows": sub.height, "judge_seconds": round(t_judge, 1),
                "judge_rows_per_s": round(sub.height / t_judge, 3), "judge_scores": scores,
                "rules_vs_judge_speed": round((frame.height / t_rules) / (sub.height / t_judge))}
        client.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=None, help="limit sgd-all rows (default: all 14,272)")
    parser.add_argument("--embedding-rows", type=int, default=0,
                        help="also time the phase with MiniLM embeddings on this many rows (0: skip)")
    parser.add_argument("--peer-rows", type=int, default=3000)
    parser.add_argument("--label-rows", type=int, default=180)
    parser.add_argument("--judge-rows", type=int, default=4)
    args = parser.parse_args()
    if not (DATA / "sgd-all" / "dialogues.jsonl").exists():
        print(f"skipped: shared data not found at {DATA}")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, python {sys.version.split()[0]}")
    t0 = time.perf_counter()
    frame = instruction_rows(args.rows)
    print(f"built {frame.height} instruction rows in {time.perf_counter() - t0:.1f}s")
    results = {"instruction_phase": bench_instruction_phase(frame, embeddings=False)}
    print("assess (rules + Rust, n-gram diversity):", json.dumps(results["instruction_phase"]))
    if args.embedding_rows:
        sub = frame.head(args.embedding_rows)
        results["instruction_phase_ngrams_sub"] = bench_instruction_phase(sub, embeddings=False)
        results["instruction_phase_embeddings"] = bench_instruction_phase(sub, embeddings=True)
        print("assess on the same subsample, n-gram diversity:", json.dumps(results["instruction_phase_ngrams_sub"]))
        print("assess (rules + Rust + MiniLM embeddings):", json.dumps(results["instruction_phase_embeddings"]))
    results["dedup_vs_datasketch"] = bench_dedup_peer(frame.head(args.peer_rows))
    print("near duplicates, Rust core vs datasketch:", json.dumps(results["dedup_vs_datasketch"]))
    results["label_phase"] = bench_label_phase(label_rows(args.label_rows), args.judge_rows)
    print("verify (label_quality):", json.dumps(results["label_phase"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
