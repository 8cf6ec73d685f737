"""The Ray executor on a real multi-node Ray cluster started here (`ray.cluster_utils.Cluster`,
two nodes of one CPU each), against the local executor on the same spec: specs/realestate.toml
with the scripted backend standing in for the model (generation is not what is tested here)
and 8 rows per partition, so each row-parallel stage has 4 partitions to spread.

- The Ray run's every stage through export (assess, verify and export row-parallel too) has the
  local run's content hash, although a worker was SIGKILLed mid-stage (Ray retried its task), the
  driver was SIGKILLed mid-stage, in seeds and then in assess, and verify's partition 2 failed
  after Ray's retries (the reruns reused the finished partitions: the counts recomputed are asserted).
- A partition whose map raises fails the stage naming it, keeps its rows with the error, and
  writes nothing for it; an unreachable cluster exits 2 with the address and the hint.
Skipped, with the reason, only when Ray is not installed (`pip install '.[ray]'`)."""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path

import polars as pl
import pytest

from dialinsight_engine.run.dataset import has_output, partition_files

from conftest import EXAMPLES, dialengine, install_plugin
from raycluster import realestate_spec, scripted_site, shared_cluster

ray = pytest.importorskip("ray", reason="Ray is not installed (the `ray` extra: pip install '.[ray]')")

PLUGINS = "core,generation,quality,training,scripted"
STAGES = ["ingest", "scenes", "seeds", "evolve", "assess", "sample", "label", "verify", "export"]


@pytest.fixture(scope="module")
def cluster() -> str:
    """Two Ray nodes of one CPU each on this machine (shared with the other Ray modules); its address."""
    return shared_cluster(1, 1).address


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return scripted_site(tmp_path_factory.mktemp("site"))


def realestate(tmp_path: Path, runs: str) -> Path:
    """specs/realestate.toml, runs under tmp_path, the scripted backend, n-gram richness; 3
    labels per prompt (so verify votes) and a validation split (so export splits the pool)."""
    return realestate_spec(tmp_path, runs, {
        'plugin = "llamacpp"\nn_ctx = 4096': 'plugin = "scripted"',
        "max_tokens = 128\ntemperature = 0.0": "max_tokens = 128\ntemperature = 0.7\nsamples = 3",
        'formats = ["openai", "sharegpt", "alpaca"]': 'formats = ["openai", "sharegpt", "alpaca"]\nvalidation_fraction = 0.3',
    }, extra="\n[executor]\npartition_rows = 8\nmax_retries = 1\ndedup_local_rows = 0\n")


def hashes(run: Path) -> dict[str, str]:
    return {s: json.loads((run / s / "manifest.json").read_text())["output_hash"] for s in STAGES}


def manifest(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "manifest.json").read_text())


