"""Built-in plugin: generation (registered through the `dialinsight_engine` entry-point group)."""

from __future__ import annotations
