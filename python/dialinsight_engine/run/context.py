"""What a stage sees while it runs: the spec, its input, its folder, progress, backends."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from . import atomic, dataset
from .manifest import Manifest

if TYPE_CHECKING:
    from ..backends.client import GenerationClient
    from ..plugins import Registry
    from ..spec import Spec


def _no_progress(n: int = 1, description: str | None = None, tokens: int = 0) -> None:
    """`advance` when nobody watches (quiet runs, plans)."""


class StageContext:
    def __init__(
        self,
        *,
        spec: Spec,
        registry: Registry,
        run_dir: Path,
        stage: str,
        input_stage: str | None,
        log: logging.Logger,
        progress_factory: Callable[[str, int | None], Any] | None = None,
        partition_rows: int | None = None,
    ) -> None:
        self.spec = spec
        self.registry = registry
        self.run_dir = run_dir
        self.stage = stage
        self.stage_dir = run_dir / stage
        self.input_stage = input_stage
        self.log = log
        self.stats: dict[str, Any] = {}
        #: rows per partition of the output dataset (`[executor] partition_rows`)
        self.partition_rows = partition_rows or dataset.PARTITION_ROWS
        #: the run's executor (executors/), set by the runner; None outside a run
        self.executor: Any = None
        #: stage fingerprint + input hash (set by the driver for row-parallel stages): what
        #: progress records of an interrupted run must match to be reused
        self.partition_key = ""
        #: a folder of partitions that stands in for the input stage's output while set (verify's
        #: label consensus, which its metrics score): read by `executors.driver.input_tasks`
        self.input_folder: Path | None = None
        self._progress_factory = progress_factory
        self._input: pl.DataFrame | None = None
        self._clients: dict[str, Any] = {}

    # -- data ------------------------------------------------------------------------------
    @property
    def input(self) -> pl.DataFrame:
        """The previous enabled stage's output (empty frame for the first stage)."""
        if self._input is None:
            self._input = self.read_stage(self.input_stage) if self.input_stage else pl.DataFrame()
            if self._input is None:
                self._input = pl.DataFrame()
        return self._input

    def read_stage(self, name: str) -> pl.DataFrame | None:
        """Output of any stage of this run, or None when it has none."""
        return dataset.read_output(self.run_dir / name)

    def iter_input(self) -> Iterator[pl.DataFrame]:
        """The input one partition at a time: for stages that need not hold it all in memory."""
        if self.input_stage:
            yield from dataset.iter_output(self.run_dir / self.input_stage)

    def stage_manifest(self, name: str) -> Manifest | None:
        """Manifest of any stage of this run (its `stats` carry what it hands to later
        stages), or None when it has none."""
        return Manifest.load(self.run_dir / name)

    @property
    def cache_dir(self) -> Path:
        return self.run_dir / "cache"

    # -- side files (atomic) -----------------------------------------------------------------
    def write_text(self, relpath: str, text: str) -> Path:
        return atomic.write_text(self.stage_dir / relpath, text)

    def write_bytes(self, relpath: str, data: bytes) -> Path:
        return atomic.write_bytes(self.stage_dir / relpath, data)

    def write_json(self, relpath: str, obj: Any) -> Path:
        return atomic.write_json(self.stage_dir / relpath, obj)

    def write_parquet(self, relpath: str, df: pl.DataFrame) -> Path:
        return atomic.write_parquet(self.stage_dir / relpath, df)

    # -- progress ------------------------------------------------------------------------------
    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """``with ctx.progress("labelling", n) as advance: advance(1)`` (rich bar with ETA);
        ``advance(1, description="training: loss 0.42")`` also relabels the bar and
        ``advance(1, tokens=57)`` counts generated tokens (shown as tokens/s)."""
        if self._progress_factory is None:
            yield _no_progress
            return
        with self._progress_factory(description, total) as advance:
            yield advance

    # -- generation backends -----------------------------------------------------------------
    def backend(self, name: str) -> GenerationClient:
        """A caching, batching, retrying client for `[backends.NAME]` (see backends.client).

        An executor that generates elsewhere (`generation_client`: the ray executor's pool of
        actors, executors/ray_generation.py) supplies it instead, with the same `generate`,
        `name`, `model_id`, `stats` and `close` and the same cache: stages never know which."""
        if name not in self._clients:
            from ..backends.client import open_client

            remote = getattr(self.executor, "generation_client", None)
            self._clients[name] = (remote(self.spec, name, self.registry, self.cache_dir) if remote
                                   else open_client(self.spec, name, self.registry, self.cache_dir, self.log))
        return self._clients[name]

    def close(self) -> None:
        for client in self._clients.values():
            stats = getattr(client, "stats", None)
            if stats:
                self.stats.setdefault("backend", {})[getattr(client, "name", "?")] = dict(stats)
            client.close()
        self._clients.clear()
