"""dialinsight-engine: domain dialogues -> quality-filtered fine-tuning data -> tuned, guarded model."""

from __future__ import annotations

__version__ = "0.1.0"

# freed memory handed back promptly, set before polars loads (allocator.py): a long run's
# processes otherwise held the high-water mark of every partition they streamed
from . import allocator  # before anything that loads polars

allocator.configure()
