"""The run-folder lock: one writer at a time, the second gets exit 2 naming the holder; a lock
left by a killed process is taken over with a log line. Real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dialinsight_engine.run.lock import LOCK_FILE, RunLock, RunLocked, _process_start

from conftest import dialengine, install_plugin

# a stage that holds `apply` (and so the lock) until the test creates the file `release`
WAITING_STAGE = '''
import os, time
from pathlib import Path
from dialinsight_engine.hookspecs import hookimpl
from dialinsight_engine.run.stage import Stage

class Waiting(Stage):
    name = "waiting"
    order = 35
    def run(self, ctx):
        print("waiting stage started", flush=True)
        release = Path(os.environ["WAIT_FOR"])
        for _ in range(600):
            if release.exists():
                break
            time.sleep(0.1)
        return ctx.input

@hookimpl
def register_stages():
    return [Waiting]
'''


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long messages at spaces


def _start_holder(spec: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "dialinsight_engine", "apply", str(spec)],
                            env={**os.environ, **env, "DIALENGINE_PLUGINS": "core,waiting", "NO_COLOR": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while "waiting stage started" not in proc.stdout.readline():
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    return proc


def test_second_writer_gets_exit_2_naming_the_holder_then_a_killed_holder_is_taken_over(write_spec, tmp_path):
    release = tmp_path / "release"
    env = {**install_plugin(tmp_path / "site", "dialinsight-waiting", "dialinsight_waiting", WAITING_STAGE,
                            entry="waiting"), "WAIT_FOR": str(release)}
    spec = write_spec()
    run = tmp_path / "runs" / "t"
    holder = _start_holder(spec, env)
    try:
        holder_info = json.loads((run / LOCK_FILE).read_text())
        assert holder_info["pid"] == holder.pid and holder_info["host"] == socket.gethostname()

        # the same spec, and another config of the same project: both refused, nothing written
        other = write_spec(filename="other.toml")
        other.write_text(other.read_text().replace("seed = 3", "seed = 4"))
        seeds_before = (run / "seeds" / "manifest.json").read_bytes()
        for second_spec in (spec, other):
            second = dialengine("apply", str(second_spec), env=env, plugins="core,waiting")
            assert second.returncode == 2, second.stderr
            message = _flat(second.stderr)
            assert f"in use by pid {holder.pid} on {socket.gethostname()} since {holder_info['since']}" in message
            assert f"(dialengine apply {spec})" in message and LOCK_FILE in message
        assert (run / "seeds" / "manifest.json").read_bytes() == seeds_before

        # other writers into the run folder wait their turn too
        decisions = tmp_path / "decisions.jsonl"
        decisions.write_text("")
        for args, plugins in ((["review", "import", str(decisions), str(run)], "core,generation"),
                              (["report", str(run)], "core,quality")):
            refused = dialengine(*args, env=env, plugins=plugins)
            assert refused.returncode == 2 and f"in use by pid {holder.pid}" in _flat(refused.stderr), refused.stderr
        # reading is not writing
        assert dialengine("--quiet", "plan", str(spec), env=env, plugins="core,waiting").returncode == 0

        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the kernel drops the flock
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid  # its details stay behind

    release.touch()
    resumed = dialengine("apply", str(spec), env=env, plugins="core,waiting")
    assert resumed.returncode == 0, resumed.stderr
    assert f"stale lock taken over: left by pid {holder.pid}" in _flat(resumed.stderr)
    assert f"took over a stale lock left by pid {holder.pid}" in (run / "run.log").read_text()
    assert (run / LOCK_FILE).read_text() == ""  # released cleanly: nothing stale for the next one
    again = dialengine("apply", str(spec), env=env, plugins="core,waiting")
    assert again.returncode == 0 and "stale" not in again.stderr


def test_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    run = tmp_path / "run"
    with RunLock(run, "outer"):
        with RunLock(run, "inner"):  # apply calling a writer under its own lock
            pass
        child = subprocess.run([sys.executable, "-c", (
            "import sys; from dialinsight_engine.run.lock import RunLock, RunLocked\n"
            f"try:\n    RunLock({str(run)!r}).acquire()\nexcept RunLocked as e:\n    print(e); sys.exit(2)")],
            capture_output=True, text=True, env={**os.environ})
        assert child.returncode == 2 and f"pid {os.getpid()}" in child.stdout and "(outer)" in child.stdout
    with RunLock(run):  # released, free again
        pass


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_details_of_a_live_process_count_even_without_the_flock(tmp_path):
    """Where flock is not enforced (some network filesystems) the details still protect: a
    live process on this host that wrote them holds the folder; a dead or reused pid does not."""
    run = tmp_path / "run"
    run.mkdir()
    sleeper = _sleeper()
    try:
        details = {"pid": sleeper.pid, "host": socket.gethostname(), "started": _process_start(sleeper.pid),
                   "since": "2026-01-01T00:00:00+00:00", "command": "dialengine apply x.toml"}
        (run / LOCK_FILE).write_text(json.dumps(details))
        with pytest.raises(RunLocked, match=f"pid {sleeper.pid} on {socket.gethostname()}"):
            RunLock(run).acquire()
        # the same pid with another start time is a reused pid, not the holder
        (run / LOCK_FILE).write_text(json.dumps({**details, "started": "1"}))
        with RunLock(run) as lock:
            assert lock.took_over and "that process is gone" in lock.took_over
    finally:
        sleeper.kill()
        sleeper.wait()
    (run / LOCK_FILE).write_text(json.dumps(details))
    with RunLock(run) as lock:  # the holder died
        assert lock.took_over and f"pid {sleeper.pid}" in lock.took_over
