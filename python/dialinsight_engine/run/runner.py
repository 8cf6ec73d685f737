"""The stage DAG: decide what runs, run it, write outputs atomically, resume on rerun."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ReviewPending, StageFailed, UserError, did_you_mean
from . import atomic, faults
from .context import StageContext
from .lock import RunLock
from .manifest import Manifest, canonical_hash, partitions_sha256, production_cost
from .stage import Stage

if TYPE_CHECKING:
    from ..executors.local import Executor
    from ..plugins import Registry
    from ..spec import Spec

Action = Literal["run", "skip", "disabled", "excluded"]
LOG = logging.getLogger("dialinsight_engine")


@dataclass
class PlanItem:
    stage: Stage
    action: Action
    why: str
    input_stage: str | None = None
    config_hash: str = ""
    fingerprint: str = ""
    #: rerun only because an upstream stage reruns: apply skips it after all when that
    #: upstream's new output hash is the one this stage last ran on (early cutoff)
    skip_if_input_unchanged: bool = False


class Runner:
    def __init__(self, spec: Spec, registry: Registry, *, run_dir: Path | None = None,
                 console: Any = None, quiet: bool = False, executor: str | None = None,
                 address: str | None = None) -> None:
        self.spec = spec
        self.executor_kind, self.address = executor, address
        self._executor: Executor | None = None
        self.registry = registry
        self.run_dir = Path(run_dir) if run_dir else spec.run_dir()
        self.console = console
        self.quiet = quiet
        self.stages: list[Stage] = sorted(
            (cls() for cls in registry.items.get("stage", {}).values()), key=lambda s: (s.order, s.name)
        )

    # -- planning ------------------------------------------------------------------------------
    def _check_names(self, *names: str | None) -> None:
        known = [s.name for s in self.stages]
        for name in names:
            if name and name not in known:
                raise UserError(f"unknown stage {name!r}",
                                hint=did_you_mean(name, known) or f"stages: {', '.join(known)}")

    def _fingerprint(self, stage: Stage, ctx: StageContext) -> tuple[str, str, dict[str, Any]]:
        config = {key: self.spec.section(key) for key in stage.config_keys}
        config_hash = canonical_hash(config)
        extra = stage.fingerprint_extra(ctx)
        owner = self.registry.version_of("stage", stage.name)
        fingerprint = canonical_hash([stage.name, stage.version, config_hash, owner, extra])
        return fingerprint, config_hash, extra

    def plan(self, *, from_stage: str | None = None, until: str | None = None,
             force: tuple[str, ...] = ()) -> list[PlanItem]:
        self._check_names(from_stage, until, *force)
        items: list[PlanItem] = []
        previous: str | None = None
        upstream_runs = False
        reached_from = from_stage is None
        past_until = False
        for stage in self.stages:
            reason = stage.disabled_reason(self.spec)
            if reason:
                items.append(PlanItem(stage, "disabled", reason))
                continue
            if past_until:
                items.append(PlanItem(stage, "excluded", f"after --until {until}"))
                continue
            ctx = self._context(stage, previous, progress=False)
            fingerprint, config_hash, _ = self._fingerprint(stage, ctx)
            manifest = Manifest.load(self.run_dir / stage.name)
            stale = manifest.mismatch(self.run_dir / stage.name) if manifest is not None else None
            done = manifest is not None and stale is None
            cutoff = False
            if stage.name == from_stage:
                reached_from = True
            if not reached_from:
                if not done:
                    raise UserError(f"--from {from_stage}: stage {stage.name!r} before it has no valid output"
                                    f" ({stale or 'no output yet'})")
                action, why = "skip", "before --from: output kept as is"
            elif stage.name in force or (from_stage and stage.name == from_stage):
                action, why = "run", "forced"
            else:
                action, why, cutoff = self._freshness(stage, manifest, stale, config_hash, fingerprint,
                                                      previous, upstream_runs)
            if from_stage and reached_from:
                action, why = ("run", why if action == "run" else "from --from")
            items.append(PlanItem(stage, action, why, previous, config_hash, fingerprint, cutoff))
            upstream_runs = upstream_runs or action == "run"
            previous = stage.name
            if stage.name == until:
                past_until = True
        return items

    def _freshness(self, stage: Stage, manifest: Manifest | None, stale: str | None, config_hash: str,
                   fingerprint: str, previous: str | None, upstream_runs: bool) -> tuple[Action, str, bool]:
        """Whether a stage's output is still good: (action, why, skip_if_input_unchanged)."""
        if manifest is None:
            return "run", "no output yet", False
        if stale is not None:
            return "run", stale, False
        if manifest.config_hash != config_hash:
            return "run", f"config changed ({', '.join(stage.config_keys)})", False
        if manifest.fingerprint != fingerprint:
            return "run", "inputs, plugin version or stage version changed", False
        if upstream_runs:  # early cutoff: apply skips it when the upstream's output is unchanged
            return "run", f"upstream {previous} reruns (skipped if its output is unchanged)", True
        if previous and manifest.inputs.get(previous) != self._output_hash(previous):
            return "run", f"output of {previous} changed", False
        return "skip", "up to date", False

    def _output_hash(self, stage_name: str) -> str | None:
        manifest = Manifest.load(self.run_dir / stage_name)
        return manifest.output_hash if manifest else None

    def lock(self) -> RunLock:
        """The run folder's writer lock (`with runner.lock(): ...`); apply takes it itself."""
        return RunLock(self.run_dir)

    # -- running ---------------------------------------------------------------------------------
    def apply(self, *, from_stage: str | None = None, until: str | None = None,
              force: tuple[str, ...] = ()) -> list[PlanItem]:
        self._check_names(from_stage, until, *force)
        with self.lock() as lock:
            try:
                return self._apply_locked(lock, from_stage=from_stage, until=until, force=force)
            finally:
                if self._executor is not None:
                    self._executor.close()
                    self._executor = None

    def executor(self) -> Executor:
        """The executor for row-parallel stages (started on first use: Ray only when needed)."""
        if self._executor is None:
            from ..executors import make_executor

            self._executor = make_executor(self.spec.executor, self.executor_kind, self.address)
        return self._executor

    def _apply_locked(self, lock: RunLock, *, from_stage: str | None, until: str | None,
                      force: tuple[str, ...]) -> list[PlanItem]:
        # planned under the lock: another writer may have changed the folder until now
        items = self.plan(from_stage=from_stage, until=until, force=force)
        handler = logging.FileHandler(self.run_dir / "run.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.DEBUG)
        try:
            LOG.info("apply %s -> %s", self.spec.source, self.run_dir)
            if lock.took_over:
                LOG.warning("took over a stale lock left by %s", lock.took_over)
                self._say(f"[yellow]stale lock taken over[/yellow]: left by {lock.took_over}")
            removed = atomic.clean_stale_temps(self.run_dir)  # only we write here now
            if removed:
                LOG.info("removed %d temp files left by an interrupted run", removed)
            for item in items:
                if item.action == "run" and item.skip_if_input_unchanged:
                    # early cutoff: the upstream reran but produced the same output
                    manifest = Manifest.load(self.run_dir / item.stage.name)
                    if (manifest and manifest.fingerprint == item.fingerprint and item.input_stage
                            and manifest.inputs.get(item.input_stage) == self._output_hash(item.input_stage)):
                        item.action, item.why = "skip", f"{item.input_stage} output unchanged"
                if item.action != "run":
                    LOG.info("stage %s: %s (%s)", item.stage.name, item.action, item.why)
                    self._say(f"[dim]{item.stage.name:<8} {item.action}: {item.why}[/dim]")
                    continue
                self._run_stage(item)
        finally:
            LOG.removeHandler(handler)
            handler.close()
        return items

    def _run_stage(self, item: PlanItem) -> None:
        stage = item.stage
        folder = self.run_dir / stage.name
        atomic.clean_stale_temps(folder)
        faults.point(f"stage:{stage.name}:start")
        ctx = self._context(stage, item.input_stage, progress=not self.quiet)
        ctx.executor = self.executor()  # driver-side stages may hand work to it (executors/dedup.py)
        fingerprint, config_hash, extra = self._fingerprint(stage, ctx)
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        self._say(f"[bold]{stage.name:<8}[/bold] running ({item.why})")
        LOG.info("stage %s: run (%s)", stage.name, item.why)
        try:
            rows_in = self._rows_out(item.input_stage)
            partitions = self._produce(stage, ctx, fingerprint, item.input_stage)
        except (UserError, KeyboardInterrupt, StageFailed, ReviewPending):
            raise
        except Exception as exc:
            LOG.exception("stage %s failed", stage.name)
            raise StageFailed(f"stage {stage.name} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            ctx.close()
        faults.point(f"stage:{stage.name}:data-written")
        # hashed from the bytes on disk: what the next run checks and what downstream reads
        summary = self._summarise(folder, partitions, ctx.stats)
        inputs = {}
        if item.input_stage:
            inputs[item.input_stage] = self._output_hash(item.input_stage) or ""
        kept, output_hash = summary.kept, summary.content_hash
        seconds = round(time.perf_counter() - t0, 3)
        manifest = Manifest(
            stage=stage.name, order=stage.order, fingerprint=fingerprint, config_hash=config_hash,
            config_keys=list(stage.config_keys), inputs=inputs,
            plugin_versions={"stage": self.registry.version_of("stage", stage.name), **extra.get("plugins", {})},
            extra=extra, rows_in=rows_in, rows_out=summary.rows, rows_kept=kept,
            output_hash=output_hash, output_sha256=partitions_sha256(partitions), partitions=partitions,
            files=self._side_files(folder), stats=ctx.stats,
            started=started.isoformat(timespec="seconds"),
            finished=datetime.now(UTC).isoformat(timespec="seconds"),
            seconds=seconds, cost_seconds=production_cost(Manifest.load(folder), output_hash, seconds),
        )
        manifest.save(folder)
        self._finish_clean(folder)
        faults.point(f"stage:{stage.name}:done")
        kept_txt = f", {kept} kept" if kept is not None else ""
        self._say(f"[green]{stage.name:<8} done[/green]: {summary.rows} rows{kept_txt} in {manifest.seconds:.1f}s")
        LOG.info("stage %s: done, %d rows in %.2fs", stage.name, summary.rows, manifest.seconds)

    # -- partitioned output (executors/driver.py does the work) ---------------------------------
    def _produce(self, stage: Stage, ctx: StageContext, fingerprint: str,
                 input_stage: str | None) -> list[dict[str, Any]]:
        from ..executors.driver import produce

        # partitions of an interrupted run are reused only for this config on this input
        key = canonical_hash([fingerprint, self._output_hash(input_stage) if input_stage else None])
        return [p.to_dict() for p in produce(stage, ctx, self.executor(), key)]

    def _summarise(self, folder: Path, partitions: list[dict[str, Any]], stats: dict[str, Any]) -> Any:
        from ..allocator import release
        from ..executors.base import peak_rss_mb, rss_mb
        from ..executors.driver import summarise

        release()  # what the stage freed goes back before the pass, and the pass's after it
        summary = summarise(folder, partitions, self.executor())
        release()
        stats["content_hash_in"] = summary.hashed_in
        # the driver's peak so far in this process, this pass included (the benchmarks read it)
        stats["driver_peak_rss_mb"] = peak_rss_mb()
        stats["driver_rss_after_mb"] = rss_mb()  # what the driver holds after the stage
        return summary

    @staticmethod
    def _finish_clean(folder: Path) -> None:
        from ..executors.driver import finish_clean

        finish_clean(folder)

    @staticmethod
    def _side_files(folder: Path) -> dict[str, str]:
        """The stage's other files (reports, exports): everything but its dataset, progress
        records, failed rows and hidden files."""
        skip_dirs = {"data", "progress", "failed"}
        return {
            str(p.relative_to(folder)): atomic.file_sha256(p)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")
            and p.relative_to(folder).parts[0] not in skip_dirs
        }

    def _rows_out(self, stage_name: str | None) -> int:
        manifest = Manifest.load(self.run_dir / stage_name) if stage_name else None
        return manifest.rows_out if manifest else 0

    def _context(self, stage: Stage, input_stage: str | None, *, progress: bool) -> StageContext:
        return StageContext(
            spec=self.spec, registry=self.registry, run_dir=self.run_dir, stage=stage.name,
            input_stage=input_stage, log=LOG.getChild(stage.name),
            progress_factory=self._progress if progress else None,
            partition_rows=self.spec.executor.partition_rows,
        )

    @contextmanager
    def _progress(self, description: str, total: int | None) -> Iterator[Any]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from ..progress import Heartbeat

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[token_rate]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                      transient=True, disable=self.quiet) as bar, \
                Heartbeat(description, total, log=LOG, console=None if self.quiet else self.console) as beat:
            task = bar.add_task(description, total=total, token_rate="")
            def advance(n: int = 1, description: str | None = None, tokens: int = 0) -> None:
                beat.advance(n, description, tokens)
                bar.update(task, advance=n, description=description or None, token_rate=beat.token_rate())

            yield advance

    def _say(self, message: str) -> None:
        if self.console is not None and not self.quiet:
            self.console.print(message)
