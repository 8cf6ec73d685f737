"""Peak memory of this process and of Ray's worker processes, sampled from /proc (Linux).

Ray titles a worker with the task it runs ("ray::_estimate", "ray::_compute", "ray::IDLE"),
so the peaks are also kept per title: which step of a run needs a worker's memory. Fields:
`RssAnon` (the process's own heap), `RssShmem` (Ray's object-store pages it has mapped,
shared by every process of the node), `RssFile` (mapped files) and `VmRSS` (their sum). A
title's peak is the worker's while Ray titled it so: it includes what earlier tasks of the
same process left to the allocator.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

FIELDS = ("RssAnon", "RssShmem", "RssFile", "VmRSS")


def memory_mb(pid: str) -> tuple[str, dict[str, int]] | None:
    """(command line, {field: MB}) of a process; None for one gone or without memory fields."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_text()
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return cmd, {k: int(fields[k].split()[0]) // 1024 for k in FIELDS}
    except (OSError, KeyError, ValueError):
        return None


class Sampler(threading.Thread):
    """Peak of each field: of this process (`driver`), of each Ray worker (`workers`, by pid),
    and of the workers per task title (`tasks`), every `interval` seconds until `stop()`."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.driver: dict[str, int] = {}
        self.workers: dict[str, dict[str, int]] = {}
        self.tasks: dict[str, dict[str, int]] = {}
        self._done = threading.Event()

    def stop(self) -> Sampler:
        self._done.set()
        self.join()
        return self

    def run(self) -> None:
        me = str(os.getpid())
        while not self._done.is_set():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                found = memory_mb(pid)
                if found is None or (pid != me and not found[0].startswith("ray::")):
                    continue
                if pid == me:
                    _raise(self.driver, found[1])
                    continue
                _raise(self.workers.setdefault(pid, {}), found[1])
                title = found[0].split("\0")[0].split()[0].removeprefix("ray::")
                _raise(self.tasks.setdefault(title, {}), found[1])
            time.sleep(self.interval)


def _raise(peak: dict[str, int], now: dict[str, int]) -> None:
    for key, value in now.items():
        peak[key] = max(peak.get(key, 0), value)
