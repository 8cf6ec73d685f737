"""Scale-out benchmark (docs/performance.md, "Scaling out on Ray").

Generates N synthetic rental-agency dialogues (JSONL, written as a stream; 1 in 20 is a
near-copy of an earlier one so dedup has work), then runs the same spec through
ingest -> scenes -> seeds -> assess (Rust text metrics, n-gram richness, MinHash/LSH dedup)
on the local executor and on a 2-node local Ray cluster (`ray.cluster_utils.Cluster`, one CPU
per node), in the same run. Reports per stage: docs/s, the driver's peak RSS, the Ray
workers' peak RSS, per-partition map seconds (the per-block cost for the scaling model), and
the bytes per document that cross process boundaries (Parquet partitions written and read
back: the executor's only data movement; task arguments and results are a few hundred bytes).

    nice python benchmarks/bench_scale.py --dialogues 100000 [--dialogues 20000 ...]
        [--partition-rows 50000] [--until assess] [--dedup-local-rows N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from procmem import Sampler  # this folder: run as a script, it is on sys.path

STAGES = ["ingest", "scenes", "seeds", "assess"]
AREAS = ["Fremont", "Oakland", "Berkeley", "San Jose", "Palo Alto", "Hayward", "Daly City", "Sunnyvale"]
NEEDS = ["a quiet street", "parking", "a garden", "a dishwasher", "good schools nearby", "BART access",
         "a balcony", "in-unit laundry", "a pet-friendly building", "a furnished flat"]

SPEC = """\
[project]
name = "scale"
business = "We are a rental agency."
runs_dir = "{runs}"
seed = 7

[data]
paths = ["{data}"]
min_turns = 2

[[roles]]
name = "customer"
aliases = ["user"]

[[roles]]
name = "agent"
aliases = ["system"]

[[scenes]]
name = "property_search"
keywords = ["bedroom", "bedrooms", "apartment", "looking for"]
regex = ['\\b\\d+[- ]?bed(room)?s?\\b']

[[scenes]]
name = "viewing_booking"
keywords = ["visit", "viewing", "schedule"]

[[scenes]]
name = "pricing"
keywords = ["budget", "deposit", "rent"]

[[tasks]]
name = "extract_requirements"
scenes = ["property_search", "viewing_booking", "pricing"]
template = "Extract the customer's requirements as JSON.\\n{{{{ dialogue }}}}"

[quality]
min_score = 0.1

[quality.metrics.prompt_complexity]

[quality.metrics.input_complexity]

[quality.metrics.data_richness]
params = {{ embeddings = "off" }}

[quality.metrics.data_redundancy]
params = {{ threshold = 0.8 }}

[executor]
partition_rows = {partition_rows}
dedup_local_rows = {dedup_local_rows}
"""


def dialogue(i: int, rng: random.Random) -> dict[str, object]:
    beds, area = rng.randint(1, 5), rng.choice(AREAS)
    needs = rng.sample(NEEDS, 3)
    turns = [
        {"role": "user", "text": f"Hi, I'm looking for a {beds} bedroom apartment in {area}, budget "
                                 f"{rng.randint(15, 60) * 100} a month."},
        {"role": "system", "text": f"Sure. Any must-haves besides {beds} bedrooms in {area}?"},
        {"role": "user", "text": f"I need {needs[0]} and {needs[1]}; {needs[2]} would be nice. Case {i}."},
        {"role": "system", "text": f"I have {rng.randint(2, 9)} places. Shall I schedule a viewing on "
                                   f"{rng.choice(['Monday', 'Tuesday', 'Friday', 'Saturday'])}?"},
    ]
    return {"id": f"d{i:08d}", "turns": turns}


def records(n: int) -> Iterator[dict[str, object]]:
    """The benchmark's `n` dialogues, always the same (seeded)."""
    rng = random.Random(11)
    recent: list[dict[str, object]] = []  # a small window: memory stays flat whatever n is
    for i in range(n):
        rec = dialogue(i, rng)
        if i % 20 == 19 and recent:  # a near-copy of a recent dialogue: dedup has work
            rec = near_copy(rng.choice(recent), f"d{i:08d}")
        recent = [*recent[-15:], rec]
        yield rec


