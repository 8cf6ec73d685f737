"""Generation on Ray: evolve, label and the LLM judge through a pool of actors, each owning
one backend through the engine's own :class:`~dialinsight_engine.backends.client.GenerationClient`.

- **Same client, same cache.** Every actor builds its client from a :class:`ClientRecipe`
  (the backend plugin's class, its validated settings and the client's settings, resolved
  on the driver as ``open_client`` resolves them), so the cache key
  (``request_key``: backend, model, request) and the cache file (SQLite in the run's cache
  folder, one transaction per answer) are the ones a local run uses. SQLite serialises
  writers across processes with its file lock; the cache opens in WAL mode with a 60 s busy
  timeout, so several actors writing at once wait, never fail (tested). WAL needs the actors
  on hosts that share the run folder on a local or cluster file system with working POSIX
  locks (not NFS).
- **Nothing finished is generated twice.** An answer is committed when it arrives, so a
  rerun after a killed actor, node or driver sends only the requests that were in flight.
  A killed actor is restarted by Ray (``max_restarts``) and its chunk retried
  (``max_task_retries``) on the same cache; when the retries are spent the call fails with
  :class:`~dialinsight_engine.errors.StageFailed` naming the chunk.
- **Backpressure.** Requests go out in chunks of at most ``in_flight`` distinct requests, one
  chunk per actor at a time (the next to whichever actor is free first), so an actor never
  has more than ``in_flight`` requests at its backend (fewer if the client's ``batch_size``
  or the backend's own concurrency is lower) and the driver holds the rest.

Identical requests are sent once (as the local client does); results come back in request
order. A vLLM engine per GPU fits as ``ClientRecipe`` with the ``vllm`` backend and
``num_gpus=1`` per actor, or as ``ray.data.llm`` for whole-dataset batch inference: see
``docs/performance.md`` ("Near-duplicates and generation on Ray").
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from ..backends.base import Backend, BackendConfig, GenerationRequest, GenerationResult
from ..backends.client import GenerationClient, backend_spec, make_backend
from ..backends.redact import redact
from ..backends.schema_check import schema_problem
from ..errors import StageFailed, UserError

if TYPE_CHECKING:
    from ..plugins import Registry
    from ..spec import Spec

__all__ = ["ClientRecipe", "GenerationActor", "RayGenerationPool", "open_pool"]

#: Client counters summed over the actors (the others are not additive).
_ADDITIVE = ("requests", "unique", "cache_hits", "generated", "retries", "failures", "tokens",
             "prompt_tokens", "completion_tokens", "seconds")


@dataclass(frozen=True)
class ClientRecipe:
    """How an actor opens its client: picklable, resolved and checked on the driver."""

    backend_class: type[Backend]
    config: BackendConfig
    name: str
    cache_dir: Path | None
    batch_size: int = 16
    max_attempts: int = 3
    retry_temperature: float = 0.7

    @classmethod
    def from_spec(cls, spec: Spec, name: str, registry: Registry, cache_dir: Path) -> ClientRecipe:
        """``[backends.NAME]`` of ``spec``, as ``open_client`` reads it (bad settings raise
        here, on the driver, naming the key)."""
        bspec = backend_spec(spec, name)
        backend = make_backend(bspec, registry, name)  # backends load their model lazily
        backend.close()
        if bspec.cache_dir:
            cache_dir = spec.resolve_path(bspec.cache_dir)
        return cls(type(backend), backend.config, name, cache_dir if bspec.cache else None,
                   bspec.batch_size, bspec.max_attempts, bspec.retry_temperature)

    def open(self) -> GenerationClient:
        return GenerationClient(
            self.backend_class(self.config), name=self.name, cache_dir=self.cache_dir,
            batch_size=self.batch_size, max_attempts=self.max_attempts,
            retry_temperature=self.retry_temperature,
            log=logging.getLogger("dialinsight_engine.executors.ray_generation"))


def open_pool(spec: Spec, name: str, registry: Registry, cache_dir: Path,
              **options: Any) -> RayGenerationPool:
    """``open_client`` on Ray: a pool for ``[backends.NAME]`` whose actors share the run's
    cache; ``options`` are :class:`RayGenerationPool`'s."""
    return RayGenerationPool(ClientRecipe.from_spec(spec, name, registry, cache_dir), **options)


def _check_schemas(requests: list[GenerationRequest]) -> None:
    """Every distinct JSON schema against its meta-schema, on the driver (the client checks
    again in each actor, but only its own chunk, after earlier chunks went out)."""
    seen: set[str] = set()
    for request in requests:
        if request.json_schema is None:
            continue
        text = json.dumps(request.json_schema, sort_keys=True)
        if text not in seen:
            seen.add(text)
            problem = schema_problem(request.json_schema)
            if problem is not None:
                raise UserError(f"output schema: {problem}", hint=f"schema {text[:200]}; nothing was sent")


