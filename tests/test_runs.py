"""Runs: manifests, skip and resume, config-driven reruns, --from/--until/--force, SIGKILL
mid-write and Ctrl-C. Everything through the real CLI in subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dialinsight_engine.run.atomic import frame_hash
from dialinsight_engine.run.dataset import has_output, read_output
from dialinsight_engine.run.stage import ORDER

from conftest import dialengine, install_plugin


def _stage_actions(stderr: str) -> dict[str, str]:
    out = {}
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].rstrip(":") in ("running", "skip", "done"):
            out.setdefault(parts[0], parts[1].rstrip(":"))
    return out


def test_apply_writes_manifests_and_rerun_skips(write_spec, tmp_path):
    spec = write_spec()
    first = dialengine("apply", str(spec))
    assert first.returncode == 0, first.stderr
    run = tmp_path / "runs" / "t"
    for stage in ("ingest", "scenes", "seeds", "export"):
        manifest = json.loads((run / stage / "manifest.json").read_text())
        assert manifest["rows_out"] > 0 and manifest["fingerprint"] and manifest["output_hash"]
        assert manifest["plugin_versions"]["stage"].startswith("dialinsight-engine==")
        assert manifest["order"] == ORDER[stage]  # readers of the folder order stages by it
    seeds = json.loads((run / "seeds" / "manifest.json").read_text())
    assert seeds["inputs"] == {"scenes": json.loads((run / "scenes" / "manifest.json").read_text())["output_hash"]}
    assert (run / "run.log").read_text().count("stage seeds: run") == 1
    second = dialengine("apply", str(spec))
    assert second.returncode == 0
    assert set(_stage_actions(second.stderr).values()) == {"skip"}
    for fmt in ("openai", "sharegpt", "alpaca"):
        assert (run / "export" / f"{fmt}.jsonl").stat().st_size > 0


def test_config_change_reruns_that_stage_onward_only(write_spec):
    spec = write_spec()
    assert dialengine("apply", str(spec)).returncode == 0
    spec.write_text(spec.read_text().replace('template = "Summarise', 'template = "Briefly summarise'))
    plan = dialengine("--quiet", "plan", str(spec))
    assert json.loads(plan.stdout) == {"ingest": "skip", "scenes": "skip", "seeds": "run", "export": "run"}
    rerun = dialengine("apply", str(spec))
    assert _stage_actions(rerun.stderr) == {"ingest": "skip", "scenes": "skip", "seeds": "running", "export": "running"}


def test_from_until_and_force(write_spec):
    spec = write_spec()
    until = dialengine("apply", str(spec), "--until", "scenes")
    assert _stage_actions(until.stderr) == {"ingest": "running", "scenes": "running"}
    forced = dialengine("apply", str(spec), "--force", "ingest")
    # ingest reruns, its output is identical, so scenes is cut off early; seeds/export are new
    assert _stage_actions(forced.stderr) == {"ingest": "running", "scenes": "skip", "seeds": "running", "export": "running"}
    from_seeds = dialengine("--quiet", "plan", str(spec), "--from", "seeds")
    assert json.loads(from_seeds.stdout) == {"ingest": "skip", "scenes": "skip", "seeds": "run", "export": "run"}
    bad = dialengine("apply", str(spec), "--from", "seed")
    assert bad.returncode == 2 and "did you mean 'seeds'" in bad.stderr


def test_sigkill_mid_write_then_rerun_gives_the_same_output(write_spec, tmp_path):
    clean_spec = write_spec(name="clean", filename="clean.toml")
    assert dialengine("apply", str(clean_spec)).returncode == 0
    spec = write_spec(name="killed", filename="killed.toml")
    # half of the seeds output written, then SIGKILL (a named fault point, not a timed guess)
    killed = dialengine("apply", str(spec), env={"DIALENGINE_FAULT": "write:seeds/part-00000.parquet:half"})
    assert killed.returncode == -signal.SIGKILL
    run = tmp_path / "runs" / "killed"
    assert not has_output(run / "seeds")  # the partial file never took the real name
    assert list((run / "seeds" / "data").glob(".tmp-*"))  # ...it is a temp file the rerun cleans
    rerun = dialengine("apply", str(spec))
    assert rerun.returncode == 0, rerun.stderr
    assert _stage_actions(rerun.stderr) == {"ingest": "skip", "scenes": "skip", "seeds": "running", "export": "running"}
    assert not list((run / "seeds").rglob(".tmp-*"))
    for stage in ("seeds", "export"):
        got = read_output(run / stage)
        want = read_output(tmp_path / "runs" / "clean" / stage)
        assert frame_hash(got) == frame_hash(want)


SLOW_STAGE = '''
import time
from dialinsight_engine.hookspecs import hookimpl
from dialinsight_engine.run.stage import Stage

class Slow(Stage):
    name = "slow"
    order = 35
    def run(self, ctx):
        print("slow stage started", flush=True)
        time.sleep(60)
        return ctx.input

@hookimpl
def register_stages():
    return [Slow]
'''


def test_ctrl_c_exits_130_keeps_finished_stages_and_resumes(write_spec, tmp_path):
    env = install_plugin(tmp_path / "site", "dialinsight-slow", "dialinsight_slow", SLOW_STAGE, entry="slow")
    spec = write_spec()
    proc = subprocess.Popen([sys.executable, "-m", "dialinsight_engine", "apply", str(spec)],
                            env={**os.environ, **env, "DIALENGINE_PLUGINS": "core,slow"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while "slow stage started" not in proc.stdout.readline():
        assert time.monotonic() < deadline and proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "interrupted" in stderr and "rerun" in stderr
    run = tmp_path / "runs" / "t"
    assert (run / "seeds" / "manifest.json").exists()
    assert not (run / "slow" / "manifest.json").exists()
    plan = dialengine("--quiet", "plan", str(spec), env={**env}, plugins="core,slow")
    assert json.loads(plan.stdout) == {"ingest": "skip", "scenes": "skip", "seeds": "skip", "slow": "run", "export": "run"}


def test_failing_stage_exits_1_and_names_the_stage(write_spec, tmp_path):
    env = install_plugin(tmp_path / "site", "dialinsight-boom", "dialinsight_boom", '''
        from dialinsight_engine.hookspecs import hookimpl
        from dialinsight_engine.stages.base import Stage
        class Boom(Stage):
            name = "boom"
            order = 25
            def run(self, ctx):
                raise RuntimeError("model server went away")
        @hookimpl
        def register_stages():
            return [Boom]
        ''', entry="boom")
    result = dialengine("apply", str(write_spec()), env=env, plugins="core,boom")
    assert result.returncode == 1
    assert "stage boom failed: RuntimeError: model server went away" in result.stderr
    assert Path(write_spec().parent / "runs" / "t" / "scenes" / "manifest.json").exists()


def test_disk_full_fails_cleanly_and_resumes_when_space_returns(write_spec, tmp_path):
    import shutil

    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        import pytest

        pytest.skip(f"cannot mount a small tmpfs to fill up here: {made.stderr.decode().strip()}")
    try:
        spec = write_spec()
        spec.write_text(spec.read_text().replace((tmp_path / "runs").as_posix(), mount.as_posix()))
        full = dialengine("apply", str(spec))
        assert full.returncode == 1
        assert "No space left on device" in full.stderr and "Invalid thrift" not in full.stderr, full.stderr
        assert mount.as_posix() in full.stderr  # names the file it could not write
        done = [p.parent.name for p in mount.glob("t/*/manifest.json")]
        assert "ingest" in done and "export" not in done
        for stage_dir in mount.glob("t/*"):
            if stage_dir.is_dir() and not (stage_dir / "manifest.json").exists():
                # finished partitions may stay (a rerun reuses them); each is whole, no temp left
                assert not list(stage_dir.rglob(".tmp-*"))
                if has_output(stage_dir):
                    assert read_output(stage_dir) is not None
        # space returns: the same runs folder, moved to a roomy disk, resumes
        roomy = tmp_path / "roomy"
        shutil.copytree(mount, roomy)
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    spec.write_text(spec.read_text().replace(mount.as_posix(), roomy.as_posix()))
    resumed = dialengine("apply", str(spec))
    assert resumed.returncode == 0, resumed.stderr
    assert _stage_actions(resumed.stderr)["ingest"] == "skip"
    assert (roomy / "t" / "export" / "manifest.json").exists()


QUALITY = """
[quality]
min_score = {min_score}

