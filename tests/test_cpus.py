"""Thread sizing from the CPUs a process may really use (affinity, cgroup quota, load), and
`plan` saying what llama.cpp will get."""

from __future__ import annotations

import os

from dialinsight_engine.cpus import CpuBudget, cgroup_quota, cpu_budget

from conftest import dialengine


def test_cgroup_quota_v2_and_v1(tmp_path) -> None:
    v2, v1 = tmp_path / "cpu.max", tmp_path / "v1"
    v2.write_text("150000 100000\n")
    assert cgroup_quota(v2, v1) == 1.5
    v2.write_text("max 100000\n")
    assert cgroup_quota(v2, v1) is None
    v2.unlink()
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(v2, v1) == 3.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(v2, v1) is None
    assert cgroup_quota(tmp_path / "none", tmp_path / "none") is None


def test_threads_follow_quota_affinity_and_load() -> None:
    assert CpuBudget(cores=64, affinity=64, quota=2.0, load=0.0).threads == 2  # the quota, not 64 cores
    assert CpuBudget(cores=64, affinity=8, quota=None, load=0.0).threads == 7  # one kept free
    assert CpuBudget(cores=8, affinity=8, quota=None, load=6.0).threads == 2  # busy cores left alone
    assert CpuBudget(cores=2, affinity=2, quota=None, load=5.0).threads == 1  # never zero
    assert CpuBudget(cores=4, affinity=4, quota=0.5, load=0.0).usable == 1
    here = cpu_budget()
    assert here.affinity == len(os.sched_getaffinity(0)) and 1 <= here.threads <= here.usable
    assert "CPUs usable" in here.describe()


def test_plan_shows_llamacpp_threads(write_spec) -> None:
    result = dialengine("plan", str(write_spec('\n[backends.big]\nplugin = "llamacpp"\nn_threads = 3\n')),
                        plugins="core,generation")
    assert result.returncode == 0, result.stderr
    assert "backends.big (llama.cpp): n_threads = 3 (from the spec)" in result.stderr
    assert "backends.default (llama.cpp): " in result.stderr and "CPUs usable" in result.stderr
