"""Evolution operators: each turns an instruction into the prompt that asks a model to rewrite it.

An operator is a class with a `name`, an optional pydantic `Config` (its keys in
`[[evolution.operators]]`) and `prompt(view)`. The built-ins are Jinja2 templates shipped as
package data in `operators/prompts/`; a third party can ship a prompt file and use the generic
`template` operator, or subclass `TemplateOperator` with its own `template_text`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ..errors import UserError
from ..templating import TemplateProblem, render_template

KEEP_NOTE = " Keep the marker {dialogue} exactly as it is: it stands for the conversation."
#: the same note per prompt language (English for languages without their own prompts)
KEEP_NOTES = {"en": KEEP_NOTE, "zh": "请原样保留标记 {dialogue}：它代表对话内容。"}
#: languages with their own built-in prompts (operators/prompts/<language>/)
PROMPT_LANGUAGES = ("en", "zh")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def prompt_language(setting: str, text: str) -> str:
    """The language of the operator prompt for one instruction: `[project] language` when it
    names one with built-in prompts ("zh", "zh-CN" -> zh), else by the instruction's own
    script when it is "auto" (Han characters are a fifth or more of its words -> zh), else en."""
    base = setting.lower().split("-")[0].split("_")[0]
    if base in PROMPT_LANGUAGES:
        return base
    if base == "auto":  # a Han character weighs as much as a word of a spaced script
        han = len(_HAN.findall(text))
        words = len(re.findall(r"[^\W\d_]+", _HAN.sub(" ", text)))
        return "zh" if han and han / (han + words) >= 0.2 else "en"
    return "en"


class OperatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hint: str = Field("", description="Extra guidance appended to the operator's prompt")


@dataclass(frozen=True)
class InstructionView:
    """What an operator sees of one instruction."""

    instruction: str  # the text to rewrite (without {dialogue} in "reinsert" mode)
    scene: str
    scene_description: str
    task: str
    task_description: str
    business: str
    keep_placeholder: bool  # the model must keep {dialogue} in its rewrite
    language: str = "en"  # the prompt language (prompt_language): built-ins pick their prompt by it


class Operator(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]] = OperatorConfig
    description: ClassVar[str] = ""
    #: breadth operators write a new task: the answer schema of the parent no longer applies
    new_task: ClassVar[bool] = False

    def __init__(self, config: BaseModel, base_dir: Path | None = None) -> None:
        self.config = config
        self.base_dir = base_dir or Path(".")

    @abstractmethod
    def prompt(self, view: InstructionView) -> str:
        """The rewrite request sent to the evolution backend."""

    def makes_new_task(self) -> bool:
        return self.new_task

    def task_name(self, parent_task: str) -> str:
        return f"{parent_task}-{self.name}" if self.makes_new_task() else parent_task

    def fingerprint(self) -> str:
        """Changes when the operator's prompt changes (part of the evolve stage's fingerprint)."""
        return self.config.model_dump_json()


def packaged_prompt(filename: str, language: str = "en") -> str:
    """A built-in prompt in `language` (prompts/<language>/<filename>), English when there is none."""
    folder = files("dialinsight_engine.operators") / "prompts"
    if language != "en":
        localised = folder / language / filename
        if localised.is_file():
            return localised.read_text(encoding="utf-8")
    return (folder / filename).read_text(encoding="utf-8")


def render(template_text: str, view: InstructionView, hint: str = "") -> str:
    """The operator prompt, rendered in the sandbox (spec-provided prompts are data)."""
    try:
        return render_template(template_text, prompt_vars(view, hint)).strip()
    except TemplateProblem as exc:
        raise UserError(f"evolution prompt template: {exc}", key="evolution.operators") from None


def prompt_vars(view: InstructionView, hint: str = "") -> dict[str, str]:
    """The variables of an operator prompt (also used by `validate` to try a template)."""
    business = view.business.strip()
    # the first sentence of the business text is enough context for a small model
    business_short = re.split(r"\. |。", business)[0].rstrip(".") if business else "a company"
    if not business and view.language == "zh":
        business_short = "一家公司"
    return {
        "instruction": view.instruction, "scene": view.scene,
        "scene_description": view.scene_description or view.scene.replace("_", " "),
        "task": view.task, "task_description": view.task_description, "business": business,
        "business_short": business_short,
        "keep_note": KEEP_NOTES.get(view.language, KEEP_NOTE) if view.keep_placeholder else "",
        "hint": f" {hint.strip()}" if hint.strip() else "",
    }


class TemplateOperator(Operator):
    """An operator whose prompt is a Jinja2 template (variables: instruction, scene,
    scene_description, task, task_description, business, business_short, keep_note, hint)."""

    template_text: ClassVar[str] = ""

    def template(self, language: str = "en") -> str:
        return self.template_text

    def prompt(self, view: InstructionView) -> str:
        return render(self.template(view.language), view, getattr(self.config, "hint", ""))

    def fingerprint(self) -> str:
        texts = dict.fromkeys(self.template(lang) for lang in PROMPT_LANGUAGES)
        return "\x1e".join(texts) + "\x1f" + super().fingerprint()
