"""The OpenAI-compatible backend against real HTTP servers on 127.0.0.1: a fault-injecting
stdlib server (500s, hangs, broken bodies, schema-breaking answers) and llama.cpp's own
OpenAI-compatible server on the embedded model."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest

from dialinsight_engine.backends.base import GenerationRequest
from dialinsight_engine.backends.client import GenerationClient
from dialinsight_engine.backends.openai import OpenAIBackend, OpenAIConfig
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.run import Runner
from dialinsight_engine.run.dataset import read_output
from dialinsight_engine.spec import load_spec

from servers import ChatServer, Reply, Request, completion

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


class FaultServer(ChatServer):
    """Each prompt's first attempts follow a script; then it answers properly.

    Prompts containing a script word use it (e.g. "[500,500]" fails twice); other prompts fail
    once with 500, a hang or a broken body, picked by the prompt's hash."""

    def __init__(self, hang_s: float = 1.5, always: str | None = None) -> None:
        self.hang_s = hang_s
        self.always = always
        super().__init__(self._reply)

    @property
    def calls(self) -> Counter[str]:
        return self.hits

    def _reply(self, request: Request) -> Reply:
        if request.path != "/v1/chat/completions":
            return 404, {}, b'{"error": "no such route"}'
        action = self.action(request.prompt, request.hit)
        if action == "hang":
            time.sleep(self.hang_s)  # the client gives up and retries on a new connection
            action = "ok"
        if action == "500":
            return 500, {}, b'{"error": "injected"}'
        if action == "broken":
            return 200, {}, b'{"choices": [{"message": '
        if action == "bad_schema":
            return 200, {}, completion('{"wrong": 1}', 7, 3)
        text = json.dumps({"answer": request.prompt[:40]}) if request.wants_json else f"echo: {request.prompt[:40]}"
        return 200, {}, completion(text, 7, 3)

    def action(self, prompt: str, n: int) -> str:
        if self.always:
            return self.always
        if prompt.startswith("["):
            script = json.loads(prompt[: prompt.index("]") + 1])
            return str(script[n - 1]) if n <= len(script) else "ok"
        if n == 1:
            return ["500", "hang", "broken"][int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 3]
        return "ok"


@pytest.fixture
def faults() -> Iterator[FaultServer]:
    server = FaultServer()
    yield server
    server.close()


def _client(url: str, tmp_path: Path, **overrides: object) -> GenerationClient:
    config = OpenAIConfig(base_url=url, model="m", timeout_s=0.5, max_retries=3, backoff_s=0.01,
                          backoff_max_s=0.05, concurrency=4, **overrides)
    return GenerationClient(OpenAIBackend(config), name="faulty", cache_dir=tmp_path / "cache", max_attempts=3)


def test_retries_500_hang_and_broken_bodies_lose_nothing(faults: FaultServer, tmp_path: Path) -> None:
    prompts = ['["500", "500"] a', '["hang"] b', '["broken", "500"] c', '["ok"] d', '["bad_schema"] e']
    requests = [GenerationRequest(p, json_schema=SCHEMA) for p in prompts]
    client = _client(faults.url, tmp_path)
    results = client.generate(requests)
    assert len(results) == len(requests)
    assert all(r.ok for r in results), [r.error for r in results]
    assert [json.loads(r.text or "")["answer"] for r in results] == [p[:40] for p in prompts]
    attempts = {p: r.attempts for p, r in zip(prompts, results, strict=True)}
    assert attempts == {prompts[0]: 3, prompts[1]: 2, prompts[2]: 3, prompts[3]: 1, prompts[4]: 2}
    # 2 + 1 + 2 transport retries, 1 schema retry by the client
    assert client.stats["retries"] == 6
    assert client.stats["failures"] == 0
    # the rerun is served from the cache: the server sees nothing new
    before = sum(faults.calls.values())
    again = _client(faults.url, tmp_path).generate(requests)
    assert [r.text for r in again] == [r.text for r in results] and all(r.cached for r in again)
    assert sum(faults.calls.values()) == before


def test_a_request_that_never_succeeds_is_kept_as_a_failure(tmp_path: Path) -> None:
    server = FaultServer(always="500")
    try:
        client = _client(server.url, tmp_path)
        results = client.generate([GenerationRequest("x"), GenerationRequest("y")])
    finally:
        server.close()
    assert [r.ok for r in results] == [False, False]
    assert all("HTTP 500" in (r.error or "") and r.attempts == 4 for r in results)
    assert client.stats["failures"] == 2 and client.stats["retries"] == 6
    # failures are not cached: a rerun asks again
    assert client.cache is not None and client.cache.get_many(["anything"]) == {}


