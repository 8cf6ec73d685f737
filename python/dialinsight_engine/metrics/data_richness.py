"""`data_richness`: how diverse the data set is, and what each row adds to it.

Per row, the score is the row's distance to its nearest neighbour in the set: 1 - cosine of
all-MiniLM-L6-v2 embeddings when the `embed` extra is installed, otherwise (or with
`embeddings = "off"`) n-gram novelty: the mean over the row's distinct word n-grams of
1 - ln(df)/ln(N), where df is how many rows hold the n-gram (1.0: all its n-grams are its own).
Set-level figures go into the stage manifest and the report: distinct-1/distinct-2 over the
whole set, and coverage per scene and task (counts, shares, normalised entropy).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field

from .. import records as R
from ..errors import UserError
from . import embeddings
from .base import Metric, MetricConfig, MetricContext


class DataRichnessConfig(MetricConfig):
    column: str = Field(R.PROMPT, description="Text whose diversity counts (instruction with dialogue)")
    group_by: list[str] = Field(
        default_factory=lambda: [R.TASK],
        description="Neighbours are looked for within a group (one dialogue under two tasks is no repeat)")
    embeddings: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: use embeddings when installed, else n-gram novelty")
    ngram: int = Field(2, ge=1, le=5, description="n of the n-gram novelty fallback")
    max_seq_length: int = Field(128, ge=16, le=512, description="Tokens embedded per row (cost grows with it)")
    batch_size: int = Field(64, ge=1)


def ngram_frame(texts: pl.Series, n: int, language: str = "auto") -> pl.DataFrame:
    """(row, gram) pairs, one per word n-gram occurrence of each row; words are the core
    tokenizer's (`fast.tokenize`: Chinese is cut by jieba, not taken as one run)."""
    from .. import fast

    tokens = pl.DataFrame({"w": fast.tokenize(texts.fill_null(""), language)})
    exploded = tokens.with_row_index("row").explode("w").drop_nulls("w")
    gram = pl.col("w")
    for k in range(1, n):
        gram = gram + " " + pl.col("w").shift(-k).over("row")
    return exploded.select("row", gram=gram).drop_nulls("gram")


def distinct_n(texts: pl.Series, n: int, language: str = "auto") -> float:
    """Unique n-grams over all n-grams of the whole set (not per row)."""
    grams = ngram_frame(texts, n, language)["gram"]
    return grams.n_unique() / grams.len() if grams.len() else 0.0


def ngram_novelty(texts: pl.Series, n: int, language: str = "auto") -> pl.Series:
    rows = texts.len()
    # sorted before the mean: a float sum depends on its order, and unique/join/group_by
    # do not keep one (the last bits of a row's novelty changed from run to run)
    grams = ngram_frame(texts, n, language).unique().sort("row", "gram")
    if rows < 2 or grams.height == 0:
        return pl.Series("novelty", [1.0] * rows, dtype=pl.Float64)
    doc_freq = grams.group_by("gram").agg(df=pl.len())
    per_row = (
        grams.join(doc_freq, on="gram", how="left", maintain_order="left")
        .group_by("row", maintain_order=True)
        .agg(novelty=(1.0 - pl.col("df").cast(pl.Float64).log() / math.log(rows)).mean())
    )
    full = pl.DataFrame({"row": pl.int_range(rows, eager=True).cast(pl.UInt32)})
    return full.join(per_row, on="row", how="left").sort("row")["novelty"].fill_null(0.0)


def coverage(df: pl.DataFrame, column: str) -> dict[str, Any]:
    if column not in df.columns or df.height == 0:
        return {}
    counts = df.group_by(column).agg(n=pl.len()).sort(column)
    total = counts["n"].sum()
    shares = [n / total for n in counts["n"].to_list()]
    entropy = -sum(p * math.log(p) for p in shares if p > 0)
    return {
        "counts": dict(zip(counts[column].cast(pl.String).to_list(), counts["n"].to_list(), strict=True)),
        "normalised_entropy": entropy / math.log(len(shares)) if len(shares) > 1 else 0.0,
    }


class DataRichness(Metric):
    name = "data_richness"
    phase = "instruction"
    Config = DataRichnessConfig
    description = "diversity: nearest-neighbour distance (embeddings or n-gram novelty), distinct-n, coverage"
    config: DataRichnessConfig

    def pool_columns(self) -> set[str]:
        return {self.config.column, *self.config.group_by, R.INSTRUCTION_ID, R.SCENE, R.TASK}

    def score(self, df: pl.DataFrame, ctx: MetricContext) -> pl.DataFrame:
        cfg = self.config
        texts = df[cfg.column].fill_null("")
        missing = embeddings.available()
        use_embeddings = cfg.embeddings == "on" or (cfg.embeddings == "auto" and missing is None)
        if cfg.embeddings == "on" and missing:
            raise UserError(f"data_richness: embeddings = 'on' but {missing}",
                            key="quality.metrics.data_richness.params.embeddings")
        lang = ctx.text_language(self.name, texts)
        stats: dict[str, Any] = {
            "rows": df.height,
            "language": ctx.stats[self.name]["language"],
            "distinct_1": distinct_n(texts, 1, lang),
            "distinct_2": distinct_n(texts, 2, lang),
            "scene_coverage": coverage(df, R.SCENE),
            "task_coverage": coverage(df, R.TASK),
            "method": "embeddings" if use_embeddings else f"{cfg.ngram}-gram novelty",
        }
        if cfg.embeddings == "auto" and missing:
            stats["fallback_because"] = missing
            ctx.log.info("data_richness: n-gram novelty (%s)", missing)
        groups = [c for c in cfg.group_by if c in df.columns]
        indexed = df.with_row_index("_row")
        parts = indexed.partition_by(groups, maintain_order=True) if groups else [indexed]
        vectors = None
        if use_embeddings:
            with ctx.progress("embedding for diversity", df.height) as advance:
                vectors = embeddings.embed(texts.to_list(), batch_size=cfg.batch_size,
                                           max_seq_length=cfg.max_seq_length)
                advance(df.height)
        ids = df[R.INSTRUCTION_ID].cast(pl.String).to_list() if R.INSTRUCTION_ID in df.columns \
            else [str(i) for i in range(df.height)]
        pieces = []
        for part in parts:
            rows = part["_row"].to_numpy()
            piece = pl.DataFrame({"_row": part["_row"], "novelty": ngram_novelty(part[cfg.column].fill_null(""), cfg.ngram, lang)})
            if vectors is not None:
                idx, sim = embeddings.nearest_neighbours(vectors[rows])
                distance = np.clip(1.0 - sim.astype(np.float64), 0.0, 1.0) if len(rows) > 1 else np.ones(len(rows))
                piece = piece.with_columns(
                    nn_distance=pl.Series(distance, dtype=pl.Float64),
                    nearest=pl.Series([ids[rows[i]] if i >= 0 else None for i in idx], dtype=pl.String))
            pieces.append(piece)
        out = pl.concat(pieces).sort("_row").drop("_row") if pieces else pl.DataFrame({"novelty": []}, schema={"novelty": pl.Float64})
        if vectors is not None:
            mean = out["nn_distance"].mean()
            stats["mean_nn_distance"] = float(mean) if isinstance(mean, int | float) else 0.0
            out = out.with_columns(score=pl.col("nn_distance"))
        else:
            out = out.with_columns(score=pl.col("novelty"))
        ctx.stats[self.name] = stats
        return out
