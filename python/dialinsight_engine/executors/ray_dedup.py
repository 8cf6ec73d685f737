"""Near-duplicate detection on Ray, with the same result as :func:`fast.near_duplicates`.

The workflow is NeMo Curator's fuzzy dedup (MinHash -> LSH buckets -> edges -> Jaccard check
-> connected components), laid out as Ray tasks over the partitions of a stage's data:

0. **blocks**: the partitions are grouped into contiguous *shuffle blocks* of about
   :data:`BLOCK_ROWS` rows (at least one per CPU of the cluster, at most one per partition),
   the unit of every step below. Each step is an all-to-all exchange between the tasks of
   two steps, and its pieces travel as files in an exchange folder (`exchange`: each task
   writes one file, its pieces in destination order, and reads its own piece of every file
   of the step before), not as Ray objects: an object is owned by the driver, which
   submitted the task, and one under Ray's inline limit (100 KB) lives in its heap, so
   (blocks)^2 objects per step forced few large blocks, and a task's memory grew with the
   square root of the pool (docs/performance.md). With files a block has the same rows for
   any pool, and the driver holds a result per task, not per piece.
1. **signatures** (one task per block): :func:`fast.minhash_signatures` on the text column of
   the block's partitions, written; the task also writes one ``(band, key, row)`` record per
   band of every row that has a shingle, split by ``key % reducers`` (the map side of a hash
   shuffle).
2. **buckets** (one task per reducer): records sorted by (band, key, row); each bucket becomes
   candidate pairs by the Rust core's rule (every pair when a bucket holds at most
   :data:`MAX_FULL_BUCKET` rows, else a star on its first row plus a chain), one band at a
   time, split by the block of the pair's second row.
3. **verification**, two hops so that only the signatures of candidate rows move: the
   block of ``j`` routes the pairs to the block of ``i`` with the signatures of their distinct
   second rows (a row is in several pairs: ~14 candidates per row at 1M templated prompts,
   so one signature per pair moved 2.6x the bytes), which computes the estimated Jaccard
   (share of equal slots, rounded through float32 as the core does) :data:`ESTIMATE_CHUNK`
   pairs at a time, keeps the edges (estimate >= threshold) and writes each row's best
   estimate split by the row's block, whose task merges them: the candidate pairs never
   reach the driver, nor the edges, which are written as the components' first links. The
   driver waits for a step's tasks before it starts the next (each reads the files of all
   of them) and deletes the files no later step reads.
4. **components and keep rule**, in the tasks too (`ray_components`): the edges' components
   by large-star and small-star rounds, labelled by their smallest row; each component's
   kept row chosen by its smallest row's block as the core chooses it ("first", "longest",
   or a numeric column; ties to the smallest row); each block's rows' results written, and
   read by the driver a block at a time into the returned columns. The driver held every
   edge and one label per row before (its memory grew with the pool).

Rows are numbered in partition order, so the result equals ``fast.near_duplicates`` on the
concatenated partitions, whatever the partitioning.

A block whose task fails after Ray's retries (``max_retries`` for a lost worker or node)
fails the whole call with :class:`~dialinsight_engine.errors.StageFailed` naming the block's
partitions and the step. See ``docs/performance.md`` ("Near-duplicates and generation on Ray").
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import ray

from .. import fast
from ..allocator import releasing
from ..errors import StageFailed, UserError
from ..metrics.partitioned import PartitionRows
from ..run import faults
from ..run.dataset import part_name
from .exchange import (
    Piece,
    destination_of,
    piece,
    read_all,
    read_split,
    split_by,
    split_writer,
    step_file,
    write_split,
    write_split_table,
)
from .pairs import merged_pairs, unique_pairs
from .ray_components import LINKS, block_results, both_ways, centres, star_round, to_centres

if TYPE_CHECKING:
    from ..metrics.partitioned import PoolPartitions

__all__ = ["BLOCK_ROWS", "MAX_FULL_BUCKET", "DedupResult", "partition_rows", "ray_contamination",
           "ray_contamination_parts", "ray_near_duplicates", "shuffle_blocks"]

#: Buckets larger than this become a star plus a chain of pairs, not all pairs (the Rust core's
#: ``lsh::MAX_FULL_BUCKET``; the two must agree for the results to be identical).
MAX_FULL_BUCKET = 48
#: Value of every slot of the signature of a row without a shingle (the core's ``EMPTY``).
EMPTY_SLOT = 2**32 - 1
#: Rows of one shuffle block by default: what one task of each step holds (the block's
#: signatures, 512 bytes a row at 128 slots, and its rows' candidate pairs) is the same for
#: any pool, since the steps exchange files (`exchange`), not one Ray object per pair of blocks.
BLOCK_ROWS = 50_000
#: One band-key record as the shuffle writes it: band, key, row.
BAND_KEY = np.dtype([("band", "<u2"), ("key", "<u8"), ("row", "<u8")])

@dataclass
class DedupResult:
    """``frame``: one row per input row, in partition order, with the columns of
    ``fast.near_duplicates``; ``stats``: what the run moved and found."""

    frame: pl.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _RowColumns:
    """The columns the signature step reads besides the text: the group's, the ids."""

    groups: tuple[str, ...]
    ids: str | None


@dataclass(frozen=True)
class _Hashing:
    """Keyword arguments of ``fast.minhash_signatures``, language resolved."""

    num_perm: int
    seed: int
    ngram: int | None
    unit: str | None
    normalize: Any
    mode: str
    scheme: str
    language: str

    def kwargs(self) -> dict[str, Any]:
        return dict(num_perm=self.num_perm, seed=self.seed, ngram=self.ngram, unit=self.unit,
                    normalize=self.normalize, mode=self.mode, scheme=self.scheme,
                    language=self.language)


