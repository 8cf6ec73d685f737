"""SIGKILL `apply` at 20 named moments from ingest to export (inside evolve and label, between
a stage's data and its manifest, halfway through writing files, inside the manifest write),
rerun, and compare with an uninterrupted run: every stage's Parquet and every export file
byte-identical, no temp file left. The scripted backend (tests/fake_backend.py) stands in
for the model, so generation is fast and its answers never change.

The moments are fault points named in the code (`DIALENGINE_FAULT=NAME@N`, see
run/faults.py), not timed sleeps: each trial dies at the same place every time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from dialinsight_engine.run.dataset import partition_files

from conftest import EXAMPLES, PIPELINE_PLUGINS, dialengine

DRIVER = Path(__file__).with_name("kill_driver.py")

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

# goal words only: loading the embedding model in each of the ~40 applies cost ~13 s apiece
[evolution.elimination]
task_check = "keywords"

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
        "write:ingest/part-00000.parquet:half",             # torn data write
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
        "write:assess/part-00000.parquet:before-rename",
        "write:sample/sampling_report.json:half",
        "stage:sample:done",
        f"backend:request@{label_first}",             # label, first request
        f"backend:request@{label_first + label_requests // 2}",  # label, mid-way
        "write:label/timings.parquet:half",
        "write:verify/manifest.json:half",
        "write:export/openai.jsonl:half",
    ]


def _spec(write_spec, tmp_path: Path, runs: str) -> Path:
    data = tmp_path / "dialogues.jsonl"  # 12 of the 32 example dialogues keep each run short
    if not data.exists():
        data.write_text("".join((EXAMPLES / "realestate_dialogues.jsonl").read_text().splitlines(True)[:12]))
    spec = write_spec(PIPELINE, data=data, name="k", filename=f"{runs}.toml")
    spec.write_text(spec.read_text().replace((tmp_path / "runs").as_posix(), (tmp_path / runs).as_posix()))
    return spec


def _apply(spec: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return dialengine("apply", str(spec), "--until", "export", env=env, plugins=PIPELINE_PLUGINS)


def _outputs(run: Path) -> dict[str, bytes]:
    files = {f"{s}/{p.name}": p.read_bytes() for s in STAGES for p in partition_files(run / s)}
    files.update({f"export/{p.name}": p.read_bytes() for p in sorted((run / "export").glob("*.jsonl"))})
    return files


def _drive(jobs: list[dict], env: dict[str, str], tmp_path: Path) -> list[int]:
    """Run `jobs` through tests/kill_driver.py: one Python start-up, one fork per apply."""
    job_file, result_file = tmp_path / "jobs.json", tmp_path / "results.json"
    job_file.write_text(json.dumps(jobs))
    full_env = {**os.environ, **env, "NO_COLOR": "1", "COLUMNS": "200", "DIALENGINE_PLUGINS": PIPELINE_PLUGINS}
    full_env.pop("DIALENGINE_FAULT", None)
    subprocess.run([sys.executable, str(DRIVER), str(job_file), str(result_file)], env=full_env, check=True,
                   timeout=600)
    return json.loads(result_file.read_text())


def _verdict(tmp_path: Path, i: int, fault: str, killed: int, resumed: int, want: dict[str, bytes]) -> str | None:
    """None when the killed-then-resumed run equals the uninterrupted one, else what differs."""
    run = tmp_path / f"trial{i}" / "k"
    if killed != -signal.SIGKILL:
        return f"{fault}: not killed (exit {killed}): the point was never reached"
    if resumed != 0:
        return f"{fault}: rerun exit {resumed}: {(tmp_path / f'trial{i}.rerun.log').read_text()[-500:]}"
    got = _outputs(run)
    differ = sorted(k for k in want if got.get(k) != want[k])
    leftovers = sorted(str(p.relative_to(run)) for p in run.rglob(".tmp-*"))
    if differ or leftovers:
        return f"{fault}: differs {differ}, temp files left {leftovers}"
    return None


def test_twenty_kills_across_the_pipeline_resume_to_identical_bytes(write_spec, tmp_path, scripted_backend):
    env = scripted_backend
    reference = _spec(write_spec, tmp_path, "reference")
    args = ["apply", "--until", "export"]
    assert _drive([{"args": [*args, str(reference)], "log": str(tmp_path / "reference.log")}], env, tmp_path) == [0]
    run = tmp_path / "reference" / "k"
    want = _outputs(run)
    stats = {s: json.loads((run / s / "manifest.json").read_text())["stats"] for s in ("evolve", "label")}
    evolve_requests = stats["evolve"]["backend"]["fake"]["generated"]
    label_requests = stats["label"]["backend"]["fake"]["generated"]
    assert evolve_requests >= 4 and label_requests >= 4, stats
    points = moments(evolve_requests, label_requests)
    assert len(points) == 20

    jobs = []
    for i, fault in enumerate(points):
        spec = str(_spec(write_spec, tmp_path, f"trial{i}"))
        jobs += [{"args": [*args, spec], "fault": fault, "log": str(tmp_path / f"trial{i}.killed.log")},
                 {"args": [*args, spec], "log": str(tmp_path / f"trial{i}.rerun.log")}]
    codes = _drive(jobs, env, tmp_path)
    problems = [_verdict(tmp_path, i, fault, codes[2 * i], codes[2 * i + 1], want) for i, fault in enumerate(points)]
    failed = [p for p in problems if p is not None]
    assert failed == [], f"{20 - len(failed)}/20 resumed to identical bytes; failures: {failed}"


def test_same_input_spec_and_seed_give_byte_identical_outputs(write_spec, tmp_path, scripted_backend):
    """Three uninterrupted runs into three folders: every stage's Parquet is the same bytes
    (the issue saw assess alternate between two hashes), and each manifest's hashes are those
    of the file on disk and of its re-read."""
    import hashlib

    from dialinsight_engine.run.dataset import output_hash

    outputs = []
    for i in range(3):
        # a different string-hash seed per process: set and dict orders differ between them
        result = _apply(_spec(write_spec, tmp_path, f"runs{i}"), {**scripted_backend, "PYTHONHASHSEED": str(i + 1)})
        assert result.returncode == 0, result.stderr
        run = tmp_path / f"runs{i}" / "k"
        outputs.append(_outputs(run))
        for stage in STAGES:
            manifest = json.loads((run / stage / "manifest.json").read_text())
            assert manifest["output_hash"] == output_hash(run / stage), stage
            for part in manifest["partitions"]:
                assert part["sha256"] == hashlib.sha256((run / stage / part["name"]).read_bytes()).hexdigest(), stage
    for other in outputs[1:]:
        assert [name for name in outputs[0] if other[name] != outputs[0][name]] == []
