"""Spec section `[executor]`: where row-parallel stages run (documented in docs/spec.md).

`kind = "local"` runs every stage in this process; `kind = "ray"` runs the row-parallel stages
(scenes, seeds, plugin RowStages) as Ray tasks, one per partition, on a local Ray instance or
an existing cluster (`address`), and hands assess's near-duplicate search to Ray when the
distributed dedup module is installed, and sends generation (evolve, label, LLM judges)
through a pool of Ray actors (`[executor.generation]`). The CLI's `--executor` and `--address`
override the spec. None of these keys changes a stage's output, so none is in a fingerprint.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class GenerationPoolSpec(Section):
    """`[executor.generation]`: the actor pool that generates under the ray executor."""

    actors: int = Field(
        0, ge=0, description="Generation actors, each with its own backend; 0: one per num_gpus of the cluster's"
                             " GPUs when num_gpus > 0, else one per num_cpus of its CPUs less one slot")
    in_flight: int = Field(8, ge=1, description="Most distinct requests an actor has at its backend at once")
    num_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves per actor (llama.cpp: its threads)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves per actor (vLLM: 1, one engine per GPU)")
    max_restarts: int = Field(2, ge=0, description="Restarts of a dead actor, each retrying its chunk of requests")


class ExecutorSpec(Section):
    kind: Literal["local", "ray"] = Field("local", description="local: this process; ray: Ray tasks per partition")
    address: str | None = Field(
        None, description='Ray cluster to join: "auto" (the one started with `ray start`), "ray://host:10001" or'
                          ' "host:6379"; unset: start a local Ray instance on all cores')
    partition_rows: int = Field(50_000, ge=1, description="Rows per partition of every stage's Parquet output")
    num_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves per partition task")
    num_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves per partition task")
    max_retries: int = Field(3, ge=0, description="Ray retries of a partition task whose worker died")
    dedup_local_rows: int = Field(
        1_000_000, ge=0, description="Pools of fewer rows search near duplicates in the driver (Rust core) under the"
                                     " ray executor too; 0: always on Ray")
    generation: GenerationPoolSpec = Field(
        default_factory=lambda: GenerationPoolSpec.model_validate({}),
        description="The generation actor pool (ray executor only)")
