"""End to end: `dialengine apply specs/realestate.toml` on the embedded model, timed.

    python benchmarks/bench_e2e.py [--spec specs/realestate.toml] [--until STAGE] [--keep]

Runs into a fresh temporary runs folder (so `runs/` starts empty and nothing is cached: a copy
of the spec beside the original, with `runs_dir` pointed there, since runs_dir is relative to
the spec's folder), then prints the wall time, each stage's seconds from its manifest, and what generation made.
Target: evolved instructions and labels for the example dialogues within 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from dialinsight_engine.run.dataset import read_output

REPO = Path(__file__).resolve().parents[1]


def _spec_with_runs_dir(spec: Path, runs: Path) -> Path:
    """A copy of `spec` in its own folder (relative data paths still work) writing to `runs`."""
    text = re.sub(r"(?m)^runs_dir\s*=.*$", "", spec.read_text(encoding="utf-8"))
    text = text.replace("[project]\n", f"[project]\nruns_dir = {json.dumps(runs.as_posix())}\n", 1)
    copy = spec.with_name(f".bench-e2e-{os.getpid()}-{spec.name}")
    copy.write_text(text, encoding="utf-8")
    return copy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default=str(REPO / "specs" / "realestate.toml"))
    ap.add_argument("--until", default=None, help="stop after this stage")
    ap.add_argument("--keep", action="store_true", help="keep the run folder and print where it is")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_e2e-"))
    spec = _spec_with_runs_dir(Path(args.spec).resolve(), work / "runs")
    cmd = [sys.executable, "-m", "dialinsight_engine", "apply", str(spec)]
    if args.until:
        cmd += ["--until", args.until]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    spec.unlink()
    print(proc.stderr[-3000:], file=sys.stderr)
    runs = [p for p in (work / "runs").iterdir() if p.is_dir()] if (work / "runs").exists() else []
    print(f"exit code {proc.returncode}; wall time {wall:.1f}s ({wall / 60:.2f} min) on {os.cpu_count()} cores, "
          f"load average now {os.getloadavg()[0]:.1f}")
    for run_dir in runs:
        for manifest_path in sorted(run_dir.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime):
            m = json.loads(manifest_path.read_text())
            backend = m.get("stats", {}).get("backend", {})
            extra = "; ".join(f"{name}: {s.get('generated', 0)} generated, {s.get('cache_hits', 0)} cached, "
                              f"{s.get('retries', 0)} retries, {s.get('failures', 0)} failures, "
                              f"{s.get('completion_tokens', 0)} completion tokens" for name, s in backend.items())
            print(f"  {m['stage']:<8} {m['seconds']:>8.1f}s  rows {m['rows_out']:>4}  kept {m['rows_kept']}"
                  + (f"  [{extra}]" if extra else ""))
        df = read_output(run_dir / "evolve")
        if df is not None:
            evolved = df.filter(pl.col("round") > 0)
            print(f"evolved instructions: {evolved.height} ({int(evolved['kept'].sum())} kept), "
                  f"distinct evolved texts kept: {evolved.filter(pl.col('kept'))['instruction'].n_unique()}")
        df = read_output(run_dir / "label")
        if df is not None:
            print(f"labels: {df.height} ({int(df['kept'].sum())} ok), "
                  f"{int(df['completion_tokens'].sum())} completion tokens")
    if args.keep:
        print(f"run kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
