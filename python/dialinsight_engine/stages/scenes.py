"""Stage `scenes`: tag each dialogue with scenes by rules (keywords, regexes, intents) and
list the roles that speak in it. A dialogue may have several scenes, or none (counted)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import polars as pl

from .. import records as R
from ..executors.base import PartitionContext, RowStage
from ..run.stage import ORDER
from ..selection import compile_where, record_view

if TYPE_CHECKING:
    from ..spec.models import SceneSpec


#: scripts written without spaces between words: a keyword in them matches inside the text
_UNSPACED = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf"
                       r"\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def keyword_pattern(keywords: list[str]) -> re.Pattern[str] | None:
    """One pattern for all keywords: whole words for spaced scripts (so "bed" does not match
    "embedded"), plain substrings for keywords in unspaced scripts (Chinese, Japanese, Korean,
    Thai...), where word boundaries do not exist in the text."""
    words = [k.strip() for k in keywords if k.strip()]
    spaced = [re.escape(k) for k in words if not _UNSPACED.search(k)]
    unspaced = [re.escape(k) for k in words if _UNSPACED.search(k)]
    parts = ([r"\b(?:" + "|".join(spaced) + r")\b"] if spaced else []) + (["|".join(unspaced)] if unspaced else [])
    return re.compile("|".join(parts), re.I) if parts else None


class SceneMatcher:
    """Compiled rules of one scene; `hits` counts keyword and regex matches, and a record whose
    intents or fields match counts as `min_hits` outright."""

    def __init__(self, scene: SceneSpec) -> None:
        self.scene = scene
        self.keyword_re = keyword_pattern(scene.keywords)
        self.regexes = [re.compile(p, re.I) for p in scene.regex]
        self.roles = {r.lower() for r in scene.roles}
        self.intents = set(scene.intents)
        self.fields = compile_where(scene.match) if scene.match else None

    def hits(self, turns: list[dict[str, str]], intents: list[str], view: dict[str, Any] | None = None) -> int:
        text = "\n".join(t["text"] for t in turns if not self.roles or t["role"].lower() in self.roles)
        n = len(self.keyword_re.findall(text)) if self.keyword_re else 0
        n += sum(len(r.findall(text)) for r in self.regexes)
        if self.intents and self.intents.intersection(intents):
            n += self.scene.min_hits
        if self.fields is not None and view is not None and self.fields(view):
            n += self.scene.min_hits
        return n


class ScenesStage(RowStage):
    name = "scenes"
    order = ORDER["scenes"]
    version = "2"  # 2: truth/meta/output_schema stored as structs where they fit (run/dataset.py)
    config_keys = ("scenes",)
    description = "tag dialogues with scenes by keyword/regex/intent rules"

    def map_partition(self, pctx: PartitionContext, df: pl.DataFrame, state: Any) -> pl.DataFrame:
        matchers = [SceneMatcher(s) for s in pctx.spec.scenes]
        tagged = [_tag(matchers, rec) for rec in df.iter_rows(named=True)]
        out = df.with_columns(pl.Series(R.SCENES, [t[0] for t in tagged], dtype=pl.List(pl.String)),
                              pl.Series(R.ROLES, [t[1] for t in tagged], dtype=pl.List(pl.String)))
        counts = out.explode(R.SCENES).group_by(R.SCENES).len().sort(R.SCENES)
        pctx.stats["per_scene"] = {str(k): int(v) for k, v in counts.iter_rows()}
        pctx.stats["untagged"] = int((out[R.SCENES].list.len() == 0).sum())
        return out


def _tag(matchers: list[SceneMatcher], rec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The scenes of one dialogue (strongest evidence first, spec order breaking ties) and its roles."""
    turns, intents = rec[R.TURNS], rec["intents"] or []
    view = record_view(rec[R.DIALOGUE_ID], turns, intents, _json(rec.get(R.TRUTH)), _json(rec.get("meta")) or {}
                       ) if any(m.fields for m in matchers) else None
    minimum = {m.scene.name: m.scene.min_hits for m in matchers}
    counts = [(m.hits(turns, intents, view), m.scene.name) for m in matchers]
    matched = [name for n, name in sorted(((n, name) for n, name in counts if n >= minimum[name]),
                                          key=lambda x: -x[0])]
    return matched, sorted({t["role"] for t in turns})


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None
