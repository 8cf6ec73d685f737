"""The generation backend interface: llama.cpp, OpenAI-compatible HTTP, vLLM, and plugins.

A backend turns a batch of requests into results. Batching across calls, deduplication by
prompt hash, the on-disk cache, retries and schema validation live in `backends.client`, so
a backend plugin only has to talk to its engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str  # user message (chat backends wrap it; `system` is optional)
    system: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    json_schema: dict[str, Any] | None = None  # constrain the output to this schema
    seed: int = 0
    top_logprobs: int = 0  # ask for the top-k log-probabilities of each output token
    stop: tuple[str, ...] = ()


@dataclass
class GenerationResult:
    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None  # "stop", "length", "error"...
    latency_s: float = 0.0
    error: str | None = None  # set when the request failed after all retries
    attempts: int = 1
    cached: bool = False
    # per output token: {token: logprob} of the top `top_logprobs` candidates
    logprobs: list[dict[str, float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


class BackendConfig(BaseModel):
    """Base of every backend's `Config` (the keys of its `[backends.NAME]` table)."""

    model_config = ConfigDict(extra="forbid")


class Backend(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[BackendConfig]] = BackendConfig
    description: ClassVar[str] = ""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    @property
    def model_id(self) -> str:
        """Identifies the model in cache keys (path + size, or served model name)."""
        return self.name

    @abstractmethod
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One result per request, same order. Raise only for errors no retry can fix."""

    def generate_each(self, requests: list[GenerationRequest],
                      on_result: Callable[[int, GenerationResult], None]) -> None:
        """Hand each request's result to ``on_result(index, result)`` as soon as it is ready,
        so the client caches it before the others finish (an interrupt then loses only the
        requests in flight). This default waits for the whole batch; backends that finish
        requests one by one override it."""
        for index, result in enumerate(self.generate(requests)):
            on_result(index, result)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model or connections."""
