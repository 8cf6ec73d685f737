"""Near-duplicates on a real two-node Ray cluster equal `fast.near_duplicates`, row for row,
whatever the partitioning (English word 3-grams, Chinese character 3-grams)."""

from __future__ import annotations

import random

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dialinsight_engine import fast
from dialinsight_engine.errors import StageFailed, UserError
from dialinsight_engine.run import faults
from dialinsight_engine.run.dataset import part_name

from raycluster import joined, shared_cluster

ray = pytest.importorskip("ray")

from dialinsight_engine.executors.exchange import step_file  # noqa: E402
from dialinsight_engine.executors.pairs import merged_pairs, unique_pairs  # noqa: E402
from dialinsight_engine.executors.ray_dedup import (  # noqa: E402
    BLOCK_ROWS,
    ESTIMATE_CHUNK,
    MAX_FULL_BUCKET,
    _group,
    _pair_estimates,
    ray_near_duplicates,
    shuffle_blocks,
)

pytestmark = pytest.mark.timeout(300)

EN_WORDS = ("lease deposit tenant landlord viewing apartment bedroom balcony kitchen garden rent month "
            "agent contract parking floor window quiet street station school price offer meter heating "
            "water bill key move date pet allowed furnished empty small large bright").split()
ZH_CHARS = "租房押金房东看房公寓卧室阳台厨房花园每月中介合同停车楼层窗户安静街道车站学校价格水电钥匙搬家宠物家具明亮"


#: Fault point armed in the cluster's workers: signing partition 2 of a column named so dies.
DOOMED = "near-duplicates:signatures:doomed_text:partition-2"


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes of one CPU each on this machine (shared with the other Ray modules), joined
    by this module as a job whose workers get the DOOMED fault point (only the test using that
    column reaches it)."""
    with joined(shared_cluster(1, 1).address, env={faults.ENV: DOOMED}):
        yield


def _edit(words: list[str], rng: random.Random, changes: int, alphabet) -> list[str]:
    out = list(words)
    for _ in range(changes):
        out[rng.randrange(len(out))] = rng.choice(alphabet)
    return out


def _planted(n: int, seed: int, zh: bool) -> pl.DataFrame:
    """`n` texts: random originals, exact copies, light and heavier edits of earlier rows,
    a big bucket of copies (more than MAX_FULL_BUCKET rows), nulls and empty strings."""
    rng = random.Random(seed)
    alphabet = ZH_CHARS if zh else EN_WORDS
    joiner = "" if zh else " "
    length = 60 if zh else 30
    units: list[list[str] | None] = []
    for i in range(n):
        roll = rng.random()
        earlier = [u for u in units[-200:] if u]
        if i < 5 * MAX_FULL_BUCKET and i % 4 == 0 and i > 0:
            units.append(list(units[0] or []))  # one bucket of ~60 copies of row 0
        elif roll < 0.01:
            units.append(None if roll < 0.005 else [])
        elif roll < 0.35 and earlier:
            units.append(_edit(rng.choice(earlier), rng, rng.choice((0, 1, 2, 4)), alphabet))
        else:
            units.append([rng.choice(alphabet) for _ in range(length)])
    texts = [None if u is None else joiner.join(u) for u in units]
    return pl.DataFrame({
        "id": [f"d{i:05d}" for i in range(n)],
        "text": pl.Series(texts, dtype=pl.String),
        "quality": pl.Series([None if i % 97 == 0 else rng.random() for i in range(n)], dtype=pl.Float64),
    })


def _split(df: pl.DataFrame, cuts: list[int]) -> list[pl.DataFrame]:
    edges = [0, *cuts, df.height]
    return [df.slice(a, b - a) for a, b in zip(edges[:-1], edges[1:], strict=True)]


@pytest.mark.parametrize("zh", [False, True], ids=["en-word-3grams", "zh-char-3grams"])
def test_same_clusters_and_kept_rows_as_local(cluster, zh):
    df = _planted(2000, seed=11 if zh else 7, zh=zh)
    local = fast.near_duplicates(df, "text", threshold=0.7, id_column="id")
    assert fast.resolve_language(df["text"]) == ("zh" if zh else "en")
    clustered = local.filter(pl.col("is_duplicate")).height
    assert clustered > 300, "the planted duplicates must be found by the local path too"
    assert local.filter(pl.col("cluster_id") == 0).height > MAX_FULL_BUCKET  # the big bucket
    for cuts in ([], [613, 1400], [1, 250, 251, 900, 1333, 1999]):
        found = ray_near_duplicates(_split(df, cuts), "text", threshold=0.7, id_column="id")
        assert_frame_equal(found.frame, local)
        assert found.stats["partitions"] == len(cuts) + 1
        assert found.stats["language"] == ("zh" if zh else "en")
    assert found.stats["edges"] >= clustered
    assert 0 < found.stats["shuffle_bytes_per_row"] < 2000
    # the shuffle's unit: 7 partitions in one block, in 3, in one each: the same result
    for blocks in (1, 3, 7):
        found = ray_near_duplicates(_split(df, [1, 250, 251, 900, 1333, 1999]), "text", threshold=0.7,
                                    id_column="id", blocks=blocks, reducers=2)
        assert_frame_equal(found.frame, local)
        assert (found.stats["partitions"], found.stats["blocks"]) == (7, blocks)


def test_blocks_with_more_candidate_pairs_than_a_verification_chunk(cluster):
    """40 groups of 48 near-identical texts (every pair of a group a candidate: ~45,000
    pairs, ~29,000 with first rows in the second block, more than an ESTIMATE_CHUNK): the
    verification reads a block's pairs a chunk at a time, and the clusters are still the
    core's."""
    rng = random.Random(2)
    texts = []
    for _ in range(40):
        words = [rng.choice(EN_WORDS) for _ in range(30)]
        texts += [" ".join(words if k % 2 else _edit(words, rng, 1, EN_WORDS)) for k in range(MAX_FULL_BUCKET)]
    df = pl.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": texts})
    local = fast.near_duplicates(df, "text", threshold=0.7, id_column="id")
    found = ray_near_duplicates(_split(df, [700, 1300]), "text", threshold=0.7, id_column="id", blocks=2)
    assert_frame_equal(found.frame, local)
    assert found.stats["blocks"] == 2 and found.stats["candidate_pairs"] > 2 * ESTIMATE_CHUNK
    assert local["is_duplicate"].sum() > 1800


