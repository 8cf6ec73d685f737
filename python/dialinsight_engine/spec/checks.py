"""Checks before a run, beyond what the pydantic models see on their own.

`static_checks` needs only the spec (every command runs it): declared evaluators name keys of
their task's output schema and a declared backend. `data_checks` reads a sample of the data
(`dialengine validate` runs it): reader options are checked whatever the format, each task
template is rendered against a sample record (syntax, safety and unknown variables were
checked at load time by `spec/templates.py`), and
each declared `truth` path is resolved on a sample of the held-out records (an error when it
never resolves, a warning when it is missing in most). Errors are `SpecError`s (exit 2) naming
the file, the line and the dotted key; warnings are returned as text.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from ..errors import DataError, SpecError, UserError, did_you_mean
from ..templating import TemplateProblem, render_template
from .evaluation import TaskEvalSpec
from .locate import key_lines, line_of

if TYPE_CHECKING:
    from .models import Spec

#: records read for the checks that need data
SAMPLE_RECORDS = 200
#: a truth path missing in more than this share of the sampled records draws a warning
MISSING_WARN_SHARE = 0.5



class _Problems:
    """Errors collected over all checks, raised together."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.text = spec.source.read_text(encoding="utf-8") if spec.source and spec.source.exists() else ""
        self.lines = key_lines(self.text) if self.text else {}
        self.errors: list[tuple[str | None, int | None, str, str]] = []

    def line(self, loc: tuple[str | int, ...]) -> int | None:
        return line_of(self.lines, loc)

    def add(self, loc: tuple[str | int, ...], message: str, *, file: str | Path | None = None,
            line: int | None = None) -> None:
        self.errors.append((str(file or self.spec.source or "<spec>"), line or self.line(loc), _dotted(loc), message))

    def raise_any(self) -> None:
        if not self.errors:
            return
        if len(self.errors) == 1:
            file, line, key, message = self.errors[0]
            raise SpecError(message, file=file, line=line, key=key)
        file, line, key, _ = self.errors[0]
        rendered = [f"{f}:{ln or '?'}: [{k}] {m}" for f, ln, k, m in self.errors]
        raise SpecError("invalid spec:\n  " + "\n  ".join(rendered), file=file, line=line, key=key)


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# -- static --------------------------------------------------------------------------------------
def static_checks(spec: Spec) -> None:
    problems = _Problems(spec)
    for i, task in enumerate(spec.tasks):
        if isinstance(task.eval, TaskEvalSpec):
            _check_declaration(problems, i, task.eval, task.output_schema, spec)
    problems.raise_any()


def _check_declaration(problems: _Problems, i: int, decl: TaskEvalSpec, schema: dict[str, Any] | None,
                       spec: Spec) -> None:
    loc: tuple[str | int, ...] = ("tasks", i, "eval")
    props = (schema or {}).get("properties")
    props = props if isinstance(props, dict) else None
    if decl.kind in ("fields", "exact", "accuracy"):
        keys = decl.key_map(schema)
        if not keys:
            problems.add((*loc, "keys"), "name the answer keys to score, or give the task an output_schema "
                                         "with properties")
        if props is not None:
            for key in keys:
                if key not in props:
                    hint = did_you_mean(key, props)
                    problems.add((*loc, "keys"), f"key {key!r} is not in the task's output_schema"
                                 + (f": {hint}" if hint else f" (its keys: {', '.join(props)})"))
        if isinstance(decl.normalize, dict):
            for key in decl.normalize:
                if key != "*" and key not in keys:
                    problems.add((*loc, "normalize"), f"normalize names key {key!r}, which is not scored")
    if decl.kind == "text" and decl.answer_key and props is not None and decl.answer_key not in props:
        problems.add((*loc, "answer_key"), f"answer_key {decl.answer_key!r} is not in the task's output_schema")
    if decl.kind == "judge" and decl.backend != "default" and decl.backend not in spec.backends:
        problems.add((*loc, "backend"), f"backend {decl.backend!r} is not declared as [backends.{decl.backend}]")
    names = [t.eval.name or t.name for t in spec.tasks if isinstance(t.eval, TaskEvalSpec)]
    name = decl.name or spec.tasks[i].name
    if names.count(name) > 1:
        problems.add((*loc, "name"), f"two declared evaluators are named {name!r}: set `name` on one")


# -- with data -------------------------------------------------------------------------------------
def data_checks(spec: Spec, registry: Any) -> list[str]:
    """Checks that read a sample of the data; returns warnings, raises on errors."""
    problems = _Problems(spec)
    warnings: list[str] = []
    _check_reader_options(problems, spec, registry)
    sample = _sample_record(spec, registry, warnings)
    _check_templates(problems, spec, sample)
    warnings += _check_truth_paths(problems, spec, registry)
    problems.raise_any()
    return warnings


