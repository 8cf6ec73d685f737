"""Load a spec file: TOML -> pydantic models, every error with file, line and dotted key."""

from __future__ import annotations

import difflib
import json
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import PluginError, SpecError
from .locate import key_lines, line_of
from .models import Spec
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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("spec file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec: {exc}", file=path) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(m.group(1)) if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise SpecError(f"invalid TOML: {msg}", file=path, line=line) from None
    lines = key_lines(text)
    base_dir = path.resolve().parent
    _inline_files(raw, base_dir, path, lines)
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise _from_validation(exc, raw, path, lines, loc_prefix=()) from None
    spec.source = path
    spec.base_dir = base_dir
    check_task_templates(spec, path, lines)
    if check_plugins and registry is not None:
        check_plugin_refs(spec, registry, lines)
    return spec


def _inline_files(raw: dict[str, Any], base_dir: Path, path: Path, lines: dict) -> None:
    """`template_file` and `output_schema_file` are read here so the models see text and JSON."""
    for i, task in enumerate(raw.get("tasks", []) if isinstance(raw.get("tasks"), list) else []):
        if not isinstance(task, dict):
            continue
        for key, target, parse in (("template_file", "template", False), ("output_schema_file", "output_schema", True)):
            name = task.get(key)
            if not isinstance(name, str):
                continue
            file = Path(name) if Path(name).is_absolute() else base_dir / name
            where = ("tasks", i, key)
            try:
                content = file.read_text(encoding="utf-8")
                task.setdefault(target, json.loads(content) if parse else content)
            except FileNotFoundError:
                raise SpecError(f"file not found: {file}", file=path, line=line_of(lines, where), key=dotted(where)) from None
            except json.JSONDecodeError as exc:
                raise SpecError(f"{file}: invalid JSON: {exc}", file=path, line=line_of(lines, where), key=dotted(where)) from None


def _from_validation(exc: ValidationError, raw: Any, path: Path, lines: dict, loc_prefix: tuple,
                     model: type[BaseModel] = Spec, cls: type[Exception] = SpecError) -> Exception:
    problems: list[tuple[int | None, str]] = []
    for err in exc.errors():
        loc = (*loc_prefix, *err["loc"])
        # pydantic adds the tagged-union/validator name to loc at times; drop non-key parts
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        line = line_of(lines, loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, tuple(err["loc"]))
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            msg = f"unknown key {loc[-1]!r}" + (f": did you mean {close[0]!r}?" if close else "")
            if allowed and not close:
                msg += f" (allowed: {', '.join(sorted(allowed))})"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and err["type"] not in ("model_type",) and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
        problems.append((line, f"{path}:{line or '?'}: [{dotted(loc)}] {msg}"))
    problems.sort(key=lambda p: p[0] or 0)
    first_line = problems[0][0] if problems else None
    first = exc.errors()[0] if exc.errors() else {"loc": ()}
    error = cls(
        "invalid spec:\n  " + "\n  ".join(p[1] for p in problems),
        file=path, line=first_line, key=dotted((*loc_prefix, *first["loc"])),
    )
    return error


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
    errors: list[str] = []
    first: Exception | None = None
    for ref in spec.plugin_refs():
        try:
            cls = registry.get(ref.kind, ref.name, where=dotted(ref.name_loc), file=str(path),
                               line=line_of(lines, ref.name_loc))
            config_model = getattr(cls, "Config", None)
            if ref.params is not None and isinstance(config_model, type) and issubclass(config_model, BaseModel):
                try:
                    config = config_model.model_validate(ref.params)
                except ValidationError as exc:
                    raise _from_validation(exc, ref.params, path, lines, ref.params_loc,
                                           model=config_model, cls=PluginError) from None
                if ref.kind == "operator":
                    check_operator_template(cls, config, spec, path, lines, ref.params_loc, ref.params)
        except PluginError as exc:
            first = first or exc
            errors.append(exc.render())
    for name in _backend_names_used(spec):
        if name not in spec.backends and name != "default":
            close = difflib.get_close_matches(name, list(spec.backends), n=1)
            msg = PluginError(f"backend {name!r} is not declared as [backends.{name}]", file=str(path),
                              hint=f"did you mean {close[0]!r}?" if close else None).render()
            errors.append(msg)
            first = first or PluginError(msg)
    if first is not None:
        if len(errors) == 1:
            raise first
        raise PluginError("invalid plugin configuration:\n  " + "\n  ".join(errors), file=str(path))


def _backend_names_used(spec: Spec) -> list[str]:
    names = [spec.labels.backend]
    if spec.evolution.rounds > 0:
        names.append(spec.evolution.backend)
    return names
