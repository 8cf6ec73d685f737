"""dialinsight-engine: domain dialogues -> quality-filtered fine-tuning data -> tuned, guarded model."""

from __future__ import annotations

__version__ = "0.1.0"
