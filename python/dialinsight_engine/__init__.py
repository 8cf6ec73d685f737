"""dialinsight-engine: domain dialogues -> quality-filtered fine-tuning data -> tuned, guarded model."""

from __future__ import annotations

import os

__version__ = "0.1.0"

# Polars allocates through jemalloc, which keeps freed pages for reuse until a decay time
# (polars sets 500 ms): a long run's driver then held the high-water mark of its streaming
# passes, growing with the partitions (the content hash over 10^6 rows: 373 MB peak and
# 281 MB held after; with pages returned at once, 250 and 68 MB; docs/performance.md, "The
# allocator"). polars adds this after its own defaults when it is loaded, so it applies when
# this package is imported first (the CLI, the Ray workers); a user's own setting wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0")
