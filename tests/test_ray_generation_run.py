"""Generation inside `dialengine apply --executor ray`: evolve, label and verify's LLM judge go
through the run's pool of generation actors (executors/ray_generation.py) on a real local Ray
cluster (one node, 2 CPUs, started once for the module), with no model: the scripted backend
(tests/fake_backend.py), or an OpenAI-compatible server on 127.0.0.1 answering as the scripted
backend does.

- The Ray run's evolve, label and verify output has the local run's content hash, and the
  manifests show the pool did the generating.
- An actor SIGKILLed with its requests in flight (the server kills the process that opened the
  connection) is restarted by Ray and its chunk retried: the run finishes with the local hash,
  and only that chunk's requests were sent twice.
- The driver SIGKILLed mid-label: the rerun takes every answer committed before the kill from
  the cache (asserted as cache hits) and sends the server only the rest.
Skipped, with the reason, only when Ray is not installed (`pip install '.[ray]'`)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dialinsight_engine.backends.client import CACHE_FILE
from dialinsight_engine.errors import UserError
from dialinsight_engine.spec.executor import GenerationPoolSpec

from conftest import dialengine
from fake_backend import _digest, instance, rewrite
from raycluster import local_cluster, realestate_spec, scripted_site

ray = pytest.importorskip("ray", reason="Ray is not installed (the `ray` extra: pip install '.[ray]')")

from dialinsight_engine.executors.ray_generation import pool_size  # noqa: E402

pytestmark = pytest.mark.timeout(600)
PLUGINS = "core,generation,quality,training,scripted"
SERVED_PLUGINS = "core,generation,quality,training"
POOL = "\n[executor.generation]\nactors = 2\nin_flight = 2\n"


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """One Ray node with 2 CPUs on 127.0.0.1; yields its address."""
    with local_cluster(2) as made:
        yield made.address


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return scripted_site(tmp_path_factory.mktemp("site"))


def realestate(tmp_path: Path, runs: str, backends: str, extra: str = "") -> Path:
    """specs/realestate.toml with its runs under tmp_path, `backends` instead of the embedded
    model, n-gram richness, and `extra` appended."""
    return realestate_spec(tmp_path, runs, {'[backends.default]\nplugin = "llamacpp"\nn_ctx = 4096\n': backends},
                           extra)


def manifest(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "manifest.json").read_text())


def hashes(run: Path, stages: list[str]) -> dict[str, str]:
    return {s: manifest(run, s)["output_hash"] for s in stages}


def test_evolve_label_and_the_judge_through_the_pool_give_the_local_hashes(cluster, site, tmp_path):
    judge = ('params = { text_grounding_skip_tasks = ["next_reply"] }',
             'params = { judge_backend = "default", text_grounding_skip_tasks = ["next_reply"] }')
    stages = ["evolve", "label", "verify"]
    runs = {}
    for kind in ("local", "ray"):
        spec = realestate(tmp_path, kind, '[backends.default]\nplugin = "scripted"\n', POOL)
        spec.write_text(spec.read_text().replace(*judge))
        where = ["--executor", "ray", "--address", cluster] if kind == "ray" else []
        result = dialengine("apply", str(spec), "--until", "verify", *where, env=site, plugins=PLUGINS)
        assert result.returncode == 0, result.stderr
        runs[kind] = tmp_path / kind / "realestate"
    assert hashes(runs["ray"], stages) == hashes(runs["local"], stages)
    for stage in stages:  # the pool generated (its counters carry "actors"); locally the client
        used = manifest(runs["ray"], stage)["stats"]["backend"]["default"]
        assert used["actors"] == 2 and used["generated"] > 0, (stage, used)
        assert "actors" not in manifest(runs["local"], stage)["stats"]["backend"]["default"]
    assert manifest(runs["ray"], "verify")["stats"]["backend"]["default"]["requests"] == \
        manifest(runs["local"], "verify")["stats"]["backend"]["default"]["requests"] > 0  # the judge ran
    # a pool this small is below [executor] dedup_local_rows: its near duplicates, one search
    # per task, were found in the driver, not shuffled between Ray tasks
    assess = manifest(runs["ray"], "assess")["stats"]
    assert assess["near_duplicates_in_driver"]["calls"] == 4 and "ray_near_duplicates" not in assess


def pid_on_port(port: int) -> int | None:
    """The process holding the TCP socket with local port `port` (Linux: /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) in inodes:
                return int(fd.parts[2])
        except OSError:
            continue  # a process or descriptor gone meanwhile
    return None


class ScriptedServer:
    """OpenAI-compatible chat server answering as the scripted backend, after `delay_s`.
    Counts each model's requests per prompt; `on_request(model, n, client_port)` runs before
    the n-th request of that model is answered (the fault hook); while `blackout` is set every
    request fails with 503 (nothing it answers can reach a cache)."""

    def __init__(self, delay_s: float) -> None:
        self.calls: dict[str, Counter[str]] = {}
        self.on_request: Callable[[str, int, int], None] = lambda model, n, port: None
        self.blackout = False
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.answer(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.delay_s = delay_s
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        prompt, model = body["messages"][-1]["content"], body["model"]
        if self.blackout:
            return self._send(handler, 503, b'{"error": "blackout"}')
        with self.lock:
            seen = self.calls.setdefault(model, Counter())
            seen[prompt] += 1
            count = sum(seen.values())
        self.on_request(model, count, handler.client_address[1])
        time.sleep(self.delay_s)
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), None)
        key = _digest(prompt, system, body.get("seed"))
        schema = body.get("response_format", {}).get("json_schema", {}).get("schema")
        text = json.dumps(instance(schema, key)) if schema is not None else rewrite(prompt, key)
        self._send(handler, 200, json.dumps({
            "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}}).encode())
        return None

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed

    def sent(self, model: str) -> Counter[str]:
        with self.lock:
            return Counter(self.calls.get(model, {}))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    made = ScriptedServer(delay_s=0.15)
    yield made
    made.close()


def served(tmp_path: Path, runs: str, url: str, labels: str | None = None) -> Path:
    """realestate on the test server: evolve as model "evolver", label as "labeller" with its
    own cache file `labels-<labels>` (so the answers label committed can be counted)."""
    cache = (tmp_path / f"labels-{labels or runs}").as_posix()
    backends = (f'[backends.default]\nplugin = "openai"\nbase_url = "{url}"\nmodel = "evolver"\n'
                f'max_retries = 0\n\n[backends.labeller]\nplugin = "openai"\nbase_url = "{url}"\n'
                f'model = "labeller"\nmax_retries = 0\ncache_dir = "{cache}"\n')
    spec = realestate(tmp_path, runs, backends, POOL)
    text = spec.read_text().replace('[labels]\nbackend = "default"', '[labels]\nbackend = "labeller"')
    path = spec.with_name(f"{labels or runs}.toml")
    spec.unlink()
    path.write_text(text)
    return path


def label_answers_cached(tmp_path: Path, runs: str) -> int:
    with sqlite3.connect(tmp_path / f"labels-{runs}" / CACHE_FILE) as db:
        return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])


def test_a_killed_actor_and_a_killed_driver_regenerate_nothing_finished(cluster, server, tmp_path):
    stages = ["evolve", "label"]
    local = dialengine("apply", str(served(tmp_path, "local", server.url)), "--until", "label",
                       plugins=SERVED_PLUGINS)
    assert local.returncode == 0, local.stderr
    want = hashes(tmp_path / "local" / "realestate", stages)
    labels = sum(server.sent("labeller").values())  # distinct label requests, each sent once
    assert labels > 12 and max(server.sent("labeller").values()) == 1

    # 1. the actor with the 7th label request in flight dies; Ray restarts it, the chunk is retried
    killed: list[int] = []

    def kill_actor(model: str, n: int, port: int) -> None:
        if model == "labeller" and n == 7 + labels:
            pid = pid_on_port(port)
            assert pid is not None and pid != os.getpid()
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    server.on_request = kill_actor
    before = server.sent("labeller")
    spec = served(tmp_path, "ray1", server.url)
    result = dialengine("apply", str(spec), "--until", "label", "--executor", "ray", "--address", cluster,
                        plugins=SERVED_PLUGINS)
    assert result.returncode == 0, result.stderr
    assert len(killed) == 1
    run = tmp_path / "ray1" / "realestate"
    assert hashes(run, stages) == want
    again = server.sent("labeller") - before
    assert set(again) == set(before) and sum(again.values()) > labels  # the killed chunk went twice ...
    assert sum(again.values()) <= labels + 2  # ... and nothing else (in_flight = 2)
    assert manifest(run, "label")["stats"]["backend"]["labeller"]["actors"] == 2

    # 2. the driver dies at the 11th label request: the rerun sends only what was not committed.
    # Same run folder, a new label cache: label's fingerprint changes, so only label runs again
    spec = served(tmp_path, "ray1", server.url, labels="ray2")
    args = [sys.executable, "-m", "dialinsight_engine", "apply", str(spec), "--until", "label",
            "--executor", "ray", "--address", cluster]
    start = sum(server.sent("labeller").values())
    driver: list[subprocess.Popen[str]] = []

    def kill_driver(model: str, n: int, port: int) -> None:
        if model == "labeller" and n == start + 11:
            server.blackout = True  # what is in flight now never reaches the cache
            driver[0].send_signal(signal.SIGKILL)

    server.on_request = kill_driver
    driver.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "NO_COLOR": "1", "DIALENGINE_PLUGINS": SERVED_PLUGINS}))
    _, err = driver[0].communicate(timeout=300)
    assert driver[0].returncode == -signal.SIGKILL, err
    time.sleep(3)  # Ray ends the dead driver's actors
    server.blackout = False
    server.on_request = lambda model, n, port: None
    committed = label_answers_cached(tmp_path, "ray2")
    assert 0 < committed < labels
    before = server.sent("labeller")
    rerun = dialengine("apply", str(spec), "--until", "label", "--executor", "ray", "--address", cluster,
                       plugins=SERVED_PLUGINS)
    assert rerun.returncode == 0, rerun.stderr
    assert hashes(run, stages) == want
    used = manifest(run, "label")["stats"]["backend"]["labeller"]
    assert used["cache_hits"] == committed  # every answer committed before the kill
    assert sum((server.sent("labeller") - before).values()) == labels - committed  # and only the rest sent
    assert label_answers_cached(tmp_path, "ray2") == labels


def test_pool_size_fills_the_cluster_and_refuses_what_it_cannot_hold():
    cpus = {"CPU": 8.0}
    assert pool_size(GenerationPoolSpec.model_validate({}), cpus) == 7  # one CPU left for partition tasks
    assert pool_size(GenerationPoolSpec.model_validate({"num_cpus": 4.0}), cpus) == 1
    assert pool_size(GenerationPoolSpec.model_validate({"actors": 3}), cpus) == 3
    assert pool_size(GenerationPoolSpec.model_validate({"num_gpus": 1.0}), {"CPU": 8.0, "GPU": 4.0}) == 4
    with pytest.raises(UserError, match=r"\[executor.generation.num_gpus\] a generation actor needs 1 GPUs "
                                        r"but the Ray cluster has 0"):
        pool_size(GenerationPoolSpec.model_validate({"num_gpus": 1.0}), cpus, "spec.toml")