def write_data(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records(n):
            fh.write(json.dumps(rec) + "\n")


def near_copy(rec: dict[str, object], new_id: str) -> dict[str, object]:
    turns = [dict(t) for t in rec["turns"]]  # type: ignore[attr-defined]
    turns[-1]["text"] = turns[-1]["text"].replace("Shall I", "Should I")
    return {"id": new_id, "turns": turns}


def apply(spec: Path, until: str, extra: list[str]) -> float:
    """Run `dialengine apply` in a child; returns its wall seconds."""
    env = {**os.environ, "DIALENGINE_PLUGINS": "core,quality", "NO_COLOR": "1"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dialinsight_engine", "--quiet", "apply", str(spec),
                           "--until", until, *extra], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"apply failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def stage_figures(run: Path, n: int) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for stage in STAGES:
        path = run / stage / "manifest.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text())
        size = sum((run / stage / p["name"]).stat().st_size for p in m["partitions"])
        costs = m["stats"].get("partition_costs", {})
        out[stage] = {
            "seconds": m["seconds"], "docs_per_s": round(n / m["seconds"], 1) if m["seconds"] else None,
            "rows_out": m["rows_out"], "partitions": len(m["partitions"]),
            "parquet_bytes_per_doc": round(size / n, 1),
            "map_seconds_per_partition": round(costs["map_seconds"] / max(1, len(m["partitions"])), 3)
            if costs else None,
            "driver_peak_rss_mb": m["stats"].get("driver_peak_rss_mb"),
            "driver_rss_after_mb": m["stats"].get("driver_rss_after_mb"),
            "worker_peak_rss_mb": costs.get("worker_peak_rss_mb"), "workers": costs.get("workers"),
            "output_hash": m["output_hash"][:16],
            "content_hash_in": m["stats"].get("content_hash_in"),  # "tasks" (Ray) or "driver"
        }
        if stage == "assess":  # where assess's time went: prepare's maps, the driver's pool-wide metrics
            summary = json.loads((run / stage / "quality_summary.json").read_text())
            out[stage]["prepare_maps"] = m["stats"].get("prepare_maps")
            out[stage]["metric_seconds"] = {k: v.get("seconds") for k, v in summary["metrics"].items()}
            out[stage]["ray_near_duplicates"] = m["stats"].get("ray_near_duplicates")
            out[stage]["near_duplicates_in_driver"] = m["stats"].get("near_duplicates_in_driver")
            out[stage]["driver_memory_mb"] = m["stats"].get("driver_memory_mb")  # peak and now, per step
    return out


def bench(n: int, partition_rows: int, until: str, address: str | None, root: Path,
          executors: tuple[str, ...] = ("local", "ray"), dedup_local_rows: int = 1_000_000) -> dict[str, object]:
    data = root / f"dialogues-{n}.jsonl"
    if not data.exists():
        write_data(data, n)
    result: dict[str, object] = {"dialogues": n, "partition_rows": partition_rows}
    for executor in [e for e in executors if e == "local" or address]:
        runs = root / f"runs-{executor}-{n}"
        spec = root / f"scale-{executor}-{n}.toml"
        spec.write_text(SPEC.format(runs=runs.as_posix(), data=data.as_posix(), partition_rows=partition_rows,
                                    dedup_local_rows=dedup_local_rows))
        extra = ["--executor", "ray", "--address", address] if executor == "ray" and address else []
        sampler = Sampler(interval=0.2)  # the Ray workers' memory, per task they run
        sampler.start()
        try:
            wall = apply(spec, until, extra)
        finally:
            sampler.stop()
        stages = stage_figures(runs / "scale", n)
        total = sum(float(s["seconds"]) for s in stages.values())  # type: ignore[arg-type,misc]
        # each stage records the driver's peak so far, its hash pass included: the last is the run's
        peaks = [s["driver_peak_rss_mb"] for s in stages.values()]
        driver_rss = max((float(p) for p in peaks if isinstance(p, int | float)), default=0.0)
        result[executor] = {"wall_s": round(wall, 1), "stage_s": round(total, 1),
                            "docs_per_s": round(n / total, 1), "driver_peak_rss_mb": round(driver_rss, 1),
                            "stages": stages}
        if sampler.tasks:  # a worker's peak while Ray titled it with a task (`procmem`)
            result[executor]["workers_by_task_mb"] = sampler.tasks  # type: ignore[index]
        print(json.dumps({executor: result[executor]}, indent=1), flush=True)
    if "local" in result and "ray" in result:
        local, ray = result["local"], result["ray"]  # type: ignore[index]
        result["ray_over_local"] = round(ray["docs_per_s"] / local["docs_per_s"], 3)  # type: ignore[index]
        result["same_hashes"] = all(local["stages"][s]["output_hash"] == ray["stages"][s]["output_hash"]  # type: ignore[index]
                                    for s in local["stages"])  # type: ignore[index]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialogues", type=int, action="append", help="sizes to run (repeatable)")
    parser.add_argument("--partition-rows", type=int, default=50_000)
    parser.add_argument("--until", default="assess", choices=STAGES)
    parser.add_argument("--no-ray", action="store_true", help="the local executor only")
    parser.add_argument("--ray-only", action="store_true", help="the Ray cluster only")
    parser.add_argument("--dedup-local-rows", type=int, default=1_000_000,
                        help="[executor] dedup_local_rows (0: near duplicates always on Ray)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    sizes = args.dialogues or [100_000]
    cluster = None
    address = None
    if not args.no_ray:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        address = cluster.address
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            for n in sizes:
                results.append(bench(n, args.partition_rows, args.until, address, Path(tmp),
                                     ("ray",) if args.ray_only else ("local", "ray"), args.dedup_local_rows))
    finally:
        if cluster is not None:
            cluster.shutdown()
    summary = {"cpus": os.cpu_count(), "until": args.until, "results": results}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
