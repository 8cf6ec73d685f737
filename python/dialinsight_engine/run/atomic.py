"""Atomic file writes: write to a temp file in the same folder, fsync, then rename.

A stage killed mid-write leaves at most a stray ``.tmp-*`` file, never a half-written output.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    return _atomic(path, lambda p: p.write_bytes(data))


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(path: Path, df: pl.DataFrame) -> Path:
    # statistics off and a fixed compression keep the bytes deterministic for equal frames
    return _atomic(path, lambda p: df.write_parquet(p, compression="zstd", statistics=False))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def frame_hash(df: pl.DataFrame) -> str:
    """A content hash of a frame: its uncompressed Arrow IPC bytes (stable for equal data,
    unlike Polars' row hashes, which change between versions)."""
    import io

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
