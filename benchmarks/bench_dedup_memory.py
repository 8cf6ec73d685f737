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
import threading
import time
from pathlib import Path

import polars as pl
import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import records  # noqa: E402

from dialinsight_engine.dialogue import render_dialogue  # noqa: E402
from dialinsight_engine.executors.ray_dedup import ray_near_duplicates  # noqa: E402

FIELDS = ("RssAnon", "RssShmem", "VmRSS")


def prompts(n: int) -> list[str]:
    """The seeds stage's prompts of bench_scale's `n` dialogues (its roles and template)."""
    roles = {"user": "customer", "system": "agent"}
    return ["Extract the customer's requirements as JSON.\n" + render_dialogue(
                [{"role": roles[t["role"]], "text": t["text"]} for t in rec["turns"]])  # type: ignore[attr-defined]
            for rec in records(n)]


def memory_mb(pid: str) -> tuple[str, dict[str, int]] | None:
    """(command line, {field: MB}) of a process; None for one gone or without memory fields."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_text()
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return cmd, {k: int(fields[k].split()[0]) // 1024 for k in FIELDS}
    except (OSError, KeyError, ValueError):
        return None


class Sampler(threading.Thread):
    """Peak of each field per process: the driver (this one) and Ray's workers (`ray::...`)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.workers: dict[str, dict[str, int]] = {}
        self.steps: dict[str, int] = {}  # a worker's heap while it ran a task of this step
        self.driver: dict[str, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        me = str(os.getpid())
        while not self.done.is_set():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                found = memory_mb(pid)
                if found is None or (pid != me and "ray::" not in found[0]):
                    continue
                peak = self.driver if pid == me else self.workers.setdefault(pid, {})
                for key, value in found[1].items():
                    peak[key] = max(peak.get(key, 0), value)
                if pid != me:  # Ray titles a worker with the task it runs: "ray::_estimate"
                    step = found[0].split("\0")[0].removeprefix("ray::")
                    self.steps[step] = max(self.steps.get(step, 0), found[1]["RssAnon"])
            time.sleep(0.05)


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
    sampler.done.set()
    sampler.join()
    busiest = sorted(sampler.workers.values(), key=lambda p: -p["RssAnon"])
    print(json.dumps({
        "rows": args.rows, "partitions": args.partitions, "blocks": found.stats["blocks"],
        "wall_s": round(wall, 1), "candidate_pairs": found.stats["candidate_pairs"],
        "edges": found.stats["edges"], "duplicates": int(found.frame["is_duplicate"].sum()),
        "shuffle_bytes": found.stats["shuffle_bytes"],
        "driver_mb": {"before": before[1] if before else None, "peak": sampler.driver},
        "worker_peak_mb": busiest[:2], "worker_heap_mb_by_step": sampler.steps,
    }))
    ray.shutdown()


if __name__ == "__main__":
    main()
