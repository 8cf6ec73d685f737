"""Built-in plugin `generation`: backends (llamacpp, openai, vllm), evolution operators, the
evolve / review / sample / label stages and the `dialengine review` commands. Registered
through the `dialinsight_engine` entry-point group like any plugin."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from ..backends.llamacpp import LlamaCppBackend
from ..backends.openai import OpenAIBackend
from ..backends.vllm import VllmBackend
from ..hookspecs import hookimpl
from ..operators.evol import BUILTIN_OPERATORS
from ..stages.evolve import EvolveStage
from ..stages.label import LabelStage
from ..stages.review import ReviewStage
from ..stages.sample import SampleStage


@hookimpl
def register_backends() -> list[type]:
    return [LlamaCppBackend, OpenAIBackend, VllmBackend]


@hookimpl
def register_operators() -> list[type]:
    return list(BUILTIN_OPERATORS)


@hookimpl
def register_stages() -> list[type]:
    return [EvolveStage, ReviewStage, SampleStage, LabelStage]


@click.group("review")
def review_group() -> None:
    """Manual screening of evolved instructions: export for a person, import their decisions."""


@review_group.command("export")
@click.argument("run", type=click.Path(exists=True))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder (default: RUN/review/export).")
@click.option("--evolved-only", is_flag=True, help="Leave the seed instructions out.")
def review_export(run: str, out_dir: str | None, evolved_only: bool) -> None:
    """Write RUN's instructions with lineage and metrics (CSV, JSONL, Label Studio).

    RUN is a spec file or a run folder. Fill `decision` (accept / reject / edit) and, for
    edits, `edited_instruction`; then `dialengine review import FILE RUN`."""
    from ..run.lock import RunLock
    from ..run.paths import resolve_run
    from ..stages.review import export_review

    run_dir = resolve_run(run)
    # writing into the run folder (the default) waits for no one: a running apply holds it
    with RunLock(run_dir) if out_dir is None else contextlib.nullcontext():
        paths = export_review(run_dir, Path(out_dir) if out_dir else None, evolved_only=evolved_only)
    for kind, path in paths.items():
        click.echo(f"{kind:<20} {path}")


@review_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.argument("run", required=False, type=click.Path(exists=True))
def review_import(file: str, run: str | None) -> None:
    """Store the decisions in FILE (.csv, .jsonl, Label Studio .json) for RUN.

    RUN defaults to the run folder that FILE was exported into."""
    from ..errors import UserError
    from ..run.lock import RunLock
    from ..run.paths import resolve_run
    from ..stages.review import import_review

    if run is None:
        found = next((p for p in Path(file).resolve().parents if (p / "evolve").is_dir() or (p / "seeds").is_dir()),
                     None)
        if found is None:
            raise UserError(f"cannot tell which run {file} belongs to: give RUN (a spec file or run folder)")
        run_dir = found
    else:
        run_dir = resolve_run(run)
    with RunLock(run_dir):
        counts = import_review(Path(file), run_dir)
    click.echo(", ".join(f"{k}: {v}" for k, v in counts.items()) + f" -> {run_dir / 'review' / 'decisions.jsonl'}")


@hookimpl
def register_commands(cli: Any) -> None:
    cli.add_command(review_group)
