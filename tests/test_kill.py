"""SIGKILL `apply` at 20 named moments from ingest to export (inside evolve and label, between
a stage's data and its manifest, halfway through writing files, inside the manifest write),
rerun, and compare with an uninterrupted run: every stage's Parquet and every export file
byte-identical, no temp file left. The scripted backend (tests/fake_backend.py) stands in
for the model, so generation is fast and its answers never change.

The moments are fault points named in the code (`DIALENGINE_FAULT=NAME@N`, see
run/faults.py), not timed sleeps: each trial dies at the same place every time."""

from __future__ import annotations

import json
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import PIPELINE_PLUGINS, dialengine

PIPELINE = """
[[tasks]]
name = "detect_visit"
scenes = ["viewing_booking", "property_search"]
template = "Did the customer book a visit?\\n{{ dialogue }}\\nAnswer as JSON with visit_booked (true or false)."
[tasks.output_schema]
type = "object"
required = ["visit_booked"]
[tasks.output_schema.properties.visit_booked]
type = "boolean"

[evolution]
rounds = 2
backend = "fake"

[backends.fake]
plugin = "scripted"
batch_size = 4

[quality]
min_score = 0.2

[quality.metrics.prompt_complexity]

[quality.metrics.input_complexity]

[quality.metrics.data_richness]
params = { embeddings = "off" }

[quality.metrics.data_redundancy]

[quality.metrics.label_quality]

[sampling]
n = 12

[labels]
backend = "fake"
"""

STAGES = ["ingest", "scenes", "seeds", "evolve", "assess", "sample", "label", "verify", "export"]


def moments(evolve_requests: int, label_requests: int) -> list[str]:
    """20 kill points across the pipeline (request counts from the uninterrupted run)."""
    label_first = evolve_requests + 1
    return [
        "stage:ingest:start",
        "write:ingest/data.parquet:half",             # torn data write
        "stage:ingest:data-written",                  # data replaced, manifest not yet written
        "write:ingest/manifest.json:half",            # inside the manifest write
        "write:scenes/manifest.json:before-rename",   # manifest complete, not yet in place
        "stage:seeds:ran",
        "backend:request@1",                          # evolve, first request
        f"backend:request@{max(2, evolve_requests // 2)}",  # evolve, mid-way
        f"backend:request@{evolve_requests}",         # evolve, last request
        "write:evolve/evolution_report.json:half",
        "stage:evolve:data-written",
        "write:assess/quality_summary.json:before-rename",
        "write:assess/data.parquet:before-rename",
        "write:sample/sampling_report.json:half",
        "stage:sample:done",
        f"backend:request@{label_first}",             # label, first request
        f"backend:request@{label_first + label_requests // 2}",  # label, mid-way
        "write:label/timings.parquet:half",
        "write:verify/manifest.json:half",
        "write:export/openai.jsonl:half",
    ]


def _spec(write_spec, tmp_path: Path, runs: str) -> Path:
    spec = write_spec(PIPELINE, name="k", filename=f"{runs}.toml")
    spec.write_text(spec.read_text().replace((tmp_path / "runs").as_posix(), (tmp_path / runs).as_posix()))
    return spec


def _apply(spec: Path, env: dict[str, str], fault: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = {"DIALENGINE_FAULT": fault} if fault else {}
    return dialengine("apply", str(spec), "--until", "export", env={**env, **extra}, plugins=PIPELINE_PLUGINS)


def _outputs(run: Path) -> dict[str, bytes]:
    files = {f"{s}/data.parquet": (run / s / "data.parquet").read_bytes() for s in STAGES}
    files.update({f"export/{p.name}": p.read_bytes() for p in sorted((run / "export").glob("*.jsonl"))})
    return files


def _trial(write_spec, tmp_path: Path, env: dict[str, str], i: int, fault: str,
           want: dict[str, bytes]) -> str | None:
    """None when the killed-then-resumed run equals the uninterrupted one, else what differs."""
    spec = _spec(write_spec, tmp_path, f"trial{i}")
    run = tmp_path / f"trial{i}" / "k"
    killed = _apply(spec, env, fault)
    if killed.returncode != -signal.SIGKILL:
        return f"{fault}: not killed (exit {killed.returncode}): the point was never reached"
    resumed = _apply(spec, env)
    if resumed.returncode != 0:
        return f"{fault}: rerun exit {resumed.returncode}: {resumed.stderr[-500:]}"
    got = _outputs(run)
    differ = sorted(k for k in want if got.get(k) != want[k])
    leftovers = sorted(str(p.relative_to(run)) for p in run.rglob(".tmp-*"))
    if differ or leftovers:
        return f"{fault}: differs {differ}, temp files left {leftovers}"
    return None


def test_twenty_kills_across_the_pipeline_resume_to_identical_bytes(write_spec, tmp_path, scripted_backend):
    env = scripted_backend
    reference = _apply(_spec(write_spec, tmp_path, "reference"), env)
    assert reference.returncode == 0, reference.stderr
    run = tmp_path / "reference" / "k"
    want = _outputs(run)
    stats = {s: json.loads((run / s / "manifest.json").read_text())["stats"] for s in ("evolve", "label")}
    evolve_requests = stats["evolve"]["backend"]["fake"]["generated"]
    label_requests = stats["label"]["backend"]["fake"]["generated"]
    assert evolve_requests >= 4 and label_requests >= 4, stats
    points = moments(evolve_requests, label_requests)
    assert len(points) == 20

    # two trials at a time (each is two short processes); every trial has its own folder
    with ThreadPoolExecutor(max_workers=2) as pool:
        problems = list(pool.map(lambda a: _trial(write_spec, tmp_path, env, *a, want), enumerate(points)))
    failed = [p for p in problems if p is not None]
    assert failed == [], f"{20 - len(failed)}/20 resumed to identical bytes; failures: {failed}"
