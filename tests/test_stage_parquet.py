"""Stage Parquet as other tools read it: JSON values (`truth`, `meta`, `output_schema`) stored as
Arrow structs where a partition's records agree and as text where they do not, read back
unchanged either way; `messages` as list<struct<role, content>>; metric detail columns named
`NAME__DETAIL`, so SQL needs no quoting (DuckDB when installed, else polars SQL over the table
pyarrow reads)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dialinsight_engine import records as R
from dialinsight_engine.dialogue import conversations
from dialinsight_engine.metrics.data_redundancy import DataRedundancyConfig
from dialinsight_engine.run import dataset

from conftest import dialengine

PLUGINS = "core,quality"  # no generation: no model runs, export takes the seeds
QUALITY = """
[quality.metrics.prompt_complexity]
[quality.metrics.data_redundancy]
params = { keep = "prompt_complexity.words" }

[export]
system_prompt = "You help a letting agent."
"""


def _texts(values: list[object]) -> list[str | None]:
    return [None if v is None else R.json_text(v) for v in values]


def _stored(tmp_path: Path, frame: pl.DataFrame, index: int = 0) -> pa.Schema:
    dataset.write_partition(tmp_path, index, frame)
    return pq.read_schema(tmp_path / dataset.part_name(index))


def test_agreeing_records_are_stored_as_structs_and_read_back_as_written(tmp_path: Path) -> None:
    truth = _texts([{"requirements": {"area": "Hayward", "beds": 3}, "offered": ["A", "B"]},
                    None, {"requirements": {"area": "Albany"}, "offered": []}])
    frame = pl.DataFrame({R.TRUTH: truth, R.META: _texts([{"services": ["Homes"]}] * 3), "n": [1, 2, 3]})
    schema = _stored(tmp_path, frame)
    assert pa.types.is_struct(schema.field(R.TRUTH).type) and pa.types.is_struct(schema.field(R.META).type)
    requirements = schema.field(R.TRUTH).type.field("requirements").type
    assert requirements.field("beds").type == pa.int64()  # a number stays a number
    # fields in name order whatever order inference met them in: the same rows, the same bytes
    assert [requirements.field(i).name for i in range(requirements.num_fields)] == ["area", "beds"]
    back = dataset.read_output(tmp_path)
    assert back.equals(frame), "the text every stage reads is what was written, absent keys absent"
    assert dataset.content_hash([back]) == dataset.content_hash([frame]), "the storage form leaves no trace"
    assert json.loads(back[R.TRUTH][2]) == {"requirements": {"area": "Albany"}, "offered": []}


def test_partitioned_assess_reads_its_input_json_columns_as_text(tmp_path: Path) -> None:
    """Assess's per-partition maps see `truth` as the text the whole-pool path sees, not the struct
    the partition stores."""
    from dialinsight_engine.metrics.partitioned import _in_play

    truth = _texts([{"requirements": {"area": "Hayward"}}, {"requirements": {"area": "Albany"}}])
    frame = pl.DataFrame({R.TRUTH: truth, R.KEPT: [True, False]})
    assert pa.types.is_struct(_stored(tmp_path, frame).field(R.TRUTH).type)
    rows = _in_play(tmp_path / dataset.part_name(0))
    assert rows[R.TRUTH].to_list() == truth[:1]
    assert _in_play(tmp_path / dataset.part_name(0), [R.TRUTH])[R.TRUTH].to_list() == truth[:1]


@pytest.mark.parametrize("values", [
    [{"a": 1}, {"a": "one"}],  # the same key holds a number here, a string there
    [{"a": 1}, [1, 2]],  # an object here, a list there
    [{"a": {"b": 1}}, {"a": 1.5}],
    [{}, {}],  # an empty object has no struct
])
def test_records_that_disagree_keep_their_text(tmp_path: Path, values: list[object]) -> None:
    frame = pl.DataFrame({R.TRUTH: _texts(values)})
    assert _stored(tmp_path, frame).field(R.TRUTH).type in (pa.string(), pa.large_string())
    assert dataset.read_output(tmp_path).equals(frame)


def test_output_schema_with_a_null_keeps_its_text_and_partitions_may_differ(tmp_path: Path) -> None:
    plain = json.dumps({"properties": {"area": {"type": "string"}}, "type": "object"}, sort_keys=True)
    with_null = json.dumps({"properties": {"area": {"default": None, "type": "string"}}, "type": "object"},
                           sort_keys=True)
    first = pl.DataFrame({R.OUTPUT_SCHEMA: [plain, None]})
    second = pl.DataFrame({R.OUTPUT_SCHEMA: [with_null, plain]})
    assert pa.types.is_struct(_stored(tmp_path, first, 0).field(R.OUTPUT_SCHEMA).type)
    assert _stored(tmp_path, second, 1).field(R.OUTPUT_SCHEMA).type in (pa.string(), pa.large_string())
    both = pl.concat([first, second])
    assert dataset.read_output(tmp_path).equals(both), "an explicit null is not lost"
    assert dataset.content_hash(dataset.iter_output(tmp_path)) == dataset.content_hash([both])


def test_ingest_drops_null_keys_so_truth_fits_a_struct() -> None:
    assert R.json_text({"visit": None, "requirements": {"area": "X", "beds": None}, "offered": [None]}) \
        == '{"offered": [null], "requirements": {"area": "X"}}'


def test_dotted_metric_column_in_a_spec_maps_to_the_written_name() -> None:
    assert DataRedundancyConfig(keep="prompt_complexity.words").keep == "prompt_complexity__words"
    assert DataRedundancyConfig(keep="longest").keep == "longest"


def _sql(path: Path, query: str) -> list[tuple]:
    """`query` over the table `t` (the Parquet file at `path`): DuckDB reads the file itself
    when installed; otherwise polars SQL over the table as pyarrow reads it."""
    try:
        import duckdb
    except ImportError:
        return pl.SQLContext(t=pl.from_arrow(pq.read_table(path))).execute(query).collect().rows()
    return duckdb.sql(query.replace(" t", f" read_parquet('{path.as_posix()}')", 1)).fetchall()


def test_assess_and_export_parquet_query_without_quoting(write_spec, tmp_path: Path) -> None:
    spec = write_spec(QUALITY, name="pq")
    result = dialengine("apply", str(spec), "--until", "export", plugins=PLUGINS)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "pq"

    assess = dataset.partition_files(run / "assess")[0]
    columns = pq.read_schema(assess).names
    assert "prompt_complexity__words" in columns and not [c for c in columns if "." in c]
    kept = dataset.read_output(run / "assess").filter(pl.col(R.KEPT))
    rows = _sql(assess, "SELECT prompt_complexity__words, truth.requirements.area FROM t "
                        "WHERE prompt_complexity__words > 0 AND kept")
    assert len(rows) == kept.filter(pl.col("prompt_complexity__words") > 0).height > 0
    areas = {json.loads(t)["requirements"].get("area") for t in kept[R.TRUTH].to_list()}
    assert {area for _, area in rows} <= areas and any(area for _, area in rows)

    export = dataset.partition_files(run / "export")[0]
    schema = pq.read_schema(export)
    messages = schema.field(R.MESSAGES).type
    assert pa.types.is_large_list(messages) and pa.types.is_struct(messages.value_type)  # polars writes large lists
    assert {messages.value_type.field(i).name for i in range(messages.value_type.num_fields)} == {"role", "content"}
    first = pq.read_table(export).column(R.MESSAGES)[0].as_py()
    assert [m["role"] for m in first] == ["system", "user"] and first[0]["content"] == "You help a letting agent."
    assert _sql(export, "SELECT count(*) FROM t WHERE truth.requirements.area IS NOT NULL")[0][0] > 0
    # what the train stage and the study train on: the messages as plain dicts
    exported = dataset.read_output(run / "export")
    assert conversations(exported, "ignored: the rows carry their messages")[0] == first

    # `explain` finds the row across partitions and lists the metric's details by their short name
    row_id = kept[R.INSTRUCTION_ID][0]
    explained = dialengine("explain", str(run), row_id, "--json", plugins=PLUGINS)
    assert explained.returncode == 0, explained.stderr
    assess_entry = next(s for s in json.loads(explained.stdout)["stages"] if s["stage"] == "assess")
    words = kept.filter(pl.col(R.INSTRUCTION_ID) == row_id)["prompt_complexity__words"][0]
    assert assess_entry["metrics"]["prompt_complexity"]["details"]["words"] == words
