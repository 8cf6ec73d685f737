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
from dialinsight_engine.run.dataset import read_output

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
    # reported against the data file, not the spec
    assert result.returncode == 2 and f"{empty}: data file holds no records" in result.stderr


def test_ingest_reads_shared_sgd_homes(write_spec, shared_data, tmp_path):
    result = dialengine("apply", str(write_spec(data=shared_data / "sgd-homes" / "dev.jsonl")), "--until", "ingest")
    assert result.returncode == 0, result.stderr
    df = read_output(tmp_path / "runs" / "t" / "ingest")
    assert df.height == 180
    truth = json.loads(df["truth"][0])
    assert "requirements" in truth


# -- broken bytes and shapes (issue 13: each was an exit 1 with no file or line) -------------
GOOD = EXAMPLE.read_bytes().splitlines()


def _ingest(write_spec, data, on_error="fail"):
    """Run `ingest` in-process: (ingest manifest stats, None) or (None, the DataError)."""
    from dialinsight_engine.plugins import build_registry
    from dialinsight_engine.run import Runner
    from dialinsight_engine.spec import load_spec

    registry = build_registry()
    runner = Runner(load_spec(write_spec(data=data, on_error=on_error, name=on_error), registry), registry,
                    quiet=True)
    try:
        runner.apply(until="ingest")
    except DataError as exc:
        return None, exc
    return json.loads((runner.run_dir / "ingest" / "manifest.json").read_text())["stats"], None


def _lines_file(tmp_path, lines, name="d.jsonl"):
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _in_first_text(line: bytes, insert: bytes) -> bytes:
    return line.replace(b'"text": "', b'"text": "' + insert, 1)


