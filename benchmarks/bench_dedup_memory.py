"""Memory of `ray_near_duplicates` alone, per process (docs/performance.md, "Near-duplicates
and generation on Ray").

Builds the prompts of `bench_scale.py`'s synthetic dialogues (1 in 20 a near-copy), puts them
in Ray's object store as `--partitions` pyarrow partitions, runs `ray_near_duplicates` on a
local Ray of 2 CPUs and samples every 50 ms, from /proc, the resident memory of the driver and
of every Ray worker, split into the process's own heap (`RssAnon`) and the object-store pages
it has mapped (`RssShmem`, shared by all processes: Ray's plasma store), and the heap of a
worker while Ray titles it with a step's task. Prints one JSON line: wall seconds, candidate
pairs, edges, shuffle bytes per step and those peaks in MB.

    nice python benchmarks/bench_dedup_memory.py --rows 1000000 --partitions 100 [--blocks N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import polars as pl
import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import records  # noqa: E402
from procmem import Sampler, memory_mb  # noqa: E402

from dialinsight_engine.dialogue import render_dialogue  # noqa: E402
from dialinsight_engine.executors.ray_dedup import ray_near_duplicates  # noqa: E402


def prompts(n: int) -> list[str]:
    """The seeds stage's prompts of bench_scale's `n` dialogues (its roles and template)."""
    roles = {"user": "customer", "system": "agent"}
    return ["Extract the customer's requirements as JSON.\n" + render_dialogue(
                [{"role": roles[t["role"]], "text": t["text"]} for t in rec["turns"]])  # type: ignore[attr-defined]
            for rec in records(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=30)
    parser.add_argument("--blocks", type=int, help="shuffle blocks (default: ray_dedup.shuffle_blocks)")
    parser.add_argument("--threshold", type=float, default=0.8)
    args = parser.parse_args()
    texts = prompts(args.rows)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    size = -(-args.rows // args.partitions)
    parts = [ray.put(pl.DataFrame({"prompt": texts[k:k + size]}).to_arrow()) for k in range(0, args.rows, size)]
    del texts
    before = memory_mb(str(os.getpid()))
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    found = ray_near_duplicates(parts, "prompt", threshold=args.threshold, blocks=args.blocks)
    wall = time.perf_counter() - t0
    sampler.stop()
    busiest = sorted(sampler.workers.values(), key=lambda p: -p["RssAnon"])
    print(json.dumps({
        "rows": args.rows, "partitions": args.partitions, "blocks": found.stats["blocks"],
        "wall_s": round(wall, 1), "candidate_pairs": found.stats["candidate_pairs"],
        "edges": found.stats["edges"], "duplicates": int(found.frame["is_duplicate"].sum()),
        "component_rounds": found.stats["component_rounds"],
        "shuffle_bytes": found.stats["shuffle_bytes"],
        "driver_mb": {"before": before[1] if before else None, "peak": sampler.driver},
        "worker_peak_mb": busiest[:2],
        "worker_heap_mb_by_step": {title: peak["RssAnon"] for title, peak in sampler.tasks.items()},
    }))
    ray.shutdown()


if __name__ == "__main__":
    main()
