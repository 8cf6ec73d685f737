"""GPU check: the train and eval code paths on CUDA, against the same code on CPU.

CI has no GPU, so nothing else runs the engine's device handling there: bf16 chosen on the GPU,
batches and labels moved to it, checkpoints written from it and resumed on it, the adapter
merged on it, generation, schema slot decoding and log-probabilities computed on it. This
script runs each of those on a CUDA machine and on its CPU with the same code and data:

    python benchmarks/gpu_check.py --tokenizer DIR [--out check.json]

DIR holds a Hugging Face tokenizer (the embedded model's converted folder under
~/.cache/dialinsight_engine/models/ will do). The model is a small Llama of that vocabulary
built from a fixed seed, so no weights need to travel to the GPU machine: the check is about
the engine's device handling, not model quality. Exit 1 when a check fails; the JSON summary
says which, with the figures (losses, seconds, differences between devices).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

AREAS = ["Fremont", "Hayward", "Oakland", "Berkeley", "Concord", "Dublin", "Pleasanton", "Newark"]
SCHEMA = {"type": "object", "properties": {"area": {"type": "string"}, "number_of_beds": {"type": "string"}}}


class Killed(Exception):
    """Raised from the step callback: a training run stopped mid-way."""


def conversations() -> list[list[dict[str, str]]]:
    return [[{"role": "system", "content": "Reply in JSON."},
             {"role": "user", "content": f"Customer: I want {i % 3 + 1} bedrooms in {area}.\nRequirements as JSON?"},
             {"role": "assistant", "content": json.dumps({"area": area, "number_of_beds": str(i % 3 + 1)})}]
            for i, area in enumerate(AREAS)]


def tiny_model(tokenizer_dir: Path, out: Path) -> Path:
    """A 2-layer Llama with `tokenizer_dir`'s vocabulary and chat template, seed 0."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def trainer(model_dir: Path, device: str, **overrides: Any) -> Any:
    from dialinsight_engine.train.peft_lora import PeftLoraTrainer

    settings = {"base_model": str(model_dir), "device": device, "max_steps": 30, "batch_size": 4,
                "learning_rate": 1e-2, "r": 8,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "alpha": 16, "dropout": 0.0, "checkpoint_every": 10,
                "max_length": 128, "warmup_ratio": 0.0, "seed": 1, **overrides}
    return PeftLoraTrainer(PeftLoraTrainer.Config(**settings))


def train_on(model_dir: Path, device: str, work: Path) -> dict[str, Any]:
    t = trainer(model_dir, device)
    model, _ = t.load_base()
    dtype = str(next(model.parameters()).dtype)
    del model
    start = time.perf_counter()
    result = t.train(conversations(), work / f"train-{device}")
    losses = [row["loss"] for row in result.losses]
    return {"device": device, "dtype": dtype, "steps": result.steps, "seconds": round(time.perf_counter() - start, 2),
            "loss_first": round(sum(losses[:3]) / 3, 4), "loss_last": round(sum(losses[-3:]) / 3, 4),
            "adapter": (work / f"train-{device}" / "adapter" / "adapter_config.json").exists()}


def resume_on_gpu(model_dir: Path, gpu: str, work: Path) -> dict[str, Any]:
    """Stopped after step 15 (checkpoint at 10), rerun: resumes at 10, ends at the adapter of
    the run never stopped (bf16 on a GPU: equal within bf16 rounding, not bit for bit)."""
    from safetensors.torch import load_file

    t = trainer(model_dir, gpu)

    def stop_at_15(step: int) -> None:
        if step == 15:
            raise Killed

    try:
        t.train(conversations(), work / "stopped", on_step=stop_at_15)
    except Killed:
        pass
    resumed = t.train(conversations(), work / "stopped")
    whole = load_file(work / f"train-{gpu}" / "adapter" / "adapter_model.safetensors")
    again = load_file(work / "stopped" / "adapter" / "adapter_model.safetensors")
    diff = max(float((whole[k].float() - again[k].float()).abs().max()) for k in whole)
    scale = max(float(whole[k].float().abs().max()) for k in whole)
    return {"resumed_from": resumed.resumed_from, "adapter_max_abs_diff": diff, "adapter_max_abs": scale}


