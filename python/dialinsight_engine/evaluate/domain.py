"""The real-estate domain evaluators, kept under their names as presets of declared
evaluators (`[tasks.eval]`, see declared.py): requirement extraction (slot precision/recall/F1),
visit detection (accuracy) and offered properties (recall), scored against the shared `truth`
format. Each is exactly the declaration its `declaration()` returns."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from ..spec.evaluation import TaskEvalSpec
from .base import DomainConfig, EvaluatorConfig
from .declared import DeclaredEvaluator
from .scoring import Score

REQUIREMENT_SLOTS = ["area", "number_of_beds", "number_of_baths", "pets_allowed", "furnished"]


class RequirementsConfig(DomainConfig):
    slots: list[str] = Field(default_factory=lambda: list(REQUIREMENT_SLOTS),
                             min_length=1, description="Slots that are scored")


class Preset(DeclaredEvaluator):
    """A declared evaluator with a name, a config and a default prompt of its own."""

    Config: ClassVar[type[EvaluatorConfig]] = DomainConfig

    def __init__(self, config: EvaluatorConfig | None = None) -> None:
        config = config or self.Config()
        super().__init__(self.declare(config), self.default_schema)
        self.config = config

    @classmethod
    def declare(cls, config: Any) -> TaskEvalSpec:
        """The `[tasks.eval]` declaration this preset stands for (the instance keeps it as
        `self.declaration`)."""
        raise NotImplementedError


class RequirementsF1(Preset):
    name = "requirements_f1"
    Config: ClassVar[type[EvaluatorConfig]] = RequirementsConfig
    primary = "f1"
    description = "requirement extraction: slot precision, recall and F1 (per slot and overall)"
    default_prompt = ("Read this conversation between a customer and a letting agent.\n{dialogue}\n"
                      "Extract the customer's requirements as JSON with the keys area, number_of_beds, "
                      "number_of_baths, pets_allowed, furnished. Only include values the customer stated.")
    default_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "area": {"type": "string"}, "number_of_beds": {"type": "string"},
            "number_of_baths": {"type": "string"},
            "pets_allowed": {"type": "string", "enum": ["True", "False", "unknown"]},
            "furnished": {"type": "string", "enum": ["True", "False", "unknown"]},
        },
    }

    @classmethod
    def declare(cls, config: Any) -> TaskEvalSpec:
        return TaskEvalSpec(name=cls.name, truth="requirements", kind="fields", keys=list(config.slots),
                            normalize=["default"])


class VisitAccuracy(Preset):
    name = "visit_accuracy"
    primary = "accuracy"
    description = "visit detection: was a viewing booked (accuracy), and of which property"
    default_prompt = ("Did the customer book a visit in this conversation?\n{dialogue}\n"
                      "Answer as JSON with visit_booked (true or false) and property_name (or null).")
    default_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"visit_booked": {"type": "boolean"}, "property_name": {"type": ["string", "null"]}},
    }

    @classmethod
    def declare(cls, config: Any) -> TaskEvalSpec:
        # booked-or-not is whether truth.visit is stated; the property is compared when it is
        return TaskEvalSpec(name=cls.name, truth="visit", kind="accuracy",
                            keys={"visit_booked": "?", "property_name": "property_name"},
                            normalize={"visit_booked": ["default"], "property_name": ["name"]})

    def score(self, predictions: list[Any], references: list[Any], prompts: Any = None) -> list[Score]:
        renamed = {"exact_match": "property_accuracy"}  # its name before it was a declaration
        return [Score(renamed.get(s.metric, s.metric), s.value, s.n)
                for s in super().score(predictions, references, prompts)]


class OfferedRecall(Preset):
    name = "offered_recall"
    primary = "recall"
    description = "offered properties: recall (and precision) of the names the agent proposed"
    default_prompt = ("List every property the agent proposed in this conversation.\n{dialogue}\n"
                      'Answer as JSON: {"offered": ["property name", ...]}.')
    default_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "properties": {"offered": {"type": "array", "items": {"type": "string"}}},
    }

    @classmethod
    def declare(cls, config: Any) -> TaskEvalSpec:
        return TaskEvalSpec(name=cls.name, truth="offered", kind="fields", keys=["offered"], normalize=["name"],
                            primary="recall")
