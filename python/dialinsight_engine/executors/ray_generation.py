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
- **Progress per request.** The actor's client reports each finished request as it does
  locally; the driver long-polls each busy actor (``progress``, answered as soon as something
  finished) and passes ``progress(rows, tokens=...)`` on, so a stage's bar moves per request.

Identical requests share a chunk and are generated once (by that actor's client, as
locally); results come back in request order. Under ``--executor ray`` the run hands stages
a pool wherever they ask for a client: ``StageContext.backend`` asks the executor
(:meth:`RayExecutor.generation_client`, which calls :func:`open_run_pool`), so no stage knows
which executor runs it. A vLLM engine per GPU fits as ``ClientRecipe`` with the ``vllm`` backend and
``num_gpus=1`` per actor, or as ``ray.data.llm`` for whole-dataset batch inference: see
``docs/performance.md`` ("Near-duplicates and generation on Ray").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
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
    from ..spec.executor import GenerationPoolSpec

__all__ = ["ClientRecipe", "GenerationActor", "RayGenerationPool", "open_pool", "open_run_pool"]

#: how long an actor holds a progress poll open when nothing has finished (seconds)
POLL_S = 0.5

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

    def with_threads(self, num_cpus: float) -> ClientRecipe:
        """A backend with a thread setting left unset (llama.cpp's ``n_threads``) gets the CPUs
        Ray reserved for its actor: left to itself it takes the host's idle cores, and several
        actors on one host would then spin-wait on each other's cores."""
        if getattr(self.config, "n_threads", 1) is not None:
            return self
        config = self.config.model_copy(update={"n_threads": max(1, int(num_cpus))})
        return dataclasses.replace(self, config=config)

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


def open_run_pool(spec: Spec, name: str, registry: Registry, cache_dir: Path) -> RayGenerationPool:
    """The pool a run's stages get for ``[backends.NAME]`` under the ray executor, sized by
    ``[executor.generation]`` (Ray must be connected)."""
    config = spec.executor.generation
    actors = pool_size(config, ray.cluster_resources(), spec.source)
    return open_pool(spec, name, registry, cache_dir, actors=actors,
                     in_flight=config.in_flight, num_cpus=config.num_cpus, num_gpus=config.num_gpus,
                     max_restarts=config.max_restarts, max_task_retries=config.max_restarts)


