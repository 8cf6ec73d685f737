"""Stage `ingest`: read every dialogue file of `[data]` into one normalised frame, handed on in
partitions of `[executor] partition_rows` as it is read (streaming: memory stays flat)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from .. import records as R
from ..dialogue import render_dialogue, role_aliases
from ..errors import DataError
from ..executors.driver import StreamingStage
from ..keysets import SeenKeys
from ..readers.base import RawRecord, Reader, data_files, normalize_record
from ..run.atomic import file_sha256
from ..run.stage import ORDER
from ..selection import Selection, record_view

if TYPE_CHECKING:
    from ..run.context import StageContext
    from ..spec import Spec


class IngestStage(StreamingStage):
    name = "ingest"
    order = ORDER["ingest"]
    version = "2"  # 2: truth/meta/output_schema stored as structs where they fit (run/dataset.py)
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
            cls: Any = ctx.registry.get("reader", data.format, where="data.format", file=str(ctx.spec.source))
            return cls(cls.Config.model_validate(data.options))
        for cls in ctx.registry.items.get("reader", {}).values():
            reader = cls()
            if reader.accepts(path):
                return reader
        raise DataError(f"no reader for {path.name!r}: set [data] format", file=ctx.spec.source, key="data.format")

    def run_partitions(self, ctx: StageContext) -> Iterator[pl.DataFrame]:
        """The dialogues in pieces of `partition_rows` as they are read (all at the end when
        `[data] sample` draws over the whole selection)."""
        spec = ctx.spec
        files = data_files(spec)
        selection = Selection.from_spec(spec.data, spec, "data")
        tally = _Tally()
        piece = ctx.partition_rows if selection.sample_n is None else None
        done = 0
        for rows in self._read(ctx, files, selection, tally, piece):
            tally.unique_ids(rows)  # in read order, piece by piece, before a sample draws from them
            rows = rows if piece else selection.sample(rows)
            done += len(rows)
            if rows:
                yield pl.DataFrame(rows, schema=DIALOGUE_SCHEMA)
        ctx.stats.update({"files": len(files), "dialogues": done, "selection": selection.stats(),
                          "skipped_broken": tally.skipped, "skipped_examples": tally.skipped_examples,
                          "skipped_too_short": tally.too_short, "renamed_duplicate_ids": tally.renamed})
        if not done:
            raise _nothing_to_process(spec, files, tally)

    def _read(self, ctx: StageContext, files: list[Path], selection: Selection, tally: _Tally,
              piece: int | None) -> Iterator[list[dict[str, Any]]]:
        """The rows of every file that `selection` keeps, up to `[data] max_dialogues`, in lists
        of `piece` rows (one list when `piece` is None)."""
        spec = ctx.spec
        alias = role_aliases(spec)
        limit = spec.data.max_dialogues
        rows: list[dict[str, Any]] = []
        total = 0
        with ctx.progress("reading dialogues", None) as advance:
            for path in files:
                for item, rec in _records(ctx, self._reader_for(ctx, path), path, tally):
                    advance(1)
                    turns = [{"role": alias.get(t["role"].lower(), t["role"].lower()), "text": t["text"]}
                             for t in rec["turns"]]
                    if not selection.keeps(record_view(rec["id"], turns, rec["intents"], rec["truth"], rec["meta"])):
                        continue
                    if len(turns) < spec.data.min_turns:
                        tally.too_short += 1
                        continue
                    source = f"{path.name}:{item.line}" if item.line else path.name
                    rows.append(_dialogue_row(rec["id"], source, turns, rec))
                    total += 1
                    if limit and total >= limit:
                        yield rows
                        return
                    if piece and len(rows) >= piece:
                        yield rows
                        rows = []
        yield rows


DIALOGUE_SCHEMA = pl.Schema({
    R.DIALOGUE_ID: pl.String(), R.SOURCE: pl.String(), R.TURNS: R.TURNS_DTYPE, R.DIALOGUE_TEXT: pl.String(),
    R.TRUTH: pl.String(), R.N_TURNS: pl.Int64(), "intents": pl.List(pl.String), R.META: pl.String(),
})


#: broken records quoted in the stage's stats (all are counted and logged)
SKIPPED_EXAMPLES = 20


@dataclass
class _Tally:
    """What reading left out or renamed, for the stage's stats."""

    skipped: int = 0  # broken records, with on_error = "skip"
    skipped_examples: list[str] = field(default_factory=list)
    too_short: int = 0  # fewer turns than min_turns
    renamed: int = 0
    seen: SeenKeys = field(default_factory=lambda: SeenKeys())
    repeats: dict[str, int] = field(default_factory=dict)  # an id read more than once: how often

    def unique_ids(self, rows: list[dict[str, Any]]) -> None:
        """Ids must be unique downstream: a repeated id is kept, renamed `id#2`, `id#3`... (in
        place, `rows` being the next rows in read order), skipping a name an earlier row holds
        (the input may have an `a#2` of its own); the new names count as read, so a later row
        with one of them is renamed in turn."""
        ids = [row[R.DIALOGUE_ID] for row in rows]
        keys = SeenKeys.keys_of(ids)
        repeated = self.seen.contains(keys)
        here: set[str] = set()
        for i, rid in enumerate(ids):
            if repeated[i] or rid in here:
                repeated[i] = True
                rid = self._free_name(rid, here)
                rows[i][R.DIALOGUE_ID] = rid
            here.add(rid)
        self.renamed += int(repeated.sum())
        renamed = np.flatnonzero(repeated)
        if renamed.size:
            keys = keys.copy()
            keys[renamed] = SeenKeys.keys_of([rows[i][R.DIALOGUE_ID] for i in renamed])
        self.seen.add(keys)

    def _free_name(self, rid: str, here: set[str]) -> str:
        """`rid#N` for the next N from 2 up that no row read so far holds."""
        count = self.repeats.get(rid, 1)
        while True:
            count += 1
            name = f"{rid}#{count}"
            if name not in here and not self.seen.contains(SeenKeys.keys_of([name]))[0]:
                self.repeats[rid] = count
                return name


