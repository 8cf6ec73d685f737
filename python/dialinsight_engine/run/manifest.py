"""Stage manifests: what went in, what config, which plugins, what came out, how long.

A stage is done when its manifest exists and its fingerprint matches: the manifest is written
last, so a kill at any point before leaves the stage to be rerun.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_json

MANIFEST = "manifest.json"
OUTPUT = "data.parquet"


def canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Manifest:
    stage: str
    fingerprint: str
    config_hash: str
    config_keys: list[str]
    inputs: dict[str, str]  # upstream stage -> its output content hash
    plugin_versions: dict[str, str]
    extra: dict[str, Any]  # stage-specific fingerprint parts (data file hashes, decisions...)
    rows_in: int
    rows_out: int
    rows_kept: int | None
    output_hash: str
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    stats: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    seconds: float = 0.0  # this run's wall time
    # what producing the output cost: a rerun that wrote the same output again (from the
    # backend cache, say) keeps the earlier cost here, while `seconds` is the rerun's time
    cost_seconds: float | None = None

    def save(self, folder: Path) -> None:
        write_json(folder / MANIFEST, asdict(self))

    @property
    def cost(self) -> float:
        return self.cost_seconds if self.cost_seconds is not None else self.seconds

    @classmethod
    def load(cls, folder: Path) -> Manifest | None:
        try:
            data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            return cls(**data)
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None


def production_cost(previous: Manifest | None, output_hash: str, seconds: float) -> float:
    """The cost to record for an output: the earlier cost when a rerun reproduced the same
    output (it came from caches, so this run's time is not what the data cost)."""
    if previous is not None and previous.output_hash == output_hash:
        return max(previous.cost, seconds)
    return seconds
