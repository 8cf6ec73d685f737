"""Files that carry one distributed step's output to the next, split by destination.

An all-to-all step between S source tasks and D destination tasks makes S x D pieces. As Ray
objects, every piece is owned by the driver (the tasks' submitter), and a piece under Ray's
inline limit (100 KB) lives in the driver's heap: so the pieces had to stay few and large,
which made each task's share of the pool grow with the pool (about its square root). As
files, each source task writes *one* file, its pieces one after another in destination
order, beside an index (the rows' dtype and where each destination's piece starts); a
destination task maps its piece of every file. The driver holds nothing per piece, so tasks
keep a fixed size whatever the pool, as Spark's external shuffle and NeMo Curator's Parquet
stages do. The folder must be one that every node sees, as the run folder is.

A retried task writes the same file again; each file is written atomically, and the index
after the data, so an index that exists describes a whole data file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from ..run import atomic

__all__ = ["Piece", "SplitWriter", "destination_of", "piece", "read_all", "read_split", "read_split_table", "split_by",
           "split_table_by", "split_writer", "step_file", "write_split", "write_split_table"]


def step_file(step: str, task: int) -> str:
    """The name of the file a step's task writes in an exchange folder."""
    return f"{step}-{task:05d}.rows"


class SplitWriter:
    """Appends one destination's piece after another to an open file."""

    def __init__(self, fh: BinaryIO, dtype: np.dtype, row_shape: tuple[int, ...]) -> None:
        self.fh, self.dtype, self.row_shape = fh, np.dtype(dtype), tuple(row_shape)
        self.rows: list[int] = []  # per destination, in order

    @property
    def nbytes(self) -> int:
        """Bytes of rows written so far."""
        return sum(self.rows) * self.dtype.itemsize * int(np.prod(self.row_shape, dtype=np.int64))

    def write(self, piece: np.ndarray) -> None:
        """The next destination's rows (possibly none)."""
        rows = np.ascontiguousarray(piece, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"a piece of rows shaped {rows.shape[1:]}, expected {self.row_shape}")
        rows.tofile(self.fh)  # its buffer as it is: no bytes copy of the piece
        self.rows.append(len(rows))


@contextmanager
def split_writer(path: Path, dtype: np.dtype, row_shape: tuple[int, ...] = ()) -> Iterator[SplitWriter]:
    """``with split_writer(path, dtype) as out: out.write(piece)`` once per destination, in
    order: a caller that builds one destination's piece at a time holds only that one. The
    file replaces `path` when the block ends without an error, then its index is written."""
    with atomic.atomic_path(path) as tmp, tmp.open("wb") as fh:
        out = SplitWriter(fh, dtype, row_shape)
        yield out
    index = {"dtype": np.lib.format.dtype_to_descr(out.dtype), "row_shape": list(out.row_shape),
             "offsets": np.concatenate([[0], np.cumsum(out.rows, dtype=np.int64)]).tolist()}
    atomic.write_text(_index_path(path), json.dumps(index))


def write_split(path: Path, pieces: Iterable[np.ndarray], dtype: np.dtype, row_shape: tuple[int, ...] = ()) -> int:
    """Each destination's piece, in order, written as `path`; returns the bytes of rows."""
    with split_writer(path, dtype, row_shape) as out:
        for piece in pieces:
            out.write(piece)
    return out.nbytes


