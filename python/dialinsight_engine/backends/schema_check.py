"""Is an `output_schema` a JSON Schema a model can satisfy? Checked before any request is sent.

`schema_problem` checks a schema against its meta-schema (the draft its ``$schema`` names,
else the newest `jsonschema` knows) and rejects an empty ``enum``, which the meta-schema allows
but no value satisfies. Spec validation and the generation client both call it, so an invalid
schema (``type = "strnig"``) stops the run before the first request, not after the last.
"""

from __future__ import annotations

from typing import Any


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a usable JSON Schema, or None when it is."""
    import jsonschema

    if not isinstance(schema, (dict, bool)):
        return f"a JSON Schema is an object, not {type(schema).__name__}"
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(root)"
        return f"not a valid JSON Schema at {where}: {exc.message[:200]}"
    empty = _empty_enum(schema)
    if empty is not None:
        return f"not a usable JSON Schema at {empty or '(root)'}: an empty enum allows no value"
    return None


def _empty_enum(schema: Any) -> str | None:
    """Path of the first empty `enum` in the schema, walked without recursion."""
    stack: list[tuple[Any, str]] = [(schema, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if node.get("enum") == []:
                return path
            stack.extend((v, f"{path}/{k}".lstrip("/")) for k, v in node.items()
                         if k not in ("enum", "const", "default", "examples"))
        elif isinstance(node, list):
            stack.extend((v, f"{path}/{i}".lstrip("/")) for i, v in enumerate(node))
    return None
