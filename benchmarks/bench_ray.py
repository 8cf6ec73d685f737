"""Near-duplicates and generation on a local two-node Ray cluster (2 x 1 CPU).

    python benchmarks/bench_ray.py dedup [--rows 20000] [--partitions 4]
    python benchmarks/bench_ray.py generation [--requests 200] [--delay 0.1]

``dedup``: the tests' planted English and Chinese texts; checks the Ray frame equals
``fast.near_duplicates`` and prints the shuffle bytes per document and both times.
``generation``: a counting OpenAI-compatible server on 127.0.0.1 answering after ``--delay``
seconds; pool throughput and requests open at once for 1/2/4 actors, the local client for
comparison, then one actor killed half-way and a rerun (what it sends again).
Results: docs/performance.md ("Near-duplicates and generation on Ray").
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_ray_dedup import _planted, _split  # noqa: E402
from test_ray_generation import (  # noqa: E402
    CountingServer,
    _cached_prompts,
    _kill_when,
    _recipe,
    _requests,
)

from dialinsight_engine import fast  # noqa: E402
from dialinsight_engine.errors import StageFailed  # noqa: E402
from dialinsight_engine.executors.ray_dedup import ray_near_duplicates  # noqa: E402
from dialinsight_engine.executors.ray_generation import RayGenerationPool  # noqa: E402


def dedup(rows: int, partitions: int) -> None:
    cuts = [rows * k // partitions for k in range(1, partitions)]
    for zh in (False, True):
        df = _planted(rows, seed=5, zh=zh)
        start = time.perf_counter()
        local = fast.near_duplicates(df, "text", threshold=0.8)
        local_s = time.perf_counter() - start
        parts = _split(df, cuts)
        ray_near_duplicates(parts[:1], "text", threshold=0.8)  # start the workers
        start = time.perf_counter()
        found = ray_near_duplicates(parts, "text", threshold=0.8)
        ray_s = time.perf_counter() - start
        assert found.frame.equals(local), "the Ray result differs from fast.near_duplicates"
        s = found.stats
        print(f"{'zh' if zh else 'en'}: {rows} rows, {int(local['is_duplicate'].sum())} near duplicates, "
              f"bands {s['bands']}x{s['rows_per_band']}, {s['candidate_pairs']} candidate pairs, "
              f"{s['edges']} edges; shuffle bytes {s['shuffle_bytes']} = {s['shuffle_bytes_per_row']} "
              f"per doc; local {local_s:.2f} s, Ray {ray_s:.2f} s")


def generation(n: int, delay: float) -> None:
    server = CountingServer(delay_s=delay)
    tmp = Path(tempfile.mkdtemp())
    requests = _requests(n)
    try:
        for batch in (4, 8):
            client = dataclasses.replace(_recipe(server.url, tmp / f"local{batch}"), batch_size=batch).open()
            start = time.perf_counter()
            client.generate(requests)
            print(f"local client, batch_size {batch}: {n} requests in {time.perf_counter() - start:.2f} s")
            client.close()
        for actors in (1, 2, 4):
            server.most_open = 0
            with RayGenerationPool(_recipe(server.url, tmp / f"pool{actors}"), actors=actors, in_flight=4,
                                   num_cpus=0.25) as pool:
                pool.pids()
                start = time.perf_counter()
                pool.generate(requests)
                print(f"{actors} actor(s), in_flight 4: {n} requests in {time.perf_counter() - start:.2f} s, "
                      f"at most {server.most_open} open at the server")
        progress_cost(server, tmp / "progress", requests)
        kill_and_rerun(server, tmp / "kill", requests)
    finally:
        server.close()


def progress_cost(server: CountingServer, cache: Path, requests: list) -> None:
    """2 actors with the per-request progress a stage's bar gets (a long poll per busy actor)."""
    updates: list[int] = []
    with RayGenerationPool(_recipe(server.url, cache), actors=2, in_flight=4, num_cpus=0.25) as pool:
        pool.pids()
        start = time.perf_counter()
        pool.generate(requests, progress=lambda rows, tokens=0: updates.append(rows))
        print(f"2 actors, in_flight 4, with progress: {len(requests)} requests in "
              f"{time.perf_counter() - start:.2f} s, {len(updates)} progress updates "
              f"({sum(updates)} rows; {-(-len(requests) // 4)} chunks)")


def kill_and_rerun(server: CountingServer, cache: Path, requests: list) -> None:
    server.calls.clear()
    pool = RayGenerationPool(_recipe(server.url, cache), actors=2, in_flight=4, num_cpus=0.5,
                             max_restarts=0, max_task_retries=0)
    pool.pids()
    watcher = _kill_when(server, len(requests) // 2, lambda: ray.kill(pool.actors[0], no_restart=True))
    try:
        pool.generate(requests)
    except StageFailed as exc:
        print("run 1:", str(exc).splitlines()[0][:160])
    watcher.join()
    pool.close()
    finished, before = _cached_prompts(cache), Counter(server.calls)
    with RayGenerationPool(_recipe(server.url, cache), actors=2, in_flight=4, num_cpus=0.5) as rerun:
        rerun.generate(requests)
        hits = rerun.stats["cache_hits"]
    again = server.calls - before
    print(f"run 1 sent {sum(before.values())}, committed {len(finished)}; the rerun took {hits} from the "
          f"cache and sent {sum(again.values())}, {len(set(again) & finished)} of them finished before")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("dedup", "generation"))
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.1)
    args = parser.parse_args()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        if args.what == "dedup":
            dedup(args.rows, args.partitions)
        else:
            generation(args.requests, args.delay)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