BROKEN_LINES = {
    # one non-UTF-8 byte inside a string
    "non_utf8_byte": (_in_first_text(GOOD[1], b"H\xe9llo"), "not UTF-8: byte 0xe9"),
    # a lone surrogate escape: json.loads accepts it, the Parquet writer did not
    "lone_surrogate": (_in_first_text(GOOD[1], b"a\\ud800b"), "lone surrogate"),
    # nesting deeper than the JSON parser's recursion (RecursionError)
    "deep_nesting": (b'{"id": "d", "turns": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    # nesting the parser survives but later writers would not
    "nesting_500": (b'{"id": "d", "x": ' + b'{"a": ' * 500 + b"1" + b"}" * 500 + b', "turns": []}',
                    "nested too deeply"),
    "huge_integer": (b'{"id": ' + b"9" * 5000 + b', "turns": []}', "unreadable JSON value"),
    "truncated": (GOOD[1][:57], "broken JSON line"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_LINES))
def test_a_broken_line_fails_naming_file_and_line_or_is_skipped(case, write_spec, tmp_path):
    bad, message = BROKEN_LINES[case]
    data = _lines_file(tmp_path, [GOOD[0], bad, *GOOD[2:6]])
    stats, error = _ingest(write_spec, data, "fail")
    assert stats is None and error.file == str(data) and error.line == 2, error
    assert message in error.render()
    stats, error = _ingest(write_spec, data, "skip")
    assert error is None
    assert stats["dialogues"] == 5 and stats["skipped_broken"] == 1
    assert stats["skipped_examples"][0].startswith(f"{data}:2: ") and message in stats["skipped_examples"][0]


def test_a_latin1_file_is_a_per_line_error_naming_the_file(write_spec, tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8").splitlines()[:4]
    text[1] = text[1].replace('"text": "', '"text": "Olá, ', 1)  # one accented line, the rest ASCII
    data = _lines_file(tmp_path, [line.encode("latin-1") for line in text])
    stats, error = _ingest(write_spec, data, "fail")
    assert error.file == str(data) and error.line == 2 and "not UTF-8: byte 0xe1" in error.render()
    assert "iconv" in error.render()  # says how to fix it
    stats, error = _ingest(write_spec, data, "skip")
    assert stats["skipped_broken"] == 1 and stats["dialogues"] == 3


def test_a_latin1_file_with_every_line_broken_names_the_data_file(write_spec, tmp_path):
    data = _lines_file(tmp_path, [b'{"id": "a", "turns": [{"role": "customer", "text": "caf\xe9"}]}'] * 3)
    stats, error = _ingest(write_spec, data, "skip")
    assert error.file == str(data) and "no dialogues to process (3 broken" in error.render()


def test_a_utf8_bom_is_accepted(write_spec, tmp_path):
    data = tmp_path / "bom.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.read_bytes())
    stats, error = _ingest(write_spec, data, "fail")
    assert error is None and stats["dialogues"] == 32 and stats["skipped_broken"] == 0
    assert [r["id"] for r in _records(JsonlReader(), data)][:2] == ["ex_000", "ex_001"]


def test_gzip_files_are_read_and_a_corrupt_one_is_named(write_spec, tmp_path):
    import gzip

    packed = gzip.compress(EXAMPLE.read_bytes())
    good = tmp_path / "good.jsonl.gz"
    good.write_bytes(packed)
    stats, error = _ingest(write_spec, good, "fail")
    assert error is None and stats["dialogues"] == 32
    damaged = {
        "truncated": packed[: len(packed) // 2],
        "flipped": packed[:40] + bytes(b ^ 0xFF for b in packed[40:80]) + packed[80:],
        "not_gzip": EXAMPLE.read_bytes()[:500],
        "trailing_garbage": packed + b"garbage after the stream",
    }
    for name, payload in damaged.items():
        path = tmp_path / f"{name}.jsonl.gz"
        path.write_bytes(payload)
        for mode in ("fail", "skip"):  # a damaged file is never skipped: its records are unknown
            stats, error = _ingest(write_spec, path, mode)
            assert stats is None and error.file == str(path), (name, mode, error)
            assert "gzip" in error.render(), error.render()


def test_an_empty_file_among_others_is_named_and_skippable(write_spec, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(EXAMPLE.read_bytes())
    (folder / "b.jsonl").write_bytes(b"\n  \n")
    stats, error = _ingest(write_spec, folder, "fail")
    assert error.file == str(folder / "b.jsonl") and "holds no records" in error.render()
    stats, error = _ingest(write_spec, folder, "skip")
    assert stats["dialogues"] == 32 and stats["skipped_broken"] == 1


def test_a_damaged_parquet_file_exits_2_naming_it(write_spec, tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 this is not a parquet file PAR1")
    result = dialengine("apply", str(write_spec(data=path)), "--until", "ingest")
    assert result.returncode == 2 and str(path) in result.stderr and "Parquet" in result.stderr


def test_cli_exit_codes_for_a_bad_byte_and_a_corrupt_gzip(write_spec, tmp_path):
    bad = _lines_file(tmp_path, [GOOD[0], _in_first_text(GOOD[1], b"H\xff")])
    result = dialengine("apply", str(write_spec(data=bad)), "--until", "ingest")
    assert result.returncode == 2 and f"{bad}:2:" in result.stderr and "Traceback" not in result.stderr
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 40)
    result = dialengine("apply", str(write_spec(data=gz, name="g", on_error="skip")), "--until", "ingest")
    assert result.returncode == 2 and str(gz) in result.stderr and "Traceback" not in result.stderr


def test_repeated_ids_are_renamed_in_read_order_across_partitions(write_spec, tmp_path):
    """A repeated id becomes id#2, id#3...: within one piece of rows and across pieces; a name
    the input holds itself is skipped (a#2 -> a#3), and a later row holding a name given
    before is renamed in turn (c#2 -> c#2#2): no two rows share an id."""
    rows = [json.loads(line) for line in EXAMPLE.read_text().splitlines()[:7]] * 2
    ids = ["a", "b", "a", "c", "a", "b", "c#2", "a#2", "x", "x", "c", "c#2", "a#4", "a"]
    rows = [dict(row, id=rid) for row, rid in zip(rows, ids, strict=True)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = write_spec("[executor]\npartition_rows = 2\n", data=data)
    done = dialengine("apply", str(spec), "--until", "ingest")
    assert done.returncode == 0, done.stderr
    ingest = tmp_path / "runs" / "t" / "ingest"
    got = read_output(ingest)["dialogue_id"].to_list()
    assert got == ["a", "b", "a#2", "c", "a#3", "b#2", "c#2", "a#2#2", "x", "x#2", "c#3", "c#2#2", "a#4", "a#5"]
    assert len(set(got)) == len(got)
    assert json.loads((ingest / "manifest.json").read_text())["stats"]["renamed_duplicate_ids"] == 8


def test_seen_keys_compare_all_128_bits_when_the_first_64_collide():
    import numpy as np

    from dialinsight_engine.stages.ingest import SeenKeys

    seen = SeenKeys()
    for batch in ([[5, 1], [7, 1]], [[5, 2]], [[5, 3], [9, 0]], [[1, 1]]):  # runs merged as they grow
        seen.add(np.array(batch, dtype=np.uint64))
    asked = np.array([[5, 2], [5, 4], [7, 1], [6, 1], [9, 0], [5, 3], [9, 1], [0, 0], [1, 1]], dtype=np.uint64)
    assert seen.contains(asked).tolist() == [True, False, True, False, True, True, False, False, True]
    assert sum(len(first) for first, _ in seen.runs) == 6


def test_seen_keys_hold_what_was_added_through_their_merges():
    """Runs merged as a binary counter's digits (each key put at its place in the merged run):
    every key added is found, no other, and each run stays sorted."""
    import numpy as np

    from dialinsight_engine.stages.ingest import SeenKeys

    rng = np.random.default_rng(4)
    seen, added = SeenKeys(), set()
    for size in rng.integers(1, 400, 60):
        keys = rng.integers(0, 50, (size, 2)).astype(np.uint64)  # small values: first halves collide
        keys = keys[~seen.contains(keys)]
        keys = np.unique(keys, axis=0)
        seen.add(keys)
        added |= {tuple(k) for k in keys.tolist()}
    assert sum(len(first) for first, _ in seen.runs) == len(added) and len(seen.runs) < 12
    assert all(np.all(first[:-1] <= first[1:]) for first, _ in seen.runs)
    asked = rng.integers(0, 60, (5000, 2)).astype(np.uint64)
    assert seen.contains(asked).tolist() == [tuple(k) in added for k in asked.tolist()]
