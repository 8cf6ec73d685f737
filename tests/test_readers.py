"""Readers: JSONL (with broken lines), Parquet and local datasets folders."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pytest

from dialinsight_engine.errors import DataError
from dialinsight_engine.readers.base import normalize_record
from dialinsight_engine.readers.jsonl import JsonlReader
from dialinsight_engine.readers.tables import HfDatasetReader, ParquetReader

from conftest import EXAMPLES, dialengine

EXAMPLE = EXAMPLES / "realestate_dialogues.jsonl"


def _records(reader, path):
    return [normalize_record(r, i) for i, r in enumerate(reader.read(path)) if not isinstance(r, DataError)]


def test_jsonl_reads_turns_and_truth():
    recs = _records(JsonlReader(), EXAMPLE)
    assert len(recs) == 32
    assert recs[0]["turns"][0]["role"] == "customer"
    assert recs[0]["truth"]["requirements"]["area"]


def test_broken_line_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = EXAMPLE.read_text().splitlines()[:3]
    path.write_text("\n".join([lines[0], '{"id": "x", "turns": [', lines[1]]) + "\n")
    items = list(JsonlReader().read(path))
    assert isinstance(items[1], DataError) and items[1].line == 2 and items[1].file == str(path)


def test_record_without_text_names_the_key(tmp_path):
    from dialinsight_engine.readers.base import RawRecord

    with pytest.raises(DataError) as err:
        normalize_record(RawRecord({"id": "a", "turns": [{"role": "user"}]}, tmp_path / "f.jsonl", 7), 0)
    assert err.value.line == 7 and err.value.key == "turns[0].text"


def test_parquet_and_hf_dataset_folder_give_the_same_records(tmp_path):
    rows = [json.loads(line) for line in EXAMPLE.read_text().splitlines()]
    table = pa.Table.from_pylist([{"id": r["id"], "turns": r["turns"]} for r in rows])
    pl.from_arrow(table).write_parquet(tmp_path / "d.parquet")
    folder = tmp_path / "ds"
    folder.mkdir()
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    from_parquet = _records(ParquetReader(), tmp_path / "d.parquet")
    from_hf = _records(HfDatasetReader(), folder)
    assert [r["id"] for r in from_parquet] == [r["id"] for r in rows]
    assert from_parquet == from_hf
    assert HfDatasetReader().accepts(folder) and not HfDatasetReader().accepts(tmp_path / "d.parquet")


def test_ingest_fails_on_broken_line_or_skips_and_counts(write_spec, tmp_path):
    data = tmp_path / "d.jsonl"
    lines = EXAMPLE.read_text().splitlines()[:6]
    lines.insert(2, "{not json")
    data.write_text("\n".join(lines) + "\n")
    failing = dialengine("apply", str(write_spec(data=data)))
    assert failing.returncode == 2
    assert f"{data}:3:" in failing.stderr and "broken JSON" in failing.stderr
    skipping = dialengine("apply", str(write_spec(data=data, on_error="skip", name="s")))
    assert skipping.returncode == 0, skipping.stderr
    manifest = json.loads((tmp_path / "runs" / "s" / "ingest" / "manifest.json").read_text())
    assert manifest["stats"]["skipped_broken"] == 1 and manifest["rows_out"] == 6
    assert f"{data}:3:" in manifest["stats"]["skipped_examples"][0]


def test_missing_and_empty_data_are_user_errors(write_spec, tmp_path):
    missing = dialengine("apply", str(write_spec(data=tmp_path / "nope.jsonl")))
    assert missing.returncode == 2 and "data file not found" in missing.stderr and "data.paths[0]" in missing.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = dialengine("apply", str(write_spec(data=empty, name="e")))
    assert result.returncode == 2 and "no dialogues to process" in result.stderr


def test_ingest_reads_shared_sgd_homes(write_spec, shared_data, tmp_path):
    result = dialengine("apply", str(write_spec(data=shared_data / "sgd-homes" / "dev.jsonl")), "--until", "ingest")
    assert result.returncode == 0, result.stderr
    df = pl.read_parquet(tmp_path / "runs" / "t" / "ingest" / "data.parquet")
    assert df.height == 180
    truth = json.loads(df["truth"][0])
    assert "requirements" in truth
