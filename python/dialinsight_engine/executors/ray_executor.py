"""The Ray executor: one Ray task per partition, on a local Ray instance or a cluster.

Why tasks per partition rather than a Ray Data pipeline (`map_batches`): a stage's output
partition i must come from its input partition i, written atomically under its own name with
a progress record, so that a killed driver resumes at exactly the partitions not yet written.
Ray Data re-blocks rows and names its output files itself, so a resume could not tell which
input rows a finished file covers. Inside a task the data stays in Arrow: the worker reads
the Parquet partition into a polars frame (Arrow memory, no pandas), maps it and writes it.
A worker that dies (killed, out of memory, node lost) is retried by Ray (`max_retries`); an
exception in the stage's own code is not retried (it would fail again) and fails the stage
naming the partition.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..allocator import releasing
from ..errors import StageFailed, UserError
from .base import (
    WORKER_FAULT_ENV,
    PartitionFailed,
    PartitionResult,
    PartitionTask,
    RowStage,
    compute_partition,
)

if TYPE_CHECKING:
    from pathlib import Path

    from ..plugins import Registry
    from ..spec import Spec
    from ..spec.executor import ExecutorSpec

#: environment the workers need to import the same code and plugins as the driver, and to
#: set the allocators up as the driver's (`allocator.py`)
FORWARDED_ENV = ("PYTHONPATH", "DIALENGINE_PLUGINS", "DIALENGINE_BLOCK_PLUGINS", WORKER_FAULT_ENV,
                 "_RJEM_MALLOC_CONF", "ARROW_DEFAULT_MEMORY_POOL", "MALLOC_MMAP_THRESHOLD_",
                 "MALLOC_TRIM_THRESHOLD_")
CONNECT_TIMEOUT_S = 5.0
HINT = ("start one with `ray start --head` (then --address auto), check the host:port, or drop"
        " --address to start a local Ray instance")


@releasing
def _compute(stage: RowStage, spec: Spec, task: PartitionTask, state: Any) -> PartitionResult:
    return compute_partition(stage, spec, task, state)


@releasing
def _call(function: Callable[[Any], Any], item: Any) -> Any:
    return function(item)


class RayExecutor:
    name = "ray"

    def __init__(self, config: ExecutorSpec, address: str | None) -> None:
        self.config = config
        self.address = address
        self._ray: Any = None
        self._started_here = False

    def connect(self) -> Any:
        """Join (or start) Ray once; later calls return the connected module."""
        if self._ray is not None:
            return self._ray
        try:
            import ray
        except ImportError:
            raise UserError("the ray executor needs Ray, which is not installed",
                            hint="pip install 'dialinsight-engine[ray]'") from None
        env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
        if not ray.is_initialized():
            self._check_reachable()
            try:
                # "local": a new instance, never a cluster that `ray start` left running here
                ray.init(address=self.address or "local", runtime_env={"env_vars": env} if env else None,
                         logging_level=logging.WARNING, log_to_driver=False, include_dashboard=False,
                         configure_logging=False)
            except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
                raise UserError(f"cannot reach the Ray cluster at {self.address!r}: {exc}", hint=HINT) from None
            self._started_here = True
        self._ray = ray
        return ray

    def _check_reachable(self) -> None:
        """Fail fast on a host:port nobody listens on (ray.init would retry for minutes)."""
        if not self.address or self.address in ("auto", "local"):
            return
        hostport = self.address.removeprefix("ray://").rstrip("/")
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"bad Ray address {self.address!r}: expected host:port, ray://host:port or auto",
                            hint=HINT)
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise UserError(f"cannot reach the Ray cluster at {self.address!r}: {exc.strerror or exc}",
                            hint=HINT) from None

    def map(self, stage: RowStage, spec: Spec, tasks: Iterable[PartitionTask], state: Any,
            registry: Registry) -> Iterator[PartitionResult]:
        ray = self.connect()
        remote = ray.remote(num_cpus=self.config.num_cpus, num_gpus=self.config.num_gpus,
                            max_retries=self.config.max_retries, retry_exceptions=False)(_compute)
        stage_ref, spec_ref, state_ref = ray.put(stage), ray.put(spec), ray.put(state)
        pending = {remote.remote(stage_ref, spec_ref, task, state_ref): task for task in tasks}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    task = pending.pop(ref)
                    yield self._result(ray, ref, task)
        finally:
            for ref in pending:  # a failed partition stops the stage: drop the queued work
                ray.cancel(ref, force=True)

    def _result(self, ray: Any, ref: Any, task: PartitionTask) -> PartitionResult:
        try:
            result: PartitionResult = ray.get(ref)
            return result
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, PartitionFailed | UserError):
                raise exc.cause from None
            raise PartitionFailed(task.index, task.input_path, f"{type(exc.cause).__name__}: {exc.cause}") from None
        except ray.exceptions.RayError as exc:  # the worker died more often than max_retries allows
            raise PartitionFailed(task.index, task.input_path,
                                  f"{type(exc).__name__} after {self.config.max_retries} retries: "
                                  f"{str(exc).splitlines()[0]}") from None

    def call_each(self, function: Callable[[Any], Any], items: Sequence[Any], step: str) -> list[Any]:
        """`function(item)` as one Ray task per item (a lost worker retried as a partition's
        task is), results in the items' order; a task that fails after the retries fails the
        stage, naming the step and the item's position."""
        ray = self.connect()
        remote = ray.remote(num_cpus=self.config.num_cpus, max_retries=self.config.max_retries,
                            retry_exceptions=False)(_call)
        refs = [remote.remote(function, item) for item in items]
        results = []
        try:
            for index, ref in enumerate(refs):
                try:
                    results.append(ray.get(ref))
                except ray.exceptions.RayError as exc:
                    cause = getattr(exc, "cause", None) or exc
                    raise StageFailed(f"{step}: task {index} of {len(refs)} failed after Ray's retries: "
                                      f"{type(cause).__name__}: {str(cause).strip()[:500]}") from None
        finally:
            for ref in refs[len(results):]:
                ray.cancel(ref, force=True)
        return results

    def generation_client(self, spec: Spec, name: str, registry: Registry, cache_dir: Path) -> Any:
        """`[backends.NAME]` as a pool of generation actors on this cluster, sharing the run's
        cache (`StageContext.backend` asks for it; executors/ray_generation.py)."""
        self.connect()
        from .ray_generation import open_run_pool

        return open_run_pool(spec, name, registry, cache_dir)

    def close(self) -> None:
        if self._ray is not None and self._started_here:
            self._ray.shutdown()
        self._ray = None
