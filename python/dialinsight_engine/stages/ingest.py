"""Stage `ingest`: read every dialogue file of `[data]` into one normalised frame."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..dialogue import render_dialogue, role_aliases
from ..errors import DataError
from ..readers.base import RawRecord, Reader, normalize_record
from ..run.atomic import file_sha256
from ..run.stage import ORDER, Stage
from ..selection import Selection, record_view

if TYPE_CHECKING:
    from ..run.context import StageContext
    from ..spec import Spec


def data_files(spec: Spec) -> list[Path]:
    """Every input file named by `[data] paths` (folders expand to their files, sorted)."""
    files: list[Path] = []
    for i, raw in enumerate(spec.data.paths):
        path = spec.resolve_path(raw)
        if path.is_dir() and not (path / "state.json").exists():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not found:
                raise DataError(f"data folder is empty: {path}", file=spec.source, key=f"data.paths[{i}]")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise DataError(f"data file not found: {path}", file=spec.source, key=f"data.paths[{i}]")
    return files


class IngestStage(Stage):
    name = "ingest"
    order = ORDER["ingest"]
    config_keys = ("data", "roles")
    description = "read dialogues (JSONL, Parquet, datasets folders) into one frame"

    def fingerprint_extra(self, ctx: StageContext) -> dict[str, Any]:
        files = data_files(ctx.spec)
        if ctx.spec.data.exclude_file:  # the ids it lists decide what is read
            files.append(ctx.spec.resolve_path(ctx.spec.data.exclude_file))
        return {"files": {str(p): _hash_path(p) if p.exists() else None for p in files}}

    def _reader_for(self, ctx: StageContext, path: Path) -> Reader:
        data = ctx.spec.data
        if data.format != "auto":
            cls = ctx.registry.get("reader", data.format, where="data.format", file=str(ctx.spec.source))
            return cls(cls.Config.model_validate(data.options))
        for cls in ctx.registry.items.get("reader", {}).values():
            reader = cls()
            if reader.accepts(path):
                return reader
        raise DataError(f"no reader for {path.name!r}: set [data] format", file=ctx.spec.source, key="data.format")

    def run(self, ctx: StageContext) -> pl.DataFrame:
        spec = ctx.spec
        alias = role_aliases(spec)
        rows: list[dict[str, Any]] = []
        skipped: list[str] = []
        too_short = 0
        seen: dict[str, int] = {}
        renamed = 0
        files = data_files(spec)
        selection = Selection.from_spec(spec.data, spec, "data")
        with ctx.progress("reading dialogues", None) as advance:
            for path in files:
                reader = self._reader_for(ctx, path)
                for item, rec in _records(ctx, reader, path, skipped):
                    advance(1)
                    turns = [{"role": alias.get(t["role"].lower(), t["role"].lower()), "text": t["text"]}
                             for t in rec["turns"]]
                    if not selection.keeps(record_view(rec["id"], turns, rec["intents"], rec["truth"], rec["meta"])):
                        continue
                    if len(turns) < spec.data.min_turns:
                        too_short += 1
                        continue
                    rid = rec["id"]
                    if rid in seen:  # ids must be unique downstream; keep both, rename the later
                        seen[rid] += 1
                        rid = f"{rid}#{seen[rid]}"
                        renamed += 1
                    else:
                        seen[rid] = 1
                    rows.append({
                        R.DIALOGUE_ID: rid,
                        R.SOURCE: f"{path.name}:{item.line}" if item.line else path.name,
                        R.TURNS: turns,
                        R.DIALOGUE_TEXT: render_dialogue(turns),
                        R.TRUTH: json.dumps(rec["truth"], sort_keys=True) if rec["truth"] is not None else None,
                        R.N_TURNS: len(turns),
                        "intents": rec["intents"],
                        "meta": json.dumps(rec["meta"], sort_keys=True, default=str),
                    })
                    if spec.data.max_dialogues and len(rows) >= spec.data.max_dialogues:
                        break
                if spec.data.max_dialogues and len(rows) >= spec.data.max_dialogues:
                    break
        rows = selection.sample(rows)
        ctx.stats.update({"files": len(files), "dialogues": len(rows), "selection": selection.stats(), "skipped_broken": len(skipped),
                          "skipped_examples": skipped[:20], "skipped_too_short": too_short,
                          "renamed_duplicate_ids": renamed})
        if not rows:
            # one data file: name it; several: point at the spec's list of them
            where = {"file": files[0]} if len(files) == 1 else {"file": spec.source, "key": "data.paths"}
            raise DataError(
                "no dialogues to process" + (f" ({len(skipped)} broken, {too_short} shorter than "
                                            f"min_turns={spec.data.min_turns})" if skipped or too_short else ""),
                **where)
        schema = {R.DIALOGUE_ID: pl.String, R.SOURCE: pl.String, R.TURNS: R.TURNS_DTYPE,
                  R.DIALOGUE_TEXT: pl.String, R.TRUTH: pl.String, R.N_TURNS: pl.Int64,
                  "intents": pl.List(pl.String), "meta": pl.String}
        return pl.DataFrame(rows, schema=schema)


def _records(ctx: StageContext, reader: Reader, path: Path,
             skipped: list[str]) -> Iterator[tuple[RawRecord, dict[str, Any]]]:
    """Normalised records of one file. A broken record (or an empty file) fails the run, or
    with `on_error = "skip"` is logged and counted in `skipped`; an unreadable file always
    fails (`UnreadableFile`, exit 2 naming it)."""
    found = 0
    for index, item in enumerate(reader.read(path)):
        found += 1
        try:
            if isinstance(item, DataError):
                raise item
            yield item, normalize_record(item, index)
        except DataError as exc:
            _skip_or_raise(ctx, exc, skipped)
    if not found:
        _skip_or_raise(ctx, DataError("data file holds no records", file=path), skipped)


def _skip_or_raise(ctx: StageContext, error: DataError, skipped: list[str]) -> None:
    if ctx.spec.data.on_error != "skip":
        raise error
    skipped.append(error.render())
    ctx.log.warning("skipped: %s", error.render())


def _hash_path(path: Path) -> str:
    if path.is_dir():
        return "|".join(file_sha256(p) for p in sorted(path.rglob("*")) if p.is_file())
    return file_sha256(path)
