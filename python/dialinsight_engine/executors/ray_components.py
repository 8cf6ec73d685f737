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
same way. The rounds stop when a large-star round reads what the one before the last did:
the links no longer change, and they are the stars.

Then three steps on the stars: each row with a link tells its centre (its label, the
component's smallest row) its keep value; each centre picks the kept row (highest keep
value, ties to the smallest row: the core's rule, "first" keeps the centre) and tells its
members; each block writes its rows' results (cluster, kept row, best estimate) in row
order, which the driver reads block by block.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import ray

from ..allocator import releasing
from .exchange import read_split, split_by, step_file, write_split
from .pairs import unique_pairs

__all__ = ["LINKS", "RESULT", "large_star", "small_star", "star_labels"]

#: A link: (row, neighbour), both pool positions, as every round reads and writes it.
LINKS = np.dtype(np.int64)
#: A row's message to its component's centre.
MEMBER = np.dtype([("label", "<i8"), ("row", "<i8"), ("keep", "<f8")])
#: A centre's answer to one of its rows.
CLUSTER = np.dtype([("row", "<i8"), ("label", "<i8"), ("rep", "<i8")])
#: One row's result, for every row of a block in row order.
RESULT = np.dtype([("cluster", "<i8"), ("rep", "<i8"), ("best", "<f4")])


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


def owner(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The block of each pool position (`offsets`: each block's first row, then the end)."""
    return np.searchsorted(offsets, rows, side="right") - 1


def both_ways(links: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Each undirected link in both directions, split by the block of its first row."""
    directed = np.concatenate([links, links[:, ::-1]]).astype(LINKS, copy=False)
    return split_by(directed, owner(directed[:, 0], offsets), len(offsets) - 1)


# -- the tasks -------------------------------------------------------------------------------
def _links(directory: Path, step: int, block: int, blocks: int) -> np.ndarray:
    """This block's distinct links of round `step`, from every task's file."""
    return unique_pairs(np.concatenate([read_split(directory / step_file(f"links{step}", b), block)
                                          for b in range(blocks)]))


@ray.remote
@releasing
def star_round(folder: str, step: int, block: int, offsets: np.ndarray) -> str:
    """One round for one block: large-star on even steps, small-star on odd ones; returns
    a digest of the links it read (equal digests from every block: the same links)."""
    directory, blocks = Path(folder), len(offsets) - 1
    links = _links(directory, step, block, blocks)
    digest = hashlib.blake2b(links.tobytes(), digest_size=16).hexdigest()
    found = large_star(links) if step % 2 == 0 else small_star(links)
    write_split(directory / step_file(f"links{step + 1}", block), both_ways(found, offsets), LINKS, (2,))
    return digest


@ray.remote
@releasing
def to_centres(folder: str, step: int, block: int, offsets: np.ndarray, keep: bool) -> None:
    """Each of this block's rows with a link tells its centre its keep value (0 for the
    "first" rule: all equal, so the smallest row, the centre, is kept)."""
    directory, blocks, first = Path(folder), len(offsets) - 1, int(offsets[block])
    rows, labels = star_labels(_links(directory, step, block, blocks))
    out = np.zeros(len(rows), MEMBER)
    out["label"], out["row"] = labels, rows
    if keep:
        out["keep"] = read_split(directory / step_file("keep", block), 0)[rows - first]
    write_split(directory / step_file("members", block), split_by(out, owner(labels, offsets), blocks), MEMBER)


@ray.remote
@releasing
def centres(folder: str, block: int, offsets: np.ndarray) -> int:
    """This block's centres pick their kept rows and tell their members; returns the
    components of more than one row."""
    directory, blocks = Path(folder), len(offsets) - 1
    members = np.concatenate([read_split(directory / step_file("members", b), block) for b in range(blocks)])
    members = members[np.lexsort((members["row"], -members["keep"], members["label"]))]
    starts, counts = _runs(members["label"])
    out = np.zeros(len(members), CLUSTER)
    out["row"], out["label"] = members["row"], members["label"]
    out["rep"] = np.repeat(members["row"][starts], counts)
    write_split(directory / step_file("clusters", block), split_by(out, owner(out["row"], offsets), blocks), CLUSTER)
    return len(starts)


@ray.remote
@releasing
def block_results(folder: str, block: int, offsets: np.ndarray) -> None:
    """Every row of this block: its cluster (its own row when it has no link), its kept row,
    its best estimate over its candidate pairs."""
    directory, blocks = Path(folder), len(offsets) - 1
    first, end = int(offsets[block]), int(offsets[block + 1])
    out = np.zeros(end - first, RESULT)
    out["cluster"] = out["rep"] = np.arange(first, end)
    for b in range(blocks):
        told = read_split(directory / step_file("clusters", b), block)
        out["cluster"][told["row"] - first] = told["label"]
        out["rep"][told["row"] - first] = told["rep"]
    out["best"] = read_split(directory / step_file("best", block), 0)
    write_split(directory / step_file("result", block), [out], RESULT)
