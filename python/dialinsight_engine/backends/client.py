"""The client every stage uses to generate: batching, deduplication, an on-disk cache,
schema validation and retries, around one backend plugin.

`open_client(spec, name, ...)` resolves `[backends.NAME]` (name "default" without such a
table means llama.cpp on the embedded GGUF). Answers are cached in SQLite under the run's
cache folder, keyed by backend, model, parameters and prompt, so a rerun costs nothing; each
answer is committed as soon as it arrives, so Ctrl-C or a kill loses only the requests in
flight. Every `json_schema` is checked against its meta-schema before anything is sent.
A request with a JSON schema is validated; an invalid or empty answer is retried (with a new
seed and a non-zero temperature, since a greedy retry repeats itself) and, when every attempt
fails, kept as a failed result with its reason (credentials redacted, see `redact`).
Transport retries belong to the backend.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..errors import PluginError, StageFailed, UserError
from ..jsonanswer import parse_json_answer
from .base import Backend, GenerationRequest, GenerationResult
from .redact import redact
from .schema_check import schema_problem

if TYPE_CHECKING:
    from ..plugins import Registry
    from ..spec import Spec
    from ..spec.generation import BackendSpec

CACHE_FILE = "generations.sqlite"


def backend_spec(spec: Spec, name: str) -> BackendSpec:
    """`[backends.NAME]`, or the embedded llama.cpp model for an undeclared "default"."""
    from ..spec.generation import BackendSpec

    if name in spec.backends:
        return spec.backends[name]
    if name == "default":
        return BackendSpec.model_validate({"plugin": "llamacpp"})
    raise UserError(f"backend {name!r} is not declared", key=f"backends.{name}",
                    file=spec.source, hint=f"declared: {', '.join(sorted(spec.backends)) or 'none'}")


def make_backend(bspec: BackendSpec, registry: Registry, name: str) -> Backend:
    cls: Any = registry.get("backend", bspec.plugin, where=f"backends.{name}.plugin")
    try:
        config = cls.Config.model_validate(bspec.params())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise PluginError(f"invalid backend settings: {problems}", key=f"backends.{name}") from None
    return cls(config)


def open_client(spec: Spec, name: str, registry: Registry, cache_dir: Path,
                log: logging.Logger | None = None) -> GenerationClient:
    bspec = backend_spec(spec, name)
    backend = make_backend(bspec, registry, name)
    if bspec.cache_dir:
        cache_dir = spec.resolve_path(bspec.cache_dir)
    return GenerationClient(
        backend, name=name, cache_dir=cache_dir if bspec.cache else None, batch_size=bspec.batch_size,
        max_attempts=bspec.max_attempts, retry_temperature=bspec.retry_temperature, log=log,
    )


def request_key(backend: str, model_id: str, req: GenerationRequest) -> str:
    """The cache key: a hash of the backend, the model and every field of the request. The
    fields are read as they are (`dataclasses.asdict` deep-copies them first, two thirds of
    the client's own time at 20k requests); the JSON, and so the key, is the same."""
    fields = {f.name: getattr(req, f.name) for f in dataclasses.fields(req)}
    payload = {"backend": backend, "model": model_id, "request": fields}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode("utf-8")).hexdigest()


def check_failure_share(results: list[GenerationResult], max_share: float, what: str) -> None:
    """Raise `StageFailed` (exit 1) when more than `max_share` of `results` failed: a backend
    that fails that often is broken, and its rows would silently vanish downstream."""
    failed = [r for r in results if not r.ok]
    if not results or len(failed) <= max_share * len(results):
        return
    reasons = Counter(redact(r.error) or "no answer" for r in failed)
    first = "; ".join(f"{reason} (x{n})" for reason, n in reasons.most_common(3))
    raise StageFailed(f"{what}: {len(failed)} of {len(results)} generation requests failed, more than "
                      f"max_failure_share = {max_share:g}; first reasons: {first}")


