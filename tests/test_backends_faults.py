"""Generation faults against real HTTP servers on 127.0.0.1 (issue 13): a kill or Ctrl-C in
`label` loses only the requests in flight, `Retry-After` is honoured, a stage whose requests
mostly fail exits 1, an invalid output schema stops the run before anything is sent, and an
API key or URL password never reaches data, logs, manifests or error messages."""

from __future__ import annotations

import email.utils
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from dialinsight_engine.backends.base import GenerationRequest, GenerationResult
from dialinsight_engine.backends.client import GenerationClient, check_failure_share
from dialinsight_engine.backends.openai import OpenAIBackend, OpenAIConfig, retry_after_seconds
from dialinsight_engine.backends.redact import redact, redact_url
from dialinsight_engine.backends.schema_check import schema_problem
from dialinsight_engine.errors import StageFailed, UserError
from dialinsight_engine.run.dataset import has_output, read_output

from servers import ChatServer, Reply, completion

# a test's reply(prompt, hit, headers): hit is this prompt's 1-based attempt number
Replier = Callable[[str, int, dict[str, str]], Reply]


@pytest.fixture
def serve() -> Iterator[Callable[[Replier], ChatServer]]:
    servers: list[ChatServer] = []

    def start(reply: Replier) -> ChatServer:
        servers.append(ChatServer(lambda request: reply(request.prompt, request.hit, request.headers)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ok(prompt: str, hit: int, headers: dict[str, str]) -> Reply:
    return 200, {}, completion(f"echo: {prompt[:30]}")


def _client(url: str, tmp_path: Path, **overrides: Any) -> GenerationClient:
    config = OpenAIConfig(**{"base_url": url, "model": "m", "timeout_s": 5, "max_retries": 2, "backoff_s": 0.01,
                             "backoff_max_s": 0.02, **overrides})
    return GenerationClient(OpenAIBackend(config), name="t", cache_dir=tmp_path / "cache")


# -- the pipeline through the CLI ----------------------------------------------------------------
LABEL_SPEC = """
[evolution]
rounds = 0

[sampling]
n = 6

[labels]
backend = "srv"
max_tokens = 16
{labels}

[backends.srv]
plugin = "openai"
base_url = "{url}"
timeout_s = 60
max_retries = 1
backoff_s = 0.01
backoff_max_s = 0.02
{backend}
"""


def _spec(write_spec, url: str, labels: str = "", backend: str = "", extra: str = "") -> Path:  # type: ignore[no-untyped-def]
    return write_spec(LABEL_SPEC.format(url=url, labels=labels, backend=backend) + extra)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "DIALENGINE_PLUGINS": "core,generation,quality", **extra}
    return env


def _apply(spec: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dialinsight_engine", "apply", str(spec), "--until", "label"],
                          capture_output=True, text=True, env=_env(**env), timeout=300)


def _cached_rows(cache: Path) -> int:
    if not cache.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_a_killed_label_stage_keeps_every_finished_answer(how: str, serve, write_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The first three prompts are answered, the rest hang; the process is killed (or
    interrupted) once the three are in; the rerun sends only the ones that were in flight."""
    release = threading.Event()
    answered: list[str] = []
    lock = threading.Lock()

    def reply(prompt: str, hit: int, headers: dict[str, str]) -> Reply:
        with lock:
            first_three = prompt in answered or len(answered) < 3
            if first_three and prompt not in answered:
                answered.append(prompt)
        if not first_three and not release.is_set():
            release.wait(60)  # in flight until the process is gone
        return ok(prompt, hit, headers)

    server = serve(reply)
    spec = _spec(write_spec, server.url)
    cache = tmp_path / "runs" / "t" / "cache" / "generations.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "dialinsight_engine", "apply", str(spec), "--until", "label"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 240
        while _cached_rows(cache) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _cached_rows(cache) == 3, "the three finished answers were not committed while others ran"
        in_flight = sum(server.hits.values()) - 3
        assert in_flight >= 1
        proc.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        release.set()
    assert proc.returncode == (-9 if how == "SIGKILL" else 130), err
    first_hits = dict(server.hits)

    rerun = _apply(spec)
    assert rerun.returncode == 0, rerun.stderr
    labels = read_output(tmp_path / "runs" / "t" / "label")
    assert labels.height == 6 and labels["kept"].all()
    # the finished three were not sent again; the ones in flight were sent once more
    assert {p: server.hits[p] for p in answered} == {p: 1 for p in answered}
    assert all(server.hits[p] == 2 for p in first_hits if p not in answered)
    # cache hits are in label/timings.parquet (by row), beside the data whose bytes must not move
    timings = pl.read_parquet(tmp_path / "runs" / "t" / "label" / "timings.parquet")
    assert [labels["prompt"][i] for i in timings.filter(pl.col("cached"))["row"].to_list()] == \
        [p for p in labels["prompt"].to_list() if p in answered]


def test_when_most_label_requests_fail_the_stage_exits_1_with_reasons(serve, write_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = serve(lambda prompt, hit, headers: (500, {}, b'{"error": "model server overloaded"}'))
    result = _apply(_spec(write_spec, server.url))
    assert result.returncode == 1, result.stderr
    assert "6 of 6 generation requests failed" in result.stderr and "max_failure_share = 0.25" in result.stderr
    assert "HTTP 500" in result.stderr and "model server overloaded" in result.stderr
    assert not has_output(tmp_path / "runs" / "t" / "label")
    # the user may accept failures: rows are then kept with their reason
    accepted = _apply(_spec(write_spec, server.url, labels="max_failure_share = 1.0"))
    assert accepted.returncode == 0, accepted.stderr
    labels = read_output(tmp_path / "runs" / "t" / "label")
    assert labels.height == 6 and not labels["kept"].any()


def test_failure_share_boundaries() -> None:
    good, bad = GenerationResult("x"), GenerationResult(None, error="HTTP 500: down")
    check_failure_share([good] * 3 + [bad], 0.25, "label")  # exactly the share: fine
    check_failure_share([], 0.0, "label")
    with pytest.raises(StageFailed, match=r"2 of 4 generation requests failed.*HTTP 500: down \(x2\)"):
        check_failure_share([good, good, bad, bad], 0.25, "label")
    with pytest.raises(StageFailed, match="1 of 10"):
        check_failure_share([good] * 9 + [bad], 0.0, "label")


INVALID_SCHEMAS = {
    "unknown type": {"type": "strnig"},
    "empty enum": {"type": "object", "properties": {"city": {"enum": []}}},
    "bad required": {"type": "object", "required": "city"},
    "not an object": ["type", "string"],
}


@pytest.mark.parametrize("case", sorted(INVALID_SCHEMAS))
def test_an_invalid_schema_is_refused_before_any_request(case: str, serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    schema = INVALID_SCHEMAS[case]
    assert schema_problem(schema) is not None
    server = serve(ok)
    client = _client(server.url, tmp_path)
    requests = [GenerationRequest("fine", json_schema={"type": "object"}), GenerationRequest("x", json_schema=schema)]
    with pytest.raises(UserError, match="output schema"):
        client.generate(requests)
    assert sum(server.hits.values()) == 0


def test_valid_schemas_pass_the_check() -> None:
    assert schema_problem({"type": "object", "properties": {"a": {"type": ["string", "null"], "enum": ["x", None]}},
                           "required": ["a"]}) is None
    assert schema_problem({"$schema": "http://json-schema.org/draft-07/schema#", "type": "integer"}) is None
    assert schema_problem(True) is None


def test_label_stage_refuses_an_invalid_task_schema_before_sending(serve, write_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = serve(ok)
    extra = """
[[tasks]]
name = "book_visit"
weight = 1000.0
template = "Did the customer book a visit? Answer as JSON.\\n{{ dialogue }}"
output_schema = { type = "object", properties = { booked = { type = "bool" } } }
"""
    result = _apply(_spec(write_spec, server.url, extra=extra))
    assert result.returncode == 2, result.stderr
    assert "output_schema" in result.stderr and "Traceback" not in result.stderr
    assert sum(server.hits.values()) == 0


# -- Retry-After ----------------------------------------------------------------------------------
def _gap_after_429(serve, tmp_path: Path, retry_after: Callable[[], str], **config: Any) -> float:  # type: ignore[no-untyped-def]
    def reply(prompt: str, hit: int, headers: dict[str, str]) -> Reply:
        if hit == 1:
            return 429, {"Retry-After": retry_after()}, b'{"error": "slow down"}'
        return ok(prompt, hit, headers)

    server = serve(reply)
    [result] = _client(server.url, tmp_path, **config).generate([GenerationRequest("hello")])
    assert result.ok and result.attempts == 2, result.error
    (_, first), (_, second) = server.arrivals
    return second - first


def test_retry_after_seconds_is_honoured(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # the backoff alone would retry after ~0.01 s
    assert _gap_after_429(serve, tmp_path, lambda: "2") >= 1.9


def test_retry_after_http_date_is_honoured(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def two_seconds_ahead() -> str:  # whole seconds, rounded up: at least 2 s from now
        return email.utils.formatdate(math.ceil(time.time()) + 2, usegmt=True)

    assert _gap_after_429(serve, tmp_path, two_seconds_ahead) >= 1.9


def test_retry_after_is_capped(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # an hour asked for, 0.2 s allowed: the retry comes (the test would otherwise hang)
    assert _gap_after_429(serve, tmp_path, lambda: "3600", retry_after_max_s=0.2) < 30


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    date = email.utils.format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert retry_after_seconds("5", 60) == 5.0
    assert retry_after_seconds(" 1.5 ", 60) == 1.5
    assert retry_after_seconds("3600", 60) == 60
    assert retry_after_seconds(date, 60, now=now) == 7.0
    assert retry_after_seconds(email.utils.format_datetime(now - timedelta(seconds=9), usegmt=True), 60, now=now) == 0
    for junk in (None, "", "soon", "nan", "inf", "-inf"):
        assert retry_after_seconds(junk, 60) in (None, 0.0, 60.0)
    assert retry_after_seconds("nan", 60) is None and retry_after_seconds("soon", 60) is None


# -- secrets --------------------------------------------------------------------------------------
API_KEY = "sk-live-4f9c2e7a1b3d5f60"
PASSWORD = "pw-s3cret-9b1e"


def echo_headers(prompt: str, hit: int, headers: dict[str, str]) -> Reply:
    """A server that echoes the credentials it got, in the header's shape and bare."""
    auth = headers.get("Authorization", "")
    bare = auth.split(" ", 1)[-1]
    body = {"error": f"invalid credentials: {bare} was rejected", "request_headers": headers}
    return 401, {}, json.dumps(body).encode()


def _everything_written(run_dir: Path) -> str:
    """Every file of the run as text: Parquet files decoded (they are compressed), others raw."""
    parts = []
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            parts.append(pl.read_parquet(path).write_json())
        else:
            parts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


def test_an_echoed_api_key_is_never_recorded(serve, write_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = serve(echo_headers)
    spec = _spec(write_spec, server.url, labels="max_failure_share = 1.0", backend='api_key_env = "DIALENGINE_KEY"')
    result = _apply(spec, DIALENGINE_KEY=API_KEY)
    assert result.returncode == 0, result.stderr
    labels = read_output(tmp_path / "runs" / "t" / "label")
    assert labels["label_error"].str.contains("HTTP 401").all()
    assert labels["label_error"].str.contains("***", literal=True).all()  # the key was there, masked
    written = _everything_written(tmp_path / "runs" / "t")
    assert "label_failed:HTTP 401" in written
    assert API_KEY not in written and API_KEY[3:] not in written
    assert (tmp_path / "runs" / "t" / "run.log").exists()
    # the stage failure message (default threshold) quotes the reasons: masked too
    failing = _apply(_spec(write_spec, server.url, backend='api_key_env = "DIALENGINE_KEY"'), DIALENGINE_KEY=API_KEY)
    assert failing.returncode == 1 and "HTTP 401" in failing.stderr
    assert API_KEY not in failing.stderr + failing.stdout


def test_credentials_in_base_url_are_masked_everywhere(serve, write_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = serve(echo_headers)
    url = f"http://alice:{PASSWORD}@127.0.0.1:{server.port}/v1"
    result = _apply(_spec(write_spec, url, labels="max_failure_share = 1.0"))
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "t"
    labels = read_output(run_dir / "label")
    assert set(labels["label_model"]) == {f"http://***@127.0.0.1:{server.port}/v1|default"}
    manifest = json.loads((run_dir / "label" / "manifest.json").read_text())
    assert manifest["extra"]["backend"]["base_url"] == f"http://***@127.0.0.1:{server.port}/v1"
    written = _everything_written(run_dir)
    import base64

    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert PASSWORD not in written and basic not in written
    assert PASSWORD not in result.stderr + result.stdout


def test_redaction_rules() -> None:
    from dialinsight_engine.backends.redact import register_secret

    register_secret("tok-7d1c9e2f")
    text = redact('{"authorization": "Bearer abcdef123456", "k": "tok-7d1c9e2f", "u": "https://bob:hunter22@x.io/v1"}')
    assert text == '{"authorization": "Bearer ***", "k": "***", "u": "https://***@x.io/v1"}'
    assert redact("basic amenities near the station") == "basic amenities near the station"
    assert redact_url("http://u:p@h:1/v1") == "http://***@h:1/v1" and redact_url("http://h/v1") == "http://h/v1"


def test_an_interrupt_inside_a_batch_keeps_the_answers_already_handed_back(tmp_path: Path) -> None:
    """A backend that answers one by one (as llama.cpp does) and is interrupted after two: the
    two are cached, and the rerun asks only for the rest."""
    from dialinsight_engine.backends.base import Backend

    class OneByOne(Backend):
        name = "one_by_one"

        def __init__(self, stop_after: int | None) -> None:
            super().__init__(OpenAIConfig.model_construct())
            self.stop_after = stop_after
            self.asked: list[str] = []

        def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
            raise AssertionError("the client hands results back one by one")

        def generate_each(self, requests: list[GenerationRequest],
                          on_result: Callable[[int, GenerationResult], None]) -> None:
            for index, req in enumerate(requests):
                if self.stop_after is not None and len(self.asked) == self.stop_after:
                    raise KeyboardInterrupt
                self.asked.append(req.prompt)
                on_result(index, GenerationResult(f"answer to {req.prompt}"))

    requests = [GenerationRequest(f"p{i}") for i in range(5)]
    first = OneByOne(stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        GenerationClient(first, name="t", cache_dir=tmp_path).generate(requests)
    second = OneByOne(stop_after=None)
    client = GenerationClient(second, name="t", cache_dir=tmp_path)
    results = client.generate(requests)
    assert first.asked == ["p0", "p1"] and second.asked == ["p2", "p3", "p4"]
    assert [r.text for r in results] == [f"answer to p{i}" for i in range(5)]
    assert [r.cached for r in results] == [True, True, False, False, False]
