"""Stage manifests: what went in, what config, which plugins, what came out, how long.

A stage is done when its manifest exists, its fingerprint matches, and the files on disk are
the ones it describes: `output_sha256` (and `files`) are the SHA-256 of the bytes actually
written, checked before the manifest is trusted. The manifest is written last; a kill between
replacing `data.parquet` and writing the manifest leaves an output that does not match the old
manifest, so the stage reruns instead of passing on data from another config.
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
    output_hash: str  # content hash of the Parquet as read back (frame_hash)
    output_sha256: str = ""  # SHA-256 of data.parquet's bytes
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    stats: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    seconds: float = 0.0  # this run's wall time
    # what producing the output cost: a rerun that wrote the same output again (from the
    # backend cache, say) keeps the earlier cost here, while `seconds` is the rerun's time
    cost_seconds: float | None = None
    # the stage's pipeline position, so readers of a run folder (the report) order stages,
    # plugin stages included, without the stage classes; None in manifests written before
    order: int | None = None

    def save(self, folder: Path) -> None:
        write_json(folder / MANIFEST, asdict(self))

    def mismatch(self, folder: Path) -> str | None:
        """Why the files in `folder` are not the ones this manifest describes (None: they are)."""
        from .atomic import file_sha256

        if not self.output_sha256:
            return "manifest from an older version has no output checksum"
        for name, want in [(OUTPUT, self.output_sha256), *sorted(self.files.items())]:
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if file_sha256(path) != want:
                return f"{name} does not match its manifest (written by an interrupted or other run)"
        return None

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
