"""Generation throughput: the engine's client (llamacpp backend, cache off) vs raw
llama-cpp-python on the same prompts and the same loaded model, then the cache on a rerun.

    python benchmarks/bench_generation.py [--prompts 8] [--max-tokens 64] [--repeats 2]

The two are interleaved prompt by prompt (alternating which goes first) so a busy machine
slows both alike; the ratio is engine tokens/s over raw tokens/s (target >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from importlib.resources import files
from pathlib import Path

from dialinsight_engine.backends.base import GenerationRequest
from dialinsight_engine.backends.client import GenerationClient
from dialinsight_engine.backends.llamacpp import LlamaCppBackend, LlamaCppConfig


def prompts(n: int) -> list[str]:
    path = Path(str(files("dialinsight_engine") / "data" / "realestate_dialogues.jsonl"))
    out = []
    for line in path.read_text(encoding="utf-8").splitlines()[:n]:
        turns = json.loads(line)["turns"]
        chat = "\n".join(f"{t['role'].capitalize()}: {t['text']}" for t in turns)
        out.append(f"Summarise in two sentences what the customer needs.\n{chat}")
    return out


def raw(backend: LlamaCppBackend, text: str, seed: int, max_tokens: int) -> tuple[int, float]:
    llm = backend._model(False)
    t0 = time.perf_counter()
    out = llm.create_chat_completion(messages=[{"role": "user", "content": text}], max_tokens=max_tokens,
                                     temperature=0.0, seed=seed)
    return out["usage"]["completion_tokens"], time.perf_counter() - t0


def engine(backend: LlamaCppBackend, text: str, seed: int, max_tokens: int) -> tuple[int, float]:
    client = GenerationClient(backend, name="bench", cache_dir=None)
    t0 = time.perf_counter()
    [res] = client.generate([GenerationRequest(text, max_tokens=max_tokens, seed=seed)])
    assert res.ok, res.error
    return res.completion_tokens, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    backend = LlamaCppBackend(LlamaCppConfig(n_ctx=2048))
    llm = backend._model(False)  # the same loaded model for both sides
    texts = prompts(args.prompts)
    llm.create_chat_completion(messages=[{"role": "user", "content": "warm up"}], max_tokens=4)

    raw_tokens = raw_s = eng_tokens = eng_s = 0.0
    for rep in range(args.repeats):
        for i, text in enumerate(texts):
            seed = rep * 1000 + i  # a fresh request each repeat: no cache on either side
            order = (raw, engine) if (i + rep) % 2 == 0 else (engine, raw)
            for fn in order:
                tokens, seconds = fn(backend, text, seed, args.max_tokens)
                if fn is raw:
                    raw_tokens, raw_s = raw_tokens + tokens, raw_s + seconds
                else:
                    eng_tokens, eng_s = eng_tokens + tokens, eng_s + seconds

    raw_tps, eng_tps = raw_tokens / raw_s, eng_tokens / eng_s
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}, prompts: {len(texts)} x {args.repeats}, "
          f"max_tokens: {args.max_tokens}")
    print(f"raw llama-cpp-python: {raw_tokens:.0f} tokens in {raw_s:.1f}s = {raw_tps:.1f} tokens/s")
    print(f"engine client:        {eng_tokens:.0f} tokens in {eng_s:.1f}s = {eng_tps:.1f} tokens/s")
    print(f"ratio engine/raw: {eng_tps / raw_tps:.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        requests = [GenerationRequest(t, max_tokens=args.max_tokens) for t in texts]
        first = GenerationClient(backend, name="bench", cache_dir=Path(tmp))
        t0 = time.perf_counter()
        first.generate(requests)
        cold = time.perf_counter() - t0
        first.close()
        second = GenerationClient(backend, name="bench", cache_dir=Path(tmp))
        t0 = time.perf_counter()
        results = second.generate(requests)
        warm = time.perf_counter() - t0
        hits = sum(r.cached for r in results)
        print(f"cache: first run {cold:.2f}s, rerun {warm * 1000:.1f} ms, {hits}/{len(requests)} hits, "
              f"{second.stats['tokens']} tokens generated on rerun")


if __name__ == "__main__":
    main()
