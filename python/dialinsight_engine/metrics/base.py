"""The metric interface: one quality dimension, scored per row.

A metric is a class with a unique `name`, a `phase` ("instruction": scored by the `assess`
stage on the reviewed instructions; "label": scored by `verify` once rows have a `response`),
a pydantic `Config` for its `[quality.metrics.NAME] params`, and `score(df, ctx)`.

`score` returns a frame with one row per input row, in the same order:

- ``score`` (Float64): the metric's score, higher is better (built-ins use 0..1);
- ``reason`` (String, optional): a hard flag, e.g. "near duplicate of 3f2a..."; a row with a
  reason is dropped whatever the weights and thresholds say;
- any other columns: details kept in the output as ``<name>.<column>`` (raw measures, cluster
  ids, the judge's explanation...), so every decision can be explained later.

Write one in a file, return it from a `register_metrics` hook, and name it in the spec: see
docs/plugins.md.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from ..run.context import StageContext
    from ..spec.models import Spec
    from .partitioned import PoolPartitions

Phase = Literal["instruction", "label"]

#: columns a metric may return besides details
SCORE = "score"
REASON = "reason"


class MetricConfig(BaseModel):
    """Base of every metric's `Config`: unknown keys are errors (reported at spec file:line)."""

    model_config = ConfigDict(extra="forbid")


class MetricContext:
    """What a metric may use while it scores: the spec, generation backends, logging, progress,
    per-metric stats (saved in the stage manifest) and paths. Built from a stage's context, or
    standalone (tests, notebooks) with `MetricContext.standalone()`."""

    def __init__(self, *, spec: Spec | None = None, stage_ctx: StageContext | None = None,
                 log: logging.Logger | None = None, backends: dict[str, Any] | None = None,
                 languages: dict[str, str] | None = None) -> None:
        self.spec = spec if spec is not None else (stage_ctx.spec if stage_ctx else None)
        #: metric name -> language already resolved over the whole pool (a partition's own
        #: detection could differ from the pool's)
        self.languages = dict(languages or {})
        self.stage_ctx = stage_ctx
        self.log = log or (stage_ctx.log if stage_ctx else logging.getLogger("dialinsight_engine.metrics"))
        self._backends = dict(backends or {})
        #: metric name -> JSON-able stats; the stages put them in the manifest
        self.stats: dict[str, dict[str, Any]] = {}
        #: under a distributed executor, the pool's columns a pool-wide metric reads where
        #: they lie, left out of the frame it scores (`Metric.partition_columns()`); else None
        self.partitions: PoolPartitions | None = None
        #: True when the caller completes the result one slice of rows at a time with
        #: `Metric.finish_rows` before writing it (the pool-wide step of a partitioned stage)
        self.rows_later = False

    @classmethod
    def standalone(cls, spec: Spec | None = None, backends: dict[str, Any] | None = None) -> MetricContext:
        return cls(spec=spec, backends=backends)

    def backend(self, name: str) -> Any:
        """A generation client (`generate(list[GenerationRequest]) -> list[GenerationResult]`)."""
        if name in self._backends:
            return self._backends[name]
        if self.stage_ctx is None:
            from ..errors import UserError

            raise UserError(f"metric needs backend {name!r} but none is available outside a run")
        return self.stage_ctx.backend(name)

    @property
    def language(self) -> str:
        """The spec's `[project] language` ("auto" without a spec)."""
        project = getattr(self.spec, "project", None)
        return str(getattr(project, "language", None) or "auto")

    def text_language(self, metric: str, texts: pl.Series) -> str:
        """The tokenizer language for `texts` (the spec's, "auto" resolved on them), recorded
        with its segmenter in `stats[metric]["language"]` (the stage manifest)."""
        from .. import fast

        lang = self.languages.get(metric) or fast.resolve_language(texts, self.language)
        info = {**fast.language_info(lang), "configured": self.language}
        self.stats.setdefault(metric, {})["language"] = info
        return lang

    def resolve_path(self, path: str) -> Path:
        """A path from a metric's params: relative to the spec file (or `@examples/...`)."""
        if self.spec is not None:
            return self.spec.resolve_path(path)
        return Path(path)

    @property
    def cache_dir(self) -> Path | None:
        return self.stage_ctx.cache_dir if self.stage_ctx else None

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        if self.stage_ctx is None:
            yield _no_progress
            return
        with self.stage_ctx.progress(description, total) as advance:
            yield advance


def _no_progress(n: int = 1) -> None:
    """Progress callback outside a stage: nothing to show."""


