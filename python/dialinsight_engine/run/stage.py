"""The stage interface (beside the runner that drives it). A stage reads its input frame and returns its output frame; the
runner handles fingerprints, atomic Parquet output, manifests, skipping and resuming."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl

if TYPE_CHECKING:
    from ..run.context import StageContext
    from ..spec import Spec


class Stage(ABC):
    #: unique name, also the folder under runs/<project>/
    name: ClassVar[str]
    #: position in the pipeline; the input is the output of the nearest enabled stage before it
    order: ClassVar[int]
    #: spec sections (dotted) whose values change this stage's output
    config_keys: ClassVar[tuple[str, ...]] = ()
    #: bump when the stage's logic changes output for the same input and config
    version: ClassVar[str] = "1"
    #: one line for `dialengine plan` and `dialengine plugins`
    description: ClassVar[str] = ""

    def disabled_reason(self, spec: Spec) -> str | None:
        """Why this stage does not run for `spec` (None: it runs)."""
        return None

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        """Extra inputs that are not upstream stages or spec sections (file hashes, decisions,
        versions of the plugins the stage calls)."""
        return {}

    @abstractmethod
    def run(self, ctx: StageContext) -> pl.DataFrame:
        """Compute the output frame. Side files go through `ctx.write_*` (atomic)."""


# Canonical order numbers, with gaps so plugins can slot stages in between.
ORDER = {
    "ingest": 10,
    "scenes": 20,
    "seeds": 30,
    "evolve": 40,
    "review": 50,
    "assess": 60,
    "sample": 70,
    "label": 80,
    "verify": 90,
    "export": 100,
    "train": 110,
    "eval": 120,
    "report": 130,
}