[quality.metrics.prompt_complexity]

[quality.metrics.input_complexity]

[quality.metrics.data_richness]
params = {{ embeddings = "off" }}
"""
QUALITY_PLUGINS = "core,generation,quality"


def test_data_replaced_but_manifest_not_written_is_never_trusted(write_spec, tmp_path):
    """The sequence from issue 13: apply at min_score 0.3; apply at 0.9 killed after assess's
    data was replaced but before its manifest; restore 0.3: assess must rerun."""
    spec = write_spec(QUALITY.format(min_score=0.3), name="q")
    run = tmp_path / "runs" / "q"
    first = dialengine("apply", str(spec), "--until", "assess", plugins=QUALITY_PLUGINS)
    assert first.returncode == 0, first.stderr
    good = (run / "assess" / "data" / "part-00000.parquet").read_bytes()
    good_manifest = json.loads((run / "assess" / "manifest.json").read_text())
    assert good_manifest["partitions"][0]["sha256"] == hashlib.sha256(good).hexdigest()

    spec.write_text(spec.read_text().replace("min_score = 0.3", "min_score = 0.9"))
    killed = dialengine("apply", str(spec), "--until", "assess", plugins=QUALITY_PLUGINS,
                        env={"DIALENGINE_FAULT": "stage:assess:data-written"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    strict = read_output(run / "assess")
    assert strict["kept"].sum() < good_manifest["rows_kept"]  # the 0.9 output, under the 0.3 manifest
    assert json.loads((run / "assess" / "manifest.json").read_text()) == good_manifest

    spec.write_text(spec.read_text().replace("min_score = 0.9", "min_score = 0.3"))
    plan = dialengine("plan", str(spec), "--until", "assess", plugins=QUALITY_PLUGINS)
    assert "data/part-00000.parquet does not match its manifest" in plan.stderr, plan.stderr
    quiet_plan = dialengine("--quiet", "plan", str(spec), "--until", "assess", plugins=QUALITY_PLUGINS)
    assert json.loads(quiet_plan.stdout)["assess"] == "run"
    rerun = dialengine("apply", str(spec), "--until", "assess", plugins=QUALITY_PLUGINS)
    assert rerun.returncode == 0, rerun.stderr
    assert _stage_actions(rerun.stderr)["assess"] == "running"
    assert (run / "assess" / "data" / "part-00000.parquet").read_bytes() == good
    assert read_output(run / "assess")["kept"].sum() == good_manifest["rows_kept"]