def test_ray_cluster_gives_the_local_hashes_through_worker_and_driver_kills(cluster, site, tmp_path):
    local_spec = realestate(tmp_path, "local")
    local = dialengine("apply", str(local_spec), "--until", "export", env=site, plugins=PLUGINS)
    assert local.returncode == 0, local.stderr
    want = hashes(tmp_path / "local" / "realestate")

    spec = realestate(tmp_path, "ray")
    run = tmp_path / "ray" / "realestate"
    # the worker computing scenes' partition 1 dies once (Ray retries the task in a new worker);
    # then the driver dies after 2 of seeds' 4 partitions came back
    faults = {**site, "DIALENGINE_WORKER_FAULT": "scenes:00001", "DIALENGINE_FAULT": "partition:seeds:done@2"}
    killed = dialengine("apply", str(spec), "--until", "export", "--executor", "ray", "--address", cluster,
                        env=faults, plugins=PLUGINS)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (run / "scenes" / ".worker-fault-00001").exists()  # the worker kill happened
    scenes = manifest(run, "scenes")
    assert scenes["stats"]["partitions"] == {"total": 4, "reused": 0, "computed": 4, "executor": "ray"}
    assert scenes["output_hash"] == want["scenes"]
    assert scenes["stats"]["content_hash_in"] == "tasks"  # the driver read none of its rows back
    assert not (run / "seeds" / "manifest.json").exists()
    finished = len(list((run / "seeds" / "progress").glob("part-*.json")))
    # the driver saw 2; the workers may have finished the others before it died (a loaded machine)
    assert 2 <= finished <= 4, finished

    # the rerun resumes seeds, then the driver dies again after 2 of assess's decided partitions
    rerun = dialengine("apply", str(spec), "--until", "export", "--executor", "ray", "--address", cluster,
                       env={**site, "DIALENGINE_FAULT": "partition:assess:done@2"}, plugins=PLUGINS)
    assert rerun.returncode == -signal.SIGKILL, rerun.stderr
    seeds = manifest(run, "seeds")
    assert seeds["stats"]["partitions"] == {"total": 4, "reused": finished, "computed": 4 - finished,
                                            "executor": "ray"}
    assert [p["rows"] for p in seeds["partitions"]] == [32, 32, 32, 32]
    decided = len(list((run / "assess" / "progress").glob("part-*.json")))
    assert decided >= 2 and (run / "assess" / ".phase" / "rowwise").is_dir()

    # the rerun finishes assess, sample and label; every worker computing verify's partition 2
    # dies, so it fails after Ray's retry: the stage fails naming it, nothing is written for it
    dying = dialengine("apply", str(spec), "--until", "export", "--executor", "ray", "--address", cluster,
                       env={**site, "DIALENGINE_WORKER_FAULT": "verify:00002:always"}, plugins=PLUGINS)
    assert dying.returncode == 1, dying.stderr
    said = " ".join(dying.stderr.split())
    assert "stage verify failed on partition 00002" in said and "after 1 retries" in said, said
    verify = run / "verify"
    assert pl.read_parquet(verify / "failed" / "part-00002.parquet").height == 8
    assert not (verify / "data" / "part-00002.parquet").exists() and not (verify / "manifest.json").exists()
    assert not (verify / "progress" / "part-00002.json").exists()
    verified = len(list((verify / "progress").glob("part-*.json")))

    final = dialengine("apply", str(spec), "--until", "export", "--executor", "ray", "--address", cluster,
                       env=site, plugins=PLUGINS)
    assert final.returncode == 0, final.stderr
    assert hashes(run) == want
    # assess ran row-parallel on the cluster too (the row-local metrics and richness's counts
    # as maps, then the decisions), and resumed: its prepare's maps and the decided partitions
    # of the killed run were reused; its scratch folder is gone
    assess = manifest(run, "assess")
    total = assess["stats"]["partitions"]["total"]
    assert assess["stats"]["partitions"] == {"total": total, "reused": decided, "computed": total - decided,
                                             "executor": "ray"}
    assert decided <= total and assess["stats"]["row_metrics"]["partitions"] == total
    assert assess["stats"]["prepare_maps"]["rowwise"]["computed"] == 0
    assert assess["stats"]["prepare_maps"]["partial-data_richness"]["computed"] == 0
    assert not (run / "assess" / ".phase").exists()
    assert_dedup_ran_on_ray(manifest(run, "assess")["stats"])
    assert_verify_and_export_ran_row_parallel(run, tmp_path / "local" / "realestate", verified)


def assert_dedup_ran_on_ray(stats: dict) -> None:
    """The distributed dedup, when present, ran inside assess with the same result (this spec
    sends every pool to it: dedup_local_rows = 0)."""
    try:
        import dialinsight_engine.executors.ray_dedup  # noqa: F401
    except ImportError:
        assert "ray_near_duplicates" not in stats
        return
    # one search for every task's group (the groups folded into the band keys), scored where
    # the rows lie: the tasks read the text, the groups and the ids and write each partition's
    # clusters, and the contamination is read a partition at a time; the driver gathers nothing
    assert stats["ray_near_duplicates"]["calls"] == 1
    assert stats["ray_near_duplicates"]["text_read_in_tasks"] is True
    assert stats["ray_near_duplicates"]["written_by_tasks"] is True
    assert stats["prepare_maps"]["pooled"]["scored_where_rows_lie"] == ["data_redundancy"]
    assert stats["prepare_maps"]["pooled"]["left_in_partitions"] == []


