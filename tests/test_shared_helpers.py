"""The helpers every module shares (one of each): the JSON-answer parser, "did you mean",
atomic writes for writers that write files themselves; the plugin-name collision warning;
and the generation client's per-request progress on the scripted backend."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dialinsight_engine.backends.base import GenerationRequest
from dialinsight_engine.backends.client import GenerationClient, request_key
from dialinsight_engine.errors import did_you_mean
from dialinsight_engine.hookspecs import hookimpl
from dialinsight_engine.jsonanswer import first_json_object, json_answer_or_error, parse_json_answer
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.progress import Heartbeat
from dialinsight_engine.run import atomic

import fake_backend


def test_json_answers_with_and_without_a_fence() -> None:
    assert parse_json_answer('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_answer(' [1, 2] ') == [1, 2]
    with pytest.raises(json.JSONDecodeError):
        parse_json_answer('{"a": 1')
    assert json_answer_or_error("  ```\n{\"b\": true}\n```  ") == ({"b": True}, None)
    assert json_answer_or_error(None) == (None, "empty") == json_answer_or_error("  \n")
    assert json_answer_or_error('{"a": ') == (None, "Expecting value at char 5")
    assert first_json_object('Sure! {broken {"x": [1]} and {"y": 2}') == {"x": [1]}
    assert first_json_object("[1, 2] no object") is None


def test_did_you_mean_names_the_closest_or_nothing() -> None:
    assert did_you_mean("lenght", ["length", "label", "turns"]) == "did you mean 'length'?"
    assert did_you_mean("zzz", ["length", "label"]) is None
    assert did_you_mean("contians", ("eq", "contains"), cutoff=0.75) == "did you mean 'contains'?"


def test_atomic_path_replaces_only_a_complete_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "model.bin"
    with atomic.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".tmp-model.bin-")
        tmp.write_bytes(b"v1")
        assert not target.exists()  # nothing at the target until the block ends
    assert target.read_bytes() == b"v1"
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"v1" and sorted(p.name for p in target.parent.iterdir()) == ["model.bin"]
    assert atomic.write_with(target, lambda p: p.write_bytes(b"v2")) == target and target.read_bytes() == b"v2"


def _metric_plugin(plugin_name: str):  # type: ignore[no-untyped-def]
    class Metric:
        name = "twin"

    return type(plugin_name, (), {"__name__": plugin_name,
                                  "register_metrics": staticmethod(hookimpl(lambda: [Metric]))}), Metric


def test_a_name_registered_twice_warns_and_names_both_plugins(caplog: pytest.LogCaptureFixture) -> None:
    first, _ = _metric_plugin("first_plugin")
    second, winner = _metric_plugin("second_plugin")
    with caplog.at_level(logging.WARNING, logger="dialinsight_engine.plugins"):
        registry = build_registry([first, second])
    assert registry.get("metric", "twin") is winner
    [message] = [r.getMessage() for r in caplog.records if "twin" in r.getMessage()]
    assert "'second_plugin' registers metric 'twin'" in message and "'first_plugin' already provides" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dialinsight_engine.plugins"):
        build_registry([first])
    assert not [r for r in caplog.records if "twin" in r.getMessage()]


def test_client_progress_advances_per_request_with_tokens(tmp_path: Path) -> None:
    backend = fake_backend.ScriptedBackend(fake_backend.ScriptedConfig())
    client = GenerationClient(backend, name="s", cache_dir=tmp_path, batch_size=4)
    prompts = [f"Task: describe flat {i}" for i in range(9)] + ["Task: describe flat 0"]  # one asked twice
    requests = [GenerationRequest(prompt=p, max_tokens=32, seed=1) for p in prompts]
    calls: list[tuple[int, int]] = []
    results = client.generate(requests, progress=lambda n, tokens=0: calls.append((n, tokens)))
    assert len(calls) == 9  # one call per distinct request, not one per batch of 4
    assert sum(n for n, _ in calls) == 10 and (2, results[0].completion_tokens) in calls
    assert sum(t for _, t in calls) == sum(r.completion_tokens for r in results[:9]) > 0
    again: list[tuple[int, int]] = []
    client.generate(requests, progress=lambda n, tokens=0: again.append((n, tokens)))
    assert again == [(10, 0)]  # all from the cache at once, no tokens generated
    client.close()


def test_cache_keys_are_the_ones_earlier_versions_wrote() -> None:
    """Keys must not move (a changed key would make every cached answer unreachable): the same
    sha256 as the original `json.dumps(dataclasses.asdict(...))` formula."""
    import dataclasses
    import hashlib

    schema = {"type": "object", "properties": {"beds": {"type": "integer", "enum": [1, 2]}}, "required": ["beds"]}
    requests = [GenerationRequest("hello"),
                GenerationRequest("Give JSON.", system="Be brief.", max_tokens=8, temperature=0.7,
                                  json_schema=schema, seed=5, top_logprobs=3, stop=("\n", "END"))]
    for req in requests:
        payload = {"backend": "b", "model": "m", "request": dataclasses.asdict(req)}
        old = hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode("utf-8")).hexdigest()
        assert request_key("b", "m", req) == old


def test_heartbeat_shows_tokens_per_second() -> None:
    beat = Heartbeat("labelling", 10, log=logging.getLogger("t"))
    assert "tok/s" not in beat.line(now=beat.started + 5) and beat.token_rate() == ""
    beat.advance(2, tokens=120)
    assert beat.line(now=beat.started + 4) == (
        "labelling: 2/10 (20%), 0.50/s, 30.0 tok/s, elapsed 0:00:04, ETA 0:00:16")