def logprobs(model: Any, tokenizer: Any) -> list[float]:
    from dialinsight_engine.evaluate.lm import LanguageModel

    lm = LanguageModel(model, tokenizer, system_prompt="Reply in JSON.")
    pairs = [(lm.chat_prefix(c[1]["content"]), c[2]["content"]) for c in conversations()]
    return [total / n for total, n in lm.continuation_logprobs(pairs)]


def eval_on_gpu(model_dir: Path, gpu: str, work: Path) -> dict[str, Any]:
    """The tuned model (adapter merged on the GPU) decodes and scores on CUDA; base-model
    log-probabilities in float32 agree between CUDA and CPU."""
    from dialinsight_engine.evaluate.lm import LanguageModel
    from dialinsight_engine.train import models

    t = trainer(model_dir, gpu)
    tuned, tokenizer = t.load_tuned(work / f"train-{gpu}")
    lm = LanguageModel(tuned, tokenizer, system_prompt="Reply in JSON.")
    start = time.perf_counter()
    texts = lm.generate([c[1]["content"] for c in conversations()], max_new_tokens=24)
    slots, _ = lm.fill_slots(conversations()[0][1]["content"], SCHEMA)
    seconds = time.perf_counter() - start
    tuned_lp = logprobs(tuned, tokenizer)
    base_cuda, _ = models.load_base(str(model_dir), device=gpu, dtype="float32")
    base_cpu, _ = models.load_base(str(model_dir), device="cpu", dtype="float32")
    cuda_lp, cpu_lp = logprobs(base_cuda, tokenizer), logprobs(base_cpu, tokenizer)
    return {"tuned_device": str(next(tuned.parameters()).device), "generated": texts[:2], "slots": slots,
            "decode_seconds": round(seconds, 2), "exact_answers": sum(t.strip() == c[2]["content"]
                                                                     for t, c in zip(texts, conversations(), strict=True)),
            "tuned_logprob": round(sum(tuned_lp) / len(tuned_lp), 4), "base_logprob": round(sum(cuda_lp) / len(cuda_lp), 4),
            "base_cuda_vs_cpu_max_diff": max(abs(a - b) for a, b in zip(cuda_lp, cpu_lp, strict=True))}


def verdicts(report: dict[str, Any]) -> dict[str, bool]:
    cpu, cuda, resume, ev = report["cpu"], report["cuda"], report["resume"], report["eval"]
    return {
        "bf16 on the GPU, fp32 on the CPU": cuda["dtype"] == "torch.bfloat16" and cpu["dtype"] == "torch.float32",
        # LoRA on a random model learns slowly: a clear fall, not convergence
        "loss falls on both devices": all(r["loss_last"] < 0.85 * r["loss_first"] and r["adapter"] for r in (cpu, cuda)),
        "a stopped GPU run resumes at its checkpoint": resume["resumed_from"] == 10,
        "the resumed adapter equals the whole run's within bf16 rounding":
            resume["adapter_max_abs_diff"] <= 0.02 * max(resume["adapter_max_abs"], 1e-6),
        "the merged model decodes on the GPU": ev["tuned_device"].startswith(report["cuda"]["device"].split(":")[0]) and set(ev["slots"]) == set(SCHEMA["properties"]),
        "training moved the answers' log-probability up": ev["tuned_logprob"] > ev["base_logprob"],
        "float32 log-probabilities agree between CUDA and CPU": ev["base_cuda_vs_cpu_max_diff"] < 1e-3,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path, required=True, help="a folder with a Hugging Face tokenizer")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON summary here too")
    ap.add_argument("--device", default="cuda", help="the GPU (cuda, cuda:1); cpu runs the script as a dry run")
    args = ap.parse_args()
    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        model_dir = tiny_model(args.tokenizer, work / "tiny")
        gpu_name = torch.cuda.get_device_name(args.device) if args.device != "cpu" else "none (dry run)"
        report: dict[str, Any] = {"gpu": gpu_name, "torch": torch.__version__}
        report["cpu"] = train_on(model_dir, "cpu", work)
        report["cuda"] = train_on(model_dir, args.device, work)
        report["resume"] = resume_on_gpu(model_dir, args.device, work)
        report["eval"] = eval_on_gpu(model_dir, args.device, work)
    report["checks"] = verdicts(report)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
