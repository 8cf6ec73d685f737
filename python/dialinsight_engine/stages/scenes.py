"""Stage `scenes`: tag each dialogue with scenes by rules (keywords, regexes, intents) and
list the roles that speak in it. A dialogue may have several scenes, or none (counted)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import polars as pl

from .. import records as R
from .base import ORDER, Stage

if TYPE_CHECKING:
    from ..run.context import StageContext
    from ..spec.models import SceneSpec


class SceneMatcher:
    """Compiled rules of one scene; `hits` counts keyword and regex matches."""

    def __init__(self, scene: SceneSpec) -> None:
        self.scene = scene
        words = [re.escape(k.strip()) for k in scene.keywords if k.strip()]
        # whole-word match for keywords so "bed" does not match "embedded"
        self.keyword_re = re.compile(r"\b(?:" + "|".join(words) + r")\b", re.I) if words else None
        self.regexes = [re.compile(p, re.I) for p in scene.regex]
        self.roles = {r.lower() for r in scene.roles}
        self.intents = set(scene.intents)

    def hits(self, turns: list[dict[str, str]], intents: list[str]) -> int:
        text = "\n".join(t["text"] for t in turns if not self.roles or t["role"].lower() in self.roles)
        n = len(self.keyword_re.findall(text)) if self.keyword_re else 0
        n += sum(len(r.findall(text)) for r in self.regexes)
        if self.intents and self.intents.intersection(intents):
            n += self.scene.min_hits
        return n


class ScenesStage(Stage):
    name = "scenes"
    order = ORDER["scenes"]
    config_keys = ("scenes",)
    description = "tag dialogues with scenes by keyword/regex/intent rules"

    def run(self, ctx: StageContext) -> pl.DataFrame:
        df = ctx.input
        matchers = [SceneMatcher(s) for s in ctx.spec.scenes]
        scenes: list[list[str]] = []
        roles: list[list[str]] = []
        with ctx.progress("tagging scenes", df.height) as advance:
            for turns, intents in zip(df[R.TURNS].to_list(), df["intents"].to_list(), strict=True):
                counts = [(m.hits(turns, intents or []), m.scene.name) for m in matchers]
                # strongest evidence first, spec order breaking ties
                matched = [name for n, name in sorted(
                    ((n, name) for n, name in counts if n >= next(
                        m.scene.min_hits for m in matchers if m.scene.name == name)),
                    key=lambda x: -x[0])]
                scenes.append(matched)
                roles.append(sorted({t["role"] for t in turns}))
                advance(1)
        out = df.with_columns(pl.Series(R.SCENES, scenes, dtype=pl.List(pl.String)),
                              pl.Series(R.ROLES, roles, dtype=pl.List(pl.String)))
        counts = out.explode(R.SCENES).group_by(R.SCENES).len().sort(R.SCENES)
        ctx.stats["per_scene"] = {str(k): int(v) for k, v in counts.iter_rows()}
        ctx.stats["untagged"] = int((out[R.SCENES].list.len() == 0).sum())
        return out
