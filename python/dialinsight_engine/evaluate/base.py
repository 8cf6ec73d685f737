"""The evaluator interface. A domain evaluator turns held-out dialogues into prompts and
scores the model's answers against `truth`; a general evaluator measures a capability the
fine-tuning must not destroy. Each names its main metric (the one the guard reads)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from .scoring import Score

if TYPE_CHECKING:
    from .lm import LanguageModel


class EvaluatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Evaluator(ABC):
    name: ClassVar[str]
    suite: ClassVar[Literal["domain", "general"]]
    Config: ClassVar[type[EvaluatorConfig]] = EvaluatorConfig
    #: the metric the guard compares between variants
    primary: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(self, config: EvaluatorConfig | None = None) -> None:
        self.config = config or self.Config()


class DomainConfig(EvaluatorConfig):
    task: str | None = Field(None, description="Spec task whose first template builds the prompt "
                                               "(default: the task whose `eval` names this evaluator)")
    prompt: str | None = Field(None, description="Prompt with {dialogue}, used when no task applies")


class DomainEvaluator(Evaluator):
    """Scores answers about one dialogue against its `truth`."""

    suite = "domain"
    Config: ClassVar[type[EvaluatorConfig]] = DomainConfig
    #: prompt (with {dialogue}) and output schema when the spec has no task for this evaluator
    default_prompt: ClassVar[str]
    default_schema: ClassVar[dict[str, Any]]

    @abstractmethod
    def reference(self, truth: dict[str, Any]) -> Any:
        """What the answer is compared with; raise KeyError when `truth` lacks it."""

    def parse(self, answer: dict[str, Any] | None) -> Any:
        """The comparable part of a parsed JSON answer (None: unparseable)."""
        return answer

    def parse_answer(self, answer: dict[str, Any] | None, text: str) -> Any:
        """The comparable part of an answer, given its parsed JSON (or None) and its text."""
        return self.parse(answer)

    def expected_keys(self) -> list[str]:
        """Keys a JSON answer must have to count as well formed (default: the schema's)."""
        props = (getattr(self, "default_schema", None) or {}).get("properties") or {}
        return list(props)

    @abstractmethod
    def score(self, predictions: list[Any], references: list[Any]) -> list[Score]:
        """Metrics over all dialogues."""


class GeneralEvaluator(Evaluator):
    suite = "general"

    @abstractmethod
    def evaluate(self, lm: LanguageModel, *, base_dir: Path | None, exclude: set[str]) -> list[Score]:
        """Metrics of `lm`. `exclude` holds the training prompts: items found in it are
        skipped (a replayed general row must not be scored as unseen)."""
