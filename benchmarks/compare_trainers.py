"""Trainers side by side: `peft_lora` (hand-written torch loop) and `trl_sft` (TRL's
SFTTrainer) on the same data with the same budget and LoRA settings, each in its own process
so its peak memory (RSS) is its own: loss curve, wall time, peak RSS, domain F1 on held-out
SGD Homes dialogues (slot decoding, as the eval stage does) and the general change (perplexity
on the packaged general text), with the untuned base model measured the same way.

Data: the shortest `--train-n` dialogues of ../shared/data/sgd-homes/train.jsonl with the gold
requirements as answers (the packaged example dialogues when the shared data is absent).

    python benchmarks/compare_trainers.py [--train-n 64 --steps 16 --batch-size 4 --dev-n 20]

docs/results.md ("Trainers") has a run with --train-n 16 --steps 16 --batch-size 1 --dev-n 12 --threads 1.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
EXAMPLES = Path(__file__).resolve().parents[1] / "python" / "dialinsight_engine" / "data"
SLOTS = ["area", "number_of_beds", "number_of_baths"]
SCHEMA = {"type": "object", "properties": {s: {"type": "string"} for s in SLOTS}}
INSTRUCTION = ("Read this conversation between a customer and a letting agent.\n{dialogue}\n"
               "Extract the customer's requirements as JSON with the keys area, number_of_beds, "
               'number_of_baths. Use "" for anything the customer did not state.')
TRAINERS = ("peft_lora", "trl_sft")
VARIANTS = ("base", *TRAINERS)


def data_files() -> tuple[Path, Path]:
    if (SHARED / "sgd-homes" / "train.jsonl").exists():
        return SHARED / "sgd-homes" / "train.jsonl", SHARED / "sgd-homes" / "dev.jsonl"
    return EXAMPLES / "realestate_dialogues.jsonl", EXAMPLES / "realestate_heldout.jsonl"


def one(args: argparse.Namespace) -> dict:
    """Train and evaluate one trainer in this process."""
    import torch

    from dialinsight_engine import records as R
    from dialinsight_engine.evaluate.domain import RequirementsF1
    from dialinsight_engine.evaluate.general import Perplexity
    from dialinsight_engine.evaluate.heldout import overlapping, read_heldout
    from dialinsight_engine.evaluate.lm import LanguageModel
    from dialinsight_engine.evaluate.suite import DomainTask, run_domain
    from dialinsight_engine.train.peft_lora import PeftLoraTrainer
    from dialinsight_engine.train.trl_sft import TrlSftTrainer

    torch.set_num_threads(args.threads)
    train_file, dev_file = data_files()
    train = sorted(read_heldout([train_file]), key=lambda d: len(d.dialogue_text))[:args.train_n]
    dev = read_heldout([dev_file])
    flags = overlapping([d.dialogue_text for d in dev], [d.dialogue_text for d in train], threshold=0.8)
    dev = [d for d, f in zip(dev, flags, strict=True) if not f][:args.dev_n]
    convs = [[{"role": "user", "content": R.compose_prompt(INSTRUCTION, d.dialogue_text)},
              {"role": "assistant", "content": json.dumps({s: str(d.truth["requirements"].get(s, ""))
                                                           for s in SLOTS})}] for d in train]
    cls = PeftLoraTrainer if args.one == "base" else {"peft_lora": PeftLoraTrainer, "trl_sft": TrlSftTrainer}[args.one]
    trainer = cls(cls.Config(max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, r=8,
                             alpha=16, max_length=768, seed=0, threads=args.threads, warmup_ratio=0.0,
                             checkpoint_every=1000))
    row: dict = {"trainer": args.one, "examples": len(convs), "steps": 0, "losses": [], "train_s": 0.0,
                 "data": str(train_file)}
    t0 = time.perf_counter()
    if args.one == "base":
        model, tokenizer = trainer.load_base()
    else:
        result = trainer.train(convs, args.out / args.one)
        row.update(steps=result.steps, losses=[round(x["loss"], 4) for x in result.losses],
                   train_s=round(time.perf_counter() - t0, 1))
        model, tokenizer = trainer.load_tuned(args.out / args.one)
    row["peak_rss_mib_after_train"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    lm = LanguageModel(model, tokenizer, batch_size=4)
    t0 = time.perf_counter()
    row["f1"] = None
    if dev:
        task = DomainTask("requirements_f1", RequirementsF1(RequirementsF1.Config(slots=SLOTS)), INSTRUCTION, SCHEMA)
        found, _ = run_domain(lm, task, dev, decoding="slots", max_new_tokens=64)
        row["f1"] = next(r.value for r in found if r.metric == "f1")
    general = Perplexity(Perplexity.Config()).evaluate(lm, base_dir=None, exclude=set())
    row.update(dev_n=len(dev), perplexity=round(general[0].value, 3), eval_s=round(time.perf_counter() - t0, 1))
    return row


def table(results: list[dict]) -> None:
    """The markdown table, F1 and perplexity also as a change from the base model."""
    base = results[0]
    print("| model | loss first -> last | train s | eval s | peak RSS MiB | domain F1 (dev n) | F1 change "
          "| general perplexity | perplexity change |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        loss = f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}" if r["losses"] else "-"
        f1 = f"{r['f1']:.3f} ({r['dev_n']})" if r["f1"] is not None else "-"
        df1 = f"{r['f1'] - base['f1']:+.3f}" if r["f1"] is not None and r is not base else "-"
        dppl = f"{r['perplexity'] - base['perplexity']:+.3f}" if r is not base else "-"
        print(f"| {r['trainer']} | {loss} | {r['train_s']} | {r['eval_s']} | {r['peak_rss_mib_after_train']} | "
              f"{f1} | {df1} | {r['perplexity']:.3f} | {dppl} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dev-n", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.out = args.out or Path(tempfile.mkdtemp(prefix="trainers-"))
    if args.one:
        print(json.dumps(one(args)))
        return 0
    results = []
    for name in VARIANTS:
        cmd = [sys.executable, __file__, "--one", name, "--out", str(args.out)] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("one", "out")]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"data: {results[0]['data']}, {results[0]['examples']} examples, {args.steps} steps x "
          f"batch {args.batch_size}, LoRA r 8 on q/k/v/o, lr {args.lr}, {args.threads} threads\n")
    table(results)
    for r in results[1:]:
        print(f"{r['trainer']} losses: {r['losses']}")
    (args.out / "compare.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
