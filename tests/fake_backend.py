"""A scripted generation backend for tests: `plugin = "scripted"`.

Installed for real (a dist-info with an entry point, see `scripted_backend` in conftest.py),
like simonw/llm's MockModel: every answer is derived from the prompt alone, so runs are fast,
need no model, and give the same bytes every time. JSON-schema requests get the smallest
instance of the schema (strings and booleans chosen from the prompt's hash); plain requests
(evolution rewrites) get the task text after the last "Task:" line with one constraint
added, or, for one prompt in five, unchanged (so elimination has work to do).

Each request passes the named fault point `backend:request`, so a kill test can stop the
process inside `evolve` or `label` at an exact request (DIALENGINE_FAULT=backend:request@N).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

from dialinsight_engine.backends.base import (
    Backend,
    BackendConfig,
    GenerationRequest,
    GenerationResult,
)
from dialinsight_engine.hookspecs import hookimpl
from dialinsight_engine.run import faults

CONSTRAINTS = [
    "Keep the answer under fifty words.",
    "Mention the monthly budget if the customer gave one.",
    "List the requirements in the order the customer stated them.",
    "Say which requirement matters most to the customer.",
    "Note any date the customer mentioned.",
]
WORDS = ["Fremont", "two bedrooms", "garden", "parking", "quiet street", "near school"]


class ScriptedConfig(BackendConfig):
    model: str = "scripted-1"
    fail_every: int = 0  # every N-th distinct prompt (by hash) fails: error paths without a server


def _digest(*parts: object) -> int:
    return int(hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12], 16)


def instance(schema: Any, key: int, limit: int | None = None) -> Any:
    """The smallest value that `schema` accepts, with choices taken from `key`."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][key % len(schema["enum"])]
    kind = schema.get("type", "object")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        wanted = schema.get("required", list(props))
        return {name: instance(props.get(name, {}), key >> (i % 8), limit) for i, name in enumerate(wanted)}
    if kind == "array":
        return [instance(schema.get("items", {}), key, limit) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        text = WORDS[key % len(WORDS)]
        cap = schema.get("maxLength", limit)
        return text[:cap] if cap else text
    if kind == "boolean":
        return bool(key % 2)
    if kind == "integer":
        return int(schema.get("minimum", key % 5))
    if kind == "number":
        return float(schema.get("minimum", (key % 50) / 10))
    return None


def rewrite(prompt: str, key: int) -> str:
    task = prompt.rsplit("Task:", 1)[-1].strip()
    if key % 5 == 0:
        return task  # eliminated as "unchanged"
    return f"{task} {CONSTRAINTS[key % len(CONSTRAINTS)]}"


class ScriptedBackend(Backend):
    name: ClassVar[str] = "scripted"
    Config = ScriptedConfig
    description = "deterministic answers derived from the prompt (tests)"
    config: ScriptedConfig

    @property
    def model_id(self) -> str:
        return self.config.model

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return [self._answer(req) for req in requests]

    def _answer(self, req: GenerationRequest) -> GenerationResult:
        faults.point("backend:request")
        key = _digest(req.prompt, req.system, req.seed)
        if self.config.fail_every and key % self.config.fail_every == 0:
            return GenerationResult(None, finish_reason="error", error="scripted failure")
        if req.json_schema is not None:
            text = json.dumps(instance(req.json_schema, key))
        else:
            text = rewrite(req.prompt, key)
        return GenerationResult(text, prompt_tokens=len(req.prompt.split()),
                                completion_tokens=len(text.split()), finish_reason="stop",
                                latency_s=0.001 + (key % 7) / 1000)


@hookimpl
def register_backends() -> list[type]:
    return [ScriptedBackend]
