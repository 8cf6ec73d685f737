"""Combining metrics: normalisation, weights, thresholds and the composite change the kept set
as docs/spec.md says; the assess and verify stages in real runs; `dialengine explain`."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dialinsight_engine import records as R
from dialinsight_engine.dialogue import render_dialogue
from dialinsight_engine.metrics.base import Metric, MetricConfig, MetricContext
from dialinsight_engine.metrics.combine import assess_phase, combine
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.run.context import StageContext
from dialinsight_engine.run.dataset import part_name, read_output, write_partition
from dialinsight_engine.spec import load_spec
from dialinsight_engine.spec.quality import QualitySpec
from dialinsight_engine.stages.verify import VerifyStage

from conftest import EXAMPLES, assess_in_partitions, dialengine

PLUGINS = "core,generation,quality"

QUALITY_TOML = """
[quality]
min_score = {min_score}

[quality.metrics.prompt_complexity]
weight = {w_prompt}

[quality.metrics.input_complexity]
weight = {w_input}
min = {input_min}

[quality.metrics.data_richness]
weight = 1.0
params = {{ embeddings = "off" }}

[quality.metrics.data_redundancy]
weight = 0.5
normalize = "rank"
"""


def _frame(a: list[float], b: list[float]) -> pl.DataFrame:
    return pl.DataFrame({R.INSTRUCTION_ID: [f"r{i}" for i in range(len(a))], "score_a": a, "score_b": b,
                         "flag_a": pl.Series([None] * len(a), dtype=pl.String),
                         "flag_b": pl.Series([None] * len(a), dtype=pl.String)})


def _quality(**metrics) -> QualitySpec:
    min_score = metrics.pop("min_score", None)
    return QualitySpec.model_validate({"min_score": min_score, "metrics": metrics})


def test_normalisations():
    frame = _frame([1.0, 2.0, 4.0, 4.0], [0.0, 0.0, 0.0, 0.0])
    for method, expected in {"minmax": [0.0, 1 / 3, 1.0, 1.0], "rank": [0.0, 1 / 3, 5 / 6, 5 / 6],
                             "none": [1.0, 2.0, 4.0, 4.0]}.items():
        out = combine(frame, _quality(a={"normalize": method}, b={"weight": 0}), ["a", "b"])
        assert out["norm_a"].to_list() == pytest.approx(expected), method
    z = combine(frame, _quality(a={"normalize": "z"}, b={"weight": 0}), ["a"])["norm_a"]
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0)
    constant = combine(frame, _quality(b={"normalize": "minmax"}), ["b"])
    assert constant["norm_b"].to_list() == [1.0] * 4, "a constant metric penalises no row"


def test_weights_and_thresholds_change_the_kept_set():
    frame = _frame([0.1, 0.5, 0.9, 0.7], [0.9, 0.6, 0.1, 0.2])
    equal = combine(frame, _quality(a={}, b={}, min_score=0.5), ["a", "b"])
    # minmax: a -> 0, .5, 1, .75; b -> 1, .625, 0, .125; equal weights average them
    assert equal["quality_score"].to_list() == pytest.approx([0.5, 0.5625, 0.5, 0.4375])
    assert equal["kept"].to_list() == [True, True, True, False]
    assert equal["reasons"].to_list()[3] == ["quality_score 0.438 < min_score 0.5"]
    heavy_a = combine(frame, _quality(a={"weight": 3}, b={}, min_score=0.5), ["a", "b"])
    assert heavy_a["kept"].to_list() == [False, True, True, True]
    thresholds = combine(frame, _quality(a={"min": 0.3}, b={"max": 0.65}), ["a", "b"])
    assert thresholds["kept"].to_list() == [False, True, True, True]
    assert thresholds["reasons"].to_list()[0] == ["a: score 0.1 < min 0.3", "b: score 0.9 > max 0.65"]
    weight_zero = combine(frame, _quality(a={"weight": 0}, b={}, min_score=0.5), ["a", "b"])
    assert weight_zero["quality_score"].to_list() == pytest.approx([1.0, 0.625, 0.0, 0.125])


class Flagger(Metric):
    """A real metric plugin of this test: flags rows whose text mentions a pet."""

    name = "pets"
    Config = MetricConfig

    def score(self, df, ctx):
        mentions = df[R.DIALOGUE_TEXT].str.contains("(?i)pet")
        return pl.DataFrame({"score": (~mentions).cast(pl.Float64),
                             "reason": pl.Series([("mentions pets" if m else None) for m in mentions], dtype=pl.String)})


class FlaggerPlugin:
    @staticmethod
    def register_metrics():
        return [Flagger]


def _rows(n: int) -> pl.DataFrame:
    dialogues = [json.loads(line) for line in (EXAMPLES / "realestate_dialogues.jsonl").read_text(encoding="utf-8").splitlines()][:n]
    return pl.DataFrame([{R.INSTRUCTION_ID: f"i{i}", R.TASK: "t", R.SCENE: "s", R.INSTRUCTION: "Summarise.\n{dialogue}",
                          R.DIALOGUE_TEXT: render_dialogue(d["turns"]), R.PROMPT: "Summarise.\n" + render_dialogue(d["turns"]),
                          R.KEPT: i != 0, R.REASONS: ["review: rejected"] if i == 0 else []}
                         for i, d in enumerate(dialogues)])


def test_flags_drop_or_record_and_upstream_drops_stay_untouched():
    from pluggy import HookimplMarker

    impl = HookimplMarker("dialinsight_engine")
    plugin = type("P", (), {"register_metrics": staticmethod(impl(FlaggerPlugin.register_metrics))})
    registry = build_registry([plugin])
    frame = _rows(12)
    mentions = frame[R.DIALOGUE_TEXT].str.contains("(?i)pet").to_list()
    assert any(mentions[1:]) and not all(mentions[1:])
    result = assess_phase(frame, _quality(pets={}), registry, MetricContext.standalone(), "instruction")
    out = result.frame
    assert out[R.INSTRUCTION_ID].to_list() == frame[R.INSTRUCTION_ID].to_list()
    assert out.row(0, named=True)["score_pets"] is None and out["reasons"].to_list()[0] == ["review: rejected"]
    for i in range(1, 12):
        assert out["kept"][i] == (not mentions[i])
        assert out["reasons"].to_list()[i] == (["pets: mentions pets"] if mentions[i] else [])
    assert result.summary["metrics"]["pets"]["flagged"] == sum(mentions[1:])
    recorded = assess_phase(frame, _quality(pets={"on_flag": "record"}), registry, MetricContext.standalone(),
                            "instruction").frame
    assert recorded["kept"].to_list() == [False] + [True] * 11
    assert recorded["flag_pets"].drop_nulls().len() == sum(mentions[1:])


def _spec(write_spec, **kw) -> Path:
    values = {"min_score": 0.0, "w_prompt": 1.0, "w_input": 1.0, "input_min": 0.0} | kw
    return write_spec(QUALITY_TOML.format(**values), name="q")


def test_assess_stage_in_a_run_and_spec_changes_the_kept_set(write_spec, tmp_path):
    spec = _spec(write_spec)
    first = dialengine("apply", str(spec), "--until", "assess", plugins=PLUGINS)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "runs" / "q"
    out = read_output(run / "assess")
    for name in ("prompt_complexity", "input_complexity", "data_richness", "data_redundancy"):
        assert out[f"score_{name}"].null_count() == 0 and f"norm_{name}" in out.columns
    assert out["kept"].all() and out["quality_score"].is_between(0, 1).all()
    manifest = json.loads((run / "assess" / "manifest.json").read_text())
    assert manifest["extra"]["plugins"]["metric:data_redundancy"].startswith("dialinsight-engine==")
    summary = json.loads((run / "assess" / "quality_summary.json").read_text())
    assert summary["metrics"]["data_richness"]["stats"]["distinct_2"] > 0

    # a threshold drops exactly the rows below it; the composite threshold those below it
    cut = float(out["score_input_complexity"].median())
    spec = _spec(write_spec, input_min=cut)
    second = dialengine("apply", str(spec), "--until", "assess", plugins=PLUGINS)
    assert second.returncode == 0, second.stderr
    assert "seeds    skip" in second.stderr and "assess   running" in second.stderr
    out2 = read_output(run / "assess")
    assert out2["kept"].to_list() == (out["score_input_complexity"] >= cut).to_list()

    q_cut = float(out["quality_score"].quantile(0.25))
    spec = _spec(write_spec, min_score=q_cut)
    assert dialengine("apply", str(spec), "--until", "assess", plugins=PLUGINS).returncode == 0
    out3 = read_output(run / "assess")
    assert out3["kept"].to_list() == (out["quality_score"] >= q_cut).to_list()

    dropped = out3.filter(~pl.col("kept"))[R.INSTRUCTION_ID][0]
    explained = dialengine("explain", str(run), dropped[:10], plugins=PLUGINS)
    assert explained.returncode == 0, explained.stderr
    assert "dropped at assess: quality_score" in explained.stdout and "input_complexity" in explained.stdout
    as_json = json.loads(dialengine("explain", str(spec), dropped, "--json", plugins=PLUGINS).stdout)
    entry = next(s for s in as_json["stages"] if s["stage"] == "assess")
    assert entry["kept"] is False and entry["metrics"]["prompt_complexity"]["weight"] == 1.0
    missing = dialengine("explain", str(run), "nosuchrow", plugins=PLUGINS)
    assert missing.returncode == 2 and "no row 'nosuchrow'" in missing.stderr

    # re-weighting moves the composite: prompt complexity alone decides the order
    spec = _spec(write_spec, w_input=0.0)
    assert dialengine("apply", str(spec), "--until", "assess", plugins=PLUGINS).returncode == 0
    out4 = read_output(run / "assess")
    assert out4["quality_score"].to_list() != pytest.approx(out["quality_score"].to_list())


def test_bad_metric_params_point_at_the_spec_line(write_spec):
    spec = write_spec('\n[quality.metrics.data_redundancy]\nparams = { treshold = 0.9 }\n', name="q")
    result = dialengine("validate", str(spec), plugins=PLUGINS)
    assert result.returncode == 2
    assert "treshold" in result.stderr and "threshold" in result.stderr and "spec.toml:" in result.stderr
    unknown = write_spec('\n[quality.metrics.data_redundnacy]\nweight = 1\n', name="q")
    result = dialengine("validate", str(unknown), plugins=PLUGINS)
    assert result.returncode == 2 and "did you mean 'data_redundancy'" in result.stderr


def test_verify_stage_applies_label_metrics_and_recombines(write_spec, tmp_path):
    spec_path = _spec(write_spec, min_score=0.0)
    spec_path.write_text(spec_path.read_text() + "\n[quality.metrics.label_quality]\nweight = 2.0\n")
    registry = build_registry()
    spec = load_spec(spec_path, registry)
    run = tmp_path / "runs" / "q"
    assert dialengine("apply", str(spec_path), "--until", "assess", plugins=PLUGINS).returncode == 0
    assessed = read_output(run / "assess").filter(pl.col("kept")).head(6)
    responses = ["", "I cannot help with that request.", "The customer wants a bigger flat and", None, "A short, fine summary.",
                 "The customer needs a flat."]
    labelled = assessed.with_columns(pl.Series(R.RESPONSE, responses, dtype=pl.String),
                                     pl.lit(None, dtype=pl.String).alias(R.OUTPUT_SCHEMA))
    (run / "label").mkdir(parents=True)
    write_partition(run / "label", 0, labelled)
    ctx = StageContext(spec=spec, registry=registry, run_dir=run, stage="verify", input_stage="label",
                       log=logging.getLogger("test"))
    out = VerifyStage().run(ctx)
    assert out["kept"].to_list() == [False, False, False, False, True, True]
    assert out["reasons"].to_list()[1] == ["label_quality: refusal: the response declines the task"]
    assert out["reasons"].to_list()[2] == ["label_quality: truncated: ends mid-sentence"]
    assert out["score_label_quality"].to_list() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    # the composite now includes the label dimension next to the instruction ones
    assert set(out.columns) >= {"norm_label_quality", "norm_prompt_complexity"}
    assert out["quality_score"].to_list() != pytest.approx(assessed["quality_score"].to_list())
    assert (run / "verify" / "quality_summary.json").exists()
    assert ctx.stats["quality"]["dropped_here"] == 4


PARTITIONED_TOML = """
[quality]
min_score = 0.2

