"""How this process's allocators hand freed memory back to the operating system.

A long run streams partition after partition through one process (the driver's hash passes,
a Ray worker's tasks one after another), and both allocators in play keep freed memory for
reuse by default, so a process held the high-water mark of every pass it ran
(docs/performance.md, "The allocator"):

- Polars allocates through jemalloc, which returns freed pages after a decay time (polars
  sets 500 ms): `_RJEM_MALLOC_CONF=dirty_decay_ms:0` returns them at once. It is read when
  polars loads, so it is set before (this package is imported first by the CLI and the Ray
  workers).
- numpy and the Rust core allocate through glibc's malloc, whose mmap threshold rises to the
  size of the largest block freed (up to 32 MiB): the arrays of one partition then came from
  the heap, whose pages are kept after the arrays are freed. A fixed threshold (128 KiB,
  glibc's initial one) keeps each large array in its own mapping, unmapped when freed, and a
  fixed trim threshold gives the heap's free top back (what Dask sets for its workers).
- pyarrow allocates through its own pool (mimalloc in its wheels), which keeps freed pages
  for reuse: `ARROW_DEFAULT_MEMORY_POOL=system` sends it to glibc's malloc, set up as above
  (read when pyarrow makes its first allocation). The content hash's tasks rebuild each
  chunk's arrays in pyarrow (`dataset.chunk_digest`), and the row tasks that followed them in
  a worker started from what the pool had kept.
- Freed memory inside glibc's heaps (below their top, or in the arenas of the Rust core's
  threads) is trimmed only by ``malloc_trim``: `release()` calls it after each Ray task
  (`releasing`) and each stage, so a worker waits for its next task holding what it holds,
  not the high-water mark of the tasks before (an idle worker held 185 -> 208 MB of heap from
  300k to 10^6 dialogues, 116 MB at both with it; docs/performance.md).

A user's own setting wins: `_RJEM_MALLOC_CONF`, `ARROW_DEFAULT_MEMORY_POOL`, or any of
glibc's `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_` (read by glibc when the process
starts).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

#: glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: glibc's initial mmap threshold, kept fixed instead of rising with the blocks freed
MMAP_THRESHOLD = 128 * 1024
TRIM_THRESHOLD = 128 * 1024
GLIBC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def configure() -> bool:
    """Set the allocators to return freed memory promptly (see the module's text); True when
    glibc's thresholds were set here."""
    os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0")
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    libc = _glibc()
    if libc is None or any(os.environ.get(name) for name in GLIBC_SETTINGS):
        return False
    # mallopt returns 1 on success; the trim threshold first, since setting the mmap one
    # alone would leave the dynamic trim threshold where the last free put it
    return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release() -> None:
    """Hand the free pages inside glibc's heaps back to the system (``malloc_trim``; a few
    milliseconds), unless the user set glibc up (their thresholds keep what they choose)."""
    libc = _glibc()
    if libc is not None and not any(os.environ.get(name) for name in GLIBC_SETTINGS):
        libc.malloc_trim(0)


F = TypeVar("F", bound=Callable[..., Any])


def releasing(task: F) -> F:
    """`task`, then `release()`, however it ends (for the functions Ray runs as tasks)."""
    @functools.wraps(task)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        finally:
            release()
    return run  # type: ignore[return-value]


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError on musl and others
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc
