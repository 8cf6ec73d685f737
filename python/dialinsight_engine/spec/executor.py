"""Spec section `[executor]`: where row-parallel stages run (documented in docs/spec.md).

`kind = "local"` runs every stage in this process; `kind = "ray"` runs the row-parallel stages
(scenes, seeds, plugin RowStages) as Ray tasks, one per partition, on a local Ray instance or
an existing cluster (`address`), and hands assess's near-duplicate search to Ray when the
distributed dedup module is installed. The CLI's `--executor` and `--address`
override the spec. None of these keys changes a stage's output, so none is in a fingerprint.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class ExecutorSpec(Section):
    kind: Literal["local", "ray"] = Field("local", description="local: this process; ray: Ray tasks per partition")
    address: str | None = Field(
        None, description='Ray cluster to join: "auto" (the one started with `ray start`), "ray://host:10001" or'
                          ' "host:6379"; unset: start a local Ray instance on all cores')
    partition_rows: int = Field(50_000, ge=1, description="Rows per partition of every stage's Parquet output")
    num_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves per partition task")
    num_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves per partition task")
    max_retries: int = Field(3, ge=0, description="Ray retries of a partition task whose worker died")