# -- public ----------------------------------------------------------------------------------
def ray_near_duplicates(
    source: Any,
    text_column: str,
    *,
    id_column: str | None = None,
    threshold: float = 0.8,
    num_perm: int = 128,
    seed: int = 1,
    ngram: int | None = None,
    unit: fast.Unit | None = None,
    normalize: fast.Normalize = True,
    keep: str = "first",
    mode: fast.Mode = "native",
    scheme: fast.Scheme = "legacy",
    bands: int | None = None,
    rows: int | None = None,
    language: str = "auto",
    reducers: int | None = None,
    blocks: int | None = None,
    max_retries: int = 3,
    compact: bool = False,
    scratch: str | Path | None = None,
    group_by: Sequence[str] = (),
    output: str | Path | None = None,
) -> DedupResult:
    """Near-duplicate clusters of ``text_column`` over the partitions of ``source``: a
    ``ray.data.Dataset``, or a sequence of pyarrow Tables, Polars DataFrames, object refs
    to pyarrow Tables or :class:`PartitionRows` (one partition each, in row order; rows
    that each task reads from the partition's file, `partition_rows`, keep the text out of
    the object store).

    Every setting means what it means for :func:`fast.near_duplicates`, and the returned
    frame equals its result on the concatenated partitions. ``blocks``: shuffle blocks,
    contiguous runs of partitions handled by one task in each step (default:
    :func:`shuffle_blocks`). ``reducers``: tasks on the bucket side of the shuffle (default:
    one per block). ``max_retries``: Ray's retries of a task whose worker died.
    ``compact``: ``cluster_id`` and a position ``duplicate_of`` as UInt32 where the pool has
    fewer than 2^32 rows, ``max_jaccard`` as Float32 (exact: the estimates are float32
    values), 12 bytes a row less for a caller that holds the pool's result. ``scratch``: a
    folder every node of the cluster sees, where the steps exchange their files (a folder of
    its own is made in it and removed at the end; default: the system's temporary folder,
    enough for a cluster on one machine). ``group_by``: columns of the partitions whose
    values group the rows: rows pair only within their group, as ``fast.near_duplicates`` run
    on each group apart would pair them (its clusters then labelled, and its kept rows
    placed, by pool position). ``output``: a folder (every node sees) where each partition's
    result is written where it is computed, as ``part_name(i)``: the frame's columns and
    ``cluster_size``, ``duplicate_of`` the kept row's id (with ``id_column``) or position;
    the returned frame is then empty, and no process holds a column as long as the pool.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    parts = _partition_refs(source)
    sizes = _check_partitions(parts, [text_column, *group_by, *([id_column] if id_column else [])], text_column,
                              keep, max_retries)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    hashing = _resolve_hashing(parts, offsets, text_column, max_retries, num_perm=num_perm,
                               seed=seed, ngram=ngram, unit=unit, normalize=normalize, mode=mode,
                               scheme=scheme, language=language)
    band_rows = _resolve_bands(threshold, num_perm, bands, rows)
    groups = _group(sizes, blocks or shuffle_blocks(sizes, _cluster_cpus()))
    n_reducers = max(1, reducers or len(groups))
    with _exchange_folder(scratch) as folder:
        run = _Run(parts, offsets, groups, max_retries, folder)
        run.sign(text_column, keep, hashing, band_rows, n_reducers, _RowColumns(tuple(group_by), id_column))
        candidates, n_edges = run.verify(n_reducers, threshold)
        written = folder / "results" if output is None else Path(output)
        components = run.cluster(keep != "first", id_column is not None, written)
        frame = run.results(written, compact, id_column is not None) if output is None else pl.DataFrame()
    return DedupResult(frame, run.stats | {
        "rows": int(offsets[-1]), "partitions": len(parts), "blocks": len(groups), "reducers": n_reducers,
        "bands": band_rows[0], "rows_per_band": band_rows[1], "language": hashing.language,
        "candidate_pairs": candidates, "edges": n_edges, **components,
        "shuffle_bytes_per_row": round(sum(run.stats["shuffle_bytes"].values()) / max(int(offsets[-1]), 1), 1),
    })


def shuffle_blocks(sizes: Sequence[int], cpus: int) -> int:
    """The default number of shuffle blocks for partitions of `sizes` rows: one per
    BLOCK_ROWS rows (a task's memory, the same for any pool), at least `cpus` (every CPU
    busy), at most one per partition."""
    wanted = max(math.ceil(int(sum(sizes)) / BLOCK_ROWS), cpus, 1)
    return min(wanted, max(len(sizes), 1))


@contextmanager
def _exchange_folder(scratch: str | Path | None) -> Iterator[Path]:
    """A fresh folder for one call's exchanged files, removed when the call ends (however)."""
    folder = Path(scratch or tempfile.gettempdir()) / f"near-duplicates-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _group(sizes: Sequence[int], blocks: int) -> list[list[int]]:
    """Partition indices in at most `blocks` contiguous runs of about equal rows (a partition
    goes to the block its middle row falls in; none is left empty); with as many blocks as
    partitions, one partition each."""
    if blocks < 1:
        raise ValueError(f"blocks must be at least 1, got {blocks!r}")
    if blocks >= len(sizes):
        return [[index] for index in range(len(sizes))]
    total = max(int(sum(sizes)), 1)
    middles = np.cumsum(sizes) - np.asarray(sizes) / 2
    owner = np.minimum((middles * blocks / total).astype(np.int64), blocks - 1)
    groups: dict[int, list[int]] = {}
    for index, block in enumerate(owner):
        groups.setdefault(int(block), []).append(index)
    return [groups[b] for b in sorted(groups)]


