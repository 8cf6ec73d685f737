"""Load a spec file: TOML -> pydantic models, every error with file, line and dotted key."""

from __future__ import annotations

import json
import math
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import PluginError, SpecError, UserError, did_you_mean
from .base import EXAMPLES_PREFIX
from .locate import MAX_DEPTH, deepest_path, key_lines, line_of, nesting_line
from .models import Spec, examples_path
from .templates import check_operator_template, check_task_templates


def dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_spec(path: str | Path, registry: Any | None = None, *, check_plugins: bool = True) -> Spec:
    """Read and validate a spec. With a plugin registry, plugin names and their own sections
    are checked too (pass ``check_plugins=False`` to skip that, e.g. for `schema`)."""
    path = Path(path)
    text = read_text(path)
    raw = parse_toml(text, path)
    lines = key_lines(text)
    base_dir = path.resolve().parent
    _inline_files(raw, base_dir, path, lines)
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise _from_validation(exc, raw, path, lines, loc_prefix=()) from None
    except RecursionError:  # guarded by check_depth; kept so no input can end in a traceback
        raise SpecError("values nested too deeply", file=path, line=1) from None
    spec.source = path
    spec.base_dir = base_dir
    try:
        spec.run_dir()
    except SpecError as exc:  # e.g. runs/<name> is a symlink out of runs_dir
        raise SpecError(exc.message, file=path, line=line_of(lines, ("project", "name")) or 1,
                        key="project.name") from None
    check_task_templates(spec, path, lines)
    if check_plugins and registry is not None:
        check_plugin_refs(spec, registry, lines)
    return spec


def read_text(path: Path) -> str:
    """The spec's text; a byte that is not UTF-8 is reported at its line and column."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError("spec file not found", file=path) from None
    except OSError as exc:
        raise SpecError(f"cannot read spec: {exc.strerror or exc}", file=path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(f"not UTF-8: byte 0x{data[exc.start]:02x} at column {column} "
                        "(save the spec as UTF-8)", file=path, line=line) from None


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    """TOML -> dict; syntax errors, end-of-file errors and deep nesting all get a line."""
    deep_line = nesting_line(text)
    if deep_line is not None:
        raise SpecError(f"values nested more than {MAX_DEPTH} levels deep", file=path, line=deep_line)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = int(m.group(1)) if m else None
        if "at end of document" in message:
            line = max(1, len(text.splitlines()))
        message = re.sub(r"\s*\((?:at line \d+, column \d+|at end of document)\)", "", message)
        raise SpecError(f"invalid TOML: {message}" + (" (the file ends too early)" if m is None else ""),
                        file=path, line=line or 1) from None
    except RecursionError:
        raise SpecError(f"values nested more than {MAX_DEPTH} levels deep", file=path, line=1) from None
    deep = deepest_path(raw)
    if deep is not None:
        raise SpecError(f"values nested more than {MAX_DEPTH} levels deep", file=path,
                        line=line_of(key_lines(text), deep) or 1, key=dotted(deep[:3])) from None
    odd = odd_number_path(raw)
    if odd is not None:
        loc, problem = odd
        raise SpecError(problem, file=path, line=line_of(key_lines(text), loc) or 1, key=dotted(loc))
    return raw


def odd_number_path(raw: Any) -> tuple[tuple[str | int, ...], str] | None:
    """The first `inf`/`nan` or integer beyond 64 bits in the document, anywhere (plugin
    sections included). TOML allows inf/nan, but as a weight, threshold or rate they switch a
    check off or swamp a draw; TOML integers are 64-bit, which tomllib does not enforce."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(raw, ())]
    while stack:
        node, loc = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return loc, f"{node} is not allowed: every number in a spec must be finite"
        if isinstance(node, int) and not isinstance(node, bool) and not -(2**63) <= node < 2**63:
            return loc, f"{_short(node, 40)} does not fit in a 64-bit integer (TOML's range)"
        if isinstance(node, dict):
            stack.extend((v, (*loc, k)) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, (*loc, i)) for i, v in reversed(list(enumerate(node))))
    return None


def _inline_files(raw: dict[str, Any], base_dir: Path, path: Path, lines: dict) -> None:
    """`template_file` and `output_schema_file` are read here so the models see text and JSON."""
    for i, task in enumerate(raw.get("tasks", []) if isinstance(raw.get("tasks"), list) else []):
        if not isinstance(task, dict):
            continue
        for key, target, parse in (("template_file", "template", False), ("output_schema_file", "output_schema", True)):
            name = task.get(key)
            if not isinstance(name, str):
                continue
            where = ("tasks", i, key)
            try:
                task.setdefault(target, _read_task_file(name, base_dir, parse))
            except SpecError as exc:
                raise SpecError(exc.message, file=path, line=line_of(lines, where) or 1, key=dotted(where)) from None