def test_many_small_partitions_shuffle_in_few_blocks(cluster, tmp_path):
    """40 partitions of 50 rows go in one block per CPU of the cluster by default, the steps
    exchange their files in a folder of their own in `scratch`, removed at the end, and the
    clusters are the core's."""
    df = _planted(2000, seed=5, zh=False)
    local = fast.near_duplicates(df, "text", threshold=0.7, id_column="id")
    found = ray_near_duplicates(_split(df, list(range(50, 2000, 50))), "text", threshold=0.7, id_column="id",
                                scratch=tmp_path)
    assert_frame_equal(found.frame, local)
    assert (found.stats["partitions"], found.stats["blocks"], found.stats["reducers"]) == (40, 2, 2)
    assert found.stats["shuffle_bytes"]["pair_signatures"] > 0
    assert list(tmp_path.iterdir()) == []


def test_the_default_block_count():
    """One block per BLOCK_ROWS rows (a task's memory, the same for any pool), at least one
    per CPU, at most one per partition; blocks are contiguous runs of partitions of about
    equal rows."""
    assert BLOCK_ROWS == 50_000
    assert shuffle_blocks([1_000] * 100, cpus=2) == 2  # 1e5 rows
    assert shuffle_blocks([1_000] * 100, cpus=8) == 8
    assert shuffle_blocks([10_000] * 100, cpus=2) == 20  # 1e6 rows: 50,000 rows a block
    assert shuffle_blocks([10_000] * 10_000, cpus=2) == 2_000  # 1e8 rows: still 50,000
    assert shuffle_blocks([3_000_000] * 3, cpus=1) == 3  # at most one block per partition
    assert shuffle_blocks([5, 5, 5], cpus=16) == 3
    assert _group([2, 2, 2], 2) == [[0], [1, 2]]
    assert _group([10, 0, 0, 10, 1], 2) == [[0, 1, 2], [3, 4]]
    assert _group([1] * 7, 3) == [[0, 1], [2, 3, 4], [5, 6]]
    with pytest.raises(ValueError, match="blocks must be at least 1"):
        _group([1], 0)


def test_distinct_pairs_and_chunked_estimates(monkeypatch):
    """The verification tasks' two memory bounds give what the plain computations give: the
    distinct pairs through one uint64 key (or np.unique past 32-bit positions), and the
    estimates of pairs against their second rows' distinct signatures, a chunk at a time."""
    import numpy as np

    from dialinsight_engine.executors import ray_dedup

    rng = np.random.default_rng(3)
    pairs = rng.integers(0, 50, size=(400, 2))
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1)
    np.testing.assert_array_equal(unique_pairs(pairs), np.unique(pairs, axis=0))
    big = pairs + 2**32
    np.testing.assert_array_equal(unique_pairs(big), np.unique(big, axis=0))
    assert unique_pairs(np.zeros((0, 2), np.int64)).shape == (0, 2)
    # a reducer's bands merged one at a time: the distinct pairs of all of them
    more = np.sort(rng.integers(0, 50, size=(300, 2)), axis=1)
    more = more[more[:, 0] != more[:, 1]]
    for a, b in ((pairs, more), (big, more + 2**32), (pairs, pairs[:0]), (pairs[:0], more)):
        np.testing.assert_array_equal(merged_pairs(unique_pairs(a), unique_pairs(b)),
                                      unique_pairs(np.concatenate([a, b])))

    sigs = rng.integers(0, 4, size=(50, 16)).astype(np.uint32)  # block of rows 100..149
    distinct = unique_pairs(pairs)
    firsts = distinct[:, 0] + 100
    seconds, index = np.unique(distinct[:, 1], return_inverse=True)
    other = rng.integers(0, 4, size=(len(seconds), 16)).astype(np.uint32)  # the second rows' signatures
    monkeypatch.setattr(ray_dedup, "ESTIMATE_CHUNK", 7)
    got = _pair_estimates(sigs, 100, np.stack([firsts, distinct[:, 1]], axis=1), other, index.astype(np.uint32))
    expected = ((sigs[distinct[:, 0]] == other[index]).sum(axis=1) / 16).astype(np.float32)
    np.testing.assert_array_equal(got, expected.astype(np.float64))
    assert len(distinct) > 7 * 20  # many chunks


def test_the_attach_step_in_runs_of_destinations_writes_what_it_writes_at_once(tmp_path):
    """`_attach` (the attach task's work) with destinations taken a few pairs at a time
    writes the same files, byte for byte, as with all of them at once."""
    import numpy as np

    from dialinsight_engine.executors import ray_dedup
    from dialinsight_engine.executors.exchange import piece, split_by, write_split

    rng = np.random.default_rng(5)
    offsets = np.array([0, 30, 55, 90, 120])
    for r in range(3):  # each reducer's pairs: distinct, sorted, split by the second row's block
        pairs = np.sort(rng.integers(0, 120, size=(400, 2)), axis=1)
        pairs = unique_pairs(pairs[pairs[:, 0] != pairs[:, 1]])
        owner = np.searchsorted(offsets, pairs[:, 1], side="right") - 1
        write_split(tmp_path / step_file("pairs", r), split_by(pairs, owner, 4), pairs.dtype, (2,))
    sigs = rng.integers(0, 9, size=(35, 8)).astype(np.uint32)  # block 2: rows 55..89
    write_split(tmp_path / step_file("signatures", 2), [sigs], sigs.dtype, (8,))
    outputs = ("attached-pairs", "attached-index", "attached-signatures")
    written = {}
    for window in (10**9, 5):
        ray_dedup._attach(tmp_path, 2, offsets, 3, window)
        written[window] = {name: (tmp_path / step_file(name, 2)).read_bytes() for name in outputs}
    assert written[5] == written[10**9]
    edges, starts = ray_dedup._windows([piece(tmp_path / step_file("pairs", r), 2) for r in range(3)],
                                       offsets, 5)
    assert edges.tolist() == [0, 1, 2, 3, 4] and starts.shape == (3, 5)  # one destination a run
    assert len(written[5]["attached-pairs"]) > 16 * 50