def _cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def partition_rows(source: PoolPartitions, rows: pl.Series, columns: list[str],
                   extra: dict[str, pl.Series]) -> list[PartitionRows]:
    """The partitions holding any of the pool positions `rows` (ascending), as rows each task
    reads where the partition lies (`columns` of them), plus the driver's `extra` columns
    (aligned with `rows`): the text passes neither through the driver nor the object store."""
    positions = rows.to_numpy()
    offsets = np.asarray(source.offsets, dtype=np.int64)
    # each partition's positions are a run of the sorted positions: sliced, no per-row owner
    bounds = np.searchsorted(positions, offsets)
    out = []
    for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if start == end:
            continue
        attached = {name: values.slice(int(start), int(end - start)).to_arrow() for name, values in extra.items()}
        # distinct positions as many as the partition's rows are all of them (one group): no
        # list to send, none to take; else 32-bit (a task's arguments under Ray's inline limit
        # stay in the driver's heap until the task ends: 8 MB of int64 positions at 10^6 rows)
        whole = end - start == source.heights[index]
        local = None if whole else (positions[start:end] - offsets[index]).astype(np.int32)
        out.append(source.rows(index, columns, local, attached))
    return out


def ray_contamination(source: PoolPartitions, column: str, reference: pl.Series, *,
                      max_retries: int = 3, **settings: Any) -> pl.DataFrame:
    """``fast.contamination`` of the pool's ``column`` against ``reference``, one Ray task per
    input partition (a row's match depends on that row alone); rows in pool order."""
    parts = list(ray_contamination_parts(source, column, reference, max_retries=max_retries, **settings))
    return pl.concat(parts) if parts else fast.contamination(pl.Series([], dtype=pl.String), reference, **settings)


def ray_contamination_parts(source: PoolPartitions, column: str, reference: pl.Series, *,
                            max_retries: int = 3, **settings: Any) -> Iterator[pl.DataFrame]:
    """`ray_contamination`'s rows a partition at a time, in order (every task started first)."""
    reference_ref = ray.put(reference.to_arrow())
    refs = {index: _contaminated.options(max_retries=max_retries).remote(source, index, column, reference_ref, settings)
            for index, height in enumerate(source.heights) if height}
    empty = fast.contamination(pl.Series([], dtype=pl.String), reference, **settings)
    for index in range(len(source.heights)):
        yield _gather([refs[index]], "contamination", names=[f"partition {index}"])[0] if index in refs else empty


@ray.remote
@releasing
def _contaminated(source: PoolPartitions, index: int, column: str, reference: pa.Array,
                  settings: dict[str, Any]) -> pl.DataFrame:
    faults.point(f"contamination:{column}:partition-{index}")
    texts = source.read(index, [column])[column].fill_null("")
    found: pl.DataFrame = fast.contamination(texts, pl.from_arrow(reference), **settings)  # type: ignore[arg-type]
    return found


# -- input -----------------------------------------------------------------------------------
#: A partition as the steps receive it: a table (an object ref's, resolved by Ray) or rows the
#: task reads itself.
Part: TypeAlias = "pa.Table | PartitionRows"
#: What the driver holds and passes for one: the table's object ref, or the rows to read.
PartRef: TypeAlias = "ray.ObjectRef | PartitionRows"


def _partition_refs(source: Any) -> list[PartRef]:
    """One per partition, in row order: object refs of pyarrow Tables, or `PartitionRows`."""
    if _is_dataset(source):
        return list(source.to_arrow_refs())
    if isinstance(source, pa.Table | pl.DataFrame | ray.ObjectRef) or not isinstance(source, Sequence):
        raise TypeError("source must be a ray.data.Dataset or a sequence of partitions "
                        f"(pyarrow Tables, Polars DataFrames, object refs or PartitionRows), not {type(source).__name__}")
    refs: list[PartRef] = []
    for part in source:
        if isinstance(part, ray.ObjectRef | PartitionRows):
            refs.append(part)
        elif isinstance(part, pl.DataFrame):
            refs.append(ray.put(part.to_arrow()))
        elif isinstance(part, pa.Table):
            refs.append(ray.put(part))
        else:
            raise TypeError(f"a partition must be a pyarrow Table, Polars DataFrame, object ref or PartitionRows, "
                            f"not {type(part).__name__}")
    if not refs:
        raise ValueError("source has no partitions")
    return refs


def _is_dataset(source: Any) -> bool:
    """True for a ``ray.data.Dataset``. Asked without importing ``ray.data``: the import costs
    the driver ~58 MB of RSS (measured), and a Dataset exists only if its module was imported."""
    module = sys.modules.get("ray.data")
    return module is not None and isinstance(source, module.Dataset)


def _gather(refs: Sequence[ray.ObjectRef], step: str, unit: str = "partition",
            names: Sequence[str] | None = None) -> list[Any]:
    """``ray.get`` of one result per partition (or reducer, or block: `names` says which
    partitions each is); a failed one fails the call, named."""
    out = []
    for index, ref in enumerate(refs):
        try:
            out.append(ray.get(ref))
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            if isinstance(cause, UserError):
                raise cause from None
            what = names[index] if names is not None else f"{unit} {index}"
            raise StageFailed(f"near-duplicates: {what} failed in step {step!r} after "
                              f"Ray's retries: {type(cause).__name__}: {str(cause).strip()[:500]}") from exc
    return out


