"""Stage `label`: the sampled instructions' prompts answered by the label backend.

Rows with an `output_schema` are constrained to it (and validated; invalid answers are
retried by the client). Every row keeps its answer's token counts, finish reason, attempts
and error; a row whose answer failed is kept with `kept=False` and the reason. Every schema is
checked before the first request; when more than `[labels] max_failure_share` of the requests
fail, the stage fails (exit 1) naming how many and the first reasons. Wall-clock latency and
whether the answer came from the cache depend on the run, not on the input, so they go to the
side file `timings.parquet` (by row): the output data stays byte-identical for the same input,
spec and seed, and the resume logic can trust its hash. With `samples = k` > 1 each prompt is
labelled k times (the first at `temperature`, the others at `sample_temperature` with their own
seeds) and `label_samples` holds all k answers: verify keeps their consensus.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..backends.base import GenerationRequest
from ..backends.client import check_failure_share
from ..backends.redact import redact_value
from ..backends.schema_check import schema_problem
from ..errors import SpecError
from ..run.stage import ORDER, Stage

if TYPE_CHECKING:
    from ..run.context import StageContext

LABEL_COLUMNS = {
    R.RESPONSE: pl.String, "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64,
    "finish_reason": pl.String, "attempts": pl.Int64, "label_error": pl.String, "label_model": pl.String,
}
SAMPLES = "label_samples"  # with `[labels] samples` > 1: every label of the row, the first is `response`
TIMINGS = "timings.parquet"
TIMING_COLUMNS = {"row": pl.Int64, R.INSTRUCTION_ID: pl.String, "latency_s": pl.Float64, "cached": pl.Boolean}


def bound_strings(schema: Any, limit: int | None) -> Any:
    """A copy of a JSON schema whose open strings get `maxLength: limit` (a small model under a
    grammar can otherwise repeat inside one string until max_tokens)."""
    if not limit:
        return schema
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            types = node.get("type")
            is_string = types == "string" or (isinstance(types, list) and "string" in types)
            if is_string and "maxLength" not in node and "enum" not in node and "const" not in node:
                node["maxLength"] = limit
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


class LabelStage(Stage):
    name = "label"
    order = ORDER["label"]
    config_keys = ("labels",)
    version = "2"  # 2: truth/meta/output_schema stored as structs where they fit (run/dataset.py)
    description = "answer the sampled prompts with the label backend (JSON schema where the task has one)"

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        name = ctx.spec.labels.backend
        bspec = ctx.spec.backends.get(name)
        plugin = bspec.plugin if bspec else "llamacpp"
        return {"backend": redact_value(ctx.spec.section(f"backends.{name}")),
                "plugins": {f"backend:{plugin}": ctx.registry.version_of("backend", plugin)}}

    def run(self, ctx: StageContext) -> pl.DataFrame:
        cfg = ctx.spec.labels
        df = R.with_row_status(R.kept_rows(ctx.input))
        rows = df.to_dicts()
        if cfg.use_schema:
            _check_schemas(ctx, rows)
        requests = []
        for row in rows:
            schema = None
            if cfg.use_schema and row.get(R.OUTPUT_SCHEMA):
                schema = bound_strings(json.loads(row[R.OUTPUT_SCHEMA]), cfg.max_string_length)
            for sample in range(cfg.samples):  # the first at `temperature`, the others sampled
                requests.append(GenerationRequest(
                    prompt=row[R.PROMPT], system=cfg.system_prompt or None, max_tokens=cfg.max_tokens,
                    temperature=cfg.temperature if sample == 0 else cfg.sample_temperature,
                    json_schema=schema, seed=ctx.spec.project.seed + sample,
                ))
        client = ctx.backend(cfg.backend)
        with ctx.progress("labelling", len(requests)) as advance:
            every = client.generate(requests, progress=advance) if requests else []
        results = every[::cfg.samples]
        if cfg.samples > 1:
            for i, row in enumerate(rows):
                row[SAMPLES] = [r.text if r.ok else None for r in every[i * cfg.samples:(i + 1) * cfg.samples]]
        failed = truncated = 0
        timings = []
        for i, (row, res) in enumerate(zip(rows, results, strict=True)):
            row.update({
                R.RESPONSE: res.text if res.ok else None, "prompt_tokens": res.prompt_tokens,
                "completion_tokens": res.completion_tokens, "finish_reason": res.finish_reason,
                "attempts": res.attempts, "label_error": res.error, "label_model": client.model_id,
            })
            timings.append({"row": i, R.INSTRUCTION_ID: row.get(R.INSTRUCTION_ID),
                            "latency_s": round(res.latency_s, 4), "cached": res.cached})
            if not res.ok:
                failed += 1
                row[R.KEPT] = False
                row[R.REASONS] = [*row[R.REASONS], f"label_failed:{res.error}"]
            elif cfg.drop_truncated and res.finish_reason == "length":
                truncated += 1
                row[R.KEPT] = False
                row[R.REASONS] = [*row[R.REASONS], "label_truncated"]
        ctx.stats.update(labelled=len(rows) - failed - truncated, failed=failed, truncated=truncated,
                         cached=sum(1 for r in every if r.cached), samples=cfg.samples,
                         latency_s=round(sum(r.latency_s for r in every), 3))
        ctx.write_parquet(TIMINGS, pl.DataFrame(timings, schema=TIMING_COLUMNS))
        check_failure_share(results, cfg.max_failure_share, "label")
        extra = {SAMPLES: pl.List(pl.String)} if cfg.samples > 1 else {}
        return pl.DataFrame(rows, schema={**df.schema, **LABEL_COLUMNS, **extra})


def _check_schemas(ctx: StageContext, rows: list[dict[str, Any]]) -> None:
    """Every distinct output schema is a valid JSON Schema, before a single request is sent."""
    tasks = {task.name: i for i, task in enumerate(ctx.spec.tasks)}
    seen: set[str] = set()
    for row in rows:
        text = row.get(R.OUTPUT_SCHEMA)
        if not text or text in seen:
            continue
        seen.add(text)
        problem = schema_problem(json.loads(text))
        if problem is not None:
            task = row.get(R.TASK)
            key = f"tasks[{tasks[task]}].output_schema" if task in tasks else "output_schema"
            raise SpecError(f"task {task!r}: {problem}", file=ctx.spec.source, key=key,
                            hint="no label request was sent")
