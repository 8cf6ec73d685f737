"""Shared fixtures: the shared data beside the repo, small specs, a CLI runner, and plugins
installed for real (a dist-info with entry points on PYTHONPATH, not imported by path)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fake_backend

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLES = REPO / "python" / "dialinsight_engine" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip with the reason."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA} (real data sets live beside the repo)")
    return SHARED_DATA


CORE_SPEC = """\
[project]
name = "{name}"
business = "A rental agency."
runs_dir = "{runs}"
seed = 3

[data]
paths = ["{data}"]
on_error = "{on_error}"
min_turns = 2

[[roles]]
name = "customer"
aliases = ["user"]

[[roles]]
name = "agent"
aliases = ["system"]

[[scenes]]
name = "property_search"
weight = 2.0
keywords = ["bedroom", "bedrooms", "apartment"]

[[scenes]]
name = "viewing_booking"
keywords = ["visit", "viewing"]
intents = ["ScheduleVisit"]

[[tasks]]
name = "extract_requirements"
weight = 2.0
scenes = ["property_search"]
template = ["Extract the requirements as JSON.\\n{{{{ dialogue }}}}", "{{{{ business }}}} Requirements as JSON:\\n{{{{ dialogue }}}}"]

[[tasks]]
name = "summarise_needs"
template = "Summarise the customer's needs ({{{{ scene }}}}).\\n{{{{ dialogue }}}}"
"""


@pytest.fixture
def write_spec(tmp_path: Path):
    """write_spec(extra_toml="", data=..., name=...) -> path of a small model-free spec."""

    def make(extra: str = "", *, data: Path | str | None = None, name: str = "t",
             on_error: str = "fail", filename: str = "spec.toml") -> Path:
        text = CORE_SPEC.format(name=name, runs=(tmp_path / "runs").as_posix(),
                                data=Path(data or EXAMPLES / "realestate_dialogues.jsonl").as_posix(),
                                on_error=on_error)
        path = tmp_path / filename
        path.write_text(text + textwrap.dedent(extra), encoding="utf-8")
        return path

    return make


def dialengine(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
               timeout: float = 300, plugins: str | None = "core") -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess (exit codes, stderr and signals as a user sees them).
    `plugins` limits the loaded entry points (DIALENGINE_PLUGINS); None loads all."""
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    full_env.pop("DIALENGINE_PLUGINS", None)
    if plugins is not None:
        full_env["DIALENGINE_PLUGINS"] = plugins
    return subprocess.run([sys.executable, "-m", "dialinsight_engine", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout)


def install_plugin(site: Path, dist: str, module: str, source: str, entry: str | None = None) -> dict[str, str]:
    """Install a one-module plugin into `site` as pip would (module + dist-info with entry
    points); returns the environment that puts it on the path."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[dialinsight_engine]\n{entry or dist} = {module}\n", encoding="utf-8")
    (info / "RECORD").write_text("", encoding="utf-8")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


FAKE_BACKEND = Path(__file__).with_name("fake_backend.py")
PIPELINE_PLUGINS = "core,generation,quality,scripted"


@pytest.fixture
def scripted_backend(tmp_path: Path) -> dict[str, str]:
    """Installs tests/fake_backend.py as the plugin `scripted` (backend `plugin = "scripted"`):
    deterministic answers from the prompt, no model. Returns the environment that loads it;
    pass `plugins=PIPELINE_PLUGINS` (or include "scripted") to `dialengine`."""
    return install_plugin(tmp_path / "site-scripted", "dialinsight-scripted", "fake_backend",
                          FAKE_BACKEND.read_text(encoding="utf-8"), entry="scripted")


@pytest.fixture
def scripted_registry():
    """The plugin registry with tests/fake_backend.py registered in-process (for tests that run
    stages without a subprocess): a spec's `plugin = "scripted"` gets fast, deterministic answers."""
    from dialinsight_engine.plugins import build_registry

    return build_registry([fake_backend])


def assess_in_partitions(spec, registry, rows, run: Path, executor, rows_per_partition: int = 7):
    """Run the assess stage on `executor` over `rows` written as a `review` output of
    `rows_per_partition`-row partitions under `run`; returns the stage context (its stats)."""
    import logging

    from dialinsight_engine.executors.driver import produce
    from dialinsight_engine.run.context import StageContext
    from dialinsight_engine.run.dataset import write_partition
    from dialinsight_engine.run.manifest import Manifest
    from dialinsight_engine.stages.assess import AssessStage

    parts = [write_partition(run / "review", i, rows.slice(start, rows_per_partition))
             for i, start in enumerate(range(0, rows.height, rows_per_partition))]
    Manifest("review", "f", "c", [], {}, {}, {}, rows.height, rows.height, None, "h",
             partitions=[p.to_dict() for p in parts]).save(run / "review")
    ctx = StageContext(spec=spec, registry=registry, run_dir=run, stage="assess", input_stage="review",
                       log=logging.getLogger("test"), partition_rows=rows_per_partition)
    ctx.executor = executor
    produce(AssessStage(), ctx, executor, "key")
    return ctx
