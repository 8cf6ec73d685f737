"""`data_redundancy`: near duplicates within the set and overlap with reference sets.

- Within the set: MinHash/LSH clusters from the Rust core (`fast.near_duplicates`), computed
  per `group_by` group (by default per task: the same dialogue under two tasks is two
  different examples). One row per cluster is kept by the declared `keep` rule ("first",
  "longest", or the name of a numeric column such as an earlier metric's `score_...`); the
  others are flagged "near duplicate of <id>".
- Against reference sets (e.g. the evaluation dialogues): rows whose `against` text matches a
  reference text at Jaccard >= threshold are flagged "contaminated" (`fast.contamination`).
- Optionally semantic near duplicates: embedding cosine >= `semantic_threshold` to a row kept
  before it (in `keep` order, same group).

Score: 1 - the highest similarity found (within the set, to a reference, or semantic).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator

from .. import records as R
from ..errors import DataError, UserError
from ..run.dataset import own_buffers
from . import embeddings
from .base import Metric, MetricConfig, MetricContext
from .combine import column_alias

if TYPE_CHECKING:
    from .partitioned import PoolPartitions

KEY = "quality.metrics.data_redundancy.params"


class ReferenceSet(MetricConfig):
    path: str = Field(description="JSONL, Parquet or CSV file (relative to the spec; @examples/ works)")
    name: str | None = Field(None, description="Label in reasons and the report (default: the file name)")
    text: str = Field("turns", description="Field to compare: 'turns' (rendered like ingest) or a text column")
    threshold: float | None = Field(None, gt=0, le=1, description="Jaccard threshold (default: the metric's)")


class DataRedundancyConfig(MetricConfig):
    column: str = Field(R.PROMPT, description="Text compared within the set")
    group_by: list[str] = Field(default_factory=lambda: [R.TASK], description="Duplicates only within a group")
    threshold: float = Field(0.8, gt=0, le=1, description="Estimated Jaccard at which rows are near duplicates")
    num_perm: int = Field(128, ge=16, le=1024)
    ngram: int | None = Field(None, ge=1, le=10, description="Shingle length (default: the language's, 3)")
    unit: Literal["word", "char"] | None = Field(
        None, description="Shingle unit (default by language: char for zh/ja/th, word otherwise)")
    seed: int = 1
    keep: str = Field("first", description="Which row of a cluster stays: first, longest, or a numeric column "
                                           "(a metric detail as `NAME__DETAIL`; the dotted `NAME.DETAIL` is accepted)")
    references: list[ReferenceSet] = Field(default_factory=list, description="Sets no row may overlap (eval data)")
    against: str = Field(R.DIALOGUE_TEXT, description="Row text compared with the reference sets")
    semantic_threshold: float | None = Field(None, gt=0, le=1, description="Embedding cosine for semantic duplicates")

    @field_validator("keep")
    @classmethod
    def _undotted(cls, keep: str) -> str:
        return column_alias(keep)  # specs written before detail columns lost their dots


def _two_decimals(column: str) -> pl.Expr:
    """`column` (>= 0) as Python's ``f"{x:.2f}"`` writes it: x*100 is exact for the float32
    estimates, and both round ties to even."""
    hundredths = (pl.col(column) * 100).round(0).cast(pl.Int64)
    return pl.format("{}.{}", hundredths // 100, (hundredths % 100).cast(pl.String).str.zfill(2))


def _ids_at(df: pl.DataFrame, source: PoolPartitions | None, positions: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(`positions`, sorted and distinct, the ids of the rows there): read from the frame, or
    from the partitions where the ids were left (`Metric.partition_columns`); a row's
    position stands for its id where the input has none. In buffers of their own: a gathered
    string column would keep the pool's alive (`PoolPartitions.take` copies already)."""
    if R.INSTRUCTION_ID in df.columns:
        ids = own_buffers(df[R.INSTRUCTION_ID].gather(positions).cast(pl.String).to_frame("id"))["id"]
    elif source is not None and R.INSTRUCTION_ID in source.columns:
        ids = source.take(R.INSTRUCTION_ID, positions.to_numpy()).cast(pl.String)
    else:
        ids = positions.cast(pl.String)
    return positions, ids


def _lookup(positions: pl.Series, ids: pl.Series, wanted: pl.Series) -> pl.Series:
    """The id at each of `wanted`'s positions (null where it is null) from the sorted
    `positions` and their `ids`: a binary search per row, no hash join over the pool."""
    if positions.is_empty():
        return pl.repeat(None, len(wanted), dtype=pl.String, eager=True).alias("duplicate_of")
    index = positions.search_sorted(wanted.fill_null(positions[0]))
    return pl.select(pl.when(wanted.is_not_null()).then(ids.gather(index))).to_series().alias("duplicate_of")


