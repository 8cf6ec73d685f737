"""Evolution operators pick their built-in prompt by language: `[project] language`, or with
"auto" the instruction's own script."""

from __future__ import annotations

import pytest

from dialinsight_engine.operators.base import InstructionView, OperatorConfig, prompt_language
from dialinsight_engine.operators.evol import BUILTIN_OPERATORS, DEFAULT_OPERATORS


@pytest.mark.parametrize(("setting", "text", "language"), [
    ("auto", "请提取客户对酒店的要求，输出JSON。", "zh"),
    ("auto", "Extract the customer's requirements as JSON.", "en"),
    ("auto", "提取 the 要求 of the customer as JSON", "zh"),   # Han characters: a fifth or more of the words
    ("zh-CN", "Extract the requirements.", "zh"),
    ("en", "请提取客户的要求。", "en"),
    ("th", "Extract the requirements.", "en"),               # no Thai prompts: English ones
])
def test_prompt_language(setting: str, text: str, language: str) -> None:
    assert prompt_language(setting, text) == language


@pytest.mark.parametrize("name", [*DEFAULT_OPERATORS, "breadth"])
def test_builtin_operators_have_chinese_prompts(name: str) -> None:
    cls = next(c for c in BUILTIN_OPERATORS if c.name == name)
    op = cls(OperatorConfig())
    common = dict(instruction="请提取客户的酒店需求。", scene="hotel_search", scene_description="酒店搜索",
                  task="extract_hotel", task_description="", business="我们是一家旅行平台。客服需要弄清需求。")
    zh = op.prompt(InstructionView(**common, keep_placeholder=True, language="zh"))
    en = op.prompt(InstructionView(**common, keep_placeholder=True, language="en"))
    assert zh.startswith("请") and "任务：请提取客户的酒店需求。" in zh and "{dialogue}" in zh
    if name in ("add_constraints", "deepen", "breadth"):  # business_short: the first sentence only
        assert "我们是一家旅行平台" in zh and "客服需要弄清需求" not in zh
    assert en.startswith(("Rewrite", "Write")) and "Task: " in en
    assert op.fingerprint() != cls(OperatorConfig(hint="x")).fingerprint()