def pool_size(config: GenerationPoolSpec, resources: dict[str, float], source: str | Path | None = None) -> int:
    """``actors``, or as many as the cluster holds: one per ``num_gpus`` of its GPUs for GPU
    actors, else one per ``num_cpus`` of its CPUs less one slot, so that a stage that also runs
    partition tasks while its pool is open still has a CPU for them. A pool the cluster cannot
    hold even one actor of would wait forever: that is an error naming the key."""
    kind, need = ("GPU", config.num_gpus) if config.num_gpus > 0 else ("CPU", config.num_cpus)
    have = resources.get(kind, 0.0)
    if have < need:
        raise UserError(f"a generation actor needs {need:g} {kind}s but the Ray cluster has {have:g}",
                        key=f"executor.generation.num_{kind.lower()}s", file=source,
                        hint="lower it, or join a cluster that has them (--address)")
    if config.actors:
        return config.actors
    slots = int(have // need)
    return max(1, slots if kind == "GPU" else slots - 1)


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
    """One backend behind one client (made a Ray actor by :class:`RayGenerationPool`). It runs
    two calls at once: ``generate``, and ``progress``, which the driver polls meanwhile."""

    def __init__(self, recipe: ClientRecipe) -> None:
        self.client = recipe.open()
        self._news: dict[int, list[int]] = {}  # chunk id -> [rows, tokens] finished, not yet polled
        self._changed = threading.Condition()

    def generate(self, chunk_id: int, requests: list[GenerationRequest]
                 ) -> tuple[list[GenerationResult], dict[str, float]]:
        """Results of ``requests`` and what this call added to the client's counters."""
        before = {k: self.client.stats[k] for k in _ADDITIVE}

        def finished(rows: int, tokens: int = 0) -> None:  # the client's progress callback
            with self._changed:
                news = self._news.setdefault(chunk_id, [0, 0])
                news[0] += rows
                news[1] += tokens
                self._changed.notify_all()

        results = self.client.generate(requests, progress=finished)
        return results, {k: self.client.stats[k] - before[k] for k in _ADDITIVE}

    def progress(self, wait_s: float) -> dict[int, list[int]]:
        """Rows and tokens finished per chunk since the last poll; waits up to ``wait_s`` for
        the first (a long poll: one round trip per update, none while nothing happens)."""
        with self._changed:
            if not self._news:
                self._changed.wait(wait_s)
            news, self._news = self._news, {}
        return news

    def pid(self) -> int:
        import os

        return os.getpid()

    def close(self) -> None:
        self.client.close()


class _Shown:
    """Progress shown per chunk: polls add to it, capped at the chunk's rows, and a chunk's
    result tops it up, so the bar's total is exact even when a retried chunk reports twice."""

    def __init__(self, progress: Callable[..., None] | None) -> None:
        self.progress = progress
        self.rows: dict[int, int] = {}  # chunk id -> rows in it, while it runs
        self.shown: dict[int, list[int]] = {}  # chunk id -> [rows, tokens] shown

    def start(self, chunk_id: int, rows: int) -> None:
        self.rows[chunk_id] = rows
        self.shown[chunk_id] = [0, 0]

    def add(self, news: dict[int, list[int]]) -> None:
        for chunk_id, (rows, tokens) in news.items():
            if chunk_id in self.rows:  # else a chunk already finished (its result was counted)
                self._show(chunk_id, min(rows, self.rows[chunk_id] - self.shown[chunk_id][0]), tokens)

    def finish(self, chunk_id: int, tokens: int) -> None:
        rows, shown_tokens = self.rows.pop(chunk_id) - self.shown[chunk_id][0], self.shown[chunk_id][1]
        self._show(chunk_id, rows, max(0, tokens - shown_tokens))
        del self.shown[chunk_id]

    def _show(self, chunk_id: int, rows: int, tokens: int) -> None:
        self.shown[chunk_id][0] += rows
        self.shown[chunk_id][1] += tokens
        if self.progress and (rows or tokens):
            self.progress(rows, tokens=tokens)


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
            max_task_retries=max_task_retries, max_concurrency=2)  # generate + progress
        self.actors: list[Any] = [remote.remote(recipe.with_threads(num_cpus)) for _ in range(actors)]
        self.stats: dict[str, Any] = {k: 0 for k in _ADDITIVE} | {"actors": actors, "chunks": 0}
        self._chunk_ids = 0  # chunk ids are unique over the pool's life: a late poll names its call's
        self._polls: dict[int, ray.ObjectRef] = {}  # actor slot -> its open progress poll

    def __enter__(self) -> RayGenerationPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(self, requests: list[GenerationRequest],
                 progress: Callable[..., None] | None = None) -> list[GenerationResult]:
        """One result per request, in order; identical requests are generated once. A broken
        JSON schema raises before anything is sent, as with the local client. ``progress(n,
        tokens=k)`` as requests finish, as the local client calls it."""
        _check_schemas(requests)
        groups: dict[str, list[int]] = {}  # distinct request -> its positions
        for position, request in enumerate(requests):
            key = json.dumps(dataclasses.asdict(request), sort_keys=True, default=list)
            groups.setdefault(key, []).append(position)
        distinct = list(groups.values())
        chunks = [[p for group in distinct[i:i + self.in_flight] for p in group]
                  for i in range(0, len(distinct), self.in_flight)]
        results: list[GenerationResult | None] = [None] * len(requests)
        for index, answers, added in self._run([[requests[p] for p in chunk] for chunk in chunks],
                                               _Shown(progress), len(distinct)):
            for position, answer in zip(chunks[index], answers, strict=True):
                results[position] = answer
            self._account(added)
        self.stats["chunks"] += len(chunks)
        return [r for r in results if r is not None]

    def _run(self, chunks: list[list[GenerationRequest]], shown: _Shown, distinct: int
             ) -> Iterator[tuple[int, list[GenerationResult], dict[str, float]]]:
        """(chunk index, results, counters) as chunks finish. One chunk per actor at a time
        (the backpressure); an actor takes the next chunk as soon as it is free, not in chunk
        order (``ActorPool.map`` would hold a fast actor until the chunk before it is done).
        Meanwhile each busy actor has one progress poll open."""
        idle = list(range(len(self.actors)))
        running: dict[ray.ObjectRef, tuple[int, int]] = {}  # generate call -> (chunk index, slot)
        waiting = iter(enumerate(chunks))
        first_id = self._chunk_ids
        self._chunk_ids += len(chunks)
        while True:
            while idle:
                index, chunk = next(waiting, (-1, []))
                if index < 0:
                    break
                slot = idle.pop(0)
                shown.start(first_id + index, len(chunk))
                running[self.actors[slot].generate.remote(first_id + index, chunk)] = (index, slot)
                self._poll(slot, shown)
            if not running:
                return
            polls = {ref: slot for slot, ref in self._polls.items()}
            [ready], _ = ray.wait([*running, *polls], num_returns=1)
            if ready in polls:
                self._take_poll(polls[ready], ready, shown, busy={s for _, s in running.values()})
                continue
            index, slot = running.pop(ready)
            try:
                results, added = self._result(ready, index, distinct)
            except StageFailed:
                # the other actors' chunks finish first, so their answers reach the cache
                if running:
                    ray.wait(list(running), num_returns=len(running))
                raise
            shown.finish(first_id + index, int(added.get("completion_tokens", 0)))
            idle.append(slot)
            yield index, results, added

    def _poll(self, slot: int, shown: _Shown) -> None:
        """Open a progress poll on an actor that has none (one at a time per actor)."""
        if shown.progress is not None and slot not in self._polls:
            self._polls[slot] = self.actors[slot].progress.remote(POLL_S)

    def _take_poll(self, slot: int, ref: ray.ObjectRef, shown: _Shown, busy: set[int]) -> None:
        del self._polls[slot]
        try:
            shown.add(ray.get(ref))
        except ray.exceptions.RayError:
            return  # a dead actor: its chunk's own result says what happened
        if slot in busy:
            self._poll(slot, shown)

    def _result(self, ref: ray.ObjectRef, index: int, distinct: int) -> Any:
        """A chunk's result; one that failed after Ray's retries fails the call, named."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            if isinstance(cause, UserError):
                raise cause from None
            first = index * self.in_flight
            last = min(first + self.in_flight, distinct) - 1
            raise StageFailed(
                f"generation: chunk {index} (distinct requests {first}-{last}) failed "
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
        self._polls.clear()
