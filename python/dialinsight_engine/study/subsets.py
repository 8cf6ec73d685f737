"""The pool (verify's labelled rows with every metric's score column) and the subsets: for
each studied metric its top and bottom `k` rows, plus one random subset, all of one size."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import polars as pl

from .. import records as R
from ..errors import DataError
from ..metrics.combine import score_col
from ..spec import Spec
from ..spec.study import StudySpec

COMPOSITE = "composite"
ROW_ID = R.INSTRUCTION_ID


@dataclass(frozen=True)
class Subset:
    """One training subset: `arm` is top, bottom or random; `metric` None for random."""

    metric: str | None
    arm: str
    row_ids: tuple[str, ...]

    @property
    def label(self) -> str:
        return "random" if self.metric is None else f"{self.metric}:{self.arm}"


def study_settings(spec: Spec) -> StudySpec:
    return spec.study if spec.study is not None else StudySpec.model_validate({})


def read_pool(spec: Spec, verify: pl.DataFrame | None) -> pl.DataFrame:
    """verify's rows that have a label (and, unless `include_dropped`, were kept)."""
    if verify is None:
        raise DataError("the study needs the verify stage's output", file=spec.source, key="study",
                        hint="run `dialengine apply SPEC --until verify` first")
    pool = verify.filter(pl.col(R.RESPONSE).is_not_null()) if R.RESPONSE in verify.columns else verify.clear()
    if not study_settings(spec).include_dropped and R.KEPT in pool.columns:
        pool = pool.filter(pl.col(R.KEPT))
    if pool.height == 0:
        raise DataError("the verify output has no labelled rows to build subsets from", file=spec.source,
                        key="study")
    if ROW_ID not in pool.columns or pool[ROW_ID].n_unique() != pool.height:
        raise DataError(f"the verify output needs a unique `{ROW_ID}` per row", file=spec.source, key="study")
    return pool


def metric_columns(spec: Spec, pool: pl.DataFrame) -> dict[str, str]:
    """Studied metric -> its score column. Named metrics must exist; by default every
    `[quality.metrics]` entry whose score varies across the pool, then the composite."""
    settings = study_settings(spec)
    named = settings.metrics or list(spec.quality.active())
    columns: dict[str, str] = {}
    for i, name in enumerate(named):
        column = score_col(name)
        if column not in pool.columns:
            if settings.metrics:
                raise DataError(f"metric {name!r} has no `{column}` column in the verify output",
                                file=spec.source, key=f"study.metrics.{i}",
                                hint=f"scored metrics: {', '.join(_scored(pool)) or 'none'}")
            continue
        if settings.metrics or pool[column].drop_nulls().n_unique() > 1:
            columns[name] = column
    if settings.composite and R.QUALITY_SCORE in pool.columns:
        columns[COMPOSITE] = R.QUALITY_SCORE
    if not columns:
        raise DataError("no metric with varying scores in the verify output to study", file=spec.source,
                        key="study.metrics")
    return columns


def _scored(pool: pl.DataFrame) -> list[str]:
    return [c.removeprefix("score_") for c in pool.columns if c.startswith("score_")]


def _tie_break(seed: int) -> pl.Expr:
    """A seeded, order-free tie-break: rows with equal scores are ordered by a hash of the id."""
    return pl.col(ROW_ID).map_elements(lambda i: hashlib.sha256(f"{seed}\x1f{i}".encode()).hexdigest(),
                                       return_dtype=pl.String)


def subset_size(spec: Spec, pool: pl.DataFrame, columns: dict[str, str]) -> int:
    """One size for every subset: `[study] subset_size`, capped at half of the rows every
    metric scored (so top and bottom never overlap)."""
    scored = min(pool[c].drop_nulls().len() for c in columns.values())
    k = min(study_settings(spec).subset_size, scored // 2)
    if k < 1:
        raise DataError(f"too few scored rows ({scored}) for a top and a bottom subset", file=spec.source,
                        key="study.subset_size")
    return k


def build_subsets(spec: Spec, pool: pl.DataFrame, columns: dict[str, str], k: int, seed: int) -> list[Subset]:
    """For each metric its top and bottom `k` rows by raw score, then one random subset."""
    ranked = pool.with_columns(_tie_break(seed).alias("_tie"))
    subsets: list[Subset] = []
    for metric, column in columns.items():
        scored = ranked.filter(pl.col(column).is_not_null()).sort([column, "_tie"], descending=[True, False])
        ids = scored[ROW_ID].to_list()
        subsets.append(Subset(metric, "top", tuple(ids[:k])))
        subsets.append(Subset(metric, "bottom", tuple(ids[-k:])))
    shuffled = ranked.sort("_tie")[ROW_ID].to_list()
    subsets.append(Subset(None, "random", tuple(shuffled[:k])))
    return subsets
