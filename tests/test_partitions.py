"""Partitioned stage data on the local executor: the content hash does not depend on the
partitioning, the manifest lists every partition, and a stage killed halfway resumes at its
first unfinished partition (the count recomputed is asserted)."""

from __future__ import annotations

import json
import signal

import polars as pl

from dialinsight_engine.run.dataset import content_hash, partition_files, read_output, split_rows

from conftest import dialengine


def test_content_hash_is_the_same_for_any_partitioning():
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(70_000)], "n": list(range(70_000)),
                          "tags": [[str(i % 7)] for i in range(70_000)]})
    whole = content_hash([frame])
    assert content_hash(split_rows([frame], 777)) == whole
    assert content_hash([frame.slice(0, 3), frame.slice(3, 65_600), frame.slice(65_603)]) == whole
    assert content_hash([frame.with_columns(pl.col("n") + (pl.col("n") == 69_999))]) != whole  # last row differs
    assert content_hash([frame.clear()]) != content_hash([frame.select("id").clear()])  # the schema counts


def test_partitions_in_the_manifest_and_resume_at_the_first_unfinished_one(write_spec, tmp_path):
    clean = write_spec("\n[executor]\npartition_rows = 32\n", name="clean", filename="clean.toml")
    assert dialengine("apply", str(clean)).returncode == 0
    spec = write_spec("\n[executor]\npartition_rows = 8\n", name="p", filename="p.toml")
    run = tmp_path / "runs" / "p"
    killed = dialengine("apply", str(spec), env={"DIALENGINE_FAULT": "partition:scenes:done@2"})
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in partition_files(run / "scenes")] == ["part-00000.parquet", "part-00001.parquet"]
    assert not (run / "scenes" / "manifest.json").exists()

    rerun = dialengine("apply", str(spec))
    assert rerun.returncode == 0, rerun.stderr
    scenes = json.loads((run / "scenes" / "manifest.json").read_text())
    assert scenes["stats"]["partitions"] == {"total": 4, "reused": 2, "computed": 2, "executor": "local"}
    assert [p["rows"] for p in scenes["partitions"]] == [8, 8, 8, 8] and scenes["rows_out"] == 32
    assert not (run / "scenes" / "progress").exists()  # progress records go once the manifest is written
    for stage in ("ingest", "scenes", "seeds", "export"):
        mine = json.loads((run / stage / "manifest.json").read_text())
        theirs = json.loads((tmp_path / "runs" / "clean" / stage / "manifest.json").read_text())
        assert mine["output_hash"] == theirs["output_hash"], stage  # 4 partitions or 1: same rows
    assert read_output(run / "seeds").equals(read_output(tmp_path / "runs" / "clean" / "seeds"))


def test_an_edited_partition_makes_the_stage_rerun_naming_it(write_spec, tmp_path):
    spec = write_spec("\n[executor]\npartition_rows = 8\n")
    assert dialengine("apply", str(spec)).returncode == 0
    part = tmp_path / "runs" / "t" / "scenes" / "data" / "part-00002.parquet"
    frame = pl.read_parquet(part)
    frame.with_columns(pl.col("scenes").list.head(0)).write_parquet(part)
    plan = dialengine("plan", str(spec))
    said = " ".join(plan.stderr.split())
    assert "data/part-00002.parquet does not match its manifest" in said, said
    stray = tmp_path / "runs" / "t" / "seeds" / "data" / "part-00009.parquet"
    frame.write_parquet(stray)
    said = " ".join(dialengine("plan", str(spec)).stderr.split())
    assert "data/part-00009.parquet is not in its manifest" in said, said
