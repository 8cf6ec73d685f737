"""How many CPU threads this process should use: the CPUs it may actually run on (affinity
mask and cgroup quota, not `os.cpu_count()`), less what other work keeps busy.

llama.cpp's threads spin-wait for each other: with more threads than free cores one
generation took 65 s instead of 6 s on a loaded machine, so the default errs low.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = Path("/sys/fs/cgroup/cpu")


@dataclass(frozen=True)
class CpuBudget:
    cores: int  # os.cpu_count()
    affinity: int  # CPUs in this process's affinity mask
    quota: float | None  # CPUs' worth of time the cgroup allows (None: unlimited)
    load: float  # 1-minute load average (runnable tasks)

    @property
    def usable(self) -> int:
        limit = self.affinity if self.quota is None else min(self.affinity, self.quota)
        return max(1, math.floor(limit))

    @property
    def threads(self) -> int:
        """Threads for a compute-bound pool: the usable CPUs that are idle, one kept free for
        the rest of the process when there are more than two, at least one."""
        idle = math.floor(self.usable - self.load + 0.5)
        headroom = 1 if self.usable > 2 else 0
        return max(1, min(self.usable - headroom, idle))

    def describe(self) -> str:
        quota = "none" if self.quota is None else f"{self.quota:g} CPUs"
        return (f"{self.threads} threads ({self.usable} CPUs usable: affinity {self.affinity} of "
                f"{self.cores} cores, cgroup quota {quota}; load {self.load:.1f})")


def cgroup_quota(v2: Path = CGROUP_V2, v1: Path = CGROUP_V1) -> float | None:
    """CPUs' worth of time per period the cgroup grants, from `cpu.max` (v2) or
    `cpu.cfs_quota_us`/`cpu.cfs_period_us` (v1); None when unlimited or unreadable."""
    try:
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        period_us = int((v1 / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def cpu_budget() -> CpuBudget:
    cores = os.cpu_count() or 1
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        affinity = cores
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return CpuBudget(cores=cores, affinity=affinity, quota=cgroup_quota(), load=load)


def default_threads() -> int:
    return cpu_budget().threads