def _score_of(similarity: np.ndarray) -> pl.Series:
    """1 - similarity, clipped to [0, 1]: one float64 array, not three (8 MB each at 10^6 rows
    on the driver)."""
    score = np.subtract(1.0, similarity)
    np.clip(score, 0.0, 1.0, out=score)
    return pl.Series(score, dtype=pl.Float64)


def _cluster_sizes(cluster: pl.Series) -> pl.Series:
    """Rows of each row's cluster. The labels are rows of the pool (`_within`), so a count
    per label is an array as long as the pool: 4 bytes a row, where a window over the
    labels built a hash table of the pool."""
    labels = cluster.to_numpy()
    counts = np.bincount(labels).astype(np.uint32) if labels.size else np.zeros(0, np.uint32)
    return pl.Series("cluster_size", counts[labels], dtype=pl.UInt32)


def _joined(reasons: pl.Series, note: pl.Series) -> pl.Series:
    """Each row's reasons and note joined by "; " (null where both are)."""
    both = pl.DataFrame({"a": reasons, "b": note})
    return both.select(pl.when(pl.col("a").is_null() & pl.col("b").is_null()).then(None).otherwise(
        pl.concat_str("a", "b", separator="; ", ignore_nulls=True))).to_series()


def _with_references(out: pl.DataFrame, similarity: np.ndarray, found: dict[str, pl.DataFrame],
                     stats: dict[str, Any]) -> pl.DataFrame:
    """`out` (the clusters' columns) with each reference set's matches (`found`, by label:
    ``fast.contamination``'s rows), the score (1 - the highest similarity) and the reason
    (the contamination notes); the matches counted into `stats`."""
    notes = pl.repeat(None, out.height, dtype=pl.String, eager=True)
    for label, matches in found.items():
        note = matches.select(pl.when(pl.col("contaminated")).then(pl.format(
            f"contaminated: matches {label} row {{}} (jaccard {{}})", "ref_index",
            _two_decimals("max_jaccard")))).to_series()
        notes = _joined(notes, note)
        similarity = np.maximum(similarity, matches["max_jaccard"].fill_null(0.0).to_numpy())
        out = out.with_columns(matches["max_jaccard"].alias(f"ref_jaccard_{label}"))
        counts = stats.setdefault("contaminated", {})
        counts[label] = counts.get(label, 0) + int(matches["contaminated"].sum())
    return out.with_columns(score=_score_of(similarity), reason=notes)


def _finished_partitions(folder: Path, partitions: int, references: dict[str, Iterator[pl.DataFrame]],
                         stats: dict[str, Any]) -> Iterator[pl.DataFrame]:
    """Each partition's rows finished from its clusters' file (`folder`) and its matches
    against each reference set (`references`, by label, a partition at a time)."""
    from ..run.dataset import part_name

    for index in range(partitions):
        clusters = pl.read_parquet(folder / part_name(index)).with_columns(pl.col("max_jaccard").cast(pl.Float64))
        out = _with_references(clusters, clusters["max_jaccard"].to_numpy(),
                               {label: next(parts) for label, parts in references.items()}, stats)
        yield _with_near_reason(out, out["duplicate_of"].cast(pl.String))


def _with_near_reason(result: pl.DataFrame, duplicate_of: pl.Series) -> pl.DataFrame:
    """`duplicate_of` as the kept rows' ids, and the near-duplicate reason before the others."""
    near = pl.DataFrame({"d": duplicate_of, "j": result["max_jaccard"]}).select(
        pl.when(pl.col("d").is_not_null()).then(pl.format("near duplicate of {} (jaccard {})", "d",
                                                          _two_decimals("j")))).to_series()
    return result.with_columns(duplicate_of=duplicate_of, reason=_joined(near, result["reason"]))


