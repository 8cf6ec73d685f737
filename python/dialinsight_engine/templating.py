"""Render templates that come from a spec or a prompt file: Jinja2 in a sandbox.

A spec is data, so its templates (task templates, evolution operator prompts) must not reach
Python internals: `{{ cycler.__init__.__globals__.os.popen('id').read() }}` runs a shell
command in a plain `jinja2.Environment`. Every spec-provided template is compiled here, in an
`ImmutableSandboxedEnvironment` (no underscore attributes, no mutation of values, no
`str.format` tricks), with `StrictUndefined` so a misspelt variable is an error, and with
limits on `**` and sequence repetition so a template cannot exhaust memory.

`check_template` finds unsafe attribute access without rendering (walking the parsed
template), so `dialengine validate` can reject it with the spec's file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
    ImmutableSandboxedEnvironment,
    SecurityError,
)

__all__ = ["SecurityError", "TemplateProblem", "check_template", "compile_template", "render_template",
           "unknown_variables"]

#: attribute names that lead from a value to code, frames or globals (besides `_names`)
UNSAFE_NAMES = frozenset(
    UNSAFE_FUNCTION_ATTRIBUTES | UNSAFE_METHOD_ATTRIBUTES | UNSAFE_GENERATOR_ATTRIBUTES
    | UNSAFE_COROUTINE_ATTRIBUTES | UNSAFE_ASYNC_GENERATOR_ATTRIBUTES
    | {"mro", "f_globals", "f_locals", "f_builtins", "tb_frame", "tb_next"}
)
#: the longest string or list a template may build with `*`, and the largest exponent of `**`
MAX_REPEAT_LENGTH = 1_000_000
MAX_EXPONENT = 1_000


class TemplateProblem(ValueError):
    """A template that does not parse, or that reaches for Python internals."""

    def __init__(self, message: str, lineno: int | None = None, *, refused: bool = False) -> None:
        self.message = message
        self.lineno = lineno
        self.refused = refused  # the sandbox refused it (not a data-dependent failure)
        super().__init__(message + (f" (template line {lineno})" if lineno else ""))


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with guards on the two operators that can allocate without bound."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is above the template limit {MAX_EXPONENT}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) and \
                        len(seq) * times > MAX_REPEAT_LENGTH:
                    raise SecurityError(f"repetition to {len(seq) * times} items is above the "
                                        f"template limit {MAX_REPEAT_LENGTH}")
        return super().call_binop(context, operator, left, right)


_ENV = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


def _unsafe_name(name: Any) -> bool:
    return isinstance(name, str) and (name.startswith("_") or name in UNSAFE_NAMES)


@dataclass(frozen=True)
class _Finding:
    name: str
    lineno: int


def _unsafe_access(tree: nodes.Template) -> _Finding | None:
    """The first `x.__attr`, `x['__attr']` or `x|attr('__attr')` in the parsed template."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        name: Any = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            arg = node.args[0]
            name = arg.value if isinstance(arg, nodes.Const) else None
        if _unsafe_name(name):
            return _Finding(str(name), node.lineno)
    return None


def check_template(text: str) -> None:
    """Raise `TemplateProblem` if `text` does not parse or accesses an unsafe attribute."""
    try:
        tree = _ENV.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template does not parse: {exc.message}", exc.lineno) from None
    finding = _unsafe_access(tree)
    if finding is not None:
        raise TemplateProblem(
            f"template accesses {finding.name!r}: templates are data and may not reach Python "
            f"internals (underscore and code attributes are refused)", finding.lineno)


def unknown_variables(text: str, known: set[str] | dict[str, Any]) -> list[str]:
    """Variables the template reads that are neither in `known` nor set by the template."""
    try:
        used = meta.find_undeclared_variables(_ENV.parse(text))
    except jinja2.TemplateSyntaxError:
        return []
    return sorted(used - set(known) - set(_ENV.globals))


@lru_cache(maxsize=256)
def compile_template(text: str) -> jinja2.Template:
    """Check and compile a spec-provided template in the sandbox (cached: prompts repeat)."""
    check_template(text)
    return _ENV.from_string(text)


#: the longest text a template may render (an instruction is a few hundred characters)
MAX_OUTPUT_CHARS = 1_000_000


def _capped(chunks: Any) -> Any:
    """Pass chunks through until the output would exceed MAX_OUTPUT_CHARS."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > MAX_OUTPUT_CHARS:
            raise SecurityError(f"the template renders more than {MAX_OUTPUT_CHARS} characters")
        yield chunk


def render_template(template: jinja2.Template | str, variables: dict[str, Any]) -> str:
    """Render in the sandbox; a refused operation or unknown variable is a `TemplateProblem`."""
    compiled = compile_template(template) if isinstance(template, str) else template
    try:
        return "".join(_capped(compiled.generate(**variables)))
    except SecurityError as exc:
        raise TemplateProblem(f"template refused by the sandbox: {exc}", refused=True) from None
    except jinja2.UndefinedError as exc:
        raise TemplateProblem(f"template uses an unknown variable: {exc.message}") from None
    except Exception as exc:  # noqa: BLE001 - a template is user input: any failure is theirs
        raise TemplateProblem(f"template failed: {type(exc).__name__}: {exc}") from None