def _dialogue_row(rid: str, source: str, turns: list[dict[str, str]], rec: dict[str, Any]) -> dict[str, Any]:
    return {
        R.DIALOGUE_ID: rid,
        R.SOURCE: source,
        R.TURNS: turns,
        R.DIALOGUE_TEXT: render_dialogue(turns),
        R.TRUTH: R.json_text(rec["truth"]) if rec["truth"] is not None else None,
        R.N_TURNS: len(turns),
        "intents": rec["intents"],
        R.META: R.json_text(rec["meta"]),
    }


def _nothing_to_process(spec: Spec, files: list[Path], tally: _Tally) -> DataError:
    # one data file: name it; several: point at the spec's list of them
    where: dict[str, Any] = {"file": files[0]} if len(files) == 1 else {"file": spec.source, "key": "data.paths"}
    why = (f" ({tally.skipped} broken, {tally.too_short} shorter than min_turns={spec.data.min_turns})"
           if tally.skipped or tally.too_short else "")
    return DataError("no dialogues to process" + why, **where)


def _records(ctx: StageContext, reader: Reader, path: Path,
             tally: _Tally) -> Iterator[tuple[RawRecord, dict[str, Any]]]:
    """Normalised records of one file. A broken record (or an empty file) fails the run, or
    with `on_error = "skip"` is logged and counted in `tally`; an unreadable file always
    fails (`UnreadableFile`, exit 2 naming it)."""
    found = 0
    for index, item in enumerate(reader.read(path)):
        found += 1
        try:
            if isinstance(item, DataError):
                raise item
            yield item, normalize_record(item, index)
        except DataError as exc:
            _skip_or_raise(ctx, exc, tally)
    if not found:
        _skip_or_raise(ctx, DataError("data file holds no records", file=path), tally)


def _skip_or_raise(ctx: StageContext, error: DataError, tally: _Tally) -> None:
    if ctx.spec.data.on_error != "skip":
        raise error
    tally.skipped += 1
    if len(tally.skipped_examples) < SKIPPED_EXAMPLES:
        tally.skipped_examples.append(error.render())
    ctx.log.warning("skipped: %s", error.render())


def _hash_path(path: Path) -> str:
    if path.is_dir():
        return "|".join(file_sha256(p) for p in sorted(path.rglob("*")) if p.is_file())
    return file_sha256(path)
