"""Tabular dialogue sources: Parquet files and local Hugging Face `datasets` folders.

A `datasets` folder (``save_to_disk``) holds Arrow stream files listed in ``state.json``; we
read them with pyarrow, so the heavy `datasets` package is not needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from ..errors import DataError
from .base import RawRecord, Reader, UnreadableFile


def _rows(table_batches: Iterator[pa.RecordBatch], path: Path) -> Iterator[RawRecord]:
    row = 0
    try:
        for batch in table_batches:
            for record in batch.to_pylist():
                row += 1
                yield RawRecord(record, path, row)
    except (pa.ArrowException, OSError) as exc:  # a damaged file, found part-way through
        raise UnreadableFile(f"unreadable after row {row}: {type(exc).__name__}: {exc}", file=path) from None


class ParquetReader(Reader):
    name = "parquet"
    extensions = (".parquet",)
    description = "Parquet: one dialogue per row (turns as a list of {role, text} structs)"

    def read(self, path: Path) -> Iterator[RawRecord | DataError]:
        try:
            file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableFile(f"not a readable Parquet file: {exc}", file=path) from None
        yield from _rows(file.iter_batches(batch_size=2048), path)


class HfDatasetReader(Reader):
    name = "hf_dataset"
    description = "A local Hugging Face datasets folder (save_to_disk), read with pyarrow"

    def accepts(self, path: Path) -> bool:
        return path.is_dir() and (path / "state.json").exists()

    def read(self, path: Path) -> Iterator[RawRecord | DataError]:
        try:
            state = json.loads((path / "state.json").read_text(encoding="utf-8"))
            files = [path / f["filename"] for f in state["_data_files"]]
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise UnreadableFile(f"not a datasets folder (state.json): {exc}", file=path) from None
        for file in files:
            try:
                with pa.memory_map(str(file)) as source:
                    reader = ipc.open_stream(source)
                    yield from _rows(iter(reader), file)
            except (pa.ArrowException, OSError) as exc:
                raise UnreadableFile(f"unreadable Arrow file: {exc}", file=file) from None
