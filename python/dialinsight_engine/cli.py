"""The `dialengine` command line. Parsing and printing only: the work is in spec/, run/ and
the stages. Plugins add commands through the `register_commands` hook."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from . import __version__
from .errors import ReviewPending, StageFailed, UserError

EXIT_USER, EXIT_FAILURE, EXIT_REVIEW, EXIT_INTERRUPTED = 2, 1, 3, 130


def _console(quiet: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=True, quiet=quiet, highlight=False)


class Group(click.Group):
    """Maps our exceptions to exit codes and clear messages (tracebacks with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure gets an exit code
            debug = bool(ctx.params.get("debug")) or bool((ctx.obj or {}).get("debug"))
            raise SystemExit(_report(exc, debug)) from None


def _report(exc: BaseException, debug: bool) -> int:
    from rich.markup import escape  # messages hold spec keys like [backends.x]: never markup

    err = _console()
    if debug and not isinstance(exc, KeyboardInterrupt | SystemExit):
        err.print(traceback.format_exc(), markup=False)
    if isinstance(exc, SystemExit):
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_FAILURE
    if isinstance(exc, KeyboardInterrupt):
        err.print("[yellow]interrupted[/yellow]: finished stages are kept; rerun the same command to resume")
        return EXIT_INTERRUPTED
    if isinstance(exc, ReviewPending):
        err.print(f"[yellow]review pending[/yellow]: {escape(str(exc))}")
        return EXIT_REVIEW
    if isinstance(exc, UserError):
        err.print(f"[red]error[/red]: {escape(exc.render())}", highlight=False, soft_wrap=True)
        return EXIT_USER
    if isinstance(exc, StageFailed):
        err.print(f"[red]failed[/red]: {escape(str(exc))}" + ("" if debug else " (run with --debug for the traceback)"))
        return EXIT_FAILURE
    if isinstance(exc, OSError):
        err.print(f"[red]failed[/red]: {escape(str(exc))}")
        return EXIT_FAILURE
    err.print(f"[red]failed[/red]: {type(exc).__name__}: {escape(str(exc))}"
              + ("" if debug else " (--debug for details)"))
    return EXIT_FAILURE


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dialengine")
@click.option("--quiet", "-q", is_flag=True, help="Only errors.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, debug: bool) -> None:
    """dialinsight-engine: domain dialogues -> quality-filtered fine-tuning data -> tuned model."""
    ctx.obj = {"quiet": quiet, "debug": debug, "console": _console(quiet)}


def _load(spec_path: str) -> tuple[Any, Any]:
    from .plugins import get_registry
    from .spec import load_spec
    from .spec.checks import static_checks

    registry = get_registry()
    loaded = load_spec(spec_path, registry)
    static_checks(loaded)
    return loaded, registry


def _stage_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--force", "force", multiple=True, metavar="STAGE", help="Rerun STAGE (repeatable).")(fn)
    fn = click.option("--until", "until", metavar="STAGE", help="Stop after STAGE.")(fn)
    fn = click.option("--from", "from_stage", metavar="STAGE", help="Rerun from STAGE onward.")(fn)
    return fn


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.pass_obj
def validate(obj: dict[str, Any], spec: str) -> None:
    """Check a spec: TOML, keys, types, plugin names and plugin sections; then, on a sample of
    the data, templates, reader options and the evaluators' truth paths."""
    from rich.markup import escape

    from .spec.checks import data_checks

    loaded, registry = _load(spec)
    for warning in data_checks(loaded, registry):
        obj["console"].print(f"[yellow]warning[/yellow] {escape(warning)}")
    obj["console"].print(
        f"[green]ok[/green] {escape(spec)}: project {loaded.project.name!r}, {len(loaded.scenes)} scenes, "
        f"{len(loaded.tasks)} tasks, {len(loaded.backends)} backends", soft_wrap=True)
    # one rule for every relative path in a spec: it starts at the spec file's folder
    obj["console"].print(f"runs go to {escape(str(loaded.run_dir()))} (runs_dir {loaded.project.runs_dir!r} "
                         f"is relative to the spec's folder {escape(str(loaded.base_dir))})", soft_wrap=True)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@_stage_options
@click.pass_obj
def plan(obj: dict[str, Any], spec: str, from_stage: str | None, until: str | None, force: tuple[str, ...]) -> None:
    """Show which stages would run, and why."""
    from rich.markup import escape
    from rich.table import Table

    from .run import Runner

    loaded, registry = _load(spec)
    items = Runner(loaded, registry).plan(from_stage=from_stage, until=until, force=force)
    table = Table("stage", "action", "why", title=f"plan for {escape(str(loaded.run_dir()))}")
    colour = {"run": "yellow", "skip": "green", "disabled": "dim", "excluded": "dim"}
    for item in items:  # `why` names spec sections like [train]: printed as text, not markup
        table.add_row(escape(item.stage.name), f"[{colour[item.action]}]{item.action}[/]", escape(item.why))
    if not obj["quiet"]:
        _console().print(table)
        for line in _thread_lines(loaded):
            _console().print(line)
    click.echo(json.dumps({i.stage.name: i.action for i in items})) if obj["quiet"] else None


def _thread_lines(spec: Any) -> list[str]:
    """What each llama.cpp backend will run with: its `n_threads`, or the CPUs found free."""
    from .cpus import cpu_budget

    backends = {n: b.params().get("n_threads") for n, b in spec.backends.items() if b.plugin == "llamacpp"}
    if "default" not in spec.backends:
        backends["default"] = None  # the embedded model
    budget = cpu_budget()
    return [f"backends.{name} (llama.cpp): " + (f"n_threads = {n} (from the spec)" if n else budget.describe())
            for name, n in backends.items()]


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@_stage_options
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Where row-parallel stages run (default: [executor] kind, else local).")
@click.option("--address", default=None, metavar="ADDR",
              help="Ray cluster to join: auto, host:6379 or ray://host:10001 (default: a local Ray).")
@click.pass_obj
def apply(obj: dict[str, Any], spec: str, from_stage: str | None, until: str | None, force: tuple[str, ...],
          executor: str | None, address: str | None) -> None:
    """Run the pipeline; a rerun resumes where it stopped."""
    import time

    from .run import Runner

    loaded, registry = _load(spec)
    t0 = time.perf_counter()
    runner = Runner(loaded, registry, console=obj["console"], quiet=obj["quiet"], executor=executor,
                    address=address)
    items = runner.apply(from_stage=from_stage, until=until, force=force)
    ran = [i.stage.name for i in items if i.action == "run"]
    obj["console"].print(f"[bold]done[/bold] in {time.perf_counter() - t0:.1f}s: ran {', '.join(ran) or 'nothing'}"
                         f"; outputs in {runner.run_dir}")


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--plan", "plan_only", is_flag=True, help="Only list the subsets and which are already trained.")
@click.pass_obj
def study(obj: dict[str, Any], spec: str, plan_only: bool) -> None:
    """Do the quality metrics predict fine-tuning outcome on this data? Trains equal-size top,
    bottom and random subsets of the verify pool (`[study]`), evaluates each with `[eval]`,
    writes RUN/study/ (results, study.md, weights.patch.toml); a rerun retrains nothing finished."""
    from rich.markup import escape

    from .run.lock import RunLock
    from .study.run import STUDY_DIR, plan_study, run_study

    loaded, registry = _load(spec)
    run_dir = loaded.run_dir()
    if plan_only:
        planned = plan_study(loaded, registry, run_dir)
        done = planned.cached(run_dir)
        for s in planned.subsets:
            key = planned.keys[s.row_ids]
            click.echo(f"{s.label}\t{key}\t{len(s.row_ids)} rows\t{'trained' if done[key] else 'to train'}")
        return
    with RunLock(run_dir):
        results = run_study(loaded, registry, run_dir, say=lambda line: obj["console"].print(escape(line)))
    obj["console"].print(f"[bold]study done[/bold]: ranking {', '.join(results['ranking'])}; "
                         f"results in {escape(str(run_dir / STUDY_DIR))}", soft_wrap=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List installed plugins, their versions and what they provide."""
    from rich.table import Table

    from .plugins import get_registry

    registry = get_registry()
    if as_json:
        click.echo(json.dumps({n: {"dist": p.dist, "version": p.version, "provides": p.provides, "error": p.error}
                               for n, p in registry.plugins.items()}, indent=2))
        return
    table = Table("plugin", "package", "version", "provides", "status")
    for info in registry.plugins.values():
        provides = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in info.provides.items())
        table.add_row(info.name, info.dist, info.version, provides,
                      f"[red]failed: {info.error}[/red]" if info.error else "[green]ok[/green]")
    from rich.console import Console

    # a listing is the command's output: stdout, so `dialengine plugins | grep metric` works
    Console(highlight=False).print(table)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the spec, with every installed plugin's keys (for editors:
    save it and put `#:schema ./spec.schema.json` at the top of a spec)."""
    from .plugins import get_registry
    from .spec.schema import spec_schema

    click.echo(json.dumps(spec_schema(get_registry()), indent=2))


def _add_plugin_commands() -> None:
    from .plugins import get_registry

    try:
        get_registry().add_commands(cli)
    except Exception as exc:  # a plugin's commands must not break the CLI
        print(f"warning: a plugin failed to add commands: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    _add_plugin_commands()
    cli.main(args=argv, prog_name="dialengine")


