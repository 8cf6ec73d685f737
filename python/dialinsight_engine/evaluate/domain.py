"""Domain evaluators for the real-estate tasks, scored against the shared `truth` format:
requirement extraction (slot precision/recall/F1), visit detection (accuracy) and offered
properties (recall)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from .base import DomainConfig, DomainEvaluator, EvaluatorConfig
from .scoring import Score, offered_scores, slot_scores, visit_scores

REQUIREMENT_SLOTS = ["area", "number_of_beds", "number_of_baths", "pets_allowed", "furnished"]


class RequirementsConfig(DomainConfig):
    slots: list[str] = Field(default_factory=lambda: list(REQUIREMENT_SLOTS),
                             min_length=1, description="Slots that are scored")


class RequirementsF1(DomainEvaluator):
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
    config: RequirementsConfig

    def reference(self, truth: dict[str, Any]) -> dict[str, Any]:
        requirements = truth["requirements"]
        if not isinstance(requirements, dict):
            raise KeyError("requirements")
        return requirements

    def score(self, predictions: list[Any], references: list[Any]) -> list[Score]:
        return slot_scores(predictions, references, self.config.slots)


class VisitAccuracy(DomainEvaluator):
    name = "visit_accuracy"
    primary = "accuracy"
    description = "visit detection: was a viewing booked (accuracy), and of which property"
    default_prompt = ("Did the customer book a visit in this conversation?\n{dialogue}\n"
                      "Answer as JSON with visit_booked (true or false) and property_name (or null).")
    default_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"visit_booked": {"type": "boolean"}, "property_name": {"type": ["string", "null"]}},
    }

    def reference(self, truth: dict[str, Any]) -> dict[str, Any] | None:
        if "visit" not in truth:
            raise KeyError("visit")
        return truth["visit"]

    def score(self, predictions: list[Any], references: list[Any]) -> list[Score]:
        return visit_scores(predictions, references)


class OfferedRecall(DomainEvaluator):
    name = "offered_recall"
    primary = "recall"
    description = "offered properties: recall (and precision) of the names the agent proposed"
    default_prompt = ("List every property the agent proposed in this conversation.\n{dialogue}\n"
                      'Answer as JSON: {"offered": ["property name", ...]}.')
    default_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "properties": {"offered": {"type": "array", "items": {"type": "string"}}},
    }

    def reference(self, truth: dict[str, Any]) -> list[str]:
        offered = truth["offered"]
        if not isinstance(offered, list):
            raise KeyError("offered")
        return offered

    def parse(self, answer: dict[str, Any] | None) -> list[Any] | None:
        value = (answer or {}).get("offered")
        return value if isinstance(value, list) else None

    def score(self, predictions: list[Any], references: list[Any]) -> list[Score]:
        return offered_scores(predictions, references)
