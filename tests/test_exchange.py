"""The files an all-to-all step exchanges: each destination reads back exactly its piece."""

from __future__ import annotations

import numpy as np
import pytest

from dialinsight_engine.executors.exchange import (
    piece,
    read_all,
    read_split,
    split_by,
    split_writer,
    write_split,
)

RECORD = np.dtype([("band", "<u2"), ("key", "<u8"), ("row", "<u8")])


def test_each_destination_reads_its_own_piece(tmp_path):
    rng = np.random.default_rng(0)
    records = np.zeros(1000, RECORD)
    records["key"] = rng.integers(0, 2**63, 1000, dtype=np.uint64)
    records["row"] = np.arange(1000)
    destination = (records["key"] % np.uint64(7)).astype(np.int64)
    destination[destination == 3] = 4  # destination 3 gets nothing
    written = write_split(tmp_path / "keys-00000.rows", split_by(records, destination, 7), RECORD)
    assert written == records.nbytes == 18 * 1000
    for d in range(7):
        piece = read_split(tmp_path / "keys-00000.rows", d)
        expected = records[destination == d]  # stable: the rows keep their order
        np.testing.assert_array_equal(piece, expected)
        assert piece.dtype == RECORD and piece.flags.writeable  # a copy, not the map
    assert read_split(tmp_path / "keys-00000.rows", 3).shape == (0,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys-00000.rows", "keys-00000.rows.index.json"]


def test_rows_of_a_trailing_shape_written_a_piece_at_a_time(tmp_path):
    sigs = np.arange(40, dtype=np.uint32).reshape(10, 4)
    with split_writer(tmp_path / "s.rows", sigs.dtype, (4,)) as out:
        for a, b in ((0, 3), (3, 3), (3, 10)):
            out.write(sigs[a:b])
        assert out.nbytes == 40 * 4
    np.testing.assert_array_equal(read_split(tmp_path / "s.rows", 2), sigs[3:])
    assert read_split(tmp_path / "s.rows", 1).shape == (0, 4)
    np.testing.assert_array_equal(read_all(tmp_path / "s.rows"), sigs)


def test_a_piece_read_a_slice_at_a_time(tmp_path):
    pairs = np.arange(200, dtype=np.int64).reshape(100, 2)
    write_split(tmp_path / "p.rows", [pairs[:30], pairs[30:30], pairs[30:]], pairs.dtype, (2,))
    first, empty, last = (piece(tmp_path / "p.rows", d) for d in range(3))
    assert (first.rows, empty.rows, last.rows) == (30, 0, 70) and last.first == 30
    slices = [last.read(start, start + 16) for start in range(0, 70, 16)]
    assert [len(s) for s in slices] == [16, 16, 16, 16, 6]  # the last one cut at the piece's end
    np.testing.assert_array_equal(np.concatenate(slices), pairs[30:])
    np.testing.assert_array_equal(first.read(5, 7), pairs[5:7])
    assert empty.read().shape == (0, 2) and first.read(40, 50).shape == (0, 2)
    assert not isinstance(last.read(0, 4), np.memmap) and last.read(0, 4).flags.writeable
    mapped = last.map()  # for a reader that gathers rows: only the pages touched are read
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped[[0, 69]], pairs[[30, 99]])
    assert empty.map().shape == (0, 2)


def test_a_writer_that_fails_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match=r"rows shaped \(3,\), expected \(4,\)"), \
            split_writer(tmp_path / "p.rows", np.dtype(np.int64), (4,)) as out:
        out.write(np.zeros((2, 4), np.int64))
        out.write(np.zeros((2, 3), np.int64))
    assert list(tmp_path.iterdir()) == []


def test_the_engine_exchanges_in_the_stage_scratch_and_clears_a_killed_drivers_folders(tmp_path):
    """Under a run, the exchange folder is in `<stage>/.phase/` (the run folder every node
    sees); folders a killed driver left there are removed before a new search starts."""
    from types import SimpleNamespace

    from dialinsight_engine.executors.dedup import _scratch

    left = tmp_path / "assess" / ".phase" / "near-duplicates-0123456789ab"
    left.mkdir(parents=True)
    (left / "keys-00000.rows").write_bytes(b"x" * 100)
    kept = tmp_path / "assess" / ".phase" / "rowwise"
    kept.mkdir()
    assert _scratch(SimpleNamespace(stage_dir=tmp_path / "assess")) == tmp_path / "assess" / ".phase"
    assert not left.exists() and kept.is_dir()
    assert _scratch(SimpleNamespace()) is None  # outside a run: the system's temporary folder
