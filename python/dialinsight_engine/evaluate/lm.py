"""A transformers causal LM seen by the evaluators: greedy chat generation, schema-slot
filling (constrained JSON decoding for flat objects) and log-likelihood scoring.

Base and tuned models go through the same object, so they decode identically."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

#: JSON schema types `fill_slots` can constrain; anything else falls back to free decoding
_SLOT_TYPES = {"string", "integer", "number", "boolean", "null"}


def slot_schema(schema: dict[str, Any] | None) -> bool:
    """Whether `schema` is a flat object `fill_slots` can decode."""
    if not schema or schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        return False
    for prop in schema["properties"].values():
        types = prop.get("type", "string")
        types = types if isinstance(types, list) else [types]
        if types == ["array"] and (prop.get("items") or {}).get("type") == "string":
            continue  # a list of strings is decoded item by item
        if not set(types) <= _SLOT_TYPES and "enum" not in prop:
            return False
    return bool(schema["properties"])


class LanguageModel:
    def __init__(self, model: Any, tokenizer: Any, *, system_prompt: str = "", batch_size: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
        self.stop_ids = sorted({i for i in (tokenizer.eos_token_id, end) if i is not None})
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]

    # -- prompts -------------------------------------------------------------------------------
    def messages(self, prompt: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": prompt}]

    def chat_prefix(self, prompt: str) -> str:
        return self.tokenizer.apply_chat_template(self.messages(prompt), tokenize=False, add_generation_prompt=True)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # -- generation ----------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy chat completions, batched with left padding."""
        import torch

        outputs: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            encoded = [self._ids(self.chat_prefix(p)) for p in prompts[start:start + self.batch_size]]
            width = max(len(e) for e in encoded)
            ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(encoded), width), dtype=torch.long)
            for i, e in enumerate(encoded):
                ids[i, width - len(e):] = torch.tensor(e)
                mask[i, width - len(e):] = 1
            with torch.no_grad():
                out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=self.pad_id, eos_token_id=self.stop_ids)
            for row in out[:, width:].tolist():
                cut = next((k for k, t in enumerate(row) if t in self.stop_ids), len(row))
                outputs.append(self.tokenizer.decode(row[:cut], skip_special_tokens=True))
        return outputs

    def fill_slots(self, prompt: str, schema: dict[str, Any], max_value_tokens: int = 24) -> tuple[dict[str, Any], str]:
        """Decode a flat JSON object key by key: the keys and punctuation are forced, each
        value is generated greedily (strings stop at the closing quote) or chosen among its
        allowed spellings by likelihood (enums, booleans, null). Returns (object, JSON text)."""
        return _SlotFiller(self, prompt, max_value_tokens).run(schema)

    # -- scoring -------------------------------------------------------------------------------
    def continuation_logprobs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        """(sum of log-probabilities, token count) of each continuation after its context;
        the context is tokenised on its own, as it is at generation time."""
        import torch

        encoded = []
        for context, continuation in pairs:
            ctx_ids, cont_ids = self._ids(context), self._ids(continuation)
            if not cont_ids:
                raise ValueError("empty continuation")
            encoded.append((ctx_ids, cont_ids))
        results: list[tuple[float, int]] = []
        body = self.model.get_decoder()
        head = self.model.get_output_embeddings()
        for start in range(0, len(encoded), self.batch_size):
            chunk = encoded[start:start + self.batch_size]
            width = max(len(c) + len(t) for c, t in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, (c, t) in enumerate(chunk):
                ids[i, :len(c) + len(t)] = torch.tensor(c + t)
                mask[i, :len(c) + len(t)] = 1
            with torch.no_grad():
                hidden = body(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
                for i, (c, t) in enumerate(chunk):
                    # position p predicts token p+1: the continuation is predicted from len(c)-1 on
                    positions = hidden[i, len(c) - 1:len(c) + len(t) - 1]
                    logprobs = torch.log_softmax(head(positions).float(), dim=-1)
                    target = torch.tensor(t, device=logprobs.device)
                    results.append((float(logprobs.gather(1, target[:, None]).sum()), len(t)))
        return results

    def text_logprobs(self, texts: Sequence[str]) -> list[tuple[float, int]]:
        """(sum of log-probabilities, scored tokens) of plain texts, every token after the first."""
        pairs = []
        for text in texts:
            ids = self._ids(text)
            if len(ids) < 2:
                continue
            first = self.tokenizer.decode(ids[:1])
            pairs.append((first, text[len(first):]) if text.startswith(first) else (text[:1], text[1:]))
        return self.continuation_logprobs(pairs)


class _SlotFiller:
    """Incremental decoding over one KV cache. Forced text waits in `pending` and is fed in
    one call right before the model next decides, so it is tokenised as naturally as a
    whole (`"` of a closing string joins the `, "key":` after it); alternatives are scored
    on the cache and cropped back."""

    def __init__(self, lm: LanguageModel, prompt: str, max_value_tokens: int) -> None:
        from transformers import DynamicCache

        self.lm = lm
        self.max_value_tokens = max_value_tokens
        self.cache = DynamicCache()
        self.text = ""
        self.pending = ""
        self.last_logits = self._feed(lm._ids(lm.chat_prefix(prompt)))

    def _feed(self, ids: list[int]) -> Any:
        import torch

        with torch.no_grad():
            out = self.lm.model(input_ids=torch.tensor([ids], device=self.lm.device),
                                cache=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].float()

    def force(self, text: str) -> None:
        self.text += text
        self.pending += text

    def _flush(self) -> None:
        if self.pending:
            self.last_logits = self._feed(self.lm._ids(self.pending))
            self.pending = ""

    def _branch_logprob(self, ids: list[int]) -> float:
        import torch

        total = float(torch.log_softmax(self.last_logits, -1)[ids[0]])
        if len(ids) > 1:
            length = self.cache.get_seq_length()
            with torch.no_grad():
                out = self.lm.model(input_ids=torch.tensor([ids[:-1]], device=self.lm.device),
                                    cache=self.cache, use_cache=True)
            logprobs = torch.log_softmax(out.logits[0].float(), -1)
            total += float(sum(logprobs[k, ids[k + 1]] for k in range(len(ids) - 1)))
            self.cache.crop(-(self.cache.get_seq_length() - length))  # negative: tokens to drop
        return total

    def choose(self, options: list[str]) -> str:
        """The likeliest of `options` (each scored as a whole), forced."""
        self._flush()
        scored = [(self._branch_logprob(self.lm._ids(o)), o) for o in options]
        best = max(scored, key=lambda s: s[0])[1]
        self.force(best)
        return best

    def generate_until(self, stop_chars: str, allowed: str | None = None) -> str:
        """Greedy tokens until one brings a stop character (or one outside `allowed`); the text
        before that character is the value and is kept as forced text."""
        import torch

        self._flush()
        tokens: list[int] = []
        value = ""
        for _ in range(self.max_value_tokens):
            token = int(torch.argmax(self.last_logits))
            if token in self.lm.stop_ids:
                break
            candidate = self.lm.tokenizer.decode([*tokens, token])
            cut = next((k for k, ch in enumerate(candidate) if ch in stop_chars or ch == "\n"
                        or (allowed is not None and ch not in allowed)), None)
            if cut is not None:
                value = candidate[:cut]
                break
            tokens.append(token)
            value = candidate
            self.last_logits = self._feed([token])
        fed = self.lm.tokenizer.decode(tokens)
        self.text += value
        # the stopping token may have carried the end of the value: it goes in as forced text
        self.pending += value[len(fed):]
        return value

    def string_list(self, max_items: int = 8) -> list[str]:
        """A JSON list of strings: after each item the model chooses between another and the end."""
        self.force(" [")
        items: list[str] = []
        for k in range(max_items):
            if self.choose(['"', "]"] if k == 0 else [', "', "]"]) == "]":
                return items
            items.append(self.generate_until('"'))
            self.force('"')
        self.force("]")
        return items

    def run(self, schema: dict[str, Any]) -> tuple[dict[str, Any], str]:
        result: dict[str, Any] = {}
        for index, (key, prop) in enumerate(schema["properties"].items()):
            self.force(("{" if index == 0 else ", ") + json.dumps(key) + ":")
            types = prop.get("type", "string")
            types = types if isinstance(types, list) else [types]
            if types == ["array"]:
                result[key] = self.string_list()
                continue
            if "enum" in prop:
                options = [" " + json.dumps(v) for v in prop["enum"]]
                if "null" in types and " null" not in options:
                    options.append(" null")
                result[key] = json.loads(self.choose(options))
                continue
            alternatives = _value_starts(types)
            if len(alternatives) > 1:
                start = self.choose(alternatives)
            else:
                start = alternatives[0]
                self.force(start)
            if start == ' "':
                result[key] = self.generate_until('"')
                self.force('"')
            elif start.strip() in ("true", "false", "null"):
                result[key] = json.loads(start)
            else:
                rest = self.generate_until(",}", allowed="0123456789.eE+-")
                try:
                    result[key] = json.loads(start.strip() + rest)
                except json.JSONDecodeError:
                    result[key] = start.strip() + rest
        self.force("}")
        return result, self.text


def _value_starts(types: list[str]) -> list[str]:
    """How a JSON value of these types can start after `"key":` (a string's quote, a digit or
    minus, a literal)."""
    starts = []
    if "string" in types:
        starts.append(' "')
    if "integer" in types or "number" in types:
        starts += [f" {d}" for d in range(10)] + [" -"]
    if "boolean" in types:
        starts += [" true", " false"]
    if "null" in types:
        starts.append(" null")
    return starts


class ModelHandle:
    """A loaded (model, tokenizer) pair whose `LanguageModel` is built on first use, so an
    evaluator that scores items without decoding (a test double, a lookup) needs no LM."""

    def __init__(self, model: Any, tokenizer: Any, *, system_prompt: str = "", batch_size: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self._lm: LanguageModel | None = None

    @property
    def lm(self) -> LanguageModel:
        if self._lm is None:
            self._lm = LanguageModel(self.model, self.tokenizer, system_prompt=self.system_prompt,
                                     batch_size=self.batch_size)
        return self._lm