def _files(spec: Spec) -> list[Path]:
    from ..readers.base import data_files

    return data_files(spec)


def _check_reader_options(problems: _Problems, spec: Spec, registry: Any) -> None:
    """With `format = "auto"` the options go to the reader each file's ending selects: they
    are checked against every such reader (a named format is checked when the spec loads)."""
    if spec.data.format != "auto" or not spec.data.options:
        return
    try:
        files = _files(spec)
    except UserError:
        return  # missing data is reported by the run itself
    seen: set[str] = set()
    for path in files:
        for cls in registry.items.get("reader", {}).values():
            if cls.name in seen or not cls().accepts(path):
                continue
            seen.add(cls.name)
            config = getattr(cls, "Config", None)
            if isinstance(config, type) and issubclass(config, BaseModel):
                try:
                    config.model_validate(spec.data.options)
                except ValidationError as exc:
                    for err in exc.errors():
                        key = ("data", "options", *err["loc"])
                        msg = (f"unknown option {err['loc'][-1]!r} for reader {cls.name!r}"
                               if err["type"] == "extra_forbidden" else err["msg"])
                        problems.add(key, msg)
            break


def _sample_record(spec: Spec, registry: Any, warnings: list[str]) -> dict[str, Any] | None:
    """The first record of the data as ingest sees it (None, with a warning, when unreadable)."""
    from ..readers.base import normalize_record

    try:
        files = _files(spec)
    except UserError as exc:
        warnings.append(f"templates checked without a sample record: {exc.render()}")
        return None
    for path in files:
        for cls in registry.items.get("reader", {}).values():
            if (spec.data.format == "auto" and cls().accepts(path)) or cls.name == spec.data.format:
                for item in cls().read(path):
                    if isinstance(item, DataError):
                        continue
                    try:
                        return normalize_record(item, 0)
                    except DataError:
                        continue
                break
    warnings.append("templates checked without a sample record: no readable record")
    return None


def _check_templates(problems: _Problems, spec: Spec, sample: dict[str, Any] | None) -> None:
    from ..dialogue import template_vars

    alias = {a.lower(): role.name for role in spec.roles for a in (role.name, *role.aliases)}
    alias.update({k.lower(): v for k, v in spec.data.role_map.items()})
    roles = sorted({alias.get(t["role"].lower(), t["role"].lower()) for t in sample["turns"]}) if sample else \
        [r.name for r in spec.roles] or ["customer", "agent"]
    for i, task in enumerate(spec.tasks):
        scene = task.scenes[0] if task.scenes else spec.scenes[0].name
        variables = template_vars(spec, task, scene, roles)
        for j, text in enumerate(task.templates()):
            where = _template_where(problems, spec, i, j, len(task.templates()))
            try:
                render_template(text, variables)
            except TemplateProblem as exc:
                problems.add(where[0], f"template fails on a sample record: {exc}", file=where[1],
                             line=where[2])


def _template_where(problems: _Problems, spec: Spec, i: int, j: int, count: int
                    ) -> tuple[tuple[str | int, ...], Path | None, int | None]:
    """(dotted key, file holding the template or None for the spec, line where its text starts)."""
    task = spec.tasks[i]
    if task.template_file is not None:
        path = Path(task.template_file)
        return ("tasks", i, "template_file"), path if path.is_absolute() else spec.base_dir / path, 1
    loc: tuple[str | int, ...] = ("tasks", i, "template", j) if count > 1 else ("tasks", i, "template")
    return loc, None, problems.line(("tasks", i, "template"))


def _check_truth_paths(problems: _Problems, spec: Spec, registry: Any) -> list[str]:
    from ..evaluate.declared import DeclaredEvaluator

    declared = [(i, t) for i, t in enumerate(spec.tasks) if isinstance(t.eval, TaskEvalSpec) and t.eval.kind != "judge"]
    if not declared:
        return []
    truths, source, note = _sample_truths(spec)
    if not truths:
        return [f"truth paths not checked: {note}"]
    warnings = []
    for i, task in declared:
        decl = task.eval
        assert isinstance(decl, TaskEvalSpec)
        try:
            evaluator = DeclaredEvaluator(decl, task.output_schema)
        except UserError:
            continue  # reported by static_checks
        found = sum(_reference_or_none(evaluator)(truth) is not None for truth in truths)
        loc = ("tasks", i, "eval", "truth")
        if found == 0:
            problems.add(loc, f"truth path {decl.truth!r} resolves in none of {len(truths)} sampled records of {source}"
                         + _truth_hint(truths, decl.truth or ""))
            continue
        _check_key_paths(problems, ("tasks", i, "eval", "keys"), evaluator, truths, source)
        if found < len(truths) * (1 - MISSING_WARN_SHARE):
            line = problems.line(loc)
            warnings.append(f"{spec.source}:{line or '?'}: [{_dotted(loc)}] truth path {decl.truth!r} is missing "
                            f"in {len(truths) - found} of {len(truths)} sampled records of {source} "
                            "(they are left out of the score)")
    return warnings


