"""Runs: the stage DAG, manifests, atomic Parquet I/O and resume."""

from .context import StageContext
from .runner import PlanItem, Runner

__all__ = ["PlanItem", "Runner", "StageContext"]