def test_client_errors_are_not_retried(tmp_path: Path) -> None:
    server = FaultServer(always="ok")
    try:
        backend = OpenAIBackend(OpenAIConfig(base_url=server.url + "/nope", max_retries=3, backoff_s=0.01))
        [result] = backend.generate([GenerationRequest("x")])
    finally:
        server.close()
    assert result.error is not None and result.error.startswith("HTTP 404") and result.attempts == 1


def test_api_key_comes_from_the_named_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from dialinsight_engine.errors import UserError

    with pytest.raises(UserError, match="DIALENGINE_TEST_KEY"):
        OpenAIBackend(OpenAIConfig(base_url="http://127.0.0.1:9/v1", api_key_env="DIALENGINE_TEST_KEY"))
    monkeypatch.setenv("DIALENGINE_TEST_KEY", "sk-test")
    backend = OpenAIBackend(OpenAIConfig(base_url="http://127.0.0.1:9/v1", api_key_env="DIALENGINE_TEST_KEY"))
    assert backend.api_key == "sk-test"


LABEL_SPEC = """
[evolution]
rounds = 0

[sampling]
n = 6

[labels]
backend = "faulty"
max_tokens = 16

[backends.faulty]
plugin = "openai"
base_url = "{url}"
timeout_s = 0.5
max_retries = 3
backoff_s = 0.01
backoff_max_s = 0.05
"""


def _label_run(write_spec, url: str, labels: str = "") -> tuple[pl.DataFrame, dict]:  # type: ignore[no-untyped-def]
    registry = build_registry()
    text = LABEL_SPEC.format(url=url).replace("max_tokens = 16\n", f"max_tokens = 16\n{labels}\n")
    spec = load_spec(write_spec(text), registry)
    runner = Runner(spec, registry, quiet=True)
    runner.apply(until="label")
    folder = runner.run_dir / "label"
    return read_output(folder), json.loads((folder / "manifest.json").read_text())


def test_label_stage_through_faults_records_retries_in_the_manifest(faults: FaultServer, write_spec) -> None:  # type: ignore[no-untyped-def]
    labels, manifest = _label_run(write_spec, faults.url)
    assert labels.height == 6 and labels["kept"].all()
    assert labels["response"].str.starts_with("echo: ").all()
    assert (labels["attempts"] == 2).all()  # every prompt failed once (500, hang or broken body)
    stats = manifest["stats"]["backend"]["faulty"]
    assert stats["retries"] == 6 and stats["failures"] == 0 and stats["requests"] == 6


def test_label_stage_keeps_failed_rows_with_their_reason(write_spec) -> None:  # type: ignore[no-untyped-def]
    server = FaultServer(always="500")
    try:
        # every request failing stops the stage (test_backends_faults.py), unless accepted
        labels, manifest = _label_run(write_spec, server.url, labels="max_failure_share = 1.0")
    finally:
        server.close()
    assert labels.height == 6 and not labels["kept"].any()
    assert labels["reasons"].list.first().str.starts_with("label_failed:").all()
    assert labels["response"].is_null().all()
    assert manifest["stats"]["backend"]["faulty"]["failures"] == 6
    assert manifest["stats"]["failed"] == 6


# -- llama.cpp's OpenAI-compatible server on the embedded model -----------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server] (the `llm` extra)")
    from dialinsight_engine.backends.llamacpp import embedded_model_path

    port = _free_port()
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    log_file = log.open("w")  # a file, not a pipe: llama.cpp logs enough to fill a pipe and block
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", str(os.cpu_count() or 2)],
        stdout=log_file, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not start in 120 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log_file.close()


@pytest.mark.slow
@pytest.mark.model
def test_openai_backend_against_llama_cpp_server(llama_server: str, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}
    config = OpenAIConfig(base_url=llama_server, model="smollm2", schema_format="json_object", timeout_s=300)
    client = GenerationClient(OpenAIBackend(config), name="server", cache_dir=tmp_path, max_attempts=2)
    results = client.generate([
        GenerationRequest("Say hello to Ann in one short sentence.", max_tokens=16),
        GenerationRequest("The customer wants a flat in Fremont. Which city? Answer as JSON.", max_tokens=24,
                          json_schema=schema),
    ])
    assert all(r.ok for r in results), [r.error for r in results]
    assert results[0].text and results[0].completion_tokens > 0 and results[0].prompt_tokens > 0
    assert isinstance(json.loads(results[1].text or "")["city"], str)
    assert client.stats["failures"] == 0
