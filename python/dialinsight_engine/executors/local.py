"""The local executor: partitions computed one after the other in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .base import PartitionResult, PartitionTask, RowStage, compute_partition

if TYPE_CHECKING:
    from ..plugins import Registry
    from ..spec import Spec

Item = TypeVar("Item")
Result = TypeVar("Result")


class Executor(Protocol):
    name: str

    def map(self, stage: RowStage, spec: Spec, tasks: Iterable[PartitionTask], state: Any,
            registry: Registry) -> Iterator[PartitionResult]:
        """Compute `tasks`, yielding each result as it finishes (any order); a partition whose
        map fails raises `PartitionFailed`."""
        ...

    def call_each(self, function: Callable[[Item], Result], items: Sequence[Item], step: str) -> list[Result]:
        """`function(item)` for every item (a module-level function, small picklable items),
        results in the items' order; one that fails fails the stage, naming `step`."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    name = "local"

    def map(self, stage: RowStage, spec: Spec, tasks: Iterable[PartitionTask], state: Any,
            registry: Registry) -> Iterator[PartitionResult]:
        for task in tasks:
            yield compute_partition(stage, spec, task, state, registry)

    def call_each(self, function: Callable[[Item], Result], items: Sequence[Item], step: str) -> list[Result]:
        return [function(item) for item in items]

    def close(self) -> None:
        pass
