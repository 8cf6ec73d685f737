"""The JSON Schema of a spec, for editors (`dialengine schema`; Taplo reads it through a
`#:schema` line at the top of a spec).

The spec models describe the engine's own keys; every table that names a plugin (`[train]`
by `trainer`, `[backends.NAME]` by `plugin`, `[[evolution.operators]]` by `name`,
`[quality.metrics.NAME]` and `[eval.evaluators.NAME]` by `plugin` or their table name,
`[data]` by `format`) gets that plugin's own `Config` model, through an `if`/`then` per
installed plugin, so an editor completes and checks the plugin's keys too. Fields the
loader sets (`source`, `base_dir`) are left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import __version__
from .models import Spec

if TYPE_CHECKING:
    from ..plugins import Registry

# draft 7: the newest draft Taplo's validator implements (if/then/const need 7); the schema
# uses nothing newer
DRAFT = "http://json-schema.org/draft-07/schema#"
INTERNAL_FIELDS = ("source", "base_dir")


def schema_id() -> str:
    return f"urn:dialinsight-engine:spec:{__version__}"


def spec_schema(registry: Registry) -> dict[str, Any]:
    schema = Spec.model_json_schema()
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    for name in INTERNAL_FIELDS:
        schema["properties"].pop(name, None)
    if "required" in schema:
        schema["required"] = [r for r in schema["required"] if r not in INTERNAL_FIELDS]
    configs = _PluginConfigs(registry, defs)

    train = defs["TrainSpec"]
    train["properties"]["trainer"]["enum"] = configs.names("trainer")
    train["allOf"] = configs.branches("trainer", "trainer", default="peft_lora",
                                      own=train["properties"])
    backend = defs["BackendSpec"]
    backend["properties"]["plugin"]["enum"] = configs.names("backend")
    backend["allOf"] = configs.branches("backend", "plugin", own=backend["properties"])
    operator = defs["OperatorSpec"]
    operator["properties"]["name"]["enum"] = configs.names("operator")
    operator["allOf"] = configs.branches("operator", "name", own=operator["properties"])
    data = defs["DataSpec"]
    data["allOf"] = configs.nested_branches("reader", "format", "options")

    _table_named_plugin(defs, "QualitySpec", "metrics", "MetricSpec", configs, "metric", params_key="params")
    _table_named_plugin(defs, "EvalSpec", "evaluators", "EvaluatorSpec", configs, "evaluator", params_key=None)
    return {"$schema": DRAFT, "$id": schema_id(), **schema}


class _PluginConfigs:
    """Each installed plugin's `Config` schema, its sub-models copied into the spec's `$defs`
    under a `kind.name.` prefix so two plugins' models never clash."""

    def __init__(self, registry: Registry, defs: dict[str, Any]) -> None:
        self.registry, self.defs = registry, defs

    def names(self, kind: str) -> list[str]:
        return self.registry.names(kind)

    def config(self, kind: str, name: str) -> dict[str, Any] | None:
        model = getattr(self.registry.items.get(kind, {}).get(name), "Config", None)
        if model is None or not hasattr(model, "model_json_schema"):
            return None
        prefix = f"{kind}.{name}."
        schema = model.model_json_schema(ref_template=f"#/$defs/{prefix}{{model}}")
        for sub, body in schema.pop("$defs", {}).items():
            self.defs[prefix + sub] = body
        return schema

    def branches(self, kind: str, key: str, *, own: dict[str, Any], default: str | None = None) -> list[dict]:
        """`if {key} == name then` the engine's keys plus the plugin's, nothing else."""
        out = []
        for name in self.names(kind):
            config = self.config(kind, name)
            if config is None:
                continue
            cond: dict[str, Any] = {"properties": {key: {"const": name}}, "required": [key]}
            if name == default:
                cond = {"anyOf": [cond, {"not": {"required": [key]}}]}
            then = {"properties": {**config.get("properties", {}), **{k: {} for k in own}},
                    "additionalProperties": False}
            out.append({"if": cond, "then": then})
        return out

    def nested_branches(self, kind: str, key: str, params_key: str) -> list[dict]:
        """`if {key} == name then {params_key}` follows the plugin's `Config`."""
        out = []
        for name in self.names(kind):
            config = self.config(kind, name)
            if config is not None:
                out.append({"if": {"properties": {key: {"const": name}}, "required": [key]},
                            "then": {"properties": {params_key: config}}})
        return out


def _table_named_plugin(defs: dict[str, Any], parent: str, field: str, entry: str, configs: _PluginConfigs,
                        kind: str, *, params_key: str | None) -> None:
    """`[PARENT.FIELD.NAME]`: the plugin is `plugin` when given, else NAME. Known names get a
    property of their own (completion in editors); any other name gets the `plugin` branches.
    `params_key`: the plugin's keys live under this key (metrics), or beside the engine's."""
    base = defs[entry]
    own = base["properties"]
    base["properties"]["plugin"] = {**own.get("plugin", {}), "anyOf": [
        {"enum": configs.names(kind)}, {"type": "null"}]}
    named: dict[str, Any] = {}
    branches = []
    for name in configs.names(kind):
        config = configs.config(kind, name)
        if config is None:
            continue
        body = _with_config(own, config, params_key)
        named[name] = {"allOf": [{"$ref": f"#/$defs/{entry}"}],
                       "if": {"not": {"required": ["plugin"]}}, "then": body,
                       "description": (config.get("description") or f"{kind} {name}")}
        branches.append({"if": {"properties": {"plugin": {"const": name}}, "required": ["plugin"]},
                         "then": body})
    base["allOf"] = branches
    holder = defs[parent]["properties"][field]
    holder["properties"] = named
    holder["additionalProperties"] = {"$ref": f"#/$defs/{entry}"}


def _with_config(own: dict[str, Any], config: dict[str, Any], params_key: str | None) -> dict[str, Any]:
    if params_key is not None:
        return {"properties": {params_key: config}}
    return {"properties": {**config.get("properties", {}), **{k: {} for k in own}},
            "additionalProperties": False}
