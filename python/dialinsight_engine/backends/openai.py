"""OpenAI-compatible HTTP backend: `vllm serve`, llama.cpp's server, hosted APIs.

Async httpx with a concurrency limit, timeouts, and retries with exponential backoff
(tenacity) on connection errors, timeouts, 429/5xx and unreadable bodies; a `Retry-After`
header (seconds or an HTTP date, capped by `retry_after_max_s`) sets the wait instead when it
asks for longer. The API key comes from the environment variable named by `api_key_env`, never
from the spec; it and any user:password in `base_url` are registered with `redact`, so error
bodies that echo them are masked.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from pydantic import Field
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ..errors import UserError
from .base import Backend, BackendConfig, GenerationRequest, GenerationResult
from .redact import redact, redact_url, register_secret, register_url_credentials


class OpenAIConfig(BackendConfig):
    base_url: str = Field(description="Server root including /v1, e.g. http://127.0.0.1:8000/v1")
    model: str = Field("default", description="Model name the server serves")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once")
    timeout_s: float = Field(120.0, gt=0, description="Seconds before one request is abandoned (then retried)")
    max_retries: int = Field(4, ge=0, description="HTTP retries per request (errors, timeouts, 429/5xx)")
    backoff_s: float = Field(0.5, ge=0, description="First backoff; doubles with jitter")
    backoff_max_s: float = Field(8.0, ge=0)
    retry_after_max_s: float = Field(
        60.0, ge=0, description="Longest wait a server's Retry-After header (429/503) may ask for"
    )
    schema_format: Literal["json_schema", "json_object", "none"] = Field(
        "json_schema",
        description="How a JSON schema is sent: OpenAI/vLLM json_schema, llama.cpp-server json_object, or not at all",
    )
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Extra fields merged into every request body")


class _Retriable(Exception):
    """A failure another attempt may fix (`retry_after`: seconds the server asked us to wait)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, cap: float, now: datetime | None = None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date), at most `cap`;
    None when absent or unreadable."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), cap)


class _BackoffOrRetryAfter:
    """Tenacity wait: exponential backoff with jitter, or the server's Retry-After if longer."""

    def __init__(self, cfg: OpenAIConfig) -> None:
        self.backoff = wait_exponential_jitter(multiplier=cfg.backoff_s, max=cfg.backoff_max_s,
                                               jitter=cfg.backoff_s)

    def __call__(self, state: RetryCallState) -> float:
        wait = self.backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retriable) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        return wait


class OpenAIBackend(Backend):
    name = "openai"
    Config = OpenAIConfig
    description = "any OpenAI-compatible chat-completions server (vLLM, llama.cpp server, hosted APIs)"

    def __init__(self, config: OpenAIConfig) -> None:  # type: ignore[override]
        super().__init__(config)
        self.config: OpenAIConfig = config
        self.api_key: str | None = None
        if config.api_key_env:
            self.api_key = os.environ.get(config.api_key_env)
            if not self.api_key:
                raise UserError(f"environment variable {config.api_key_env} (api_key_env) is not set",
                                key="api_key_env")
        register_secret(self.api_key)
        register_url_credentials(config.base_url)

    @property
    def model_id(self) -> str:
        # cache keys, the label_model column and manifests carry it: never the URL's password
        return f"{redact_url(self.config.base_url.rstrip('/'))}|{self.config.model}"

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results: list[GenerationResult] = [GenerationResult(None, error="no answer")] * len(requests)

        def keep(index: int, result: GenerationResult) -> None:
            results[index] = result

        self.generate_each(requests, keep)
        return results

    def generate_each(self, requests: list[GenerationRequest],
                      on_result: Callable[[int, GenerationResult], None]) -> None:
        asyncio.run(self._generate(requests, on_result))

    async def _generate(self, requests: list[GenerationRequest],
                        on_result: Callable[[int, GenerationResult], None]) -> None:
        cfg = self.config
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
        gate = asyncio.Semaphore(cfg.concurrency)
        async with httpx.AsyncClient(base_url=cfg.base_url.rstrip("/"), headers=headers,
                                     timeout=httpx.Timeout(cfg.timeout_s), limits=limits) as http:
            async def answer(index: int, req: GenerationRequest) -> None:
                on_result(index, await self._one(http, gate, req))  # as each one completes

            await asyncio.gather(*(answer(i, r) for i, r in enumerate(requests)))

    def _body(self, req: GenerationRequest) -> dict[str, Any]:
        messages = ([{"role": "system", "content": req.system}] if req.system else []) + [
            {"role": "user", "content": req.prompt}
        ]
        body: dict[str, Any] = {
            "model": self.config.model, "messages": messages, "max_tokens": req.max_tokens,
            "temperature": req.temperature, "seed": req.seed,
        }
        if req.stop:
            body["stop"] = list(req.stop)
        if req.top_logprobs > 0:
            body.update(logprobs=True, top_logprobs=req.top_logprobs)
        if req.json_schema is not None and self.config.schema_format == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": req.json_schema}}
        elif req.json_schema is not None and self.config.schema_format == "json_object":
            body["response_format"] = {"type": "json_object", "schema": req.json_schema}
        body.update(self.config.extra_body)
        return body

    async def _one(self, http: httpx.AsyncClient, gate: asyncio.Semaphore,
                   req: GenerationRequest) -> GenerationResult:
        cfg = self.config
        body = self._body(req)
        attempts = 0
        t0 = time.perf_counter()
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(cfg.max_retries + 1),
                wait=_BackoffOrRetryAfter(cfg),
                retry=retry_if_exception_type(_Retriable),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    async with gate:
                        t0 = time.perf_counter()
                        result = await self._post(http, body)
                    result.latency_s = time.perf_counter() - t0
                    result.attempts = attempts
                    return result
        except _Retriable as exc:
            return GenerationResult(None, finish_reason="error", attempts=attempts,
                                    error=f"gave up after {attempts} attempts: {exc}",
                                    latency_s=time.perf_counter() - t0)
        except _Fatal as exc:
            return GenerationResult(None, finish_reason="error", attempts=attempts, error=str(exc),
                                    latency_s=time.perf_counter() - t0)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, http: httpx.AsyncClient, body: dict[str, Any]) -> GenerationResult:
        try:
            resp = await http.post("/chat/completions", json=body)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise _Retriable(redact(f"{type(exc).__name__}: {exc}") or "") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            wait = retry_after_seconds(resp.headers.get("retry-after"), self.config.retry_after_max_s)
            raise _Retriable(f"HTTP {resp.status_code}: {_body_text(resp, 200)}", retry_after=wait)
        if resp.status_code >= 400:
            raise _Fatal(f"HTTP {resp.status_code}: {_body_text(resp, 500)}")
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _Retriable(f"unreadable response ({type(exc).__name__}): {_body_text(resp, 200)!r}") from exc
        usage = data.get("usage") or {}
        return GenerationResult(
            text=text if text is not None else "",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason"),
            logprobs=_logprobs(choice.get("logprobs")),
        )


class _Fatal(Exception):
    """A failure no retry fixes (400, 401, 404...)."""


def _body_text(resp: httpx.Response, limit: int) -> str:
    # redact before cutting: a secret cut in half would no longer match
    return (redact(resp.text) or "")[:limit]


def _logprobs(block: dict[str, Any] | None) -> list[dict[str, float]] | None:
    if not block or not block.get("content"):
        return None
    return [{t["token"]: float(t["logprob"]) for t in item.get("top_logprobs") or []} for item in block["content"]]
