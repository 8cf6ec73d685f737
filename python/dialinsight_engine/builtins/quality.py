"""Built-in plugin `quality`: the five quality metrics, the `assess`, `verify` and `report`
stages, and the `explain` and `report` commands. Registered through the `dialinsight_engine`
entry-point group exactly like a third-party plugin."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl
from ..metrics.data_redundancy import DataRedundancy
from ..metrics.data_richness import DataRichness
from ..metrics.input_complexity import InputComplexity
from ..metrics.label_quality import LabelQuality
from ..metrics.prompt_complexity import PromptComplexity
from ..stages.assess import AssessStage
from ..stages.report import ReportStage
from ..stages.verify import VerifyStage


@hookimpl
def register_metrics() -> list[type]:
    return [PromptComplexity, InputComplexity, DataRichness, DataRedundancy, LabelQuality]


@hookimpl
def register_stages() -> list[type]:
    return [AssessStage, VerifyStage, ReportStage]


@hookimpl
def register_commands(cli: Any) -> None:
    import click

    @cli.command()
    @click.argument("run")
    @click.argument("row_id")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def explain(run: str, row_id: str, as_json: bool) -> None:
        """Why a row was kept or dropped: every stage it passed, its scores and reasons.

        RUN is a run folder (runs/<project>) or a spec file; ROW_ID an instruction id (a
        unique prefix is enough)."""
        import json

        from ..report.explain import explain_row, render_explanation
        from ..run.paths import resolve_run

        result = explain_row(resolve_run(run), row_id)
        if as_json:
            click.echo(json.dumps(result, indent=2, default=str))
        else:
            render_explanation(result)

    @cli.command("report")
    @click.argument("run")
    @click.option("--out", type=click.Path(dir_okay=False), help="HTML file (default: RUN/report/report.html).")
    def report_command(run: str, out: str | None) -> None:
        """Write the run's self-contained HTML report (works offline)."""
        from pathlib import Path

        from ..errors import UserError
        from ..report.html import write_report
        from ..run.lock import RunLock
        from ..run.paths import resolve_run

        run_dir = resolve_run(run)
        if not run_dir.is_dir():
            raise UserError(f"no run folder at {run_dir}", hint="run `dialengine apply SPEC` first")
        if out:
            path = write_report(run_dir, Path(out))
        else:
            with RunLock(run_dir):  # into the run folder: not while an apply writes there
                path = write_report(run_dir, run_dir / "report" / "report.html")
        click.echo(str(path))
