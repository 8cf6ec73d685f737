"""Partitioned stage data: a stage's output is a Parquet dataset `<stage>/data/part-NNNNN.parquet`.

Every reader of stage output goes through `read_output` / `iter_output` here, so no caller
knows the layout. Each partition is written atomically (`atomic.write_parquet`) and listed in
the stage manifest with its row count and SHA-256. The content hash (`content_hash`) is taken
over the rows in order, in fixed-size canonical chunks, so it is the same however the rows are
split into partitions (one executor may write 3 partitions where another writes 30).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, cast

import polars as pl

from . import atomic

DATA_DIR = "data"
#: rows per canonical hashing chunk: fixed, so the hash does not depend on partition sizes
HASH_CHUNK_ROWS = 1 << 16
#: default rows per partition (`[executor] partition_rows`)
PARTITION_ROWS = 50_000


def part_name(index: int) -> str:
    return f"{DATA_DIR}/part-{index:05d}.parquet"


@dataclass(frozen=True)
class Partition:
    """One written partition: its path relative to the stage folder, rows and file hash."""

    name: str
    rows: int
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def partition_files(folder: Path) -> list[Path]:
    """The partition files under `folder/data`, in order (none: no output)."""
    data = Path(folder) / DATA_DIR
    return sorted(data.glob("part-*.parquet")) if data.is_dir() else []


def has_output(folder: Path) -> bool:
    return bool(partition_files(folder))


def iter_output(folder: Path) -> Iterator[pl.DataFrame]:
    """The stage output one partition at a time (streaming: one partition in memory)."""
    for path in partition_files(folder):
        yield pl.read_parquet(path)


def read_output(folder: Path) -> pl.DataFrame | None:
    """The whole stage output as one frame, or None when the stage has none."""
    files = partition_files(folder)
    if not files:
        return None
    return pl.concat([pl.read_parquet(p) for p in files], how="vertical") if len(files) > 1 \
        else pl.read_parquet(files[0])


def scan_output(folder: Path) -> pl.LazyFrame | None:
    """A lazy scan over the stage output (filters read only what they need), or None."""
    files = partition_files(folder)
    return pl.scan_parquet(files) if files else None


def output_schema(folder: Path) -> dict[str, pl.DataType] | None:
    files = partition_files(folder)
    return dict(pl.read_parquet_schema(files[0])) if files else None


def write_partition(folder: Path, index: int, frame: pl.DataFrame, point: str | None = None) -> Partition:
    """Write one partition atomically; return what the manifest records about it. Its fault
    points are named `write:<stage>/part-NNNNN.parquet:...` (`point` is the stage name)."""
    name = part_name(index)
    data = atomic.parquet_bytes(frame)
    target = Path(folder) / name
    atomic.write_bytes(target, data, point=f"{point or Path(folder).name}/{target.name}")
    return Partition(name, frame.height, hashlib.sha256(data).hexdigest())


def write_failed(folder: Path, index: int, frame: pl.DataFrame) -> Path:
    """The input rows of a partition that failed, with the error: `<stage>/failed/part-NNNNN.parquet`."""
    return atomic.write_parquet(Path(folder) / "failed" / f"part-{index:05d}.parquet", frame)


def remove_partitions_from(folder: Path, first: int) -> None:
    """Delete partitions numbered `first` and up (left by an earlier run with more of them)."""
    for path in partition_files(folder):
        if int(path.stem.split("-")[1]) >= first:
            path.unlink(missing_ok=True)


def split_rows(frames: Iterable[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """Re-cut a stream of frames into frames of exactly `rows` rows (the last may be shorter;
    an empty stream gives one empty frame, so the schema survives)."""
    pending: list[pl.DataFrame] = []
    held = 0
    empty: pl.DataFrame | None = None
    yielded = False
    for frame in frames:
        empty = frame.clear() if empty is None else empty
        while frame.height:
            take = min(rows - held, frame.height)
            pending.append(frame.slice(0, take))
            held += take
            frame = frame.slice(take)
            if held == rows:
                yield pl.concat(pending, how="vertical")
                pending, held, yielded = [], 0, True
    if pending:
        yield pl.concat(pending, how="vertical")
    elif not yielded and empty is not None:
        yield empty


def content_hash(frames: Iterable[pl.DataFrame]) -> str:
    """SHA-256 over the rows in order: Arrow IPC bytes (uncompressed, plain offsets) of
    canonical chunks of HASH_CHUNK_ROWS rows. Equal for equal rows whatever the partitioning."""
    h = hashlib.sha256()
    schema_done = False
    for chunk in split_rows(frames, HASH_CHUNK_ROWS):
        if not schema_done:
            h.update(repr(list(chunk.schema.items())).encode())
            schema_done = True
        if chunk.height == 0:
            continue
        # streamed into the hash: no second copy of the chunk's bytes (65,536 rows) in memory
        chunk.rechunk().write_ipc(cast(IO[bytes], _HashWriter(h)), compression="uncompressed",
                                  compat_level=pl.CompatLevel.oldest())
    return h.hexdigest()


class _HashWriter:
    """A write-only file object that feeds what is written to a hash."""

    def __init__(self, h: Any) -> None:
        self.h = h

    def write(self, data: bytes) -> int:
        self.h.update(data)
        return len(data)


def output_hash(folder: Path) -> str:
    """The content hash of a stage's output as read back from its partitions."""
    return content_hash(iter_output(folder))