def _check_partitions(parts: list[PartRef], columns: list[str], text_column: str, keep: str,
                      max_retries: int) -> list[int]:
    """Rows per partition, after checking every partition has the columns asked for."""
    schemas = _gather([_schema.options(max_retries=max_retries).remote(p) for p in parts], "schema")
    sizes = []
    for index, (names, types, height) in enumerate(schemas):
        wanted = list(columns)
        if keep not in ("first", "longest"):
            wanted.append(keep)
        for col in wanted:
            if col not in names:
                raise UserError(f"partition {index} has no column {col!r} (columns: {names})",
                                key="near_duplicates")
        if types[names.index(text_column)] not in (pl.String, pl.Null):
            raise UserError(f"column {text_column!r} has dtype {types[names.index(text_column)]} in "
                            f"partition {index}; expected a string column", key="near_duplicates")
        if keep not in ("first", "longest") and not types[names.index(keep)].is_numeric():
            raise UserError(f"keep column {keep!r} has dtype {types[names.index(keep)]} in partition "
                            f"{index}; expected a numeric column", key="near_duplicates.keep")
        sizes.append(height)
    return sizes


def _resolve_hashing(parts: list[PartRef], offsets: np.ndarray, text_column: str,
                     max_retries: int, **settings: Any) -> _Hashing:
    """The hashing settings with ``language="auto"`` resolved on the very rows that
    ``fast.detect_language`` samples from the whole column, and every value checked."""
    lang = fast.canonical_language(settings.pop("language"))
    if lang == "auto":
        n = int(offsets[-1])
        sample = np.asarray(fast.detection_rows(n), dtype=np.int64)
        texts = _take_rows(parts, offsets, text_column, sample, max_retries, "language")
        lang = fast.detect_language(pl.Series(text_column, texts.to_pylist(), dtype=pl.String))
    hashing = _Hashing(language=lang, **settings)
    fast.minhash_signatures(pl.Series([], dtype=pl.String), **hashing.kwargs())  # raises on bad values
    return hashing


def _resolve_bands(threshold: float, num_perm: int, bands: int | None,
                   rows: int | None) -> tuple[int, int]:
    """(bands, rows) as the core resolves them (`resolve_bands` in ``rust/src/lib.rs``)."""
    if (bands is None) != (rows is None):
        raise ValueError("give both bands and rows, or neither")
    if bands is None or rows is None:
        return fast.optimal_lsh_params(min(max(threshold, 1e-6), 1.0 - 1e-6), num_perm)
    if bands < 1 or rows < 1 or bands * rows > num_perm:
        raise ValueError(f"need bands*rows <= num_perm ({num_perm}), got {bands}x{rows}")
    return bands, rows


def _take_rows(parts: list[PartRef], offsets: np.ndarray, column: str, rows: np.ndarray,
               max_retries: int, step: str) -> pa.ChunkedArray:
    """Values of ``column`` at global ``rows`` (sorted), fetched from their partitions; with
    no rows, an empty array of the column's type."""
    owner = destination_of(rows, offsets)
    wanted = {int(p): rows[owner == p] - offsets[p] for p in np.unique(owner)} or {0: rows}
    chunks = _gather([_take.options(max_retries=max_retries).remote(parts[p], column, local)
                      for p, local in wanted.items()], step)
    return pa.chunked_array(chunks, type=chunks[0].type)