class GenerationActor:
    """One backend behind one client (made a Ray actor by :class:`RayGenerationPool`)."""

    def __init__(self, recipe: ClientRecipe) -> None:
        self.client = recipe.open()

    def generate(self, requests: list[GenerationRequest]) -> tuple[list[GenerationResult], dict[str, float]]:
        """Results of ``requests`` and what this call added to the client's counters."""
        before = {k: self.client.stats[k] for k in _ADDITIVE}
        results = self.client.generate(requests)
        return results, {k: self.client.stats[k] - before[k] for k in _ADDITIVE}

    def pid(self) -> int:
        import os

        return os.getpid()

    def close(self) -> None:
        self.client.close()


class RayGenerationPool:
    """``actors`` actors, each with its own backend; ``generate`` is the local client's
    ``generate`` spread over them, and ``name``, ``model_id``, ``stats`` and ``close`` are
    there too, so a stage can use a pool where it uses a client. ``num_cpus``/``num_gpus``:
    resources of one actor (a llama.cpp actor: its threads; a vLLM actor: ``num_gpus=1``)."""

    def __init__(self, recipe: ClientRecipe, *, actors: int = 2, in_flight: int = 8,
                 num_cpus: float = 1, num_gpus: float = 0, max_restarts: int = 2,
                 max_task_retries: int = 2) -> None:
        if actors < 1 or in_flight < 1:
            raise ValueError(f"need actors >= 1 and in_flight >= 1, got {actors} and {in_flight}")
        self.in_flight = in_flight
        self.name = recipe.name
        backend = recipe.backend_class(recipe.config)  # model_id only: backends load lazily
        try:
            self.model_id = redact(backend.model_id) or ""
        finally:
            backend.close()
        remote = ray.remote(GenerationActor).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts,
            max_task_retries=max_task_retries, max_concurrency=1)
        self.actors: list[Any] = [remote.remote(recipe) for _ in range(actors)]
        self.stats: dict[str, Any] = {k: 0 for k in _ADDITIVE} | {"actors": actors, "chunks": 0}

    def __enter__(self) -> RayGenerationPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(self, requests: list[GenerationRequest],
                 progress: Callable[[int], None] | None = None) -> list[GenerationResult]:
        """One result per request, in order; identical requests are generated once. A broken
        JSON schema raises before anything is sent, as with the local client."""
        _check_schemas(requests)
        keys = [json.dumps(dataclasses.asdict(r), sort_keys=True, default=list) for r in requests]
        unique = list(dict(zip(keys, requests, strict=True)).items())
        chunks = [unique[i:i + self.in_flight] for i in range(0, len(unique), self.in_flight)]
        done: dict[str, GenerationResult] = {}
        per_key = Counter(keys)
        for index, results, added in self._run(chunks):
            chunk = chunks[index]
            done.update(zip((k for k, _ in chunk), results, strict=True))
            self._account(added)
            if progress:  # in requests, duplicates included, as the local client counts
                progress(sum(per_key[k] for k, _ in chunk))
        self.stats["requests"] += len(requests) - len(unique)  # duplicates the driver folded
        self.stats["chunks"] += len(chunks)
        return [dataclasses.replace(done[k]) for k in keys]

    def _run(self, chunks: list[list[tuple[str, GenerationRequest]]]
             ) -> Iterator[tuple[int, list[GenerationResult], dict[str, float]]]:
        """(chunk index, results, counters) as chunks finish. One chunk per actor at a time
        (the backpressure); an actor takes the next chunk as soon as it is free, not in chunk
        order (``ActorPool.map`` would hold a fast actor until the chunk before it is done)."""
        idle = list(self.actors)
        running: dict[ray.ObjectRef, tuple[int, Any]] = {}
        waiting = iter(enumerate(chunks))
        while True:
            for actor in list(idle):
                index, chunk = next(waiting, (-1, []))
                if index < 0:
                    break
                idle.remove(actor)
                running[actor.generate.remote([r for _, r in chunk])] = (index, actor)
            if not running:
                return
            [ready], _ = ray.wait(list(running), num_returns=1)
            index, actor = running.pop(ready)
            results, added = self._result(ready, index, len(chunks[index]))
            idle.append(actor)
            yield index, results, added

    def _result(self, ref: ray.ObjectRef, index: int, size: int) -> Any:
        """A chunk's result; one that failed after Ray's retries fails the call, named."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            if isinstance(cause, UserError):
                raise cause from None
            first = index * self.in_flight
            raise StageFailed(
                f"generation: chunk {index} (distinct requests {first}-{first + size - 1}) failed "
                f"after Ray's retries: {type(cause).__name__}: {str(cause).strip()[:300]}; answers "
                "already in the cache are not generated again on a rerun") from exc

    def _account(self, added: dict[str, float]) -> None:
        for k, v in added.items():
            self.stats[k] = round(self.stats[k] + v, 3) if k == "seconds" else self.stats[k] + v

    def pids(self) -> list[int]:
        """The process id of each actor (changes when Ray restarts one)."""
        return ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        """Close every actor's client (the cache file) and end the actors."""
        for actor in self.actors:
            try:
                ray.get(actor.close.remote())
            except ray.exceptions.RayError:
                pass  # an actor that already died has nothing left to close
            ray.kill(actor)
        self.actors = []
