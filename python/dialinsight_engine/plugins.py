"""One plugin manager: loads built-ins and third parties from the entry-point group.

Set ``DIALENGINE_PLUGINS`` to a comma-separated list of entry-point names to load only those
(reproducible runs and tests); ``DIALENGINE_BLOCK_PLUGINS`` blocks names, like pytest's ``-p no:``.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, did_you_mean

GROUP = "dialinsight_engine"
LOG = logging.getLogger(__name__)

#: hook name -> registry kind
KINDS = {
    "register_readers": "reader",
    "register_stages": "stage",
    "register_metrics": "metric",
    "register_operators": "operator",
    "register_backends": "backend",
    "register_trainers": "trainer",
    "register_evaluators": "evaluator",
}


@dataclass
class PluginInfo:
    name: str
    dist: str
    version: str
    provides: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Registry:
    """Everything the installed plugins provide, by kind and name."""

    pm: pluggy.PluginManager
    plugins: dict[str, PluginInfo]
    items: dict[str, dict[str, type]]
    owner: dict[tuple[str, str], str]

    def get(self, kind: str, name: str, *, where: str | None = None, file: str | None = None,
            line: int | None = None) -> type:
        table = self.items.get(kind, {})
        if name in table:
            return table[name]
        hint = did_you_mean(name, table) or f"known: {', '.join(sorted(table)) or 'none'}"
        raise PluginError(f"unknown {kind} {name!r}", key=where, file=file, line=line, hint=hint)

    def names(self, kind: str) -> list[str]:
        return sorted(self.items.get(kind, {}))

    def version_of(self, kind: str, name: str) -> str:
        plugin = self.owner.get((kind, name))
        info = self.plugins.get(plugin or "")
        return f"{info.dist}=={info.version}" if info else "unknown"

    def add_commands(self, cli: Any) -> None:
        self.pm.hook.register_commands(cli=cli)


def _selected(name: str) -> bool:
    only = os.environ.get("DIALENGINE_PLUGINS")
    blocked = os.environ.get("DIALENGINE_BLOCK_PLUGINS", "")
    if name in {b.strip() for b in blocked.split(",") if b.strip()}:
        return False
    return only is None or name in {o.strip() for o in only.split(",") if o.strip()}


def build_registry(extra_plugins: list[Any] | None = None) -> Registry:
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    for ep in md.entry_points(group=GROUP):
        if not _selected(ep.name) or ep.name in infos:
            continue
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        info = PluginInfo(ep.name, dist, version)
        infos[ep.name] = info
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin is reported by name, never a crash
            info.error = f"{type(exc).__name__}: {exc}"
    for plugin in extra_plugins or []:
        name = getattr(plugin, "__name__", repr(plugin))
        pm.register(plugin, name=name)
        infos[name] = PluginInfo(name, name, "local")

    items: dict[str, dict[str, type]] = {kind: {} for kind in KINDS.values()}
    owner: dict[tuple[str, str], str] = {}
    for hook_name, kind in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or "?"
            info = infos.setdefault(plugin_name, PluginInfo(plugin_name, "?", "?"))
            try:
                provided = impl.function() or []
            except Exception as exc:
                info.error = f"{hook_name}: {type(exc).__name__}: {exc}"
                continue
            for cls in provided:
                cls_name = getattr(cls, "name", None)
                if not cls_name:
                    info.error = f"{hook_name}: {cls!r} has no 'name'"
                    continue
                _warn_on_override(kind, cls_name, owner.get((kind, cls_name)), plugin_name)
                items[kind][cls_name] = cls  # later plugins override earlier ones
                owner[(kind, cls_name)] = plugin_name
                info.provides.setdefault(kind, []).append(cls_name)
    return Registry(pm, infos, items, owner)


def _warn_on_override(kind: str, name: str, previous: str | None, plugin: str) -> None:
    """Two plugins providing one name is legal (a replacement) but easy to do by accident:
    say which one wins, and how to choose the other."""
    if previous is not None and previous != plugin:
        LOG.warning("plugin %r registers %s %r, which plugin %r already provides; %r's is used "
                    "(block one with DIALENGINE_BLOCK_PLUGINS=NAME)", plugin, kind, name, previous, plugin)


@cache
def get_registry() -> Registry:
    """The process-wide registry (tests build their own with `build_registry`)."""
    return build_registry()
