"""The operators shipped with the engine (registered by `builtins/generation.py`):
Evol-Instruct's four depth rewrites, breadth, and `template` (a prompt file of your own)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, model_validator

from ..errors import UserError
from .base import OperatorConfig, TemplateOperator, packaged_prompt


class _Packaged(TemplateOperator):
    """A built-in whose prompt is `prompts/<name>.txt`."""

    def template(self, language: str = "en") -> str:
        return packaged_prompt(f"{self.name}.txt", language)


class AddConstraints(_Packaged):
    name = "add_constraints"
    description = "add one realistic constraint or requirement"


class Deepen(_Packaged):
    name = "deepen"
    description = "ask for more depth: one more detail the answer must cover"


class Concretise(_Packaged):
    name = "concretise"
    description = "replace general words with ones specific to the scene"


class IncreaseReasoning(_Packaged):
    name = "increase_reasoning"
    description = "require step-by-step reasoning over what the customer said"


class Breadth(_Packaged):
    name = "breadth"
    description = "a new, rarer task in the same scene (task '<parent>-breadth', no answer schema)"
    new_task = True


class TemplateConfig(OperatorConfig):
    template: str | None = Field(None, description="Inline Jinja2 prompt")
    template_file: str | None = Field(None, description="Jinja2 prompt file, relative to the spec")
    new_task: bool = Field(False, description="The rewrite is a different task (drops the answer schema)")

    @model_validator(mode="after")
    def _one_source(self) -> TemplateConfig:
        if (self.template is None) == (self.template_file is None):
            raise ValueError("the template operator needs exactly one of `template` or `template_file`")
        return self


class Template(TemplateOperator):
    """A third party's operator from a prompt template alone."""

    name = "template"
    Config = TemplateConfig
    description = "your own rewrite prompt (template or template_file)"

    @cached_property
    def _text(self) -> str:
        cfg: TemplateConfig = self.config  # type: ignore[assignment]
        if cfg.template is not None:
            return cfg.template
        path = Path(cfg.template_file or "")
        path = path if path.is_absolute() else self.base_dir / path
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"evolution template_file {path}: {exc.strerror or exc}",
                            key="evolution.operators.template_file") from None

    def template(self, language: str = "en") -> str:
        return self._text  # the user's own prompt, whatever the language

    def makes_new_task(self) -> bool:
        return bool(getattr(self.config, "new_task", False))


BUILTIN_OPERATORS: list[type] = [AddConstraints, Deepen, Concretise, IncreaseReasoning, Breadth, Template]
DEFAULT_OPERATORS = ["add_constraints", "deepen", "concretise", "increase_reasoning"]