# -- the distributed steps -------------------------------------------------------------------
class _Run:
    """One call's partitions, shuffle blocks, exchange folder and shuffle accounting. Each
    step writes its outputs as files in the folder (`exchange`), one per task, and the driver
    waits for a step's tasks before it starts the next one (every task of a step reads the
    files of all tasks of the one before), then deletes the files no later step reads."""

    def __init__(self, parts: list[PartRef], offsets: np.ndarray, groups: list[list[int]],
                 max_retries: int, folder: Path) -> None:
        self.parts = parts
        self.offsets = offsets  # pool position of each partition's first row, then the pool's size
        self.groups = groups  # the partitions of each shuffle block
        self.block_offsets = np.asarray([offsets[g[0]] for g in groups] + [offsets[-1]], dtype=np.int64)
        self.names = [_block_name(g) for g in groups]
        self.max_retries = max_retries
        self.folder = str(folder)
        self.stats: dict[str, Any] = {"shuffle_bytes": {}}

    def _count(self, step: str, nbytes: Sequence[int]) -> None:
        self.stats["shuffle_bytes"][step] = int(sum(nbytes))

    def _drop(self, *stems: str) -> None:
        for stem in stems:
            for path in Path(self.folder).glob(f"{stem}-*"):
                path.unlink(missing_ok=True)

    def sign(self, text_column: str, keep: str, hashing: _Hashing, band_rows: tuple[int, int],
             reducers: int, columns: _RowColumns) -> None:
        """Each block's signatures, band keys, keep values (but for "first") and ids (when
        asked) written."""
        refs = [_sign.options(max_retries=self.max_retries).remote(
                    self.folder, index, group, text_column, keep, hashing, band_rows,
                    int(self.block_offsets[index]), reducers, columns, *[self.parts[p] for p in group])
                for index, group in enumerate(self.groups)]
        self._count("band_keys", _gather(refs, "signatures", names=self.names))

    def verify(self, reducers: int, threshold: float) -> tuple[int, int]:
        """The edges (pairs whose estimated Jaccard reaches `threshold`) written as the
        components' first links, and every row's best estimate over its candidate pairs;
        returns the numbers of candidate pairs and of edges. The candidates stay in the
        tasks' files: on templated text they grow faster than the rows (about 2 per row at
        30,000 synthetic dialogues, 0.8 at 10,000), and the driver would hold 24 bytes each."""
        blocks, folder, offsets, retries = len(self.groups), self.folder, self.block_offsets, self.max_retries
        self._count("pairs", _gather([_buckets.options(max_retries=retries).remote(folder, r, offsets)
                                      for r in range(reducers)], "buckets", "reducer"))
        self._drop("keys")
        self._count("pair_signatures", _gather([
            _attach_signatures.options(max_retries=retries).remote(folder, q, offsets, reducers)
            for q in range(blocks)], "attach signatures", names=self.names))
        self._drop("pairs")
        out = [_refs(_estimate.options(max_retries=retries).remote(folder, b, offsets, threshold))
               for b in range(blocks)]
        verified = _gather([found for found, _ in out], "verify", names=self.names)
        self._drop("signatures", "attached")
        _gather([_best_estimates.options(max_retries=retries).remote(folder, q, offsets, out[q][1])
                 for q in range(blocks)], "best estimates", names=self.names)
        del out
        self._drop("estimates")
        self._count("second_row_estimates", [v[1] for v in verified])
        self._count("links0", [Path(self.folder, step_file("links0", b)).stat().st_size for b in range(blocks)])
        return int(sum(v[0] for v in verified)), int(sum(v[2] for v in verified))

    def cluster(self, keep: bool, ids: bool, output: Path) -> dict[str, int]:
        """The components of the edges and each one's kept row, every row's result written
        by its block in `output`, a file per partition (`ray_components`); returns the rounds
        taken, the components of more than one row and the duplicates. `keep`: the keep
        values written by `sign` (else the "first" rule); `ids`: the ids written by `sign`."""
        blocks, folder, offsets, retries = len(self.groups), self.folder, self.block_offsets, self.max_retries
        digests: list[list[str]] = []
        # stop when a large-star round (an even step after the first, local one) reads what
        # the large-star round before it read: the links are a fixed point, the stars
        while not (len(digests) % 2 == 1 and len(digests) >= 5 and digests[-1] == digests[-3]):
            step = len(digests)
            digests.append(_gather([star_round.options(max_retries=retries).remote(folder, step, b, offsets)
                                    for b in range(blocks)], "components", names=self.names))
            self._drop(f"links{step}")
        # the last large-star round read stars and wrote them again: its output is the result
        _gather([to_centres.options(max_retries=retries).remote(folder, len(digests), b, offsets, keep, ids)
                 for b in range(blocks)], "keep rule", names=self.names)
        self._drop(f"links{len(digests)}", "keep", "ids")
        clusters = _gather([centres.options(max_retries=retries).remote(folder, b, offsets) for b in range(blocks)],
                           "keep rule", names=self.names)
        self._drop("members")
        output.mkdir(parents=True, exist_ok=True)
        duplicates = _gather([block_results.options(max_retries=retries).remote(
            folder, b, offsets, group, self.offsets, str(output)) for b, group in enumerate(self.groups)],
            "results", names=self.names)
        self._drop("clusters", "best")
        return {"component_rounds": len(digests), "clusters_with_duplicates": int(sum(clusters)),
                "near_duplicates": int(sum(duplicates))}

    def results(self, output: Path, compact: bool, ids: bool) -> pl.DataFrame:
        """The partitions' results in `output` as ``fast.near_duplicates``'s columns, read a
        partition at a time into columns of their final types (`ids`: `duplicate_of` holds
        the kept rows' ids, joined as they come; else their positions)."""
        n = int(self.offsets[-1])
        wide = not compact or n >= 2**32
        position, estimate = (np.uint64, np.float64) if wide else (np.uint32, np.float32)
        cluster, kept = np.empty(n, position), np.zeros(n, position)
        best, duplicate = np.empty(n, estimate), np.empty(n, bool)
        named = []
        for p in range(len(self.parts)):
            start, end = int(self.offsets[p]), int(self.offsets[p + 1])
            found = pl.read_parquet(output / part_name(p), memory_map=False)
            cluster[start:end], best[start:end] = found["cluster_id"].to_numpy(), found["max_jaccard"].to_numpy()
            duplicate[start:end] = found["is_duplicate"].to_numpy()
            if ids:
                named.append(found["duplicate_of"])
            else:
                kept[start:end] = found["duplicate_of"].fill_null(0).to_numpy()
        frame = pl.DataFrame({"cluster_id": cluster, "duplicate_of": kept, "max_jaccard": best, "is_duplicate": duplicate})
        if ids:
            return frame.with_columns(duplicate_of=pl.concat(named))
        return frame.with_columns(pl.when("is_duplicate").then(pl.col("duplicate_of")).alias("duplicate_of"))


def _block_name(group: list[int]) -> str:
    """How an error names a block: by its partitions."""
    return f"partition {group[0]}" if len(group) == 1 else f"partitions {group[0]}-{group[-1]}"


def _refs(returned: Any) -> list[ray.ObjectRef]:
    """The object refs of a task started with ``num_returns`` > 1."""
    return list(returned)