def destination_of(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The destination that holds each of `rows` (pool positions), where `offsets` are each
    destination's first row, then the end."""
    return np.searchsorted(offsets, rows, side="right") - 1


def split_by(rows: np.ndarray, destination: np.ndarray, destinations: int) -> list[np.ndarray]:
    """`rows` cut into one piece per destination (`destination` of each row), each keeping
    the rows' order."""
    order, bounds = _by_destination(destination, destinations)
    ordered = rows[order]
    return [ordered[bounds[d]:bounds[d + 1]] for d in range(destinations)]


def split_table_by(table: pa.Table, destination: np.ndarray, destinations: int) -> list[pa.Table]:
    """`split_by` for a table (rows with text, for `write_split_table`)."""
    order, bounds = _by_destination(destination, destinations)
    ordered = table.take(pa.array(order))
    return [ordered.slice(bounds[d], bounds[d + 1] - bounds[d]) for d in range(destinations)]


def _by_destination(destination: np.ndarray, destinations: int) -> tuple[np.ndarray, np.ndarray]:
    """The order that groups rows by destination (stable), and where each one's rows start."""
    order = np.argsort(destination, kind="stable")
    return order, np.concatenate([[0], np.cumsum(np.bincount(destination, minlength=destinations))])


def read_split(path: Path, destination: int) -> np.ndarray:
    """Destination `destination`'s piece of a file a split writer wrote (a copy)."""
    return piece(path, destination).read()


def write_split_table(path: Path, pieces: Iterable[pa.Table], schema: pa.Schema) -> int:
    """Each destination's piece of rows with text (ids), in order, as one Arrow IPC file of
    one record batch per destination; returns the bytes written."""
    with atomic.atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for table in pieces:
                writer.write_batch(pa.RecordBatch.from_pylist([], schema=schema) if table.num_rows == 0
                                   else table.cast(schema).combine_chunks().to_batches()[0])
    return path.stat().st_size


def read_split_table(path: Path, destination: int) -> pa.Table:
    """Destination `destination`'s piece of a file `write_split_table` wrote (read, not mapped)."""
    with pa.OSFile(str(path), "rb") as source:
        return pa.Table.from_batches([pa.ipc.open_file(source).get_batch(destination)])


def read_all(path: Path) -> np.ndarray:
    """Every row of such a file, mapped (read-only; pages are read as they are touched)."""
    dtype, row_shape, offsets = _index(path)
    return Piece(path, dtype, row_shape, 0, offsets[-1]).map()


def piece(path: Path, destination: int) -> Piece:
    """Where destination's piece lies in a file a split writer wrote (its index read, only
    this piece's place kept: a task that holds one piece of every file of a step holds a few
    numbers per file, not every file's index)."""
    dtype, row_shape, offsets = _index(path)
    start, end = offsets[destination], offsets[destination + 1]
    return Piece(path, dtype, row_shape, start, end - start)


def _index(path: Path) -> tuple[np.dtype, tuple[int, ...], list[int]]:
    """A split file's rows' dtype and shape, and where each destination's piece starts."""
    index = json.loads(_index_path(path).read_text())
    return _dtype(index["dtype"]), tuple(index["row_shape"]), index["offsets"]


@dataclass(frozen=True)
class Piece:
    """One destination's piece of a file, for a reader that takes it a slice at a time: each
    slice is read into memory of its own, not through a map, whose touched pages would count
    in the process's RSS until the map is let go."""

    path: Path
    dtype: np.dtype
    row_shape: tuple[int, ...]
    first: int  # the piece's first row in the file
    rows: int

    def read(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """Rows `start` to `end` of the piece (default: to its last)."""
        end = self.rows if end is None else min(end, self.rows)
        count = max(end - start, 0)
        per_row = int(np.prod(self.row_shape, dtype=np.int64))
        if not count:
            return np.zeros((0, *self.row_shape), self.dtype)
        values = np.fromfile(self.path, dtype=self.dtype, count=count * per_row,
                             offset=(self.first + start) * self.dtype.itemsize * per_row)
        return values.reshape(count, *self.row_shape)

    def map(self) -> np.ndarray:
        """The piece mapped (read-only), for a reader that gathers some of its rows: only the
        pages it touches are read, and they go when the array does."""
        return _mapped(self.path, self.dtype, self.row_shape, self.first, self.first + self.rows)


def _mapped(path: Path, dtype: np.dtype, row_shape: tuple[int, ...], start: int, end: int) -> np.ndarray:
    if end == start:  # an empty map cannot be made
        return np.zeros((0, *row_shape), dtype)
    row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
    return np.memmap(path, dtype=dtype, mode="r", offset=start * row_bytes, shape=(end - start, *row_shape))


def _dtype(descr: Any) -> np.dtype:
    """The dtype of a descr as JSON keeps it (a structured one's fields as lists)."""
    return np.dtype(descr if isinstance(descr, str) else [tuple(field) for field in descr])


def _index_path(path: Path) -> Path:
    return path.with_name(path.name + ".index.json")
