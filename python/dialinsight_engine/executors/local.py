"""The local executor: partitions computed one after the other in this process."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from .base import PartitionResult, PartitionTask, RowStage, compute_partition

if TYPE_CHECKING:
    from ..plugins import Registry
    from ..spec import Spec


class Executor(Protocol):
    name: str

    def map(self, stage: RowStage, spec: Spec, tasks: Iterable[PartitionTask], state: Any,
            registry: Registry) -> Iterator[PartitionResult]:
        """Compute `tasks`, yielding each result as it finishes (any order); a partition whose
        map fails raises `PartitionFailed`."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    name = "local"

    def map(self, stage: RowStage, spec: Spec, tasks: Iterable[PartitionTask], state: Any,
            registry: Registry) -> Iterator[PartitionResult]:
        for task in tasks:
            yield compute_partition(stage, spec, task, state, registry)

    def close(self) -> None:
        pass
