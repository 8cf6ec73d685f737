"""Executors: where the partitions of row-parallel stages are computed.

`local` computes them one after the other in this process; `ray` sends one Ray task per
partition to a local Ray instance or an existing cluster. Stages that need their whole input
(sampling over the pool, labelling through a backend, training) run on the driver either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UserError
from .local import LocalExecutor

if TYPE_CHECKING:
    from ..spec.executor import ExecutorSpec
    from .local import Executor

KINDS = ("local", "ray")


def make_executor(config: ExecutorSpec, kind: str | None = None, address: str | None = None) -> Executor:
    """The executor for a run: `[executor]` in the spec, overridden by --executor/--address."""
    chosen = kind or config.kind
    if chosen == "local":
        if address:
            raise UserError(f"--address {address} needs the ray executor", hint="add --executor ray")
        return LocalExecutor()
    if chosen == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(config, address or config.address)
    raise UserError(f"unknown executor {chosen!r}", hint=f"executors: {', '.join(KINDS)}")
