"""Connected components and the keep rule of verified near-duplicate edges, as Ray tasks
over the exchange's files (step 4 of `ray_dedup`): no process holds an array as long as
the pool, the driver least of all (it held every edge and one label per row: the part of
its memory that grew with the pool).

Components come from alternating *large-star* and *small-star* rounds (Kiveris et al.,
"Connected Components in MapReduce and Beyond", SoCC 2014), which reach one star per
component, centred on its smallest row, in O(log^2 n) rounds whatever its diameter (a
label passed from neighbour to neighbour needs as many rounds as the longest chain, and
a bucket above ``MAX_FULL_BUCKET`` rows is a chain). Each round every block's task reads
its rows' *links* (both directions of each undirected edge, written for the block of
their first row) from every task's file of the round before, and writes the new links the
same way. The first round replaces each block's links by stars on their components' smallest
rows (a forest with the same connectivity), so that the rounds start from nearly the final
stars where near duplicates lie in their original's block (on a corpus in time order, often). The rounds stop when a
large-star round reads what the one before the last large-star round did: the links no
longer change, and they are the stars.

Then three steps on the stars: each row with a link tells its centre (its label, the
component's smallest row) its keep value and id; each centre picks the kept row (highest
keep value, ties to the smallest row: the core's rule, "first" keeps the centre) and tells
its members that row, its id and the component's size; each block writes its rows' results
a file per partition, which the driver reads one at a time (into the frame
``ray_near_duplicates`` returns, or to finish a metric's rows a partition at a time).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import ray

from ..allocator import releasing
from ..run import atomic
from ..run.dataset import part_name
from .exchange import (
    destination_of,
    read_split,
    read_split_table,
    split_by,
    split_table_by,
    step_file,
    write_split,
    write_split_table,
)
from .pairs import unique_pairs

__all__ = ["LINKS", "block_results", "both_ways", "centres", "large_star", "local_stars", "small_star",
           "smallest_rows", "star_labels", "star_round", "to_centres"]

#: A link: (row, neighbour), both pool positions, as every round reads and writes it.
LINKS = np.dtype(np.int64)


# -- the rounds' arithmetic (one block's links, sorted by (row, neighbour), distinct) -------
def large_star(links: np.ndarray) -> np.ndarray:
    """Each row's larger neighbours linked to the smallest of the row and its neighbours."""
    if len(links) == 0:
        return links
    row, neighbour = links[:, 0], links[:, 1]
    starts, counts = _runs(row)
    smallest = np.repeat(np.minimum(row[starts], neighbour[starts]), counts)  # sorted: first is least
    up = neighbour > row
    return np.stack([neighbour[up], smallest[up]], axis=1)


def small_star(links: np.ndarray) -> np.ndarray:
    """Each row and its smaller neighbours linked to the smallest of them (a row with no
    smaller neighbour says nothing: its links are said by its neighbours)."""
    down = links[links[:, 1] < links[:, 0]]
    if len(down) == 0:
        return down
    row, neighbour = down[:, 0], down[:, 1]
    starts, counts = _runs(row)
    smallest = neighbour[starts]
    to = np.repeat(smallest, counts)
    others = neighbour != to
    return np.concatenate([np.stack([neighbour[others], to[others]], axis=1),
                           np.stack([row[starts], smallest], axis=1)])


def local_stars(links: np.ndarray) -> np.ndarray:
    """The components of one block's links, each as a star on its smallest row: the same
    components once every block's are joined (each block's links are replaced by a forest
    with their connectivity), and as most near duplicates lie in their original's block,
    the rounds that follow start from nearly the final stars."""
    if len(links) == 0:
        return links
    rows, index = np.unique(links, return_inverse=True)
    labels = smallest_rows(len(rows), index.reshape(links.shape))
    members = np.flatnonzero(labels != np.arange(len(rows)))
    return np.stack([rows[members], rows[labels[members]]], axis=1)


def smallest_rows(n: int, edges: np.ndarray) -> np.ndarray:
    """Each of `n` rows' component over `edges` (pairs of row indices), labelled by its
    smallest row: min-label propagation with pointer jumping on one label array. Each label
    is a row of the same component and never above its own row, so when every edge joins
    equal labels and every label is its own, a component's label is its smallest row."""
    labels = np.arange(n)
    first, second = edges[:, 0], edges[:, 1]
    while True:
        low = np.minimum(labels[first], labels[second])
        np.minimum.at(labels, first, low)
        np.minimum.at(labels, second, low)
        while not np.array_equal(jumped := labels[labels], labels):
            labels = jumped
        if np.array_equal(labels[first], labels[second]):
            return labels