def assert_verify_and_export_ran_row_parallel(run: Path, local: Path, verified: int) -> None:
    # verify and export ran row-parallel on the cluster: verify's consensus and label checks
    # as maps, its decisions resumed from the failed run; export's files joined from fragments
    verify_stats = manifest(run, "verify")["stats"]
    assert verify_stats["partitions"] == {"total": 4, "reused": verified, "computed": 4 - verified,
                                          "executor": "ray"}
    assert set(verify_stats["prepare_maps"]) == {"consensus", "rowwise"}
    assert verify_stats["row_metrics"]["metrics"] == ["label_quality"]
    assert verify_stats["label_agreement"] == manifest(local, "verify")["stats"][
        "label_agreement"] and verify_stats["label_agreement"]["samples"] == 3
    export = manifest(run, "export")["stats"]
    assert export["partitions"] == {"total": 4, "reused": 0, "computed": 4, "executor": "ray"}
    assert set(export["splits"]) == {"train", "validation"} and export["splits"]["validation"] > 0
    assert not (run / "verify" / ".phase").exists() and not (run / "export" / ".fragments").exists()
    # the exported files are the same bytes too
    for fmt in ("openai", "sharegpt", "alpaca"):
        for split in ("train", "validation"):
            assert (run / "export" / f"{fmt}.{split}.jsonl").read_bytes() == \
                (local / "export" / f"{fmt}.{split}.jsonl").read_bytes()


BOOM = '''
import polars as pl
from dialinsight_engine.executors.base import RowStage
from dialinsight_engine.hookspecs import hookimpl


class BoomStage(RowStage):
    """Fails on one dialogue: the one partition holding it fails, the others succeed."""
    name = "boom"
    order = 35

    def map_partition(self, pctx, frame, state):
        if "{bad}" in frame["dialogue_id"].to_list():
            raise ValueError("cannot handle dialogue {bad}")
        return frame


@hookimpl
def register_stages():
    return [BoomStage]
'''


def test_a_failing_partition_fails_the_stage_naming_it_and_keeps_its_rows(cluster, site, tmp_path):
    ids = [json.loads(line)["id"] for line in (EXAMPLES / "realestate_dialogues.jsonl").read_text().splitlines()]
    bad = ids[20]  # in partition 2 of 8 rows each
    env = install_plugin(tmp_path / "boom", "dialinsight-boom", "boom_stage", BOOM.replace("{bad}", bad),
                         entry="boom")
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{site['PYTHONPATH']}"
    spec = realestate(tmp_path, "boom")
    result = dialengine("apply", str(spec), "--until", "boom", "--executor", "ray", "--address", cluster,
                        env=env, plugins=PLUGINS + ",boom")
    assert result.returncode == 1, result.stderr
    said = " ".join(result.stderr.split())  # the console wraps long lines
    assert "stage boom failed on partition 00002" in said, said
    assert f"ValueError: cannot handle dialogue {bad}" in said and "failed/part-00002.parquet" in said, said
    folder = tmp_path / "boom" / "realestate" / "boom"
    kept = pl.read_parquet(folder / "failed" / "part-00002.parquet")
    assert kept.height == 32 and bad in kept["dialogue_id"].to_list()
    assert set(kept["error"].to_list()) == {f"ValueError: cannot handle dialogue {bad}"}
    written = {p.name for p in partition_files(folder)}
    assert "part-00002.parquet" not in written and not (folder / "manifest.json").exists()
    assert has_output(folder / ".." / "seeds")


def test_an_unreachable_cluster_exits_2_with_the_address_and_the_hint(write_spec):
    spec = write_spec()
    result = dialengine("apply", str(spec), "--executor", "ray", "--address", "127.0.0.1:9")
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, said
    assert "cannot reach the Ray cluster at '127.0.0.1:9'" in said and "ray start --head" in said


def test_address_without_the_ray_executor_is_refused(write_spec):
    result = dialengine("apply", str(write_spec()), "--address", "auto")
    assert result.returncode == 2 and "needs the ray executor" in result.stderr, result.stderr


def test_spec_executor_section_is_validated(write_spec):
    spec = write_spec(textwrap.dedent("""
        [executor]
        kind = "spark"
    """))
    result = dialengine("validate", str(spec))
    assert result.returncode == 2 and "executor" in result.stderr, result.stderr