def require_truth(spec: Spec, truths: list[dict[str, Any]], source: str) -> None:
    """At run time (the eval stage, which `validate` may not have preceded): a declared `truth`
    path that resolves in none of the held-out records is an exit-2 error naming the file, line
    and key, not a table of zero-sample scores."""
    from ..evaluate.declared import DeclaredEvaluator

    problems = _Problems(spec)
    for i, task in enumerate(spec.tasks):
        decl = task.eval
        if not isinstance(decl, TaskEvalSpec) or decl.kind == "judge":
            continue
        evaluator = DeclaredEvaluator(decl, task.output_schema)
        if not any(_reference_or_none(evaluator)(truth) is not None for truth in truths):
            problems.add(("tasks", i, "eval", "truth"), f"truth path {decl.truth!r} resolves in none of the "
                         f"{len(truths)} records of {source}" + _truth_hint(truths, decl.truth or ""))
    problems.raise_any()


def _check_key_paths(problems: _Problems, loc: tuple[str | int, ...], evaluator: Any, truths: list[Any],
                     source: str) -> None:
    """A key whose path below `truth` is stated in none of the sampled records would score
    every answer as a false positive: most likely a misspelt or renamed slot (SGD's
    Restaurants_2 calls Restaurants_1's `city` `location`). Paths ending in `?` or `*` ask
    what is stated, so they are not checked."""
    from ..selection import resolve

    if evaluator.declaration.kind not in ("fields", "exact", "accuracy"):
        return
    references = [r for r in map(_reference_or_none(evaluator), truths) if isinstance(r, dict)]
    truth = evaluator.declaration.truth or ""
    below = [resolve(t, truth) for t in truths]
    for key, path in evaluator.keys.items():
        if path.endswith(("?", "*")) or any(ref.get(key) is not None for ref in references):
            continue
        full = f"{truth}.{path}" if truth else path
        problems.add((*loc, key), f"key {key!r} reads truth path {full!r}, stated in none of {len(references)} "
                                  f"sampled records of {source}" + _truth_hint(below, path, truth))


def _reference_or_none(evaluator: Any) -> Any:
    def reference(truth: Any) -> Any:
        try:
            return evaluator.reference(truth)
        except KeyError:
            return None
    return reference


def _truth_hint(truths: list[Any], path: str, above: str = "") -> str:
    """The keys the sampled truth objects hold at the deepest step of `path` that does resolve
    (`above`: the path of these objects themselves, for the message)."""
    from ..selection import is_missing, resolve

    parts = path.split(".") if path else []
    for depth in range(len(parts) - 1, -1, -1):
        found: dict[str, None] = {}
        for truth in truths:
            value = resolve(truth, ".".join(parts[:depth]))
            if isinstance(value, dict) and not is_missing(value):
                found.update(dict.fromkeys(map(str, value)))
        if found:
            where = ".".join(p for p in (above, *parts[:depth]) if p) or "truth"
            return f"; at {where} the records have: {', '.join(itertools.islice(found, 12))}"
    return ""


def _sample_truths(spec: Spec) -> tuple[list[dict[str, Any]], str, str]:
    """Truth objects of up to SAMPLE_RECORDS held-out records (after `[eval]` selection), else of
    the training data: (truths, where they came from, why none)."""
    from ..evaluate.heldout import read_heldout
    from ..selection import Selection

    if spec.eval is not None:
        paths = [spec.resolve_path(p) for p in spec.eval.domain_data]
        section: Any = spec.eval
        where = "eval"
    else:
        try:
            paths = [p for p in _files(spec) if p.name.endswith((".jsonl", ".jsonl.gz", ".ndjson"))]
        except UserError as exc:
            return [], "", exc.render()
        section, where = spec.data, "data"
    if not paths or not all(p.exists() for p in paths):
        return [], "", "data not found: " + ", ".join(str(p) for p in paths if not p.exists())
    try:
        selection = Selection.from_spec(section, spec, where)
        records = read_heldout(paths, limit=SAMPLE_RECORDS, selection=selection)
    except UserError as exc:
        return [], "", exc.render()
    return [r.truth for r in records], f"{where} ({', '.join(p.name for p in paths)})", ""