def read_reference(path: Path, text: str) -> pl.Series:
    from ..dialogue import render_dialogue

    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            records = frame.to_dicts()
        elif path.suffix == ".csv":
            records = pl.read_csv(path).to_dicts()
        else:
            with path.open(encoding="utf-8") as fh:
                records = [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        raise DataError("reference set not found", file=path) from None
    except (json.JSONDecodeError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"cannot read reference set: {exc}", file=path) from None
    out = []
    for i, rec in enumerate(records):
        value = rec.get(text)
        if text == "turns" and isinstance(value, list):
            value = render_dialogue([{"role": str(t.get("role", "")), "text": str(t.get("text", ""))} for t in value])
        if value is None:
            raise DataError(f"record {i + 1} has no {text!r}", file=path, line=i + 1 if path.suffix == ".jsonl" else None)
        out.append(str(value))
    return pl.Series("reference", out, dtype=pl.String)


class DataRedundancy(Metric):
    name = "data_redundancy"
    phase = "instruction"
    Config = DataRedundancyConfig
    description = "MinHash/LSH near duplicates (keep one per cluster), contamination vs reference sets"
    #: 2: native character-shingle signatures hash code points (the core changed them);
    #: 3: a cluster's id is the pool position of its first row (in every group)
    version = "3"
    config: DataRedundancyConfig
    #: the representatives' pool positions (sorted) and ids, from `score` for `finish_rows`
    _representatives: tuple[pl.Series, pl.Series]

    def fingerprint(self, ctx: MetricContext) -> dict[str, Any]:
        from ..run.atomic import file_sha256

        hashes = {}
        for ref in self.config.references:
            path = ctx.resolve_path(ref.path)
            hashes[ref.path] = file_sha256(path) if path.is_file() else "missing"
        return {"version": self.version, "references": hashes}

    def pool_columns(self) -> set[str]:
        cfg = self.config
        keep = {cfg.keep} if cfg.keep not in ("first", "longest") else set()
        return {cfg.column, *cfg.group_by, R.INSTRUCTION_ID, *keep, *([cfg.against] if cfg.references else [])}

    def partition_columns(self) -> set[str]:
        # the embedding search needs the texts in one process; MinHash does not, and of the
        # ids it needs only those of the rows others duplicate
        cfg = self.config
        return set() if cfg.semantic_threshold is not None else \
            {cfg.column, R.INSTRUCTION_ID, *([cfg.against] if cfg.references else [])}

    def key_columns(self) -> set[str]:
        cfg = self.config  # grouped by, never read as text (unless also compared or kept by)
        return set(cfg.group_by) - {cfg.column, cfg.keep, cfg.against}

    def score(self, df: pl.DataFrame, ctx: MetricContext) -> pl.DataFrame:
        cfg = self.config
        source = ctx.partitions  # under Ray, for a large pool: the text columns were left there
        for col in (cfg.column, *cfg.group_by):
            if col not in df.columns and (source is None or col not in source.columns):
                raise UserError(f"data_redundancy: no column {col!r} in the input", key=KEY)
        if cfg.keep not in ("first", "longest") and cfg.keep not in df.columns:
            raise UserError(f"data_redundancy: keep = {cfg.keep!r} is neither 'first', 'longest' nor a column",
                            key=f"{KEY}.keep", hint=f"numeric columns: {', '.join(c for c in df.columns if df[c].dtype.is_numeric())}")
        texts = df[cfg.column] if cfg.column in df.columns else source.language_sample(cfg.column)  # type: ignore[union-attr]
        lang = ctx.text_language(self.name, texts.cast(pl.String))
        out = self._within(df, lang, ctx.stage_ctx, source)
        # "near duplicate of <id>" is written as the rows are (`finish_rows`): here only the
        # representatives' ids, at 10^6 rows (58% duplicates) the reasons were +45 MB of driver
        self._representatives = _ids_at(df, source, out["duplicate_of"].drop_nulls().unique().sort())
        similarity = out["max_jaccard"].cast(pl.Float64).to_numpy()
        stats: dict[str, Any] = {
            "language": ctx.stats.get(self.name, {}).get("language"),
            "clusters_with_duplicates": out.select(pl.col("cluster_id").filter(pl.col("cluster_size") > 1)
                                                   .n_unique()).item(),
            "near_duplicates": int(out["is_duplicate"].sum()),
        }
        found = {self._label(ref): self._contamination(df, ref, ctx, lang) for ref in cfg.references}
        out = _with_references(out, similarity, found, stats)
        ctx.stats[self.name] = stats
        if cfg.semantic_threshold is not None:
            out = self._with_semantic(self.finish_rows(out), df, similarity, ctx)
        return out if ctx.rows_later else self.finish_rows(out)

    def finish_rows(self, result: pl.DataFrame) -> pl.DataFrame:
        """`duplicate_of` (pool positions from `score`) as the representatives' ids, the
        near-duplicate reason before the contamination notes, and the 32-bit columns `score`
        holds (`_within`) at their output types; rows already finished (a String
        `duplicate_of`) are returned as they are."""
        if result["duplicate_of"].dtype == pl.String:
            return result
        result = result.with_columns(pl.col("cluster_id").cast(pl.UInt64), pl.col("max_jaccard").cast(pl.Float64))
        positions, ids = self._representatives
        return _with_near_reason(result, _lookup(positions, ids, result["duplicate_of"]))

    def score_partitions(self, source: PoolPartitions, ctx: MetricContext) -> Iterator[pl.DataFrame] | None:
        """The MinHash clusters computed on Ray with every partition's result written by the
        tasks (`executors.dedup.near_duplicates_where_rows_lie`), then each partition's rows
        finished from its file and its contamination: the driver holds one partition's rows.
        Not for the embedding search (it needs the texts in one process), nor for a keep
        column the partitions lack (a row-local metric's score)."""
        from ..executors.dedup import near_duplicates_where_rows_lie
        from .partitioned import SCRATCH  # the stage's scratch, removed when the stage ends

        cfg = self.config
        needed = {cfg.column, *cfg.group_by, *([cfg.keep] if cfg.keep not in ("first", "longest") else []),
                  *([cfg.against] if cfg.references else [])}
        if cfg.semantic_threshold is not None or not needed <= source.columns or ctx.stage_ctx is None:
            return None
        lang = ctx.text_language(self.name, source.language_sample(cfg.column).cast(pl.String))
        folder = Path(ctx.stage_ctx.stage_dir) / SCRATCH / f"{self.name}-clusters"
        found = near_duplicates_where_rows_lie(
            source, ctx.stage_ctx, folder, text_column=cfg.column, group_by=cfg.group_by, keep=cfg.keep,
            id_column=R.INSTRUCTION_ID if R.INSTRUCTION_ID in source.columns else None, threshold=cfg.threshold,
            num_perm=cfg.num_perm, seed=cfg.seed, ngram=cfg.ngram, unit=cfg.unit, normalize=True, language=lang)
        stats: dict[str, Any] = {"language": ctx.stats.get(self.name, {}).get("language"),
                                 "clusters_with_duplicates": found["clusters_with_duplicates"],
                                 "near_duplicates": found["near_duplicates"]}
        ctx.stats[self.name] = stats
        references = {self._label(ref): self._contamination_parts(source, ref, ctx, lang) for ref in cfg.references}
        return _finished_partitions(folder, len(source.paths), references, stats)

    def _label(self, ref: ReferenceSet) -> str:
        return ref.name or Path(ref.path).name

    def _with_semantic(self, out: pl.DataFrame, df: pl.DataFrame, similarity: np.ndarray,
                       ctx: MetricContext) -> pl.DataFrame:
        """The embedding search's duplicates (rows no other rule flagged) added to `out`."""
        dup, sim = self._semantic(df, self._all_ids(df), ctx)
        listed = out["reason"].to_list()
        for i, d in enumerate(dup):
            if d is not None and listed[i] is None:
                listed[i] = f"semantic duplicate of {d} (cosine {sim[i]:.2f})"
        ctx.stats[self.name]["semantic_duplicates"] = sum(d is not None for d in dup)
        similarity = np.maximum(similarity, sim.astype(np.float64))
        return out.with_columns(semantic_duplicate_of=pl.Series(dup, dtype=pl.String),
                                semantic_cosine=pl.Series(sim, dtype=pl.Float64),
                                score=_score_of(similarity),
                                reason=pl.Series(listed, dtype=pl.String))

    def _all_ids(self, df: pl.DataFrame) -> pl.Series:
        """Each row's id (its position without an id column), for the semantic search, which
        leaves nothing in the partitions."""
        if R.INSTRUCTION_ID in df.columns:
            return df[R.INSTRUCTION_ID].cast(pl.String)
        return pl.int_range(df.height, eager=True).cast(pl.String)

    def _within(self, df: pl.DataFrame, lang: str, stage_ctx: Any = None,
                source: PoolPartitions | None = None) -> pl.DataFrame:
        """Clusters per group; `duplicate_of` is the representative's pool position. In
        32-bit columns (`finish_rows` widens them): 8 bytes a row less held on the driver."""
        from ..executors.dedup import near_duplicates

        cfg = self.config
        indexed = df.with_row_index("_row")
        # one group (a spec with one task) is the pool itself: no copy of its rows
        # (column by column: a struct's n_unique row-encodes the pool, +40 MB at 10^6 rows)
        one_group = df.height == 0 or all(df[c].n_unique() == 1 for c in cfg.group_by)
        parts = [indexed] if one_group else indexed.partition_by(cfg.group_by, maintain_order=True)
        results = []
        for part in parts:
            found = near_duplicates(  # on Ray under the ray executor (executors/dedup.py)
                part, stage_ctx, source, text_column=cfg.column, threshold=cfg.threshold, num_perm=cfg.num_perm, seed=cfg.seed,
                ngram=cfg.ngram, unit=cfg.unit, normalize=True, keep=cfg.keep, id_column=None, language=lang,
                compact=True)
            # a cluster is labelled by the pool position of its first row, as on Ray, where
            # the groups are searched together (`ray_near_duplicates`' group_by)
            found = found.with_columns(_row=part["_row"], cluster_id=part["_row"].gather(found["cluster_id"]),
                                       duplicate_of=part["_row"].gather(found["duplicate_of"]),
                                       max_jaccard=pl.col("max_jaccard").cast(pl.Float32))
            results.append(found)
        if not results:
            return pl.DataFrame(schema={"cluster_id": pl.UInt32, "duplicate_of": pl.UInt32, "max_jaccard": pl.Float32,
                                        "is_duplicate": pl.Boolean, "cluster_size": pl.UInt32})
        # one part (no group_by) is in row order already: no sorted copy of the pool's rows
        merged = (results[0] if len(results) == 1 else pl.concat(results).sort("_row")).drop("_row")
        return merged.with_columns(cluster_size=_cluster_sizes(merged["cluster_id"])).select(
            "cluster_id", "duplicate_of", "max_jaccard", "is_duplicate", "cluster_size")

    def _contamination_parts(self, source: PoolPartitions, ref: ReferenceSet, ctx: MetricContext,
                             lang: str) -> Iterator[pl.DataFrame]:
        """`_contamination`'s rows a partition at a time, computed where the rows lie."""
        from ..executors.dedup import contamination_parts

        cfg = self.config
        reference = read_reference(ctx.resolve_path(ref.path), ref.text)
        return contamination_parts(source, ctx.stage_ctx, cfg.against, reference, threshold=ref.threshold or cfg.threshold,
                                   num_perm=cfg.num_perm, seed=cfg.seed, ngram=cfg.ngram, unit=cfg.unit, language=lang)

    def _contamination(self, df: pl.DataFrame, ref: ReferenceSet, ctx: MetricContext,
                       lang: str) -> pl.DataFrame:
        from .. import fast

        cfg = self.config
        # the column left where the data lies (a distributed pool), else in the frame
        partitions = ctx.partitions if ctx.partitions is not None and cfg.against in ctx.partitions.columns else None
        if cfg.against not in df.columns and partitions is None:
            raise UserError(f"data_redundancy: no column {cfg.against!r} to compare with references",
                            key=f"{KEY}.against")
        reference = read_reference(ctx.resolve_path(ref.path), ref.text)
        if partitions is not None:
            from ..executors.dedup import contamination

            return contamination(partitions, ctx.stage_ctx, cfg.against, reference,
                                 threshold=ref.threshold or cfg.threshold, num_perm=cfg.num_perm,
                                 seed=cfg.seed, ngram=cfg.ngram, unit=cfg.unit, language=lang)
        return fast.contamination(df[cfg.against].fill_null(""), reference,
                                  threshold=ref.threshold or cfg.threshold, num_perm=cfg.num_perm,
                                  seed=cfg.seed, ngram=cfg.ngram, unit=cfg.unit, language=lang)

    def _semantic(self, df: pl.DataFrame, ids: pl.Series, ctx: MetricContext) -> tuple[list[str | None], np.ndarray]:
        cfg = self.config
        missing = embeddings.available()
        if missing:
            raise UserError(f"data_redundancy: semantic_threshold needs embeddings, but {missing}",
                            key=f"{KEY}.semantic_threshold")
        assert cfg.semantic_threshold is not None
        vectors = embeddings.embed(df[cfg.column].fill_null("").to_list())
        if cfg.keep == "first":
            order = np.arange(df.height)
        elif cfg.keep == "longest":
            order = np.argsort(-df[cfg.column].fill_null("").str.len_chars().to_numpy(), kind="stable")
        else:
            order = np.argsort(-df[cfg.keep].cast(pl.Float64).fill_null(-np.inf).to_numpy(), kind="stable")
        groups = (df.select(pl.struct(cfg.group_by).rank("dense")).to_series().to_numpy()
                  if cfg.group_by else None)
        dup, sim = embeddings.greedy_semantic_duplicates(vectors, order, cfg.semantic_threshold, groups)
        id_list = ids.to_list()
        return [id_list[d] if d >= 0 else None for d in dup], sim
