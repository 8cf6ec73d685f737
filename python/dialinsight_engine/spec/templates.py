"""Check the spec's templates at load time, so `validate` rejects what `apply` would refuse.

Task templates and the prompts of template-based evolution operators are parsed in the sandbox
(`templating`): a syntax error, an unsafe attribute (`__globals__`...), an unknown variable, or
an operation the sandbox refuses on sample values is a `SpecError`/`PluginError` at the
template's own line and dotted key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PluginError, SpecError, UserError, did_you_mean
from ..templating import TemplateProblem, check_template, render_template, unknown_variables
from .locate import line_of

if TYPE_CHECKING:
    from .models import Spec, TaskSpec

Loc = tuple[str | int, ...]


class UnknownVariable(TemplateProblem):
    """A template reads a variable the engine does not provide; `name` is the first one."""

    def __init__(self, name: str, known: dict[str, Any]) -> None:
        hint = did_you_mean(name, known)
        super().__init__(f"template uses unknown variable {name!r}"
                         + (f": {hint}" if hint else f" (known: {', '.join(sorted(known))})"))
        self.name = name


def check_template_text(text: str, variables: dict[str, Any]) -> None:
    """Raise `TemplateProblem` for a template that `apply` would refuse or fail on."""
    check_template(text)
    unknown = unknown_variables(text, variables)
    if unknown:
        raise UnknownVariable(unknown[0], variables)
    try:
        render_template(text, variables)
    except TemplateProblem as exc:
        if exc.refused:  # reached only through a dynamic name, e.g. attr('_' ~ '_class__')
            raise
        # other failures may depend on the data (an index, a filter on a value); seeds reports them


def check_task_templates(spec: Spec, path: Path, lines: dict) -> None:
    """Every task template: parses, is safe, and names only known variables."""
    from ..dialogue import template_vars

    roles = [r.name for r in spec.roles] or ["customer", "agent"]
    for i, task in enumerate(spec.tasks):
        variables = template_vars(spec, task, _sample_scene(spec, task), roles)
        for loc, text in _task_template_sources(task, i):
            try:
                check_template_text(text, variables)
            except UnknownVariable as exc:  # point at the line that uses it, in the spec or the file
                file, line = _variable_place(task, spec.base_dir, path, line_of(lines, loc), exc.name)
                raise SpecError(str(exc), file=file, line=line, key=_dotted(loc)) from None
            except TemplateProblem as exc:
                raise SpecError(str(exc), file=path, line=line_of(lines, loc), key=_dotted(loc)) from None


def _variable_place(task: TaskSpec, base_dir: Path, spec_path: Path, key_line: int | None, name: str) -> tuple[Path, int | None]:
    """Where the unknown variable `name` is used: its line in the `template_file`, or the first
    spec line from the template key on that uses it (multi-line strings count right)."""
    pattern = re.compile(r"(\{\{|\{%)[^}]*\b" + re.escape(name) + r"\b")
    if task.template_file is not None:
        file = Path(task.template_file)
        file = file if file.is_absolute() else base_dir / file
        # a task with a template_file has no inline template
        text, start = task.template if isinstance(task.template, str) else "", 1
    else:
        file, start = spec_path, key_line or 1
        text = "\n".join(spec_path.read_text(encoding="utf-8").splitlines()[start - 1:])
    for number, line in enumerate(text.splitlines(), start):
        if pattern.search(line):
            return file, number
    return file, key_line if task.template_file is None else 1


def _sample_scene(spec: Spec, task: TaskSpec) -> str:
    return task.scenes[0] if task.scenes else spec.scenes[0].name


def _task_template_sources(task: TaskSpec, i: int) -> list[tuple[Loc, str]]:
    if isinstance(task.template, list):
        return [(("tasks", i, "template", j), t) for j, t in enumerate(task.template)]
    if task.template is not None:
        key = "template_file" if task.template_file is not None else "template"
        return [(("tasks", i, key), task.template)]
    return []


def check_operator_template(cls: type, config: Any, spec: Spec, path: Path, lines: dict,
                            loc: Loc, params: dict[str, Any]) -> None:
    """A template-based evolution operator's prompt (inline or file) passes the same checks."""
    from ..operators.base import InstructionView, TemplateOperator, prompt_vars

    if not (isinstance(cls, type) and issubclass(cls, TemplateOperator)):
        return
    where = next(((*loc, k) for k in ("template", "template_file") if k in params), loc)
    line = line_of(lines, where)
    try:
        text = cls(config, base_dir=spec.base_dir).template()
        task = spec.tasks[0]
        view = InstructionView("Summarise the needs.", spec.scenes[0].name, spec.scenes[0].description,
                               task.name, task.description, spec.project.business, keep_placeholder=False)
        check_template_text(text, prompt_vars(view, getattr(config, "hint", "")))
    except TemplateProblem as exc:
        raise PluginError(f"evolution prompt: {exc}", file=path, line=line, key=_dotted(where)) from None
    except UserError as exc:
        raise PluginError(exc.message, file=path, line=line, key=_dotted(where)) from None
    except UnicodeDecodeError:
        raise PluginError("the evolution prompt file is not UTF-8 text", file=path, line=line,
                          key=_dotted(where)) from None


def _dotted(loc: Loc) -> str:
    from .loader import dotted

    return dotted(loc)