class Metric(ABC):
    #: unique name, used in `[quality.metrics.NAME]` and in column names `score_NAME`
    name: ClassVar[str]
    #: "instruction" (assess stage) or "label" (verify stage, rows have a `response`)
    phase: ClassVar[Phase] = "instruction"
    #: validates `[quality.metrics.NAME] params`
    Config: ClassVar[type[MetricConfig]] = MetricConfig
    #: one line for `dialengine plugins` and the report
    description: ClassVar[str] = ""
    #: bump when scores change for the same input and params (reruns the stage)
    version: ClassVar[str] = "1"
    #: input columns the metric reads (checked before scoring, for a clear error)
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: MetricConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> Metric:
        return cls(cls.Config.model_validate(params or {}))

    @abstractmethod
    def score(self, df: pl.DataFrame, ctx: MetricContext) -> pl.DataFrame:
        """One row per input row, same order: `score`, optional `reason`, detail columns."""

    def row_local(self) -> bool:
        """True when a row's score depends on that row alone (no pool statistics, no backend),
        so the metric can score each partition where it lies (a Ray worker). Default False:
        the metric scores the whole pool in play, on the driver."""
        return False

    def language_texts(self, df: pl.DataFrame) -> pl.Series | None:
        """For a row-local metric: the texts whose language `ctx.text_language` resolves when
        `score(df)` runs (so the stage resolves it once over the pool); None: it resolves none."""
        return None

    def aggregates(self) -> bool:
        """True when the metric needs the pool only through an aggregate that partitions can
        compute in parts (counts, document frequencies): the stage then maps `partial` over the
        partitions, `merge`s the parts on the driver, and scores each partition where it lies
        with the merged aggregate set as `pool_state`. Default False."""
        return False

    #: the merged aggregate while a partition is scored (`aggregates()`); None: score the frame alone
    pool_state: Any = None

    def partial(self, df: pl.DataFrame, ctx: MetricContext) -> pl.DataFrame:
        """One partition's part of the aggregate (rows in play), as a frame (`aggregates()`)."""
        raise NotImplementedError

    def merge(self, partials: list[pl.DataFrame]) -> Any:
        """The aggregate of the whole pool from every partition's part (`aggregates()`)."""
        raise NotImplementedError

    def merge_scan(self, partials: pl.LazyFrame) -> Any:
        """`merge` over the parts as one lazy scan of their files: the stage calls this one.
        Override it to reduce the parts in a streaming query, so the driver never holds
        them all at once; the default collects them and calls `merge`."""
        return self.merge([partials.collect()])

    def spill(self, aggregate: Any, folder: Path) -> Any:
        """The merged aggregate as the scoring tasks get it (each task gets all of it): a
        metric whose aggregate grows with the pool writes its large parts as files in
        `folder` (a fresh folder every task can read, removed when the stage ends) and
        returns their paths in their place, for `score` to read a piece at a time. Default:
        the aggregate as it is."""
        return aggregate

    def pool_columns(self) -> set[str] | None:
        """The input columns a pool-wide metric reads (the driver gathers only those);
        None: all of them."""
        return None

    def partition_columns(self) -> set[str]:
        """Of `pool_columns()`, those a pool-wide metric can read where the data lies: under a
        distributed executor the driver then leaves them out of the frame `score` gets, and
        the metric reads them through `ctx.partitions` (the text columns: so no process holds
        the pool's text). Default: none."""
        return set()

    def score_partitions(self, source: PoolPartitions, ctx: MetricContext) -> Iterator[pl.DataFrame] | None:
        """A pool-wide metric that can score the pool without it gathered anywhere: under a
        distributed executor, for a pool too large for one process's search
        (`[executor] dedup_local_rows`), the stage offers the partitions (`source`: every
        input column, the rows in play) and takes, partition by partition in order, the rows
        `finish_rows(score(pool))` would give for that partition's rows in play. None: not
        here (then the stage gathers the columns `score` reads). The stage does not offer it
        to a metric whose columns a later pool-wide metric reads. `ctx.stats` is read once
        the partitions are taken. Default: None."""
        return None

    def key_columns(self) -> set[str]:
        """Of `pool_columns()`, those the metric compares only for equality (group keys):
        where every pool-wide metric reading a string column says so, the driver gathers it
        as Categorical codes (4 bytes a row instead of the text). Default: none."""
        return set()

    def finish_rows(self, result: pl.DataFrame) -> pl.DataFrame:
        """A slice of rows of what `score` returned, completed. When `ctx.rows_later` is set,
        a pool-wide metric may return compact columns (positions instead of text) and build
        the text here, one partition's rows at a time, so the driver never holds the pool's
        worth of it; `score` must then keep every column's name and the `score` values final.
        Default: the rows as they are."""
        return result

    def fingerprint(self, ctx: MetricContext) -> dict[str, Any]:
        """What identifies this metric's output besides the input rows and its params (stage
        fingerprints): override to add the hashes of files the metric reads."""
        return {"version": self.version}