class ResultCache:
    """request key -> GenerationResult, in one SQLite file; each answer its own transaction,
    committed when it arrives (WAL: readers never block, a kill keeps what was committed)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (only a power cut can lose the last commits)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> dict[str, GenerationResult]:
        found: dict[str, GenerationResult] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                rows = self._db.execute(
                    f"SELECT key, value FROM results WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                for key, value in rows:
                    found[key] = GenerationResult(**json.loads(value))
        return found

    def put(self, key: str, result: GenerationResult) -> None:
        self.put_many({key: result})

    def put_many(self, items: dict[str, GenerationResult]) -> None:
        if not items:
            return
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)",
                [(k, json.dumps(dataclasses.asdict(r))) for k, r in items.items()],
            )

    def close(self) -> None:
        self._db.close()


class GenerationClient:
    def __init__(self, backend: Backend, *, name: str, cache_dir: Path | None, batch_size: int = 16,
                 max_attempts: int = 3, retry_temperature: float = 0.7,
                 log: logging.Logger | None = None) -> None:
        self.backend = backend
        self.name = name
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.retry_temperature = retry_temperature
        self.log = log or logging.getLogger("dialinsight_engine.backends")
        self.cache = ResultCache(cache_dir / CACHE_FILE) if cache_dir is not None else None
        self.stats: dict[str, Any] = {"requests": 0, "unique": 0, "cache_hits": 0, "generated": 0,
                                      "retries": 0, "failures": 0, "tokens": 0, "prompt_tokens": 0,
                                      "completion_tokens": 0, "seconds": 0.0}
        self._validators: dict[str, Any] = {}

    @property
    def model_id(self) -> str:
        """The backend's model id, credentials masked (it is stored in data and manifests)."""
        return redact(self.backend.model_id) or ""

    # -- public ------------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest],
                 progress: Callable[..., None] | None = None) -> list[GenerationResult]:
        """One result per request, same order; failures come back with `error` set.
        `progress(n, tokens=k)` is called as each request finishes (not each batch): `n` rows
        (a request asked twice counts twice) and `k` generated tokens (0 for cache hits)."""
        self._check_schemas(requests)
        keys = [request_key(self.backend.name, self.backend.model_id, r) for r in requests]
        unique: dict[str, GenerationRequest] = dict(zip(keys, requests, strict=True))
        self.stats["requests"] += len(requests)
        self.stats["unique"] += len(unique)
        done: dict[str, GenerationResult] = {}
        if self.cache is not None:
            for key, res in self.cache.get_many(list(unique)).items():
                res.cached = True
                done[key] = res
        self.stats["cache_hits"] += len(done)
        per_key_count = Counter(keys)
        if progress and done:
            progress(sum(per_key_count[k] for k in done))

        def finished(key: str, result: GenerationResult) -> None:
            done[key] = result
            if self.cache is not None and result.ok:
                self.cache.put(key, result)  # now, not at the end of the batch
            if progress:
                progress(per_key_count[key], tokens=result.completion_tokens)

        todo = [(k, r) for k, r in unique.items() if k not in done]
        for i in range(0, len(todo), self.batch_size):
            self._run_chunk(todo[i:i + self.batch_size], finished)
        return [dataclasses.replace(done[k]) for k in keys]

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        self.backend.close()

    # -- internals ---------------------------------------------------------------------------
    def _check_schemas(self, requests: list[GenerationRequest]) -> None:
        """Every distinct schema against its meta-schema, before the first request is sent."""
        seen: set[str] = set()
        for req in requests:
            if req.json_schema is None:
                continue
            text = json.dumps(req.json_schema, sort_keys=True)
            if text in seen:
                continue
            seen.add(text)
            problem = schema_problem(req.json_schema)
            if problem is not None:
                raise UserError(f"output schema: {problem}", hint=f"schema {text[:200]}; nothing was sent")

    def _run_chunk(self, chunk: list[tuple[str, GenerationRequest]],
                   finished: Callable[[str, GenerationResult], None]) -> None:
        """Send `chunk`, retrying answers that fail; `finished(key, result)` for each request
        as soon as its last attempt is in."""
        attempts: dict[str, int] = {k: 0 for k, _ in chunk}
        pending = list(chunk)
        round_no = 0
        while pending:
            batch = [self._variant(req, round_no) for _, req in pending]
            retry: dict[int, tuple[str, GenerationRequest]] = {}
            answered: set[int] = set()
            own_errors: list[Exception] = []  # our own failures (e.g. the cache's disk is full)

            def receive(index: int, answer: GenerationResult, pending: list[tuple[str, GenerationRequest]] = pending,
                        retry: dict[int, tuple[str, GenerationRequest]] = retry, answered: set[int] = answered,
                        round_no: int = round_no, own_errors: list[Exception] = own_errors) -> None:
                if index in answered or not 0 <= index < len(pending):
                    return  # a misbehaving plugin: one answer per request counts
                answered.add(index)
                key, req = pending[index]
                try:
                    if self._settle(key, req, answer, attempts, round_no):
                        finished(key, answer)
                    else:
                        retry[index] = (key, req)
                except Exception as exc:
                    own_errors.append(exc)
                    raise

            try:
                self.backend.generate_each(batch, receive)
                crash = f"backend returned {len(answered)} results for {len(batch)} requests"
            except UserError:
                raise
            except Exception as exc:  # a crashed batch: every request it did not answer failed
                if own_errors:
                    raise own_errors[0] from None
                crash = redact(f"{type(exc).__name__}: {exc}") or ""
                self.log.warning("backend %s failed a batch: %s", self.name, crash)
            for index in range(len(batch)):
                if index not in answered:
                    receive(index, GenerationResult(None, finish_reason="error", error=crash,
                                                    extra={"retry": True}))
            pending = [retry[i] for i in sorted(retry)]
            round_no += 1

    def _settle(self, key: str, req: GenerationRequest, answer: GenerationResult,
                attempts: dict[str, int], round_no: int) -> bool:
        """Account for one answer; True when it is final (good, or failed for the last time)."""
        answer.error = redact(answer.error)
        attempts[key] += max(answer.attempts, 1)
        self.stats["retries"] += max(answer.attempts, 1) - 1
        self.stats["prompt_tokens"] += answer.prompt_tokens
        self.stats["completion_tokens"] += answer.completion_tokens
        self.stats["tokens"] += answer.prompt_tokens + answer.completion_tokens
        self.stats["seconds"] = round(self.stats["seconds"] + answer.latency_s, 3)
        self.stats["generated"] += 1
        problem = self._problem(req, answer)
        answer.attempts = attempts[key]
        if problem is None:
            return True
        # transport errors were already retried by the backend; answers it could not make
        # (and crashed batches) are retried here
        if round_no + 1 < self.max_attempts and (answer.error is None or answer.extra.get("retry")):
            self.stats["retries"] += 1
            return False
        self.stats["failures"] += 1
        answer.error = redact(answer.error or problem)
        answer.finish_reason = answer.finish_reason or "error"
        self.log.info("request failed after %d attempts: %s", attempts[key], answer.error)
        return True

    def _variant(self, req: GenerationRequest, round_no: int) -> GenerationRequest:
        if round_no == 0:
            return req
        return dataclasses.replace(req, seed=req.seed + 7919 * round_no,
                                   temperature=max(req.temperature, self.retry_temperature))

    def _problem(self, req: GenerationRequest, answer: GenerationResult) -> str | None:
        if answer.error is not None:
            return answer.error
        if answer.text is None or not answer.text.strip():
            return "empty answer"
        if req.json_schema is None:
            return None
        try:
            value = parse_json_answer(answer.text)
        except json.JSONDecodeError as exc:
            cut = " (cut off at max_tokens)" if answer.finish_reason == "length" else ""
            return f"answer is not JSON{cut}: {exc.msg} at char {exc.pos}"
        validator = self._validator(req.json_schema)
        error = next(iter(validator.iter_errors(value)), None)
        if error is not None:
            where = "/".join(map(str, error.absolute_path)) or "(root)"
            return f"answer breaks the schema at {where}: {error.message[:200]}"
        return None

    def _validator(self, schema: dict[str, Any]) -> Any:
        import jsonschema

        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            cls = jsonschema.validators.validator_for(schema)
            self._validators[key] = cls(schema)
        return self._validators[key]