# Ray Data's own DataContext warns about its deprecated fields as it is built (ray 2.60)
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
def test_keep_rules_row_indices_and_a_ray_dataset(cluster):
    df = _planted(600, seed=3, zh=False)
    ds = ray.data.from_arrow([p.to_arrow() for p in _split(df, [100, 350])])
    for keep in ("first", "longest", "quality"):
        local = fast.near_duplicates(df, "text", threshold=0.5, keep=keep, num_perm=64)
        found = ray_near_duplicates(ds, "text", threshold=0.5, keep=keep, num_perm=64, reducers=3)
        assert_frame_equal(found.frame, local)
        assert found.frame["duplicate_of"].dtype == pl.UInt64
        # compact: 32-bit columns with the same values (the estimates are float32 values)
        narrow = ray_near_duplicates(ds, "text", threshold=0.5, keep=keep, num_perm=64, reducers=3, compact=True)
        assert narrow.frame.schema == {"cluster_id": pl.UInt32, "duplicate_of": pl.UInt32,
                                       "max_jaccard": pl.Float32, "is_duplicate": pl.Boolean}
        assert_frame_equal(narrow.frame.cast({"cluster_id": pl.UInt64, "duplicate_of": pl.UInt64,
                                              "max_jaccard": pl.Float64}), local)
    assert found.frame["is_duplicate"].sum() > 50
    # explicit bands/rows and another seed: still the same as the core
    local = fast.near_duplicates(df, "text", threshold=0.8, bands=16, rows=4, seed=9, num_perm=64)
    found = ray_near_duplicates(_split(df, [300]), "text", threshold=0.8, bands=16, rows=4, seed=9,
                                num_perm=64)
    assert_frame_equal(found.frame, local)


def _per_group(df: pl.DataFrame, group: str, **settings) -> pl.DataFrame:
    """`fast.near_duplicates` on each group apart, clusters labelled and kept rows placed by
    pool position (ids kept), with each cluster's size: what a grouped call computes."""
    parts = []
    for part in df.with_row_index("_row").partition_by(group, maintain_order=True):
        found = fast.near_duplicates(part, "text", **settings)
        parts.append(found.with_columns(_row=part["_row"], cluster_id=part["_row"].cast(pl.UInt64).gather(found["cluster_id"])))
    out = pl.concat(parts).sort("_row").drop("_row")
    return out.with_columns(cluster_size=pl.len().over("cluster_id").cast(pl.UInt32))


def test_groups_pair_apart_and_results_are_written_where_each_partition_lies(cluster, tmp_path):
    """With `group_by`, rows pair only within their group (the same text in two groups is
    no duplicate), as the core run on each group apart, and with `output` every partition's
    result is written by the tasks (an empty partition's too), its kept rows named by id,
    its clusters' sizes beside."""
    base = _planted(1200, seed=9, zh=False)
    df = pl.concat([base.with_columns(group=pl.lit("a")), base.with_columns(group=pl.lit("b"), id=pl.col("id") + "b")])
    df = df.sample(fraction=1.0, shuffle=True, seed=4)  # the groups' rows interleaved
    for keep in ("first", "quality"):
        expected = _per_group(df, "group", threshold=0.7, keep=keep, id_column="id")
        cuts = [300, 300, 1000, 1900, 2400]  # two partitions empty (every row dropped before)
        found = ray_near_duplicates(_split(df, cuts), "text", threshold=0.7, keep=keep, id_column="id",
                                    group_by=["group"], output=tmp_path / keep, blocks=3)
        assert found.frame.is_empty() and found.stats["near_duplicates"] == expected["is_duplicate"].sum()
        written = [pl.read_parquet(tmp_path / keep / part_name(p)) for p in range(len(cuts) + 1)]
        assert [w.height for w in written] == [p.height for p in _split(df, cuts)]
        assert_frame_equal(pl.concat(written), expected, check_dtypes=False)
        assert pl.concat(written).schema["duplicate_of"] == pl.String
    assert expected["is_duplicate"].sum() > 300 and expected["cluster_size"].max() > MAX_FULL_BUCKET
    # the grouped frame, returned
    framed = ray_near_duplicates(_split(df, [700]), "text", threshold=0.7, keep="quality", id_column="id",
                                 group_by=["group"], blocks=2)
    assert_frame_equal(framed.frame, expected.drop("cluster_size"))