@ray.remote
@releasing
def _schema(part: Part) -> tuple[list[str], list[pl.DataType], int]:
    if isinstance(part, PartitionRows):  # from the file's schema: its rows are not read
        schema = part.schema()
        return list(schema), list(schema.values()), part.num_rows
    frame = pl.from_arrow(part.slice(0, 0))
    assert isinstance(frame, pl.DataFrame)
    return frame.columns, list(frame.dtypes), part.num_rows


@ray.remote
@releasing
def _take(part: Part, column: str, local_rows: np.ndarray) -> pa.Array:
    return _table(part).column(column).take(pa.array(local_rows, pa.int64())).combine_chunks()


def _table(part: Part) -> pa.Table:
    return part.table() if isinstance(part, PartitionRows) else part


@ray.remote
@releasing
def _sign(folder: str, block: int, parts: list[int], text_column: str, keep: str, hashing: _Hashing,
          band_rows: tuple[int, int], offset: int, reducers: int, rows: _RowColumns, *tables: Part) -> int:
    """A block's signatures (its partitions `parts`, whose `tables` follow), its band keys
    split by reducer (each row's group folded into its keys) and, as asked, its rows' keep
    values and ids, written; returns the bytes of band keys written."""
    # filled in place: a list of per-partition arrays concatenated would hold the block twice
    sigs = np.empty((sum(t.num_rows for t in tables), hashing.num_perm), np.uint32)
    groups = np.zeros(len(sigs), np.uint64)
    keep_values, ids, start = [], [], 0
    for part, item in zip(parts, tables, strict=True):
        faults.point(f"near-duplicates:signatures:{text_column}:partition-{part}")
        table = _table(item)  # one partition's text in memory at a time
        texts = pl.from_arrow(table.column(text_column))
        assert isinstance(texts, pl.Series)
        sigs[start:start + table.num_rows] = fast.minhash_signatures(texts, **hashing.kwargs())
        if rows.groups:
            groups[start:start + table.num_rows] = _group_codes(table, rows.groups)
        start += table.num_rows
        if keep != "first":
            keep_values.append(_keep_values(table, text_column, keep))
        if rows.ids is not None:
            ids.append(table.column(rows.ids))
    directory = Path(folder)
    write_split(directory / step_file("signatures", block), [sigs], sigs.dtype, sigs.shape[1:])
    if keep_values:
        write_split(directory / step_file("keep", block), [np.concatenate(keep_values)], np.dtype(np.float64))
    if rows.ids is not None:
        block_ids = pa.table({"id": pa.chunked_array(ids, type=ids[0].type if ids else pa.string())})
        write_split_table(directory / step_file("ids", block), [block_ids], block_ids.schema)
    active = np.flatnonzero(~(sigs == EMPTY_SLOT).all(axis=1))
    keys = _band_keys(sigs if len(active) == len(sigs) else sigs[active], active + offset, *band_rows)
    if rows.groups:
        # a bucket is rows of one group: the group mixed into the key (64 bits, as the band
        # keys themselves: two groups' buckets meet only if their keys collide)
        keys["key"] = _splitmix64(keys["key"] ^ groups[keys["row"].astype(np.int64) - offset])
    del sigs, groups
    return write_split(directory / step_file("keys", block),
                       split_by(keys, (keys["key"] % np.uint64(reducers)).astype(np.int64), reducers), BAND_KEY)


def _group_codes(table: pa.Table, columns: tuple[str, ...]) -> np.ndarray:
    """A 64-bit code of each row's values of `columns`, the same on every node (a hash of the
    values as JSON, computed once per distinct combination)."""
    rows = table.select(list(columns)).to_pylist()
    codes: dict[str, int] = {}
    out = np.empty(len(rows), np.uint64)
    for i, row in enumerate(rows):
        text = json.dumps([row[c] for c in columns], default=str, ensure_ascii=False)
        if text not in codes:
            codes[text] = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        out[i] = codes[text]
    return out


def _band_keys(sigs: np.ndarray, rows: np.ndarray, bands: int, per_band: int) -> np.ndarray:
    """One ``(band, key, row)`` record per band of each row; equal keys = equal band slots."""
    keys = np.empty(bands * len(rows), BAND_KEY)
    keys["band"] = np.repeat(np.arange(bands, dtype=np.uint16), len(rows))
    keys["row"] = np.tile(rows.astype(np.uint64), bands)
    for b in range(bands):
        keys["key"][b * len(rows):(b + 1) * len(rows)] = _band_hash(sigs[:, b * per_band:(b + 1) * per_band], b)
    return keys


def _band_hash(slots: np.ndarray, band: int) -> np.ndarray:
    """A 64-bit key of each row's slots in one band, seeded by the band (as the core's xxh3
    key is): each slot folded in through the splitmix64 finaliser. Plain uint64 arithmetic,
    so every node computes the same key on any CPU (a library hash such as Polars' may differ
    between builds, and nodes must agree)."""
    h = np.full(slots.shape[0], ((band + 1) * 0x9E3779B97F4A7C15) % 2**64, dtype=np.uint64)
    for column in slots.T:
        h = _splitmix64(h ^ column.astype(np.uint64))
    return h


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mixer (wrapping multiplication), so distinct inputs stay distinct."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _keep_values(table: pa.Table, text_column: str, keep: str) -> np.ndarray:
    """What the keep rule compares, higher kept: characters for "longest", the column for a
    quality column (null = -inf, as the core's NaN); "first" compares none."""
    if keep == "longest":
        chars = pc.fill_null(pc.utf8_length(table.column(text_column).cast(pa.large_string())), 0)
        return chars.to_numpy().astype(np.float64)
    values = table.column(keep).cast(pa.float64()).to_numpy(zero_copy_only=False)
    return np.where(np.isnan(values), -np.inf, values)


