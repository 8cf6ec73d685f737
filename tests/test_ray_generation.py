"""Generation through a pool of Ray actors on a real two-node cluster, against an
OpenAI-compatible server on 127.0.0.1 that counts every request: the results equal the local
client's, requests in flight stay bounded, and after a killed actor a rerun sends only what
was not finished."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dialinsight_engine.backends.base import GenerationRequest, GenerationResult
from dialinsight_engine.backends.client import CACHE_FILE, GenerationClient, ResultCache
from dialinsight_engine.backends.openai import OpenAIBackend, OpenAIConfig
from dialinsight_engine.errors import StageFailed, UserError

from raycluster import joined, shared_cluster

ray = pytest.importorskip("ray")

from dialinsight_engine.executors.ray_generation import (  # noqa: E402
    ClientRecipe,
    RayGenerationPool,
)

pytestmark = pytest.mark.timeout(300)
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


class CountingServer:
    """Answers every chat completion after `delay_s`, echoing the prompt; counts requests per
    prompt and the most requests it ever had open at once."""

    def __init__(self, delay_s: float) -> None:
        self.calls: Counter[str] = Counter()
        self.open_now = 0
        self.most_open = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with outer.lock:
                    outer.calls[prompt] += 1
                    outer.open_now += 1
                    outer.most_open = max(outer.most_open, outer.open_now)
                time.sleep(delay_s)
                text = json.dumps({"answer": prompt[::-1]}) if "response_format" in body else f"echo: {prompt}"
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text},
                                                   "finish_reason": "stop"}],
                                      "usage": {"prompt_tokens": len(prompt), "completion_tokens": 3}}).encode()
                with outer.lock:
                    outer.open_now -= 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def total(self) -> int:
        with self.lock:
            return sum(self.calls.values())

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes of one CPU each (shared with the other Ray modules), joined by this process."""
    with joined(shared_cluster(1, 1).address):
        yield


def _recipe(url: str, cache: Path) -> ClientRecipe:
    config = OpenAIConfig.model_validate({"base_url": url, "model": "m", "concurrency": 8, "timeout_s": 10,
                                          "max_retries": 1, "backoff_s": 0.01})
    return ClientRecipe(OpenAIBackend, config, "served", cache, batch_size=16)


def _requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(f"prompt {i}: find a two-bedroom flat", seed=i % 3, max_tokens=32,
                              json_schema=SCHEMA if i % 2 else None) for i in range(n)]


def _comparable(r: GenerationResult) -> dict:
    """A result without its timing."""
    return {k: v for k, v in r.__dict__.items() if k != "latency_s"}


def _cached_prompts(cache: Path) -> set[str]:
    """Prompts with an answer committed in the cache (the echo names its prompt)."""
    with sqlite3.connect(cache / CACHE_FILE) as db:
        values = [json.loads(v)["text"] for (v,) in db.execute("SELECT value FROM results")]
    return {t[len("echo: "):] if t.startswith("echo: ") else json.loads(t)["answer"][::-1] for t in values}


def test_pool_results_equal_the_local_client_with_bounded_requests_in_flight(cluster, tmp_path):
    server = CountingServer(delay_s=0.1)
    requests = _requests(36) + _requests(4)  # 4 duplicates: generated once, as locally
    try:
        local = GenerationClient(OpenAIBackend(_recipe(server.url, tmp_path).config), name="served",
                                 cache_dir=tmp_path / "local")
        expected = local.generate(requests)
        local.close()
        server.calls.clear()
        server.most_open = 0
        with RayGenerationPool(_recipe(server.url, tmp_path / "ray"), actors=2, in_flight=3,
                               num_cpus=0.5) as pool:
            assert len(set(pool.pids())) == 2  # both actors up before the clock starts
            assert (pool.name, pool.model_id) == ("served", local.model_id)
            advanced: list[tuple[int, int]] = []
            got = pool.generate(requests, progress=lambda n, tokens=0: advanced.append((n, tokens)))
            assert sum(n for n, _ in advanced) == 40  # rows, duplicates counted, as the local client
            assert sum(t for _, t in advanced) == 36 * 3  # completion tokens of what was generated
            assert [_comparable(r) for r in got] == [_comparable(r) for r in expected]
            assert all(r.ok for r in got)
            assert server.calls == Counter(r.prompt for r in requests[:36])  # each once
            assert 3 < server.most_open <= 2 * 3  # both actors busy, never more than in_flight each
            assert pool.stats["requests"] == 40 and pool.stats["generated"] == 36
            broken = [*requests[:5], GenerationRequest("x", json_schema={"type": "no-such-type"})]
            with pytest.raises(UserError, match="output schema"):
                pool.generate(broken)  # checked before any chunk goes out
            again = pool.generate(requests)  # the same pool again: all from the cache
            assert server.total() == 36 and all(r.cached for r in again)
            assert [r.text for r in again] == [r.text for r in expected]
    finally:
        server.close()


def test_progress_is_reported_per_request_while_a_chunk_runs(cluster, tmp_path):
    """One actor whose client sends one request at a time: the driver hears of each as it
    finishes, not once per chunk of 4."""
    server = CountingServer(delay_s=0.2)
    recipe = dataclasses.replace(_recipe(server.url, tmp_path / "cache"), batch_size=1)
    try:
        with RayGenerationPool(recipe, actors=1, in_flight=4, num_cpus=0.5) as pool:
            pool.pids()
            advanced: list[tuple[int, float]] = []
            pool.generate(_requests(8), progress=lambda n, tokens=0: advanced.append((n, time.monotonic())))
        assert sum(n for n, _ in advanced) == 8
        assert len(advanced) >= 6, advanced  # 8 when every poll lands between two answers
        gaps = [b - a for (_, a), (_, b) in zip(advanced, advanced[1:], strict=False)]
        assert max(gaps) < 0.2 * 4 * 0.9  # never a whole chunk's wait between two updates
    finally:
        server.close()