def test_bad_input_names_the_partition(cluster):
    good = pl.DataFrame({"text": ["a b c d", "a b c d"], "n": ["x", "y"]})
    with pytest.raises(UserError, match="partition 1 has no column 'text'"):
        ray_near_duplicates([good, good.rename({"text": "body"})], "text")
    with pytest.raises(UserError, match="column 'text' has dtype Int64 in partition 2"):
        ray_near_duplicates([good, good, pl.DataFrame({"text": [1, 2]})], "text")
    with pytest.raises(UserError, match="keep column 'n' has dtype String"):
        ray_near_duplicates([good], "text", keep="n")
    with pytest.raises(ValueError, match="bands and rows"):
        ray_near_duplicates([good], "text", bands=4)


def test_a_partition_dying_after_retries_fails_the_call_naming_it(cluster, tmp_path):
    """The worker signing partition 2 is SIGKILLed on every try (the DOOMED fault point):
    after Ray's retry the call fails, naming the step and the partitions of the block that
    held partition 2 (three partitions in two blocks, one per CPU), and the files the other
    block wrote are removed."""
    parts = [pl.DataFrame({"doomed_text": ["one two three four", "one two three five"]})] * 3
    with pytest.raises(StageFailed, match=r"partitions 1-2 failed in step 'signatures' after Ray's retries"):
        ray_near_duplicates(parts, "doomed_text", language="en", max_retries=1, scratch=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_driver_does_not_import_ray_data(tmp_path):
    """Recognising a Ray Dataset must not import `ray.data` (58 MB of driver RSS): a fresh
    driver process given Polars partitions finds the clusters with the module never loaded."""
    import subprocess
    import sys

    script = tmp_path / "driver.py"
    script.write_text(
        "import sys, polars as pl, ray\n"
        "from dialinsight_engine.executors.ray_dedup import ray_near_duplicates\n"
        "ray.init(address=sys.argv[1], log_to_driver=False)\n"
        "df = pl.DataFrame({'text': ['a b c d e f g h', 'a b c d e f g h', 'x y z w v u t s']})\n"
        "found = ray_near_duplicates([df.slice(0, 2), df.slice(2)], 'text', threshold=0.8)\n"
        "print(found.frame['is_duplicate'].to_list(), 'ray.data' in sys.modules)\n")
    address = shared_cluster(1, 1).address
    done = subprocess.run([sys.executable, str(script), address], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "[False, True, False] False"


DEDUP_ONLY_TOML = """
[quality]
min_score = 0.0

[quality.metrics.prompt_complexity]

[quality.metrics.data_redundancy]
params = {{ threshold = 0.7, group_by = {group_by}, keep = "{keep}" }}

[executor]
partition_rows = 7
dedup_local_rows = 0
"""


@pytest.mark.parametrize(("group_by", "keep"), [("[]", "first"), ('["task"]', "longest"),
                                              ('["task"]', "score_prompt_complexity")],
                         ids=["no-groups-first", "by-task-longest", "by-task-score"])
def test_assess_on_ray_reads_text_and_ids_where_they_lie(cluster, write_spec, tmp_path, group_by, keep):
    """Under Ray with a distributed pool, the driver gathers neither the prompts nor the ids,
    and the rows equal scoring the whole pool in one process. With the columns it reads all
    in the partitions, data_redundancy is scored where the rows lie (`score_partitions`: the
    tasks write each partition's clusters, the driver gathers nothing); with a keep column
    that only the row-local scores hold, the driver gathers the groups and that score, the
    tasks read the text, and the driver reads back only the ids of rows others duplicate."""
    import json

    from dialinsight_engine import records as R
    from dialinsight_engine.dialogue import render_dialogue
    from dialinsight_engine.executors.ray_executor import RayExecutor
    from dialinsight_engine.metrics.base import MetricContext
    from dialinsight_engine.metrics.combine import assess_phase
    from dialinsight_engine.plugins import build_registry
    from dialinsight_engine.run.dataset import read_output
    from dialinsight_engine.spec import load_spec

    from conftest import EXAMPLES, assess_in_partitions

    registry = build_registry()
    spec = load_spec(write_spec(DEDUP_ONLY_TOML.format(group_by=group_by, keep=keep)), registry)
    lines = (EXAMPLES / "realestate_dialogues.jsonl").read_text(encoding="utf-8").splitlines()[:24]
    texts = [render_dialogue(json.loads(line)["turns"]) for line in lines]
    texts += [t.replace("bedroom", "bedrooms") for t in texts[:10]]  # near duplicates across partitions
    rows = pl.DataFrame({R.INSTRUCTION_ID: [f"instruction-{i}" for i in range(len(texts))],
                         R.TASK: ["t" if i % 3 else "u" for i in range(len(texts))],
                         R.INSTRUCTION: ["Summarise.\n{dialogue}"] * len(texts),
                         R.PROMPT: ["Summarise.\n" + t for t in texts], R.KEPT: [i != 5 for i in range(len(texts))]})
    run = tmp_path / "run"
    ctx = assess_in_partitions(spec, registry, rows, run, RayExecutor(spec.executor, "auto"))

    whole = assess_phase(rows, spec.quality, registry, MetricContext(spec=spec), "instruction").frame
    assert_frame_equal(read_output(run / "assess"), whole)
    assert whole["flag_data_redundancy"].drop_nulls().len() >= 5
    pooled = ctx.stats["prepare_maps"]["pooled"]
    apart = keep != "score_prompt_complexity"
    assert pooled["scored_where_rows_lie"] == (["data_redundancy"] if apart else [])
    assert pooled["left_in_partitions"] == ([] if apart else ["instruction_id", "prompt"])
    assert ctx.stats["ray_near_duplicates"]["text_read_in_tasks"] is True
    assert ctx.stats["ray_near_duplicates"].get("written_by_tasks", False) is apart


def test_components_by_star_rounds_equal_scipys():
    """Each block's links made stars on their local components, then large-star and
    small-star rounds (each block's links split as the tasks exchange them), reach one star
    per component, centred on its smallest row: the same components as scipy's on random
    graphs (a giant component, chains, isolated rows), with no edges, and on one long chain
    across blocks, in far fewer rounds than its length; so do the min-label propagation a
    block's local stars use."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from dialinsight_engine.executors.ray_components import (
        both_ways,
        large_star,
        local_stars,
        small_star,
        smallest_rows,
        star_labels,
    )

    def components(n: int, edges: np.ndarray, blocks: int) -> tuple[np.ndarray, int]:
        offsets = np.linspace(0, n, blocks + 1).astype(np.int64)
        pieces = [both_ways(edges, offsets)]  # one "task" wrote them
        seen: list[list[bytes]] = []
        while not (len(seen) % 2 == 1 and len(seen) >= 5 and seen[-1] == seen[-3]):
            mine = [unique_pairs(np.concatenate([p[b] for p in pieces])) for b in range(blocks)]
            seen.append([links.tobytes() for links in mine])
            star = local_stars if len(seen) == 1 else large_star if len(seen) % 2 == 1 else small_star
            pieces = [both_ways(star(links), offsets) for links in mine]
        labels = np.arange(n)
        for b in range(blocks):
            rows, label = star_labels(unique_pairs(np.concatenate([p[b] for p in pieces])))
            labels[rows] = label
        return labels, len(seen)

    rng = np.random.default_rng(7)
    for n, m in ((1, 0), (50, 0), (2_000, 300), (2_000, 1_800), (5_000, 9_000)):
        edges = np.sort(rng.integers(0, n, size=(m, 2)), axis=1)
        edges = edges[edges[:, 0] != edges[:, 1]]
        _, component = connected_components(
            coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)), directed=False)
        smallest = np.full(component.max() + 1, n)
        np.minimum.at(smallest, component, np.arange(n))
        np.testing.assert_array_equal(smallest_rows(n, edges), smallest[component])
        for blocks in (1, 3, 7):
            np.testing.assert_array_equal(components(n, edges, blocks)[0], smallest[component])
    chain = np.stack([np.arange(999, 0, -1), np.arange(1000, 1, -1)], axis=1)  # 999-1000, ..., 1-2
    labels, rounds = components(1001, chain, 40)
    np.testing.assert_array_equal(labels, np.r_[0, np.ones(1000, np.int64)])
    assert rounds < 60, rounds
