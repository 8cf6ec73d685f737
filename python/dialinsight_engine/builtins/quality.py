"""Built-in plugin: quality (registered through the `dialinsight_engine` entry-point group)."""

from __future__ import annotations