[quality.metrics.prompt_complexity]
normalize = "minmax"

[quality.metrics.input_complexity]
normalize = "z"
min = 0.3

[quality.metrics.data_richness]
normalize = "rank"
params = {{ embeddings = "{embeddings}" }}

[quality.metrics.data_redundancy]
normalize = "rank"
weight = 0.5
params = {{ keep = "score_prompt_complexity", group_by = [] }}
"""


@pytest.mark.parametrize("embeddings", ["off", "on"])
def test_partitioned_assess_gives_the_whole_pool_rows_and_summary(write_spec, tmp_path, embeddings):
    """The assess stage scores 7-row partitions (row-local metrics per partition, richness from
    merged n-gram counts or, with embeddings, over the pool; the min-max/z/rank statistics over
    the pool) and must give exactly the rows and the summary of scoring the whole pool at once,
    rows already out included."""
    from dialinsight_engine.metrics import embeddings as embedding_support

    if embeddings == "on" and embedding_support.available():
        pytest.skip(f"embeddings: {embedding_support.available()} (the `embed` extra)")
    from dialinsight_engine.executors.driver import write_frames
    from dialinsight_engine.executors.local import LocalExecutor
    from dialinsight_engine.metrics.partitioned import SUMMARY
    from dialinsight_engine.run.dataset import output_hash
    from dialinsight_engine.stages.assess import AssessStage

    spec = load_spec(write_spec(PARTITIONED_TOML.format(embeddings=embeddings), name="p"))
    registry = build_registry()
    rows = _rows(40)
    rows = rows.with_columns(**{R.KEPT: pl.int_range(rows.height) % 9 != 0})
    rows = pl.concat([rows, rows.slice(3, 4).with_columns(pl.col(R.INSTRUCTION_ID) + "copy")])  # near duplicates
    # richness compares within a task: two tasks, and one task of a single row (novelty 1.0)
    tasks = ["t" if i % 2 else "u" for i in range(rows.height - 1)] + ["solo"]
    rows = rows.with_columns(pl.Series(R.TASK, tasks))
    run = tmp_path / "run"
    ctx = assess_in_partitions(spec, registry, rows, run, LocalExecutor())
    got = read_output(run / "assess")
    whole = assess_phase(rows, spec.quality, registry, MetricContext(spec=spec), "instruction")

    # the whole-pool rows as the runner wrote them before: cut into partitions of 7 rows
    write_frames(tmp_path / "whole", [whole.frame], 7, "assess")
    assert got.equals(whole.frame)
    assert output_hash(run / "assess") == output_hash(tmp_path / "whole")
    assert 0 < got[R.KEPT].sum() < got.height - 5  # thresholds and flags decided something
    assert got["flag_data_redundancy"].drop_nulls().len() >= 4
    assert len(list((run / "assess" / "data").glob("part-*.parquet"))) == len(list((run / "review" / "data").glob("part-*.parquet"))) == 6
    summary = json.loads((run / "assess" / SUMMARY).read_text())
    for entry in (*summary["metrics"].values(), *whole.summary["metrics"].values()):
        entry.pop("seconds", None)
    want = json.loads(json.dumps(whole.summary))
    # the mean is summed partition by partition: equal up to the order of the additions
    for name, entry in want["metrics"].items():
        assert summary["metrics"][name].pop("mean") == pytest.approx(entry.pop("mean"), rel=1e-12)
    assert summary == want
    assert ctx.stats["quality"]["rows_in_play"] == int(rows[R.KEPT].sum())
    # mapped on the executor: the Rust text metrics, and richness from the merged n-gram counts
    # (with embeddings, richness needs every vector: the driver scores it over the pool)
    local = ["prompt_complexity", "input_complexity"] + (["data_richness"] if embeddings == "off" else [])
    assert ctx.stats["row_metrics"]["metrics"] == local
    assert got.filter(pl.col(R.TASK) == "solo")["score_data_richness"].to_list() == [1.0]
    # the driver's memory after each step of prepare and after the summary (Linux /proc)
    memory = ctx.stats["driver_memory_mb"]
    assert list(memory) == ["start", "aggregates merged", "row metrics", "pool-wide metrics", "normalisation",
                            "summary"]
    assert all(m["peak"] >= memory["start"]["peak"] > 0 and m["now"] >= m["anon"] > 0 for m in memory.values())
    assert not (run / "assess" / ".phase").exists()  # the scratch folder is gone
    # outside the runner (a notebook, a test): the same rows in one frame
    alone = StageContext(spec=spec, registry=registry, run_dir=run, stage="assess", input_stage="review",
                         log=logging.getLogger("test"))
    assert AssessStage().run(alone).equals(whole.frame)


def test_richness_merges_its_partial_counts_in_passes_with_the_same_result(monkeypatch):
    """The merge of the partitions' n-gram counts runs in passes over hash shards of the
    n-grams (its memory is one shard's distinct n-grams): any number of passes gives the
    document-frequency table, distinct-n and the rest of one pass."""
    from dialinsight_engine.metrics import data_richness

    metric = build_registry().get("metric", "data_richness").from_params({"embeddings": "off"})
    rows = _rows(40)
    rows = rows.with_columns(pl.Series(R.TASK, ["t" if i % 3 else "u" for i in range(rows.height)]))
    rows = pl.concat([rows, rows.slice(5, 6)])  # n-grams shared across partitions
    partials = [metric.partial(rows.slice(start, 7), MetricContext.standalone()) for start in range(0, rows.height, 7)]
    one = metric.merge(partials)
    monkeypatch.setattr(data_richness, "MERGE_PASS_ROWS", 37)
    many = metric.merge(partials)
    assert sum(p.height for p in partials) > 37 * 10  # over 10 passes
    ordered = ["group", "gram"]
    assert many["doc_freq"].sort(ordered).equals(one["doc_freq"].sort(ordered))
    assert one["doc_freq"]["df"].min() == 2 and one["doc_freq"].height > 50
    assert {k: v for k, v in many.items() if k != "doc_freq"} == {k: v for k, v in one.items() if k != "doc_freq"}
    assert 0 < one["distinct_2"] < 1

def test_richness_spills_a_large_table_in_files_the_scoring_reads_one_at_a_time(tmp_path, monkeypatch):
    """A document-frequency table over DOC_FREQ_FILE_ROWS rows goes to the scoring tasks as
    files (`spill`), which a task joins one at a time: the same novelty as the table in
    memory; a smaller one is sent as it is."""
    from dialinsight_engine.metrics import data_richness

    metric = build_registry().get("metric", "data_richness").from_params({"embeddings": "off"})
    rows = _rows(40)
    rows = rows.with_columns(pl.Series(R.TASK, ["t" if i % 3 else "u" for i in range(rows.height)]))
    partials = [metric.partial(rows.slice(start, 7), MetricContext.standalone()) for start in range(0, rows.height, 7)]
    merged = metric.merge(partials)
    assert metric.spill(merged, tmp_path) is merged and list(tmp_path.iterdir()) == []
    metric.pool_state = merged
    in_memory = metric.score(rows, MetricContext.standalone())
    monkeypatch.setattr(data_richness, "DOC_FREQ_FILE_ROWS", 7)
    spilled = metric.spill(merged, tmp_path)
    files = sorted(tmp_path.iterdir())
    assert spilled["doc_freq"] == [str(f) for f in files] and len(files) == -(-merged["doc_freq"].height // 7) > 5
    assert pl.concat([pl.read_parquet(f) for f in files]).equals(merged["doc_freq"])
    metric.pool_state = spilled
    assert metric.score(rows, MetricContext.standalone()).equals(in_memory)
    assert in_memory["novelty"].n_unique() > 10


def test_richness_parts_are_sorted_by_a_stable_shard_in_row_groups_a_pass_can_skip(tmp_path):
    """Each part is sorted by its n-grams' shard (BLAKE2b, the same on every node and Polars
    build) and written in row groups with statistics, so that a pass of the merge, which
    reads a range of shards, skips the other groups."""
    import hashlib

    import pyarrow.parquet as pq

    from dialinsight_engine.metrics.data_richness import MERGE_SHARDS, gram_shards
    from dialinsight_engine.metrics.partitioned import PoolPartial
    from dialinsight_engine.run import atomic

    digest = hashlib.blake2b(b"two bedroom", digest_size=4).digest()
    assert gram_shards(pl.Series(["two bedroom", None])).to_list() == [int.from_bytes(digest, "little") % MERGE_SHARDS, 0]
    metric = build_registry().get("metric", "data_richness").from_params({"embeddings": "off"})
    part = metric.partial(_rows(120), MetricContext.standalone())
    assert part["shard"].is_sorted() and part["shard"].n_unique() > 100
    path = tmp_path / "part.parquet"
    path.write_bytes(atomic.parquet_bytes(part, PoolPartial.row_group_rows // 16))
    meta = pq.ParquetFile(path).metadata
    column = meta.schema.names.index("shard")
    ranges = [(meta.row_group(g).column(column).statistics.min, meta.row_group(g).column(column).statistics.max)
              for g in range(meta.num_row_groups)]
    assert len(ranges) > 2 and all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def _held_and_own(table: pl.DataFrame) -> tuple[int, int]:
    held = table.to_arrow(compat_level=pl.CompatLevel.newest()).get_total_buffer_size()
    return held, sum(table[c].str.len_bytes().sum() for c in ("group", "gram")) + 40 * table.height


def test_the_merged_ngram_table_holds_only_its_own_bytes(monkeypatch):
    """The table keeps the n-grams of two rows or more; filtered out of each pass's counts, its
    string columns shared the buffers of every n-gram counted (Polars' string views): ~60 MB of
    driver heap for a 5 MB table at 10^6 rows. It holds its own rows' bytes now, and so does
    each pass's part as it is kept (kept as they came, they held ~3 MB a pass until the end:
    the merge's peak grew with the number of passes, i.e. with the pool)."""
    from dialinsight_engine.metrics import data_richness

    metric = build_registry().get("metric", "data_richness").from_params({"embeddings": "off"})
    texts = [f"Summarise.\nCustomer: reference-{i:06d} apartment-with-balcony nearby-station-{i % 50:03d}"
             for i in range(3000)]  # a long tail of one-row n-grams, a few shared
    rows = pl.DataFrame({R.PROMPT: texts, R.TASK: ["t"] * len(texts), R.SCENE: ["s"] * len(texts)})
    partials = [metric.partial(rows.slice(start, 500), MetricContext.standalone()) for start in range(0, 3000, 500)]
    table = metric.merge(partials)["doc_freq"]
    assert 0 < table.height < 3000 and table["df"].min() >= 2
    held, own = _held_and_own(table)
    assert held < 2 * own, f"the table holds {held} bytes for {own} bytes of its own"

    kept: list[pl.DataFrame] = []
    copy = data_richness.own_buffers
    monkeypatch.setattr(data_richness, "own_buffers", lambda frame: kept.append(copy(frame)) or kept[-1])
    monkeypatch.setattr(data_richness, "MERGE_PASS_ROWS", sum(p.height for p in partials) // 5)
    assert metric.merge(partials)["doc_freq"].sort("group", "gram").equals(table.sort("group", "gram"))
    assert len(kept) >= 5 and sum(part.height for part in kept) == table.height  # every pass's part, copied
    for part in kept:
        held, own = _held_and_own(part)
        assert held < 2 * own + 4096, f"a pass's part holds {held} bytes for {own} bytes of its own"


@pytest.mark.parametrize("method", ["minmax", "z", "rank", "none"])
def test_pool_statistics_normalise_a_partition_as_inside_the_whole(method):
    from dialinsight_engine.metrics.combine import normalise, pool_stats

    values = pl.Series("s", [0.5, None, 0.25, 0.5, 1.0, 0.125, None, 0.5, 0.75, 0.25, 3.0], dtype=pl.Float64)
    whole = pl.select(normalise(pl.lit(values), method)).to_series()
    stats = pool_stats(values, method)
    parts = [pl.select(normalise(pl.lit(values.slice(s, 4)), method, stats)).to_series() for s in (0, 4, 8)]
    assert pl.concat(parts).to_list() == whole.to_list() and whole.null_count() == 2
    constant = pl.Series("s", [0.5, 0.5, None], dtype=pl.Float64)  # no spread: the documented fallbacks
    assert pl.select(normalise(pl.lit(constant.slice(0, 1)), method, pool_stats(constant, method))).to_series().to_list() \
        == pl.select(normalise(pl.lit(constant), method)).to_series().to_list()[:1]


@pytest.mark.parametrize("method", ["minmax", "z", "rank", "none"])
def test_pool_statistics_merged_from_partitions_are_the_whole_pools(method):
    """The statistics `_normalisation` builds a partition at a time (min-max: each part's
    least and greatest value, no part kept) normalise every value as the whole column's do,
    with parts empty, all null, or holding the extremes."""
    from dialinsight_engine.metrics.combine import merged_pool_stats, normalise, pool_stats

    values = pl.Series("s", [0.5, None, 0.25, 0.5, 1.0, 0.125, None, 0.5, 0.75, 0.25, 3.0, -2.0], dtype=pl.Float64)
    parts = [values.slice(0, 0), values.slice(0, 1), values.slice(1, 1), values.slice(2, 7), values.slice(9, 3)]
    merged, whole = merged_pool_stats(iter(parts), method), pool_stats(values, method)
    assert (merged.lo, merged.hi, merged.count) == (whole.lo, whole.hi, whole.count)
    assert pl.select(normalise(pl.lit(values), method, merged)).to_series().to_list() == \
        pl.select(normalise(pl.lit(values), method)).to_series().to_list()
    assert merged_pool_stats(iter([]), method).count == 0


def test_the_pools_language_sample_is_read_a_partition_at_a_time(tmp_path):
    """The texts `pool_languages` detects on, counted then gathered a partition at a time,
    are the ones `fast.detect_language` samples from the whole column, and from its distinct
    texts for a metric that detects on those (texts repeated within and across partitions)."""
    from dialinsight_engine import fast
    from dialinsight_engine.metrics.partitioned import _language_sample

    class Texts(Metric):
        name = "texts"

        def __init__(self, unique: bool) -> None:
            self.language_unique = unique

        def language_texts(self, df: pl.DataFrame) -> pl.Series:
            return df[R.PROMPT]

        def score(self, df: pl.DataFrame, ctx: MetricContext) -> pl.DataFrame:
            raise AssertionError("not scored here")

    paths, frames = [], []
    for part, rows in enumerate((1500, 0, 900, 1200)):
        frame = pl.DataFrame({R.PROMPT: [f"text {(part * 7 + i * 3) % 1700}" for i in range(rows)],
                              R.KEPT: [i % 5 != 0 for i in range(rows)]}, schema={R.PROMPT: pl.String, R.KEPT: pl.Boolean})
        write_partition(tmp_path, part, frame)
        paths.append(tmp_path / part_name(part))
        frames.append(frame.filter(R.KEPT))  # the rows in play
    column = pl.concat(frames)[R.PROMPT]
    distinct = column.filter(column.hash(seed=0).is_first_distinct())
    assert 1000 < distinct.len() < column.len()
    for unique, texts in ((False, column), (True, distinct)):
        expected = texts.gather(list(fast.detection_rows(texts.len()))).to_list()
        assert _language_sample(Texts(unique), paths) == expected


def test_the_seen_texts_tell_first_occurrences_through_their_merges():
    """`_SeenTexts` over 80 partitions of repeated texts (its sorted runs merged as they grow)
    marks exactly each text's first occurrence in the pool, as `is_first_distinct` does."""
    from dialinsight_engine.metrics.partitioned import _SeenTexts

    rng = random.Random(8)
    parts = [pl.Series([f"t{rng.randrange(3000)}" for _ in range(rng.randrange(0, 120))], dtype=pl.String)
             for _ in range(80)]
    seen = _SeenTexts()
    firsts = np.concatenate([seen.add(part) for part in parts])
    pool = pl.concat(parts)
    assert firsts.tolist() == pool.hash(seed=0).is_first_distinct().to_list()
    assert sum(len(first) for first, in seen.keys.runs) == pool.n_unique() and len(seen.keys.runs) < 10


@pytest.mark.parametrize("method", ["minmax", "z", "rank"])
def test_a_partition_of_any_size_gets_the_whole_pools_bits(method):
    """Polars divides a column of more than one row by a scalar through its reciprocal, so a
    partition normalised by a true division differed from the whole pool in the last bit (a
    one-row partition of verify's did); compared bit for bit over seeded awkward values."""
    import random

    from dialinsight_engine.metrics.combine import normalise, pool_stats

    rng = random.Random(7)
    values = pl.Series("s", [0.20375000000000004, 0.5518877746741155, 0.25309583333333335]
                       + [rng.random() * rng.choice((1, 3, 7, 49)) for _ in range(200)], dtype=pl.Float64)
    whole = pl.select(normalise(pl.lit(values), method)).to_series()
    stats = pool_stats(values, method)
    for size in (1, 2, 3, 7, 64):
        parts = [pl.select(normalise(pl.lit(values.slice(s, size)), method, stats)).to_series()
                 for s in range(0, values.len(), size)]
        assert (pl.concat(parts) == whole).all(), size


def test_pool_partitions_read_the_rows_in_play_where_they_lie(tmp_path):
    """What a pool-wide metric reads from the partitions (under Ray, for a large pool) is the
    row the gathered frame would hold at that position, and the language sample is the one
    `fast.detect_language` takes from the gathered column."""
    from dialinsight_engine import fast
    from dialinsight_engine.metrics.partitioned import PoolPartitions

    paths, frames = [], []
    for part, rows in enumerate((700, 0, 900, 450)):
        frame = pl.DataFrame({R.PROMPT: [f"p{part} row {i}" for i in range(rows)],
                              R.KEPT: [i % 3 != 1 for i in range(rows)]}, schema={R.PROMPT: pl.String, R.KEPT: pl.Boolean})
        write_partition(tmp_path, part, frame)
        paths.append(str(tmp_path / part_name(part)))
        frames.append(frame.filter(pl.col(R.KEPT)))
    gathered = pl.concat(frames)[R.PROMPT]
    source = PoolPartitions(tuple(paths), tuple(f.height for f in frames), frozenset({R.PROMPT}))
    assert source.offsets[-1] == gathered.len() == 1367
    rows = [0, 1, 466, 467, 1000, 1366]
    assert source.take(R.PROMPT, rows).to_list() == gathered.gather(rows).to_list()
    assert source.language_sample(R.PROMPT).to_list() == gathered.gather_every(1367 // fast.LANGUAGE_SAMPLE_ROWS).head(
        fast.LANGUAGE_SAMPLE_ROWS).to_list()
    small = PoolPartitions(tuple(paths[:1]), (frames[0].height,), frozenset({R.PROMPT}))
    assert small.language_sample(R.PROMPT).to_list() == frames[0][R.PROMPT].to_list()  # all 467 rows


def test_partition_rows_describe_without_reading_and_read_the_rows_in_play(tmp_path):
    """What a Ray near-duplicate task gets instead of the rows: the partition's schema and row
    count come from the file (the rows unread), and `table()` reads the rows in play at the
    given positions, with the caller's columns appended."""
    import numpy as np
    import pyarrow as pa

    from dialinsight_engine.metrics.partitioned import PoolPartitions

    frame = pl.DataFrame({R.PROMPT: [f"row {i}" for i in range(10)], R.TASK: ["t"] * 10,
                          R.TRUTH: [f'{{"rooms": {i}}}' for i in range(10)], R.KEPT: [i != 3 for i in range(10)]})
    write_partition(tmp_path, 0, frame)
    assert pl.read_parquet_schema(tmp_path / part_name(0))[R.TRUTH] != pl.String  # stored as a struct
    source = PoolPartitions((str(tmp_path / part_name(0)),), (9,), frozenset({R.PROMPT}))
    score = pa.array([0.5, 0.25, 0.125])
    rows = source.rows(0, [R.PROMPT], np.array([0, 3, 8], dtype=np.int32), {"score": score})
    assert rows.num_rows == 3
    assert rows.schema() == {R.PROMPT: pl.String, "score": pl.Float64}
    table = rows.table()
    assert table.column_names == [R.PROMPT, "score"]
    assert table.column(R.PROMPT).to_pylist() == ["row 0", "row 4", "row 9"]  # row 3 is out
    assert table.column("score").to_pylist() == [0.5, 0.25, 0.125]
    whole = source.rows(0, [R.PROMPT], None, {})
    assert whole.num_rows == 9 and whole.table().num_rows == 9
    # a JSON column stored as a struct is described as the text `table()` reads
    with_truth = source.rows(0, [R.PROMPT, R.TRUTH], None, {})
    assert with_truth.schema() == {R.PROMPT: pl.String, R.TRUTH: pl.String}
    assert dict(pl.from_arrow(with_truth.table()).schema) == with_truth.schema()


def test_the_language_sample_does_not_keep_the_partitions_text_alive(tmp_path):
    """A string column gathered from a partition shares that partition's buffers (Polars'
    string views): a sample of 1,000 rows from 100 partitions of 10^6 prompts kept every
    partition's text on the driver (+340 MB). The sample holds its own rows' bytes only."""
    from dialinsight_engine import fast
    from dialinsight_engine.metrics.partitioned import PoolPartitions

    paths = []
    for part in range(20):
        texts = [f"partition {part} row {i} " + "lorem ipsum dolor " * 10 for i in range(1000)]
        write_partition(tmp_path, part, pl.DataFrame({R.PROMPT: texts}))
        paths.append(str(tmp_path / part_name(part)))
    source = PoolPartitions(tuple(paths), (1000,) * 20, frozenset({R.PROMPT}))
    sample = source.language_sample(R.PROMPT)
    assert sample.len() == fast.LANGUAGE_SAMPLE_ROWS < 20_000
    held = sample.to_arrow(compat_level=pl.CompatLevel.newest()).get_total_buffer_size()
    own = sample.str.len_bytes().sum()
    assert held < 2 * own + 64_000, f"the sample holds {held} bytes for {own} bytes of text"


class ReadsTaskText(Metric):
    """A pool-wide plugin that reads the task's text (so it must get a String column)."""

    name = "reads_task"

    def pool_columns(self):
        return {R.TASK}

    def score(self, df, ctx):
        return pl.DataFrame({"score": df[R.TASK].str.len_chars().cast(pl.Float64)})


def test_group_keys_are_gathered_as_codes_only_where_no_metric_reads_their_text():
    """The pool-wide step gathers a column that every metric reading it only groups by as
    Categorical codes (4 bytes a row); a metric that reads it as text, or reads every column,
    gets the strings; a text column that is also a group key stays text."""
    from dialinsight_engine.metrics.data_redundancy import DataRedundancy
    from dialinsight_engine.metrics.partitioned import _as_codes, _key_columns

    columns = [R.PROMPT, R.TASK, R.SCENE, R.INSTRUCTION_ID]
    grouped = DataRedundancy.from_params({"group_by": [R.TASK, R.SCENE]})
    assert _key_columns({"r": grouped}, columns) == {R.TASK, R.SCENE}
    assert _key_columns({"r": grouped, "t": ReadsTaskText()}, columns) == {R.SCENE}
    assert _key_columns({"r": grouped, "f": Flagger()}, columns) == set()  # reads every column
    assert _key_columns({"r": grouped}, None) == set()
    by_text = DataRedundancy.from_params({"group_by": [R.PROMPT]})
    assert _key_columns({"r": by_text}, columns) == set()

    frame = pl.DataFrame({R.TASK: ["b", "a", "b"], R.SCENE: ["s", "s", "s"], "n": [1, 2, 3]})
    coded = pl.concat([_as_codes(frame, {R.TASK, R.SCENE, "n", "absent"}), _as_codes(frame.head(1), {R.TASK, R.SCENE})])
    assert coded.schema[R.TASK] == pl.Categorical and coded.schema["n"] == pl.Int64
    assert coded[R.TASK].to_list() == ["b", "a", "b", "b"] and coded[R.TASK].n_unique() == 2
