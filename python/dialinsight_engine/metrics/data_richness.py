"""`data_richness`: how diverse the data set is, and what each row adds to it.

Per row, the score is the row's distance to its nearest neighbour in the set: 1 - cosine of
all-MiniLM-L6-v2 embeddings when the `embed` extra is installed, otherwise (or with
`embeddings = "off"`) n-gram novelty: the mean over the row's distinct word n-grams of
1 - ln(df)/ln(N), where df is how many rows hold the n-gram (1.0: all its n-grams are its own).
Set-level figures go into the stage manifest and the report: distinct-1/distinct-2 over the
whole set, and coverage per scene and task (counts, shares, normalised entropy).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field

from .. import records as R
from ..errors import UserError
from ..run import atomic
from ..run.dataset import own_buffers
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
    return coverage_of_counts(df.group_by(column).agg(n=pl.len()), column)


def coverage_of_counts(counts: pl.DataFrame, column: str) -> dict[str, Any]:
    """Counts and normalised entropy of a (value, n) frame, in value order."""
    counts = counts.sort(column)
    total = counts["n"].sum()
    shares = [n / total for n in counts["n"].to_list()]
    entropy = -sum(p * math.log(p) for p in shares if p > 0)
    return {
        "counts": dict(zip(counts[column].cast(pl.String).to_list(), counts["n"].to_list(), strict=True)),
        "normalised_entropy": entropy / math.log(len(shares)) if len(shares) > 1 else 0.0,
    }


#: partial-aggregate kinds (`DataRichness.partial`): per-group document frequencies of the
#: novelty n-grams, per-group row counts, occurrences of 1- and 2-grams (distinct-n), scenes, tasks
PARTIAL_SCHEMA = {"kind": pl.String, "group": pl.String, "gram": pl.String, "n": pl.Int64, "shard": pl.UInt16}
#: Partial rows per pass of `merge_scan`'s n-gram queries (their memory is that of the distinct
#: n-grams of one pass: 4.8M partial rows of 10^6 synthetic dialogues in one pass held +444 MB;
#: with passes of 10^6 rows the merge was the driver's peak at 10^6 dialogues; 250,000 keep it
#: flat from ~50k dialogues up, for 4x the passes: docs/performance.md, stop 22).
MERGE_PASS_ROWS = 250_000
#: Hash shards of the n-grams. A part is sorted by shard (and written in row groups with
#: statistics, `PoolPartial`), and a pass of the merge reads a contiguous range of shards: only
#: the row groups of its range (a filter on a hash computed in each pass decoded every part in
#: every pass). Each pass still opens every part's footer: passes x parts, quadratic in the pool.
MERGE_SHARDS = 4096
#: Rows of the merged document-frequency table per file (`DataRichness.spill`): a scoring task
#: reads the files one at a time, so it holds one file's rows and their join, not the whole
#: table, which grows with the pool's vocabulary.
DOC_FREQ_FILE_ROWS = 16_384


def gram_shards(grams: pl.Series) -> pl.Series:
    """Each n-gram's shard: BLAKE2b of its UTF-8 bytes modulo MERGE_SHARDS (0 for null). The
    parts of one merge come from many processes, possibly on nodes with different Polars
    builds, whose own hash may differ: this one is the same everywhere."""
    distinct = grams.drop_nulls().unique()
    shards = [int.from_bytes(hashlib.blake2b(g.encode("utf-8", "surrogatepass"), digest_size=4).digest(), "little")
              % MERGE_SHARDS for g in distinct.to_list()]
    table = pl.DataFrame({"gram": distinct, "shard": pl.Series(shards, dtype=pl.UInt16)})
    looked_up = grams.to_frame("gram").join(table, on="gram", how="left", maintain_order="left")
    return looked_up["shard"].fill_null(0)


def _doc_freq(keys: pl.DataFrame, tables: pl.DataFrame | list[str]) -> pl.Series:
    """Each (group, gram)'s document frequency (null: a single row's) from the merged table,
    or from its files one at a time (`DataRichness.spill`; each key is in one of them)."""
    found: pl.Series | None = None
    for table in tables if isinstance(tables, list) else [tables]:
        frame = pl.read_parquet(table) if isinstance(table, str) else table
        df = keys.join(frame, on=["group", "gram"], how="left", maintain_order="left")["df"]
        found = df if found is None else found.fill_null(df)
    assert found is not None
    return found


def _group_keys(df: pl.DataFrame, groups: list[str]) -> pl.Series:
    """One string per row naming its `group_by` group (JSON of the values: exact, any dtype)."""
    if not groups:
        return pl.Series("group", [""] * df.height, dtype=pl.String)
    return df.select(pl.struct(groups).struct.json_encode().alias("group")).to_series()


class DataRichness(Metric):
    name = "data_richness"
    phase = "instruction"
    Config = DataRichnessConfig
    description = "diversity: nearest-neighbour distance (embeddings or n-gram novelty), distinct-n, coverage"
    #: 2: the partial counts carry each n-gram's shard (their files from an older run are not reused)
    version = "2"
    config: DataRichnessConfig

    def pool_columns(self) -> set[str]:
        return {self.config.column, *self.config.group_by, R.INSTRUCTION_ID, R.SCENE, R.TASK}

    def aggregates(self) -> bool:
        # n-gram novelty needs only the pool's document frequencies; nearest neighbours in
        # embedding space need every vector, so they score the pool on the driver
        return not self._uses_embeddings()

    def _uses_embeddings(self) -> bool:
        cfg = self.config
        return cfg.embeddings == "on" or (cfg.embeddings == "auto" and embeddings.available() is None)

    def language_texts(self, df: pl.DataFrame) -> pl.Series:
        return df[self.config.column].fill_null("")

    def partial(self, df: pl.DataFrame, ctx: MetricContext) -> pl.DataFrame:
        cfg = self.config
        texts = self.language_texts(df)
        lang = ctx.text_language(self.name, texts)
        keys = _group_keys(df, [c for c in cfg.group_by if c in df.columns])
        grams = ngram_frame(texts, cfg.ngram, lang).unique()
        doc_freq = grams.join(pl.DataFrame({"group": keys}).with_row_index("row"), on="row") \
            .group_by("group", "gram").agg(n=pl.len())
        parts = [doc_freq.with_columns(kind=pl.lit("df")),
                 pl.DataFrame({"group": keys}).group_by("group").agg(n=pl.len()).with_columns(kind=pl.lit("rows"))]
        for n in (1, 2):
            counts = ngram_frame(texts, n, lang).group_by("gram").agg(n=pl.len())
            parts.append(counts.with_columns(kind=pl.lit(f"d{n}")))
        for column in (R.SCENE, R.TASK):
            if column in df.columns:
                counts = df.group_by(column).agg(n=pl.len()).rename({column: "gram"})
                parts.append(counts.with_columns(pl.col("gram").cast(pl.String), kind=pl.lit(column)))
        out = pl.concat([p.with_columns(pl.col("n").cast(pl.Int64)) for p in parts], how="diagonal")
        return out.with_columns(shard=gram_shards(out["gram"])).sort("shard", maintain_order=True) \
            .select([pl.col(c).cast(t) for c, t in PARTIAL_SCHEMA.items()])

    def merge(self, partials: list[pl.DataFrame]) -> dict[str, Any]:
        parts = pl.concat(partials, how="vertical") if partials else pl.DataFrame(schema=PARTIAL_SCHEMA)
        return self.merge_scan(parts.lazy())

    def merge_scan(self, partials: pl.LazyFrame) -> dict[str, Any]:
        """The pool's aggregate, each figure one streaming query over the parts. The document
        frequencies keep only n-grams held by two rows or more: an n-gram of one row adds
        1 - ln(1)/ln(N) = 1 to its row's mean, whatever N, so scoring treats a missing one
        as df = 1. Most distinct n-grams are a single row's (the long tail of names, numbers
        and typos), so the table sent to every scoring task shrinks by that share."""
        kind = pl.col("kind")

        def collect(query: pl.LazyFrame) -> pl.DataFrame:
            return query.collect(engine="streaming")

        # the n-gram queries would hold every distinct n-gram of the pool at once: they run in
        # passes, each over a range of the n-grams' shards (disjoint, so counts and distinct
        # counts add up exactly)
        passes = min(MERGE_SHARDS, max(1, math.ceil(collect(partials.select(pl.len())).item() / MERGE_PASS_ROWS)))

        def of_kind(name: str, part: int | None = None) -> pl.LazyFrame:
            """The parts' rows of one kind (of pass `part`'s range of shards)."""
            rows = partials.filter(kind == name)
            if part is None:
                return rows
            low, high = part * MERGE_SHARDS // passes, (part + 1) * MERGE_SHARDS // passes
            return rows.filter(pl.col("shard").is_between(low, high, closed="left"))

        def summed(name: str, keys: list[str], part: int | None = None) -> pl.LazyFrame:
            return of_kind(name, part).group_by(keys).agg(n=pl.col("n").sum())

        rows = collect(summed("rows", ["group"]))
        # each pass's table copied as it comes: its strings are views into the pages the pass
        # decoded, which kept ~3 MB a pass alive until the end (the merge's peak grew with the
        # number of passes, i.e. with the pool: 208 -> 265 MB from 300k to 10^6 dialogues)
        doc_freq = pl.concat([own_buffers(collect(summed("df", ["group", "gram"], k).filter(pl.col("n") >= 2)
                                                  .select("group", "gram", df=pl.col("n")))) for k in range(passes)],
                             how="vertical")
        with_grams = collect(of_kind("df").select(pl.col("group").unique()))

        def distinct(n: int) -> float:
            total = collect(of_kind(f"d{n}").select(pl.col("n").sum())).item() or 0
            found = sum(collect(of_kind(f"d{n}", k).select(pl.col("gram").n_unique())).item() for k in range(passes))
            return found / float(total) if total else 0.0

        def cover(column: str) -> dict[str, Any]:
            counts = collect(summed(column, ["gram"]).select(pl.col("gram").alias(column), "n"))
            return coverage_of_counts(counts, column) if counts.height else {}

        return {"rows": dict(zip(rows["group"].to_list(), rows["n"].to_list(), strict=True)),
                "doc_freq": doc_freq, "with_grams": set(with_grams["group"].to_list()),
                "total": int(rows["n"].sum()), "distinct_1": distinct(1), "distinct_2": distinct(2),
                "scene_coverage": cover(R.SCENE), "task_coverage": cover(R.TASK)}

    def spill(self, aggregate: dict[str, Any], folder: Path) -> dict[str, Any]:
        """The document-frequency table as files of DOC_FREQ_FILE_ROWS rows, when it has more
        (every row-metrics task got the whole table, and its peak grew with the pool)."""
        table: pl.DataFrame = aggregate["doc_freq"]
        if table.height <= DOC_FREQ_FILE_ROWS:
            return aggregate
        files = [str(atomic.write_parquet(folder / f"doc-freq-{i:05d}.parquet", table.slice(start, DOC_FREQ_FILE_ROWS)))
                 for i, start in enumerate(range(0, table.height, DOC_FREQ_FILE_ROWS))]
        return {**aggregate, "doc_freq": files}

    def _novelty_in_pool(self, df: pl.DataFrame, lang: str) -> pl.Series:
        """`ngram_novelty` of each row within its group of the whole pool, from the merged
        document frequencies: the same terms, summed in the same (gram) order."""
        cfg, pool = self.config, self.pool_state
        keys = _group_keys(df, [c for c in cfg.group_by if c in df.columns])
        grams = ngram_frame(df[cfg.column].fill_null(""), cfg.ngram, lang).unique().sort("row", "gram")
        grams = grams.join(pl.DataFrame({"group": keys}).with_row_index("row"), on="row", how="left",
                           maintain_order="left")
        sizes = pl.DataFrame({"group": list(pool["rows"]), "size": list(pool["rows"].values())},
                             schema={"group": pl.String, "size": pl.Int64})
        per_row = (
            grams.with_columns(df=_doc_freq(grams.select("group", "gram"), pool["doc_freq"]))
            .join(sizes, on="group", how="left", maintain_order="left")
            .group_by("row", maintain_order=True)
            # an n-gram missing from the table is held by this row alone (merge_scan)
            .agg(novelty=(1.0 - pl.col("df").fill_null(1).cast(pl.Float64).log()
                          / pl.col("size").first().cast(pl.Float64).log()).mean())
        )
        full = pl.DataFrame({"row": pl.int_range(df.height, eager=True).cast(pl.UInt32), "group": keys})
        novelty = full.join(per_row, on="row", how="left").sort("row")["novelty"].fill_null(0.0)
        # a group of one row, or without any n-gram, counts every row as new (as ngram_novelty)
        alone = [pool["rows"].get(k, 0) < 2 or k not in pool["with_grams"] for k in keys.to_list()]
        return pl.select(pl.when(pl.Series(alone)).then(1.0).otherwise(novelty)).to_series().alias("novelty")

    def score(self, df: pl.DataFrame, ctx: MetricContext) -> pl.DataFrame:
        cfg = self.config
        texts = df[cfg.column].fill_null("")
        if self.pool_state is not None:
            lang = ctx.text_language(self.name, texts)
            pool = self.pool_state
            ctx.stats[self.name] = {
                "rows": pool["total"], "language": ctx.stats[self.name]["language"],
                "distinct_1": pool["distinct_1"], "distinct_2": pool["distinct_2"],
                "scene_coverage": pool["scene_coverage"], "task_coverage": pool["task_coverage"],
                "method": f"{cfg.ngram}-gram novelty",
                **({"fallback_because": embeddings.available()} if cfg.embeddings == "auto" else {}),
            }
            novelty = self._novelty_in_pool(df, lang)
            return pl.DataFrame({"novelty": novelty}).with_columns(score=pl.col("novelty"))
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