def _read_task_file(name: str, base_dir: Path, parse: bool) -> Any:
    """A task's template (text) or schema (JSON) file; every failure is a SpecError."""
    if name.startswith(EXAMPLES_PREFIX):
        file = examples_path(name.removeprefix(EXAMPLES_PREFIX))
    else:
        file = Path(name).expanduser()
        file = file if file.is_absolute() else base_dir / file
    try:
        content = file.read_text(encoding="utf-8")
        value = json.loads(content) if parse else content
    except FileNotFoundError:
        raise SpecError(f"file not found: {file}") from None
    except OSError as exc:
        raise SpecError(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{file} is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{file}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise SpecError(f"{file}: JSON nested too deeply") from None
    if parse and (deepest_path(value) is not None or odd_number_path(value) is not None):
        raise SpecError(f"{file}: JSON nested more than {MAX_DEPTH} levels deep or holding NaN/Infinity")
    return value


def _from_validation(exc: ValidationError, raw: Any, path: Path, lines: dict, loc_prefix: tuple,
                     model: type[BaseModel] = Spec, cls: type[UserError] = SpecError) -> UserError:
    """One error for all problems: the first at `file:line: [key] message`, each further one on
    its own indented line in the same form (the location is never printed twice)."""
    problems: list[tuple[int, str, str]] = []
    for err in exc.errors():
        loc = (*loc_prefix, *err["loc"])
        # pydantic adds the tagged-union/validator name to loc at times; drop non-key parts
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        # a missing key has no line of its own: point at its table (or the top of the file)
        line = line_of(lines, loc) or 1
        problems.append((line, dotted(loc), _problem_message(err, loc, model)))
    problems.sort(key=lambda p: p[0])
    line, key, message = problems[0] if problems else (1, dotted(loc_prefix), "invalid")
    more = "".join(f"\n  {path}:{ln}: [{k}] {m}" if k else f"\n  {path}:{ln}: {m}" for ln, k, m in problems[1:])
    return cls(message + more, file=path, line=line, key=key or None)


def _problem_message(err: Any, loc: tuple, model: type[BaseModel]) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, tuple(err["loc"]))
        hint = did_you_mean(str(loc[-1]), allowed)
        msg = f"unknown key {loc[-1]!r}" + (f": {hint}" if hint else "")
        if allowed and not hint:
            msg += f" (allowed: {', '.join(sorted(allowed))})"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif "input" in err and err["type"] not in ("model_type",) and not isinstance(err["input"], dict):
        msg += f" (got {_short(err['input'])})"
    return msg


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names (and aliases) valid at the parent of `loc`, walking the model types."""
    node: Any = model
    for part in loc[:-1]:
        node = _step(node, part)
        if node is None:
            return []
    node = _unwrap(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [f.alias or n for n, f in node.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[0]
        elif origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        else:
            return tp


def _step(node: Any, part: Any) -> Any:
    node = _unwrap(node)
    origin = typing.get_origin(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        field = node.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field else None
    if origin in (list, tuple):
        return typing.get_args(node)[0]
    if origin is dict:
        return typing.get_args(node)[1]
    return None


def check_plugin_refs(spec: Spec, registry: Any, lines: dict | None = None) -> None:
    """Every plugin the spec names exists, and its parameters pass its own `Config` model."""
    if lines is None:
        lines = key_lines(spec.source.read_text(encoding="utf-8")) if spec.source else {}
    path = spec.source or Path("<spec>")
    errors: list[PluginError] = []
    for ref in spec.plugin_refs():
        try:
            cls = registry.get(ref.kind, ref.name, where=dotted(ref.name_loc), file=str(path),
                               line=line_of(lines, ref.name_loc) or 1)
            config_model = getattr(cls, "Config", None)
            if ref.params is not None and isinstance(config_model, type) and issubclass(config_model, BaseModel):
                _check_no_bools_for_numbers(config_model, ref.params, path, lines, ref.params_loc)
                try:
                    config = config_model.model_validate(ref.params)
                except ValidationError as exc:
                    raise _from_validation(exc, ref.params, path, lines, ref.params_loc,
                                           model=config_model, cls=PluginError) from None
                if ref.kind == "operator":
                    check_operator_template(cls, config, spec, path, lines, ref.params_loc, ref.params)
        except PluginError as exc:
            errors.append(exc)
    for name, loc in _backend_names_used(spec):
        if name not in spec.backends and name != "default":
            errors.append(PluginError(f"backend {name!r} is not declared as [backends.{name}]", file=str(path),
                                      line=line_of(lines, loc) or 1, key=dotted(loc),
                                      hint=did_you_mean(name, spec.backends)))
    if errors:
        errors.sort(key=lambda e: e.line or 0)
        first = errors[0]
        if len(errors) == 1:
            raise first
        # the first problem carries the location; each further one is a full line of its own
        raise PluginError(first.message + (f" ({first.hint})" if first.hint else "")
                          + "".join("\n  " + e.render() for e in errors[1:]),
                          file=first.file, line=first.line, key=first.key)


def _check_no_bools_for_numbers(model: type[BaseModel], params: dict[str, Any], path: Path, lines: dict,
                                loc: tuple[str | int, ...]) -> None:
    """Plugin models validate leniently (pydantic turns `true` into 1); a spec is typed TOML,
    so a boolean given for a numeric plugin key is refused like in the engine's own sections."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        if isinstance(params.get(key), bool) and _unwrap(field.annotation) in (int, float):
            where = (*loc, key)
            raise PluginError(f"expected a number, got {params[key]!r}", file=path,
                              line=line_of(lines, where) or 1, key=dotted(where))


def _backend_names_used(spec: Spec) -> list[tuple[str, tuple[str, ...]]]:
    names: list[tuple[str, tuple[str, ...]]] = [(spec.labels.backend, ("labels", "backend"))]
    if spec.evolution.rounds > 0:
        names.append((spec.evolution.backend, ("evolution", "backend")))
    return names
