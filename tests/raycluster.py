"""What the Ray test modules share: a real multi-node Ray cluster on this machine
(`ray.cluster_utils.Cluster`), the scripted backend installed as a plugin, the realestate spec
rewritten for a test.

A cluster takes seconds to start and to stop, and each module used to start its own: modules
that need the same shape (two nodes of one CPU each) now share one per pytest process
(`shared_cluster`), stopped when the process exits. A module that must set the workers'
environment joins that cluster with its own job (`joined`: `runtime_env` env vars reach that
job's workers only), so sharing changes nothing it asserts.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import EXAMPLES, FAKE_BACKEND, REPO, install_plugin

_SHARED: dict[tuple[int, ...], Any] = {}


@contextmanager
def local_cluster(*node_cpus: int, env: dict[str, str] | None = None) -> Iterator[Any]:
    """A Ray cluster of one node per entry of `node_cpus` (that many CPUs each; the first is the
    head), stopped at the end. `env` is set while the nodes start, so every worker inherits it."""
    from ray.cluster_utils import Cluster

    before = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": node_cpus[0], "include_dashboard": False})
        for cpus in node_cpus[1:]:
            cluster.add_node(num_cpus=cpus)
        cluster.wait_for_nodes()
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        yield cluster
    finally:
        cluster.shutdown()


def shared_cluster(*node_cpus: int) -> Any:
    """The cluster of this shape that this pytest process already started, or a new one (stopped
    when the process exits). Its workers get no extra environment: use `joined` for that."""
    if node_cpus not in _SHARED:
        context = local_cluster(*node_cpus)
        _SHARED[node_cpus] = context.__enter__()
        atexit.register(context.__exit__, None, None, None)
    return _SHARED[node_cpus]


@contextmanager
def joined(address: str, env: dict[str, str] | None = None) -> Iterator[None]:
    """This process connected to the cluster at `address` as a job of its own, whose workers
    get `env`; disconnected at the end (the cluster keeps running)."""
    import ray

    ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env} if env else None)
    try:
        yield
    finally:
        ray.shutdown()


def scripted_site(root: Path) -> dict[str, str]:
    """tests/fake_backend.py installed under `root` as the plugin `scripted`; returns the
    environment that puts it on the path."""
    return install_plugin(root / "scripted", "dialinsight-scripted", "fake_backend",
                          FAKE_BACKEND.read_text(encoding="utf-8"), entry="scripted")


def realestate_spec(tmp_path: Path, runs: str, replace: dict[str, str], extra: str = "") -> Path:
    """specs/realestate.toml with its runs under `tmp_path / runs`, the examples by path,
    n-gram richness (no embedding model), each `replace` made (each must apply), `extra` appended."""
    text = (REPO / "specs" / "realestate.toml").read_text(encoding="utf-8")
    text = text.replace('runs_dir = "../runs"', f'runs_dir = "{(tmp_path / runs).as_posix()}"')
    text = text.replace("@examples/", f"{EXAMPLES.as_posix()}/")
    replace = {'params = { embeddings = "auto" }': 'params = { embeddings = "off" }', **replace}
    for old, new in replace.items():
        assert old in text, f"specs/realestate.toml has no {old!r} any more"
        text = text.replace(old, new)
    path = tmp_path / f"{runs}.toml"
    path.write_text(text + extra, encoding="utf-8")
    return path
