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
   training dialogues) with the same decoding, and on general capability: GSM8K
   gold-answer log-likelihood per token (`--gsm8k-n` questions never used for replay) and
   perplexity on the packaged general text. The guard: +15 F1 points, at most 2% worse.
   Decoding (`--decoding`, the eval stage's `[eval] decoding`): "both" scores each variant
   with schema-constrained slot decoding (`f1`, what the guard reads) and with free text, the
   model answering as in a plain chat (`free.f1`, and `free.json_ok`, the share of answers
   that are JSON with every key). Scoring is the engine's: `requirements_f1` is the preset of
   a declared `fields` evaluator (evaluate/domain.py), run by evaluate/suite.run_domain.

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
    ap.add_argument("--decoding", choices=["both", "slots", "free"], default="both",
                    help="as [eval] decoding: constrained slots, free text, or both (free-text metrics as free.*)")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="free-text answer limit")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not (SHARED / "sgd-homes" / "train.jsonl").exists():
        print(f"skipped: shared data not found at {SHARED}")
        return 0

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
        found, records = run_domain(lm, task, dev, decoding=args.decoding, max_new_tokens=args.max_new_tokens)
        for entry, evaluator in general:
            found += run_general(lm, entry, evaluator, base_dir=None, exclude=exclude)
        rows += [{"variant": variant, **r.__dict__} for r in found]
        (out / f"predictions-{variant}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        print(f"evaluated {variant} in {time.perf_counter() - t0:.0f}s")

    primaries = [Primary("requirements_f1", "domain", "f1", True, True),
                 Primary("gsm8k_loglik", "general", "loglik_per_token", True, True),
                 Primary("perplexity", "general", "perplexity", False, True)]
    verdicts, checks = judge(rows, primaries, min_domain_gain=0.15, max_general_drop=0.02)
    print_tables(rows)
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


DOMAIN_METRICS = ["f1", "precision", "recall", *(f"{s}.f1" for s in SLOTS), "json_ok"]
GENERAL_METRICS = ["loglik_per_token", "perplexity"]
VARIANTS = ("base", "tuned", "unfiltered")


def print_tables(rows: list[dict]) -> None:
    """The domain metrics with a constrained and a free-text column per variant (a dash where
    that decoding was not run), then the general metrics."""
    value = {(r["variant"], r["evaluator"], r["metric"]): r["value"] for r in rows}

    def cell(key: tuple[str, str, str]) -> str:
        return f"{value[key]:.4f}" if key in value else "-"

    print("\n| metric | " + " | ".join(f"{v} constrained | {v} free text" for v in VARIANTS) + " |")
    print("|---|" + "---|---|" * len(VARIANTS))
    for metric in DOMAIN_METRICS:
        cells = [cell((v, "requirements_f1", prefix + metric)) for v in VARIANTS for prefix in ("", "free.")]
        print(f"| requirements_f1 {metric} | " + " | ".join(cells) + " |")
    print("\n| evaluator | metric | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    for r in rows:
        if r["variant"] == "base" and r["metric"] in GENERAL_METRICS:
            cells = [cell((v, r["evaluator"], r["metric"])) for v in VARIANTS]
            print(f"| {r['evaluator']} | {r['metric']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
