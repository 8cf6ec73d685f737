"""Atomic file writes: write to a temp file in the same folder, fsync, then rename. The one
implementation: `write_bytes`/`write_text`/`write_json`/`write_parquet` for data in memory,
`atomic_path`/`write_with` for writers that write a file themselves, `write_dir` for folders.

A stage killed mid-write leaves at most a stray ``.tmp-*`` file, never a half-written output.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from . import faults


@contextmanager
def atomic_path(path: Path, point: str | None = None) -> Iterator[Path]:
    """A temp path beside `path` for a writer that writes the file itself (`torch.save`, a
    library's `save(...)`): ``with atomic_path(p) as tmp: torch.save(obj, tmp)``. When the block
    ends without an error the temp file is fsynced and renamed onto `path`; otherwise it is
    removed and `path` is left as it was. `point`: the name of this write's fault points
    (default `<folder>/<file>`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        faults.point(f"write:{point or f'{path.parent.name}/{path.name}'}:before-rename")
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.filename is None:  # say which file could not be written (disk full...)
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_with(path: Path, write: Callable[[Path], None], point: str | None = None) -> Path:
    """`write(tmp)` writes the file; it replaces `path` only once complete (see `atomic_path`)."""
    with atomic_path(path, point) as tmp:
        write(tmp)
    return path


def write_bytes(path: Path, data: bytes, point: str | None = None) -> Path:
    """`point`: the name of this write's fault points (default `<folder>/<file>`)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            half = len(data) // 2  # a named point between two halves: a torn write in tests
            fh.write(data[:half])
            fh.flush()
            faults.point(f"write:{point or f'{path.parent.name}/{path.name}'}:half")
            fh.write(data[half:])

    return write_with(path, write, point)


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def parquet_bytes(df: pl.DataFrame, row_group_rows: int | None = None) -> bytes:
    """The Parquet encoding of a frame. Statistics off, a fixed compression and level, and no
    timestamps in the metadata keep the bytes equal for equal frames. With `row_group_rows`:
    row groups of that many rows, with statistics, so that a reader's filter on a sorted
    column skips the groups it does not need."""
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", compression_level=3, statistics=row_group_rows is not None,
                     row_group_size=row_group_rows)
    return buf.getvalue()


def write_parquet(path: Path, df: pl.DataFrame) -> Path:
    # encoded in memory, then written with plain file I/O: a full disk raises "No space left
    # on device" naming the file, not the Parquet writer's "Invalid thrift: transport error"
    return write_bytes(path, parquet_bytes(df))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def frame_hash(df: pl.DataFrame) -> str:
    """A content hash of a frame: its uncompressed Arrow IPC bytes (stable for equal data,
    unlike Polars' row hashes, which change between versions)."""
    buf = io.BytesIO()
    df.rechunk().write_ipc(buf, compression="uncompressed")
    return hashlib.sha256(buf.getbuffer()).hexdigest()


def clean_stale_temps(folder: Path) -> int:
    """Remove temp files left by a killed write; returns how many."""
    n = 0
    if folder.is_dir():
        for p in folder.rglob(".tmp-*"):
            p.unlink(missing_ok=True)
            n += 1
    return n


def write_dir(target: Path, write: Callable[[Path], None]) -> Path:
    """Replace the folder `target` as a whole: `write` fills a fresh folder beside it, which is
    then swapped in, so a kill never leaves half a folder (a saved model, say). The fresh
    folder is named `.partial-*`, since `clean_stale_temps` removes only `.tmp-*` files."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{target.name}-", dir=target.parent))
    try:
        write(tmp)
        old = target.with_name(f".old-{target.name}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
