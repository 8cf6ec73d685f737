"""Stage manifests: what went in, what config, which plugins, what came out, how long.

A stage is done when its manifest exists, its fingerprint matches, and the files on disk are
the ones it describes: `partitions` (the Parquet dataset under `data/`, see run/dataset.py)
and `files` carry the SHA-256 of the bytes actually written, checked before the manifest is
trusted. The manifest is written last; a kill between writing partitions and writing the
manifest leaves an output that does not match the old manifest, so the stage reruns (from its
first unfinished partition, see run/partials.py) instead of passing on data from another config.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_json

MANIFEST = "manifest.json"


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
    output_hash: str  # content hash of the rows as read back (dataset.content_hash)
    output_sha256: str = ""  # SHA-256 over the partitions' SHA-256s, in order
    #: the output dataset: [{"name": "data/part-00000.parquet", "rows": n, "sha256": ...}]
    partitions: list[dict[str, Any]] = field(default_factory=list)
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
        from .dataset import partition_files

        if not self.output_sha256 or not self.partitions:
            return "manifest from an older version has no partitioned output"
        listed = [(p["name"], p["sha256"]) for p in self.partitions]
        for name, want in [*listed, *sorted(self.files.items())]:
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if file_sha256(path) != want:
                return f"{name} does not match its manifest (written by an interrupted or other run)"
        on_disk = {str(p.relative_to(folder)) for p in partition_files(folder)}
        extra = sorted(on_disk - {name for name, _ in listed})
        if extra:
            return f"{extra[0]} is not in its manifest (written by an interrupted or other run)"
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


def partitions_sha256(partitions: list[dict[str, Any]]) -> str:
    """One checksum for the whole dataset: SHA-256 over its partitions' SHA-256s in order."""
    return hashlib.sha256("".join(p["sha256"] for p in partitions).encode()).hexdigest()


def production_cost(previous: Manifest | None, output_hash: str, seconds: float) -> float:
    """The cost to record for an output: the earlier cost when a rerun reproduced the same
    output (it came from caches, so this run's time is not what the data cost)."""
    if previous is not None and previous.output_hash == output_hash:
        return max(previous.cost, seconds)
    return seconds