def star_labels(links: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows with a link, each one's label) once the links are stars: a member's one link
    goes to its centre, the smallest row of the component; the centre's to larger rows."""
    if len(links) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts, _ = _runs(links[:, 0])
    rows = links[starts, 0]
    return rows, np.minimum(rows, links[starts, 1])


def _runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each run of equal values starts, and its length."""
    if len(sorted_values) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    return starts, np.diff(np.r_[starts, len(sorted_values)])


def both_ways(links: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Each undirected link in both directions, split by the block of its first row."""
    directed = np.concatenate([links, links[:, ::-1]]).astype(LINKS, copy=False)
    return split_by(directed, destination_of(directed[:, 0], offsets), len(offsets) - 1)


# -- the tasks -------------------------------------------------------------------------------
def _links(directory: Path, step: int, block: int, blocks: int) -> np.ndarray:
    """This block's distinct links of round `step`, from every task's file."""
    return unique_pairs(np.concatenate([read_split(directory / step_file(f"links{step}", b), block)
                                          for b in range(blocks)]))


@ray.remote
@releasing
def star_round(folder: str, step: int, block: int, offsets: np.ndarray) -> str:
    """One round for one block: its local components as stars first, then large-star on
    even steps, small-star on odd ones; returns a digest of the links it read (equal digests
    from every block: the same links)."""
    directory, blocks = Path(folder), len(offsets) - 1
    links = _links(directory, step, block, blocks)
    digest = hashlib.blake2b(links.tobytes(), digest_size=16).hexdigest()
    found = local_stars(links) if step == 0 else large_star(links) if step % 2 == 0 else small_star(links)
    write_split(directory / step_file(f"links{step + 1}", block), both_ways(found, offsets), LINKS, (2,))
    return digest


@ray.remote
@releasing
def to_centres(folder: str, step: int, block: int, offsets: np.ndarray, keep: bool, ids: bool) -> None:
    """Each of this block's rows with a link tells its centre its keep value (0 for the
    "first" rule: all equal, so the smallest row, the centre, is kept) and, with `ids`, its
    id (from the block's ids file), so the centre can name its kept row."""
    directory, blocks, first = Path(folder), len(offsets) - 1, int(offsets[block])
    rows, labels = star_labels(_links(directory, step, block, blocks))
    values = read_split(directory / step_file("keep", block), 0)[rows - first] if keep else np.zeros(len(rows))
    members = pa.table({"label": labels, "row": rows, "keep": values})
    if ids:
        block_ids = read_split_table(directory / step_file("ids", block), 0)["id"]
        members = members.append_column("id", block_ids.take(pa.array(rows - first)))
    write_split_table(directory / step_file("members", block),
                      split_table_by(members, destination_of(labels, offsets), blocks), members.schema)


@ray.remote
@releasing
def centres(folder: str, block: int, offsets: np.ndarray) -> int:
    """This block's centres pick their kept rows and tell their members (with its size and,
    when rows have ids, the kept row's id); returns the components of more than one row."""
    directory, blocks = Path(folder), len(offsets) - 1
    members = pa.concat_tables([read_split_table(directory / step_file("members", b), block) for b in range(blocks)],
                               promote_options="permissive")
    label, row = members["label"].to_numpy(), members["row"].to_numpy()
    order = np.lexsort((row, -members["keep"].to_numpy(), label))
    label, row = label[order], row[order]
    starts, counts = _runs(label)
    kept = np.repeat(starts, counts)  # each member's kept row, as an index into the sorted members
    told = pa.table({"row": row, "label": label, "rep": row[kept], "size": np.repeat(counts, counts).astype(np.uint32)})
    if "id" in members.column_names:
        told = told.append_column("rep_id", members["id"].take(pa.array(order[kept])))
    write_split_table(directory / step_file("clusters", block),
                      split_table_by(told, destination_of(row, offsets), blocks), told.schema)
    return len(starts)


@ray.remote
@releasing
def block_results(folder: str, block: int, offsets: np.ndarray, parts: list[int], part_offsets: np.ndarray,
                  output: str) -> int:
    """Every row of this block, written a partition at a time (`output`/`part_name(p)`):
    its cluster (its own row when it has no link) and the cluster's size, the kept row (its
    id when rows have ids) where it is not the row itself, its best estimate over its
    candidate pairs. Returns the block's duplicates."""
    directory, blocks = Path(folder), len(offsets) - 1
    first, end = int(offsets[block]), int(offsets[block + 1])
    told = pa.concat_tables([read_split_table(directory / step_file("clusters", b), block) for b in range(blocks)],
                            promote_options="permissive")
    at = told["row"].to_numpy() - first
    cluster, rep = np.arange(first, end), np.arange(first, end)
    size = np.ones(end - first, np.uint32)
    cluster[at], rep[at], size[at] = told["label"].to_numpy(), told["rep"].to_numpy(), told["size"].to_numpy()
    duplicate = rep != np.arange(first, end)
    if "rep_id" in told.column_names:  # each duplicate's kept row's id, taken from its answer
        answer = np.full(end - first, -1)
        answer[at] = np.arange(len(at))
        kept = told["rep_id"].take(pa.array(answer, mask=~duplicate))
    else:
        kept = pa.array(rep.astype(np.uint64), mask=~duplicate)
    frame = pl.DataFrame({"cluster_id": cluster.astype(np.uint64), "duplicate_of": kept,
                          "max_jaccard": read_split(directory / step_file("best", block), 0),
                          "is_duplicate": duplicate, "cluster_size": size})
    for part in parts:
        start, stop = int(part_offsets[part]) - first, int(part_offsets[part + 1]) - first
        atomic.write_parquet(Path(output) / part_name(part), frame.slice(start, stop - start))
    return int(duplicate.sum())
