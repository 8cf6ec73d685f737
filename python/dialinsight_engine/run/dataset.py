"""Partitioned stage data: a stage's output is a Parquet dataset `<stage>/data/part-NNNNN.parquet`.

Every reader of stage output goes through `read_output` / `iter_output` here, so no caller
knows the layout. Each partition is written atomically (`atomic.write_parquet`) and listed in
the stage manifest with its row count and SHA-256. The content hash (`content_hash`) is taken
over the rows in order, in fixed-size canonical chunks, so it is the same however the rows are
split into partitions (one executor may write 3 partitions where another writes 30); each
chunk is hashed on its own, so the executor's tasks can hash them where the data lies.

JSON-valued columns (`JSON_COLUMNS`: `truth`, `meta`, `output_schema`) are canonical JSON text
in memory (`json.dumps(value, sort_keys=True)`; ingest drops null-valued keys of `truth` and
`meta`, `records.json_text`), which every stage and evaluator reads. On disk a partition stores
such a column as an Arrow struct (or list) when every value of the partition converts to it and
back to the same text; otherwise (a key whose value type differs between records, a null kept
in an output schema, an empty object) that partition keeps the text, so nothing is lost.
Reading turns either form back into the text, so partitions may differ and no caller sees the
difference; polars, DuckDB and `datasets` see columns where the records agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow as pa
from polars.datatypes import DataTypeClass

from .. import records as R
from . import atomic

DATA_DIR = "data"
#: rows per canonical hashing chunk: fixed, so the hash does not depend on partition sizes;
#: small, because a chunk is copied twice (gathered, rechunked) and this pass set the driver's
#: peak: the pass alone over assess's output at 10^6 dialogues peaked at 434 MB with 65,536
#: rows, 165 MB with 8,192, at the same speed (3.4 s; docs/performance.md)
HASH_CHUNK_ROWS = 1 << 13
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


AnyDType = pl.DataType | DataTypeClass  # a dtype instance (`pl.List(pl.String)`) or class (`pl.String`)

#: columns holding JSON values: text in memory, Arrow structs/lists on disk where they fit
JSON_COLUMNS = (R.TRUTH, R.META, R.OUTPUT_SCHEMA)


def _canonical(value: object) -> str:
    """The in-memory text of a JSON value (the form ingest and seeds write)."""
    return json.dumps(value, sort_keys=True)


def _texts(column: pl.Series) -> pl.Series:
    """The canonical text of each value of a struct/list column. A struct read back has every
    field in every row (a field a record lacks is null), so nulls are dropped;
    `encode_json_columns` stored the struct only if that gives the text back. Each distinct
    value is rendered once: rows repeat a dialogue's truth and a task's schema many times."""
    rows = pl.DataFrame({"value": column})
    distinct = rows.unique(maintain_order=True)
    texts = [None if v is None else _canonical(R.without_nulls(v)) for v in distinct["value"].to_list()]
    table = distinct.with_columns(text=pl.Series(texts, dtype=pl.String))
    joined = rows.join(table, on="value", how="left", nulls_equal=True, maintain_order="left")["text"]
    # rebuilt from the values: the join's result carries a validity buffer even without nulls,
    # and `content_hash` hashes the Arrow buffers, which must not depend on the storage form
    return pl.Series(column.name, joined.to_list(), dtype=pl.String)


def _storable(dtype: AnyDType) -> bool:
    """Parquet holds no empty struct, no column of only nulls (`Null`) and no 128-bit integer."""
    if isinstance(dtype, pl.Struct):
        return bool(dtype.fields) and all(_storable(f.dtype) for f in dtype.fields)
    if isinstance(dtype, pl.List | pl.Array):
        return _storable(dtype.inner)
    return dtype not in (pl.Null, pl.Int128)


def _sorted_fields(dtype: AnyDType) -> AnyDType:
    """`dtype` with the fields of every struct in it in name order."""
    if isinstance(dtype, pl.Struct):
        return pl.Struct([pl.Field(f.name, _sorted_fields(f.dtype)) for f in sorted(dtype.fields, key=lambda f: f.name)])
    if isinstance(dtype, pl.List):
        return pl.List(_sorted_fields(dtype.inner))
    return dtype


def _typed(column: pl.Series) -> pl.Series | None:
    """The column as an Arrow struct/list when every value converts there and back to the same
    text, else None (the partition keeps the text)."""
    if column.null_count() == column.len():
        return None
    try:  # polars' own JSON reader, over every row: several times faster than Python's
        inferred = column.str.json_decode(infer_schema_length=None).dtype
        # inference may order a struct's fields differently from run to run: read again with
        # them sorted by name, so the same rows give the same Parquet bytes
        typed = column.str.json_decode(dtype=_sorted_fields(inferred))
    except pl.exceptions.PolarsError:
        return None  # values no single Arrow type holds (e.g. an object here, a list there)
    if not isinstance(typed.dtype, pl.Struct | pl.List) or not _storable(typed.dtype):
        return None  # a bare number or string is already a plain column's worth
    return typed if _texts(typed).equals(column) else None


def encode_json_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame as written to disk: JSON text columns as structs/lists where they fit."""
    typed = [t for name in JSON_COLUMNS if name in frame.columns and frame[name].dtype == pl.String
             and (t := _typed(frame[name])) is not None]
    return frame.with_columns(typed) if typed else frame