@ray.remote
@releasing
def _buckets(folder: str, reducer: int, offsets: np.ndarray) -> int:
    """Candidate pairs of one reducer's buckets (its band keys from every block's file),
    written split by the block of the second row; returns the bytes written. One band at a
    time, each band's distinct pairs merged into those so far: rows that share several
    bands make their pair in each, and the pairs of all bands at once grew with the
    candidates per row."""
    directory, blocks = Path(folder), len(offsets) - 1
    keys = np.concatenate([read_split(directory / step_file("keys", b), reducer) for b in range(blocks)])
    keys = keys[np.lexsort((keys["row"], keys["key"], keys["band"]))]
    bands = np.r_[0, np.flatnonzero(keys["band"][1:] != keys["band"][:-1]) + 1, len(keys)]
    pairs = np.zeros((0, 2), np.int64)
    for start, end in zip(bands[:-1], bands[1:], strict=True):
        band = keys[start:end]
        found = _pairs_of_buckets(band["band"], band["key"], band["row"].astype(np.int64))
        pairs = merged_pairs(pairs, found)
    del keys
    return write_split(directory / step_file("pairs", reducer),
                       split_by(pairs, destination_of(pairs[:, 1], offsets), blocks), pairs.dtype, (2,))


def _pairs_of_buckets(band: np.ndarray, key: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Unique ``(i, j)``, ``i < j``, from rows sorted by (band, key, row): every pair of a
    bucket of at most MAX_FULL_BUCKET rows; in a larger one each row pairs with the first and
    with its predecessor (the core's ``candidate_pairs``)."""
    if len(row) < 2:
        return np.zeros((0, 2), np.int64)
    starts = np.flatnonzero(np.r_[True, (band[1:] != band[:-1]) | (key[1:] != key[:-1])])
    ends = np.r_[starts[1:], len(row)]
    out = []
    for start, end in zip(starts[ends - starts > 1], ends[ends - starts > 1], strict=True):
        members = row[start:end]
        k = len(members)
        if k <= MAX_FULL_BUCKET:
            a, b = np.triu_indices(k, 1)
            out.append(np.stack([members[a], members[b]], axis=1))
        else:
            star = np.stack([np.full(k - 1, members[0]), members[1:]], axis=1)
            chain = np.stack([members[1:-1], members[2:]], axis=1)
            out.append(np.concatenate([star, chain]))
    if not out:
        return np.zeros((0, 2), np.int64)
    return unique_pairs(np.concatenate(out))


@ray.remote
@releasing
def _attach_signatures(folder: str, block: int, offsets: np.ndarray, reducers: int) -> int:
    """For the pairs whose second row is in this block (from every reducer's file), split by
    the block of the first row: the pairs, the signatures of their distinct second rows, and
    each pair's index into those, written; returns the bytes written. A row is the second
    row of several pairs (~14 at 10^6 templated prompts), and its 512-byte signature is
    written once per destination, not once per pair. Every copy of a pair lands here, so
    this is where a pair found by several reducers (rows sharing several bands) is made one.
    Destinations are taken in consecutive runs of about ATTACH_PAIRS pairs (`_windows`), each
    read as one slice of every reducer's piece: what is in memory is one run's pairs and one
    destination's signatures (a block's pairs grow with the candidates per row; one run's do
    not, nor the reads per task, a slice per reducer per run)."""
    return _attach(Path(folder), block, offsets, reducers, ATTACH_PAIRS)


def _attach(directory: Path, block: int, offsets: np.ndarray, reducers: int, window: int) -> int:
    """`_attach_signatures`'s work, destinations in runs of about `window` pairs."""
    shards = [piece(directory / step_file("pairs", r), block) for r in range(reducers)]
    edges, starts = _windows(shards, offsets, window)
    sigs, first = read_all(directory / step_file("signatures", block)), int(offsets[block])
    with split_writer(directory / step_file("attached-pairs", block), np.dtype(np.int64), (2,)) as paired, \
            split_writer(directory / step_file("attached-index", block), np.dtype(np.uint32)) as indexed, \
            split_writer(directory / step_file("attached-signatures", block), sigs.dtype, sigs.shape[1:]) as signed:
        for w in range(len(edges) - 1):
            found = [shard.read(at[w], at[w + 1]) for shard, at in zip(shards, starts, strict=True)]
            held = unique_pairs(np.concatenate(found)) if found else np.zeros((0, 2), np.int64)
            del found
            # sorted by (i, j): each destination's pairs are one run of them, in that order
            cuts = _runs_by_block(held, offsets[edges[w]:edges[w + 1] + 1])
            for mine in (held[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)):
                rows, index = np.unique(mine[:, 1], return_inverse=True)
                paired.write(mine)
                indexed.write(index.astype(np.uint32))
                signed.write(sigs[rows - first])
    return paired.nbytes + indexed.nbytes + signed.nbytes


#: Pairs the attach step holds at once (16 bytes each, and their sort's copies): the
#: destinations are taken in consecutive runs of about this many (one alone may hold more).
ATTACH_PAIRS = 131_072


def _windows(shards: list[Piece], offsets: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Destination blocks in consecutive runs of about `window` pairs over `shards`
    (pairs sorted by first row): the runs' first blocks then the end, and where each run
    starts in each shard (a row per shard, then its end). Each shard is read twice here, a
    shard at a time."""
    per_block = np.zeros(len(offsets) - 1, np.int64)
    for shard in shards:
        per_block += np.diff(_runs_by_block(shard.read(), offsets))
    edges, held = [0], 0
    for block, pairs in enumerate(per_block.tolist()):
        if held and held + pairs > window:
            edges.append(block)
            held = 0
        held += pairs
    edges.append(len(per_block))
    bounds = np.asarray(edges)
    starts = np.array([_runs_by_block(shard.read(), offsets[bounds]) for shard in shards], np.int64)
    return bounds, starts.reshape(len(shards), len(bounds))


def _runs_by_block(pairs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Where each block's first rows start in `pairs` (sorted by first row), then the end:
    block d's pairs are ``pairs[runs[d]:runs[d + 1]]``."""
    return np.searchsorted(np.ascontiguousarray(pairs[:, 0]), offsets)


#: Pairs compared at once in a verification task: the chunk's pairs and the two signature
#: arrays gathered for them (16 MB at 128 slots) are what it holds besides its block's
#: signatures and best estimates, whatever the candidates per row (which grow with the pool
#: on templated text: 9.3 at 300k prompts, 14.3 at 10^6).
ESTIMATE_CHUNK = 16_384


#: One row's best estimate as the verification writes it for the row's block.
ESTIMATE = np.dtype([("row", "<u8"), ("value", "<f4")])


@ray.remote(num_returns=2)
@releasing
def _estimate(folder: str, block: int, offsets: np.ndarray,
              threshold: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Estimated Jaccard of each pair whose first row is in this block (share of equal
    slots, through float32 as ``rust/src/clusters.rs`` stores it), from every block's
    attached file, ESTIMATE_CHUNK pairs at a time (the second rows' signatures mapped, one
    block's at a time). Each second row's best estimate is written for its block, and the edges
    (estimate at or above ``threshold``) as the components' first links (`ray_components`).
    Returns ((the candidate count, the bytes of estimates written, the edges), this block's
    rows' best estimate as first rows)."""
    directory, blocks, first = Path(folder), len(offsets) - 1, int(offsets[block])
    sigs = read_all(directory / step_file("signatures", block))
    best = np.zeros(int(offsets[block + 1]) - first, np.float32)
    edges, candidates = [], 0
    with split_writer(directory / step_file("estimates", block), ESTIMATE) as out:
        for q in range(blocks):  # the pairs whose second rows are in block q
            pairs, index, signatures = (piece(directory / step_file(name, q), block) for name in
                                        ("attached-pairs", "attached-index", "attached-signatures"))
            sig_rows = signatures.map()
            seconds = _SecondRows(int(offsets[q]), int(offsets[q + 1]))
            for start in range(0, pairs.rows, ESTIMATE_CHUNK):
                chunk = pairs.read(start, start + ESTIMATE_CHUNK)
                est = _pair_estimates(sigs, first, chunk, sig_rows, index.read(start, start + ESTIMATE_CHUNK))
                np.maximum.at(best, chunk[:, 0] - first, est)
                seconds.add(chunk[:, 1], est)
                edges.append(chunk[est >= threshold])
            out.write(seconds.records())
            candidates += pairs.rows
            del sig_rows  # unmapped before the next block's
    found = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    write_split(directory / step_file("links0", block), both_ways(found, offsets), LINKS, (2,))
    return (candidates, out.nbytes, len(found)), best


class _SecondRows:
    """The best estimate of each row of one block seen as a second row, over the chunks of
    that block's pairs: one float32 a row of the block (-1: not seen), not a sort of the pairs."""

    def __init__(self, first: int, end: int) -> None:
        self.first = first
        self.best = np.full(end - first, -1.0, np.float32)

    def add(self, rows: np.ndarray, estimates: np.ndarray) -> None:
        np.maximum.at(self.best, rows - self.first, estimates.astype(np.float32))

    def records(self) -> np.ndarray:
        """Each row seen, ascending, with its best estimate (the estimates are >= 0)."""
        seen = np.flatnonzero(self.best >= 0)
        records = np.zeros(len(seen), ESTIMATE)
        records["row"] = seen + self.first
        records["value"] = self.best[seen]
        return records


def _pair_estimates(sigs: np.ndarray, offset: int, pairs: np.ndarray, sig_rows: np.ndarray,
                    index: np.ndarray) -> np.ndarray:
    """The estimate of each of one shard's pairs, ESTIMATE_CHUNK pairs at a time."""
    est = np.empty(len(pairs))
    for start in range(0, len(pairs), ESTIMATE_CHUNK):
        end = start + ESTIMATE_CHUNK
        equal = (sigs[pairs[start:end, 0] - offset] == sig_rows[index[start:end]]).sum(axis=1)
        est[start:end] = (equal / sigs.shape[1]).astype(np.float32)
    return est


@ray.remote
@releasing
def _best_estimates(folder: str, block: int, offsets: np.ndarray, best: np.ndarray) -> None:
    """One block's rows' best estimated Jaccard over every candidate pair, written: `best`,
    theirs as first rows, merged with theirs as second rows from every verification task's
    file."""
    first = int(offsets[block])
    best = best.copy()  # an argument from the object store is read-only
    for b in range(len(offsets) - 1):
        records = read_split(Path(folder) / step_file("estimates", b), block)
        np.maximum.at(best, records["row"].astype(np.int64) - first, records["value"])
    write_split(Path(folder) / step_file("best", block), [best], best.dtype)


# -- the driver's part -----------------------------------------------------------------------
