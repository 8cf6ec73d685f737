"""Outcome: does LoRA fine-tuning make the embedded model better at requirement extraction on
real SGD real-estate dialogues without losing general ability, and do verified labels beat
raw ones?

What it does (all on CPU: ~5 minutes with the defaults, ~15 with the docs/results.md command,
on 2 free cores):

1. Training prompts: the shortest `--train-n` dialogues of ../shared/data/sgd-homes/train.jsonl
   (short ones keep CPU training affordable), each with the extraction instruction below.
2. Two label sets for the same prompts:
   - verified: the answer built from the dialogue's gold `truth` (area, beds, baths);
   - raw: the base model's own answers (schema-constrained slot decoding, what the label
     stage produces with the embedded model), with no quality filter. The engine's
     `label_quality` rules are run on them too, and how many they would drop is printed.
3. LoRA on each set with the same budget (`--steps` optimizer steps), both replaying
   GSM8K rows (`--replay` share of the mix) against forgetting.
4. Base, tuned (verified labels) and the unfiltered ablation (raw labels) are evaluated on
   the first `--dev-n` dialogues of sgd-homes/dev.jsonl (contamination-checked against the
   training dialogues) with the same constrained decoding, and on general capability: GSM8K
   gold-answer log-likelihood per token (`--gsm8k-n` questions never used for replay) and
   perplexity on the packaged general text. The guard: +15 F1 points, at most 2% worse.

    python benchmarks/outcome.py [--train-n 64 --steps 16 --dev-n 40 --gsm8k-n 30]
    python benchmarks/outcome.py --train-n 160 --steps 48 --dev-n 60 --gsm8k-n 40   # docs/results.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SLOTS = ["area", "number_of_beds", "number_of_baths"]
SCHEMA = {"type": "object", "properties": {s: {"type": "string"} for s in SLOTS}}
INSTRUCTION = ("Read this conversation between a customer and a letting agent.\n{dialogue}\n"
               "Extract the customer's requirements as JSON with the keys area, number_of_beds, "
               'number_of_baths. Use "" for anything the customer did not state.')


def gold_answer(truth: dict) -> str:
    req = truth["requirements"]
    return json.dumps({s: str(req.get(s, "")) for s in SLOTS})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--replay", type=float, default=0.15, help="share of GSM8K rows in the training mix")
    ap.add_argument("--dev-n", type=int, default=40)
    ap.add_argument("--gsm8k-n", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not (SHARED / "sgd-homes" / "train.jsonl").exists():
        print(f"skipped: shared data not found at {SHARED}")
        return 0

    import polars as pl
    import torch

    from dialinsight_engine import records as R
    from dialinsight_engine.evaluate.domain import RequirementsF1
    from dialinsight_engine.evaluate.general import Gsm8kLoglik, Perplexity
    from dialinsight_engine.evaluate.heldout import overlapping, read_heldout
    from dialinsight_engine.evaluate.lm import LanguageModel
    from dialinsight_engine.evaluate.suite import DomainTask, run_domain, run_general
    from dialinsight_engine.evaluate.verdict import Primary, judge
    from dialinsight_engine.metrics.label_quality import LabelQuality
    from dialinsight_engine.train.peft_lora import PeftLoraTrainer

    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="outcome-"))
    t_start = time.perf_counter()

    train = read_heldout([SHARED / "sgd-homes" / "train.jsonl"])
    train = sorted(train, key=lambda d: len(d.dialogue_text))[:args.train_n]
    dev = read_heldout([SHARED / "sgd-homes" / "dev.jsonl"])
    flags = overlapping([d.dialogue_text for d in dev], [d.dialogue_text for d in train], threshold=0.8)
    dev = [d for d, f in zip(dev, flags, strict=True) if not f][:args.dev_n]
    print(f"train prompts: {len(train)}; dev dialogues: {len(dev)} ({sum(flags)} dropped as overlapping)")

    prompts = [R.compose_prompt(INSTRUCTION, d.dialogue_text) for d in train]
    config = PeftLoraTrainer.Config(
        max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, r=args.r, alpha=2 * args.r,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], max_length=768, seed=0, threads=args.threads,
        mix_general={"path": str(SHARED / "gsm8k" / "train.jsonl"), "fraction": args.replay} if args.replay else None)
    trainer = PeftLoraTrainer(config)

    # raw labels: the base model's own constrained answers
    model, tokenizer = trainer.load_base()
    lm = LanguageModel(model, tokenizer, batch_size=4)
    t0 = time.perf_counter()
    raw = [lm.fill_slots(p, SCHEMA)[1] for p in prompts]
    print(f"raw labels by the base model: {len(raw)} in {time.perf_counter() - t0:.0f}s")
    checker = LabelQuality(LabelQuality.Config())
    refusals: list = []
    failing = [checker.check_row({R.RESPONSE: r, R.OUTPUT_SCHEMA: json.dumps(SCHEMA), R.DIALOGUE_TEXT: d.dialogue_text,
                                  R.INSTRUCTION: INSTRUCTION, R.TASK: "extract_requirements"}, refusals, None)
               for r, d in zip(raw, train, strict=True)]
    print(f"label_quality would drop {sum(bool(f) for f in failing)}/{len(raw)} raw labels")
    gold = [gold_answer(d.truth) for d in train]
    agree = sum(json.loads(r) == json.loads(g) for r, g in zip(raw, gold, strict=True))
    print(f"raw labels equal to gold: {agree}/{len(raw)}")

    def conversations(answers: list[str]) -> list[list[dict[str, str]]]:
        return [[{"role": "user", "content": p}, {"role": "assistant", "content": a}]
                for p, a in zip(prompts, answers, strict=True)]

    trained = {}
    for variant, answers in (("tuned", gold), ("unfiltered", raw)):
        t0 = time.perf_counter()
        result = trainer.train(conversations(answers), out / variant)
        losses = [x["loss"] for x in result.losses]
        print(f"{variant}: {result.steps} steps, {result.examples} examples ({result.general_rows} GSM8K replay), "
              f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, {time.perf_counter() - t0:.0f}s")
        trained[variant] = result

    exclude = set(prompts)
    for result in trained.values():
        exclude |= set(result.extra["general_prompts"])
    requirements = RequirementsF1(RequirementsF1.Config(slots=SLOTS))
    task = DomainTask("requirements_f1", requirements, INSTRUCTION, SCHEMA)
    general = [("gsm8k_loglik", Gsm8kLoglik(Gsm8kLoglik.Config(path=str(SHARED / "gsm8k" / "train.jsonl"),
                                                                n=args.gsm8k_n, offset=7000))),
               ("perplexity", Perplexity())]
    rows = []
    for variant in ("base", "tuned", "unfiltered"):
        t0 = time.perf_counter()
        if variant == "base":
            m, tok = model, tokenizer
        else:
            m, tok = trainer.load_tuned(out / variant)
        lm = LanguageModel(m, tok, batch_size=4)
        found, records = run_domain(lm, task, dev, decoding="slots", max_new_tokens=64)
        for entry, evaluator in general:
            found += run_general(lm, entry, evaluator, base_dir=None, exclude=exclude)
        rows += [{"variant": variant, **r.__dict__} for r in found]
        (out / f"predictions-{variant}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        print(f"evaluated {variant} in {time.perf_counter() - t0:.0f}s")

    primaries = [Primary("requirements_f1", "domain", "f1", True, True),
                 Primary("gsm8k_loglik", "general", "loglik_per_token", True, True),
                 Primary("perplexity", "general", "perplexity", False, True)]
    verdicts, checks = judge(rows, primaries, min_domain_gain=0.15, max_general_drop=0.02)
    frame = pl.DataFrame(rows)
    wide = (frame.filter(pl.col("metric").is_in(["f1", "precision", "recall", "area.f1", "number_of_beds.f1",
                                                 "number_of_baths.f1", "loglik_per_token", "perplexity"]))
            .pivot(on="variant", index=["evaluator", "metric"], values="value"))
    print()
    print("| evaluator | metric | base | tuned | unfiltered |")
    print("|---|---|---|---|---|")
    for r in wide.iter_rows(named=True):
        print(f"| {r['evaluator']} | {r['metric']} | {r['base']:.4f} | {r['tuned']:.4f} | {r['unfiltered']:.4f} |")
    print()
    for c in checks:
        kind = "gain" if c.suite == "domain" else "relative drop"
        print(f"{c.variant:<11} {c.entry:<16} {c.metric:<17} {kind} {c.change:+.4f} (limit {c.limit}) "
              f"{'ok' if c.ok else 'FAIL'}")
    f1 = {r["variant"]: r["value"] for r in rows if r["metric"] == "f1"}
    print(f"\nverdicts: {verdicts}; filtered beats unfiltered on F1: {f1['tuned'] > f1['unfiltered']}")
    print(f"total {time.perf_counter() - t_start:.0f}s; files in {out}")
    (out / "results.json").write_text(json.dumps({"rows": rows, "verdicts": verdicts,
                                                  "checks": [c.__dict__ for c in checks]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