def decode_json_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame as stages see it: JSON columns back to their canonical text."""
    texts = [_texts(frame[name]) if frame[name].dtype != pl.Null else frame[name].cast(pl.String)
             for name in JSON_COLUMNS if name in frame.columns and frame[name].dtype != pl.String]
    return frame.with_columns(texts) if texts else frame


def read_partition(path: Path | str, columns: list[str] | None = None, rows: int | None = None) -> pl.DataFrame:
    """One partition file as the stages see it (JSON columns as text), with `columns` only
    (None: all), its first `rows` only (None: all)."""
    return decode_json_columns(pl.read_parquet(path, columns=columns, n_rows=rows))


def iter_output(folder: Path) -> Iterator[pl.DataFrame]:
    """The stage output one partition at a time (streaming: one partition in memory)."""
    for path in partition_files(folder):
        yield read_partition(path)


def read_output(folder: Path) -> pl.DataFrame | None:
    """The whole stage output as one frame, or None when the stage has none."""
    files = partition_files(folder)
    if not files:
        return None
    return pl.concat([read_partition(p) for p in files], how="vertical") if len(files) > 1 \
        else read_partition(files[0])


def scan_output(folder: Path) -> pl.LazyFrame | None:
    """A lazy scan over the stage output (filters read only what they need), or None. JSON
    columns come as stored, a struct in one partition and text in another: select around them,
    or use `filter_output`."""
    files = partition_files(folder)
    return pl.scan_parquet(files) if files else None


def filter_output(folder: Path, predicate: pl.Expr) -> pl.DataFrame:
    """The rows of the stage output that match `predicate`, as the stages see them (read one
    partition at a time, only the matching rows kept)."""
    found = [decode_json_columns(pl.scan_parquet(p).filter(predicate).collect()) for p in partition_files(folder)]
    return pl.concat([f for f in found if f.height], how="vertical") if any(f.height for f in found) \
        else pl.DataFrame()


def output_schema(folder: Path) -> dict[str, pl.DataType] | None:
    files = partition_files(folder)
    return dict(pl.read_parquet_schema(files[0])) if files else None


def write_partition(folder: Path, index: int, frame: pl.DataFrame, point: str | None = None,
                    row_group_rows: int | None = None) -> Partition:
    """Write one partition atomically; return what the manifest records about it. Its fault
    points are named `write:<stage>/part-NNNNN.parquet:...` (`point` is the stage name).
    `row_group_rows`: as `atomic.parquet_bytes`."""
    name = part_name(index)
    data = atomic.parquet_bytes(encode_json_columns(frame), row_group_rows)
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


def own_buffers(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` copied into buffers of its own. A gathered or filtered Polars string column
    shares its source's buffers (string views), so keeping a few rows kept the whole source
    alive: a 1,000-row language sample held 10^6 prompts (+340 MB of driver heap), richness's
    5 MB n-gram table every n-gram counted (~60 MB), both measured."""
    return cast(pl.DataFrame, pl.from_arrow(frame.to_arrow(compat_level=pl.CompatLevel.oldest())))


def content_hash(frames: Iterable[pl.DataFrame], chunk_rows: int = HASH_CHUNK_ROWS) -> str:
    """SHA-256 over the schema and, in order, the digest of each canonical chunk of
    HASH_CHUNK_ROWS rows (`chunk_digest`). Equal for equal rows whatever the partitioning, and
    the same value whoever computes the chunks' digests: the driver in one pass here, or the
    executor's tasks a partition at a time (`executors/content_hash.py`)."""
    h = hashlib.sha256()
    schema_done = False
    for chunk in split_rows(frames, chunk_rows):
        if not schema_done:
            h.update(schema_bytes(chunk))
            schema_done = True
        if chunk.height:
            h.update(chunk_digest(chunk))
    return h.hexdigest()


def combined_hash(schema: bytes, digests: Iterable[bytes]) -> str:
    """`content_hash` from the schema of the first chunk and every chunk's digest, in order."""
    h = hashlib.sha256(schema)
    for digest in digests:
        h.update(digest)
    return h.hexdigest()


def schema_bytes(frame: pl.DataFrame) -> bytes:
    return repr(list(frame.schema.items())).encode()


def chunk_digest(chunk: pl.DataFrame) -> bytes:
    """SHA-256 of a chunk's Arrow IPC stream (uncompressed, plain offsets), its arrays rebuilt
    first (`take`): a slice of a larger array keeps that array's bits around its rows (the
    rest of a boolean's byte, a list's child values, a null's bitmap), which the IPC writers
    copy, so the same rows cut from differently sized partitions gave different bytes (303 of
    400 random partitionings of tests/test_content_hash.py's 40 rows did, with Polars' IPC
    writer over the slices). Rebuilt, a column has a validity bitmap only if it has nulls,
    and the writer omits it otherwise."""
    # rechunked first: `to_arrow` of a chunk cut from several partitions took 4x longer, and
    # `take` column by column: the table's own took 25x longer (both measured)
    table = chunk.rechunk().to_arrow(compat_level=pl.CompatLevel.oldest()).combine_chunks()
    rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
    table = pa.Table.from_arrays([column.chunk(0).take(rows) for column in table.columns], schema=table.schema)
    h = hashlib.sha256()
    # streamed into the hash: no second copy of the chunk's bytes in memory
    with pa.ipc.new_stream(pa.PythonFile(_HashWriter(h), mode="w"), table.schema) as writer:
        writer.write_table(table)
    return h.digest()


class _HashWriter:
    """A write-only file object that feeds what is written to a hash."""

    closed = False  # asked by pyarrow's file wrapper

    def __init__(self, h: Any) -> None:
        self.h = h

    def flush(self) -> None:
        pass

    def write(self, data: bytes) -> int:
        self.h.update(data)
        return len(data)


def output_hash(folder: Path) -> str:
    """The content hash of a stage's output as read back from its partitions."""
    return content_hash(iter_output(folder))
