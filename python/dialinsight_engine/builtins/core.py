"""Built-in plugin `core`: readers and the stages that need no model (ingest, scenes, seeds,
export). Registered through the `dialinsight_engine` entry-point group like any plugin."""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..readers.jsonl import JsonlReader
from ..readers.tables import HfDatasetReader, ParquetReader
from ..stages.export import ExportStage
from ..stages.ingest import IngestStage
from ..stages.scenes import ScenesStage
from ..stages.seeds import SeedsStage


@hookimpl
def register_readers() -> list[type]:
    return [JsonlReader, ParquetReader, HfDatasetReader]


@hookimpl
def register_stages() -> list[type]:
    return [IngestStage, ScenesStage, SeedsStage, ExportStage]
