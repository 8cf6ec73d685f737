"""Training examples: chat conversations tokenised with the model's chat template, with the
loss on the final assistant message only, plus general-data replay rows read from JSONL."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError

Conversation = list[dict[str, str]]


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # -100 where no loss is taken


def encode(tokenizer: Any, messages: Conversation, max_length: int) -> Example | None:
    """Token ids of the whole conversation; labels only on the last assistant message (its
    end-of-turn token included, so the model learns to stop). None when longer than
    `max_length` (truncating would cut either the instruction or the answer)."""
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("the last message of a training conversation must be the assistant's")
    prefix = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prefix):
        raise ValueError("chat template renders the prompt differently with and without the answer")
    # the prompt is tokenised on its own, exactly as at inference time
    prompt_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prefix):].rstrip("\n"), add_special_tokens=False)["input_ids"]
    if len(prompt_ids) + len(answer_ids) > max_length:
        return None
    return Example(prompt_ids + answer_ids, [-100] * len(prompt_ids) + list(answer_ids))


def conversation_from_record(rec: dict[str, Any]) -> Conversation | None:
    """Chat messages from the JSONL formats general-replay files come in: OpenAI chat
    (`messages`), GSM8K-style (`question`/`answer`), Alpaca (`instruction`/`input`/`output`),
    ShareGPT (`conversations`)."""
    if isinstance(rec.get("messages"), list):
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in rec["messages"]]
        return msgs if msgs and msgs[-1]["role"] == "assistant" else None
    if "question" in rec and "answer" in rec:
        return [{"role": "user", "content": str(rec["question"])},
                {"role": "assistant", "content": str(rec["answer"])}]
    if "instruction" in rec and "output" in rec:
        prompt = str(rec["instruction"]) + (f"\n\n{rec['input']}" if rec.get("input") else "")
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": str(rec["output"])}]
    if isinstance(rec.get("conversations"), list):
        roles = {"human": "user", "gpt": "assistant", "system": "system"}
        msgs = [{"role": roles.get(t.get("from", ""), "user"), "content": str(t.get("value", ""))}
                for t in rec["conversations"]]
        return msgs if msgs and msgs[-1]["role"] == "assistant" else None
    return None


def read_general(path: Path, n: int, seed: int) -> list[Conversation]:
    """`n` conversations drawn (seeded) from a general-data JSONL file for replay."""
    if not path.exists():
        raise DataError(f"general replay file not found: {path}", key="train.mix_general.path")
    convs: list[Conversation] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                conv = conversation_from_record(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(f"broken record: {exc}", file=path, line=lineno) from None
            if conv is None:
                raise DataError("record is not chat (messages), question/answer, alpaca or sharegpt",
                                file=path, line=lineno)
            convs.append(conv)
    if not convs:
        raise DataError("general replay file is empty", file=path)
    rng = random.Random(f"general|{seed}")
    return rng.sample(convs, min(n, len(convs)))


def general_count(n_domain: int, fraction: float) -> int:
    """How many general rows make them `fraction` of the training mix."""
    if fraction <= 0:
        return 0
    return round(n_domain * fraction / (1.0 - fraction))