def _kill_when(server: CountingServer, count: int, kill) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + 60
        while server.total() < count and time.monotonic() < deadline:
            time.sleep(0.005)
        kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_rerun_after_a_killed_actor_regenerates_nothing_finished(cluster, tmp_path):
    server = CountingServer(delay_s=0.15)
    requests = _requests(60)
    cache = tmp_path / "cache"
    try:
        pool = RayGenerationPool(_recipe(server.url, cache), actors=2, in_flight=4, num_cpus=0.5,
                                 max_restarts=0, max_task_retries=0)
        pool.pids()
        watcher = _kill_when(server, 12, lambda: ray.kill(pool.actors[0], no_restart=True))
        with pytest.raises(StageFailed, match=r"generation: chunk \d+ \(distinct requests \d+-\d+\) failed"):
            pool.generate(requests)
        watcher.join()
        pool.close()
        finished = _cached_prompts(cache)
        before = Counter(server.calls)
        # 12 were sent when the kill came: only the killed actor's chunk (4) is lost, the other
        # actor's chunk is finished before the call fails, so its answers are cached too
        assert 8 <= len(finished) < 60

        with RayGenerationPool(_recipe(server.url, cache), actors=2, in_flight=4, num_cpus=0.5) as rerun:
            got = rerun.generate(requests)
            assert rerun.stats["cache_hits"] == len(finished)
        sent_again = server.calls - before
        assert not set(sent_again) & finished  # nothing finished was generated again
        assert sum(sent_again.values()) == 60 - len(finished)
        assert all(r.ok for r in got) and _cached_prompts(cache) == {r.prompt for r in requests}
    finally:
        server.close()


def test_a_killed_actor_is_restarted_and_only_its_requests_in_flight_are_repeated(cluster, tmp_path):
    server = CountingServer(delay_s=0.15)
    requests = _requests(48)
    try:
        with RayGenerationPool(_recipe(server.url, tmp_path / "cache"), actors=2, in_flight=4,
                               num_cpus=0.5, max_restarts=1, max_task_retries=1) as pool:
            first = pool.pids()
            watcher = _kill_when(server, 10, lambda: ray.kill(pool.actors[0], no_restart=False))
            got = pool.generate(requests)
            watcher.join()
            assert pool.pids()[0] != first[0] and pool.pids()[1] == first[1]
        assert all(r.ok for r in got) and [r.text for r in got] == [
            f"echo: {r.prompt}" if r.json_schema is None else json.dumps({"answer": r.prompt[::-1]})
            for r in requests]
        assert 48 <= server.total() <= 48 + 4  # at most the killed actor's chunk again
    finally:
        server.close()


WRITER = """
import sys, time
from pathlib import Path
from dialinsight_engine.backends.client import ResultCache
from dialinsight_engine.backends.base import GenerationResult
cache, worker, go = ResultCache(Path(sys.argv[1])), sys.argv[2], Path(sys.argv[3])
while not go.exists():  # all four start writing together
    time.sleep(0.005)
for i in range(150):
    cache.put(f"{worker}-{i}", GenerationResult(f"answer {worker} {i}"))
    assert cache.get_many([f"{worker}-{i}"])[f"{worker}-{i}"].text == f"answer {worker} {i}"
cache.close()
"""


def test_the_cache_takes_concurrent_writers_from_several_processes(tmp_path):
    """Four processes commit 150 answers each, one transaction per answer, into one cache
    file while reading it (as four actors do): nothing is lost, no 'database is locked'."""
    path = tmp_path / CACHE_FILE
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    go = tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(go)], env=env,
                                stderr=subprocess.PIPE, text=True) for w in range(4)]
    time.sleep(2)  # let them import and open the cache
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in writers]
    assert [p.returncode for p in writers] == [0, 0, 0, 0], errors
    cache = ResultCache(path)
    found = cache.get_many([f"{w}-{i}" for w in range(4) for i in range(150)])
    cache.close()
    assert len(found) == 600 and found["3-149"].text == "answer 3 149"


def test_recipe_from_spec_reads_the_backend_table_as_open_client_does(write_spec, tmp_path):
    """No actor needed: the recipe is resolved on the driver, and a bad name fails there."""
    from dialinsight_engine.plugins import build_registry
    from dialinsight_engine.spec import load_spec

    registry = build_registry()
    spec = load_spec(write_spec("""
        [backends.served]
        plugin = "openai"
        base_url = "http://127.0.0.1:9/v1"
        model = "m"
        batch_size = 5
        max_attempts = 2

        [backends.uncached]
        plugin = "openai"
        base_url = "http://127.0.0.1:9/v1"
        cache = false
        """), registry)
    recipe = ClientRecipe.from_spec(spec, "served", registry, tmp_path / "cache")
    assert recipe.backend_class is OpenAIBackend and recipe.config.base_url == "http://127.0.0.1:9/v1"
    assert (recipe.batch_size, recipe.max_attempts, recipe.cache_dir) == (5, 2, tmp_path / "cache")
    assert recipe.open().model_id == "http://127.0.0.1:9/v1|m"  # the cache key of a local client
    assert ClientRecipe.from_spec(spec, "uncached", registry, tmp_path / "cache").cache_dir is None
    with pytest.raises(UserError, match=r"\[backends.nope\] backend 'nope' is not declared"):
        ClientRecipe.from_spec(spec, "nope", registry, tmp_path / "cache")
