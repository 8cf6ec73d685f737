"""Check a task's `output_schema` before any request is sent: it must be a valid JSON Schema.

A misspelt type (`"strnig"`) or an `enum` with no values would otherwise surface only after
every label request failed. The meta-schema check is jsonschema's own (`check_schema`, for
the draft the schema's `$schema` names, else 2020-12); an empty `enum` is valid there but
matches nothing, so it is refused too.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError


def check_output_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError naming the schema path of the first problem."""
    cls = validators.validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise ValueError(f"output_schema is not a valid JSON Schema at {where}: {exc.message}") from None
    empty = _empty_enum(schema)
    if empty is not None:
        raise ValueError(f"output_schema at {empty or '(top)'}: `enum` lists no values, so no answer can match")


def _empty_enum(schema: Any) -> str | None:
    """The path of the first `enum = []` inside the schema (walked without recursion)."""
    stack: list[tuple[Any, str]] = [(schema, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if node.get("enum") == []:
                return path
            stack.extend((v, f"{path}/{k}".lstrip("/")) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{path}/{i}".lstrip("/")) for i, v in enumerate(node))
    return None
