"""Built-in plugin: training (registered through the `dialinsight_engine` entry-point group)."""

from __future__ import annotations
