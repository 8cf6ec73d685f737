"""Old home of the stage interface, kept so third-party plugins that import
`dialinsight_engine.stages.base.Stage` (or `ORDER`) keep working; it lives in `run.stage`."""

from ..run.stage import ORDER, Stage

__all__ = ["ORDER", "Stage"]
