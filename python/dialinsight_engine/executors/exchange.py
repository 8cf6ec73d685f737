"""Files that carry one distributed step's output to the next, split by destination.

An all-to-all step between S source tasks and D destination tasks makes S x D pieces. As Ray
objects, every piece is owned by the driver (the tasks' submitter), and a piece under Ray's
inline limit (100 KB) lives in the driver's heap: so the pieces had to stay few and large,
which made each task's share of the pool grow with the pool (about its square root). As
files, each source task writes *one* file, its pieces concatenated in destination order
(a ``.npy`` array) beside an index of where each destination's piece starts; a destination
task maps the files and copies its slices. The driver holds nothing per piece, so tasks keep
a fixed size whatever the pool, as Spark's external shuffle and NeMo Curator's Parquet
stages do. The folder must be one that every node sees, as the run folder is.

A retried task writes the same file again; each file is written atomically, and the index
after the data, so an index that exists describes a whole data file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..run import atomic

__all__ = ["read_split", "split_by", "write_split"]


def write_split(path: Path, counts: Sequence[int] | np.ndarray, pieces: Iterable[np.ndarray], dtype: np.dtype,
                row_shape: tuple[int, ...] = ()) -> int:
    """Write `pieces` (rows of `dtype` and `row_shape`, in destination order; destination d
    gets the next ``counts[d]`` rows) as the array file `path`, then its index; returns the
    bytes of data written. The pieces are written as they come: a caller building one
    destination's piece at a time holds only that one."""
    total = int(sum(counts))
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": (total, *row_shape)}
    row_bytes = np.dtype(dtype).itemsize * int(np.prod(row_shape, dtype=np.int64))
    written = 0

    def write(tmp: Path) -> None:
        nonlocal written
        with tmp.open("wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            for piece in pieces:
                rows = np.ascontiguousarray(piece, dtype=dtype)
                rows.tofile(fh)  # its buffer as it is: no bytes copy of the piece
                written += rows.nbytes
        if written != total * row_bytes:  # before the rename: no file that lies about its rows
            raise ValueError(f"{path.name}: the pieces held {written} bytes, the counts say {total} rows")
    atomic.write_with(path, write)
    index = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])
    atomic.write_with(_index_path(path), lambda tmp: _save(tmp, index))
    return written


def split_by(destination: np.ndarray, destinations: int) -> tuple[np.ndarray, np.ndarray]:
    """(the order that sorts rows by `destination`, stably; each destination's row count)."""
    order = np.argsort(destination, kind="stable")
    return order, np.bincount(destination, minlength=destinations)


def read_split(path: Path, destination: int) -> np.ndarray:
    """Destination `destination`'s piece of a file `write_split` wrote: a copy, read through
    a map of the file, so only its own bytes are read."""
    index = np.load(_index_path(path))
    data = np.load(path, mmap_mode="r")
    piece = np.array(data[int(index[destination]):int(index[destination + 1])])
    del data  # the map closes with its last reference
    return piece


def _index_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".npy") + ".index.npy")


def _save(tmp: Path, array: np.ndarray) -> None:
    with tmp.open("wb") as fh:  # a file object: np.save adds no ".npy" to its name
        np.save(fh, array)
