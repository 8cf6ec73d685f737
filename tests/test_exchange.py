"""The files an all-to-all step exchanges: each destination reads back exactly its piece."""

from __future__ import annotations

import numpy as np
import pytest

from dialinsight_engine.executors.exchange import read_split, split_by, write_split

RECORD = np.dtype([("band", "<u2"), ("key", "<u8"), ("row", "<u8")])


def test_each_destination_reads_its_own_piece(tmp_path):
    rng = np.random.default_rng(0)
    records = np.zeros(1000, RECORD)
    records["key"] = rng.integers(0, 2**63, 1000, dtype=np.uint64)
    records["row"] = np.arange(1000)
    destination = (records["key"] % np.uint64(7)).astype(np.int64)
    destination[destination == 3] = 4  # destination 3 gets nothing
    order, counts = split_by(destination, 7)
    written = write_split(tmp_path / "keys-00000.npy", counts, [records[order]], RECORD)
    assert written == records.nbytes == 18 * 1000
    for d in range(7):
        piece = read_split(tmp_path / "keys-00000.npy", d)
        expected = records[destination == d]  # stable: the rows keep their order
        np.testing.assert_array_equal(piece, expected)
        assert piece.dtype == RECORD and piece.flags.writeable  # a copy, not the map
    assert read_split(tmp_path / "keys-00000.npy", 3).shape == (0,)


def test_rows_of_a_trailing_shape_written_a_piece_at_a_time(tmp_path):
    sigs = np.arange(40, dtype=np.uint32).reshape(10, 4)
    pieces = (sigs[a:b] for a, b in ((0, 3), (3, 3), (3, 10)))  # consumed as written
    write_split(tmp_path / "s.npy", [3, 0, 7], pieces, sigs.dtype, (4,))
    np.testing.assert_array_equal(read_split(tmp_path / "s.npy", 2), sigs[3:])
    assert read_split(tmp_path / "s.npy", 1).shape == (0, 4)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), sigs)  # a plain .npy file


def test_pieces_that_disagree_with_the_counts_leave_no_file(tmp_path):
    with pytest.raises(ValueError, match="the counts say 5 rows"):
        write_split(tmp_path / "p.npy", [2, 3], [np.zeros(4, np.int64)], np.dtype(np.int64))
    assert list(tmp_path.iterdir()) == []
