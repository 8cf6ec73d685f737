"""Trainer `peft_lora`: supervised fine-tuning with a PEFT LoRA adapter, in a small
hand-written torch loop (full control of masking, checkpoints and resume).

- the loss is taken on the final assistant message only, and the vocabulary projection is
  computed only at those positions (on CPU it is a fifth of the forward pass otherwise);
- general rows (`mix_general`) are replayed alongside the domain rows against forgetting;
- every `checkpoint_every` steps the adapter, optimizer, scheduler and RNG state go to
  `checkpoint.pt` (tensors and plain containers only, loaded with `weights_only=True`, never
  unpickled as code) and the step, losses, fingerprint and the .pt's SHA-256 to
  `checkpoint.json`, both written atomically. A rerun with the same config and data reads the
  JSON first and loads the .pt only when the fingerprint and checksum match, so a run folder
  copied from elsewhere cannot run code through a planted pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import UserError
from ..run import atomic
from . import models
from .base import Trainer, TrainerConfig, TrainResult
from .data import Example, encode, general_count, read_general

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_META = "checkpoint.json"
STATE = "train_state.json"
ADAPTER = "adapter"
MERGED = "merged"


class MixGeneral(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="JSONL of general rows: chat messages, question/answer, alpaca or sharegpt")
    fraction: float = Field(gt=0, lt=1, description="Share of general rows in the training mix")


class PeftLoraConfig(TrainerConfig):
    base_model: str = Field(models.EMBEDDED, description='"embedded", a .gguf file or a Hugging Face folder')
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: int = Field(16, gt=0, description="LoRA alpha (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names that get adapters")
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: str = Field("linear", description="transformers scheduler name: linear, cosine, constant, ...")
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    epochs: float = Field(1.0, gt=0, description="Passes over the data (ignored when max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps (overrides epochs)")
    batch_size: int = Field(4, ge=1)
    gradient_accumulation: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=16, description="Longer conversations are left out, and counted")
    seed: int = 0
    mix_general: MixGeneral | None = None
    checkpoint_every: int = Field(10, ge=1, description="Optimizer steps between checkpoints")
    merge: bool = Field(False, description="Also save the base model with the adapter merged in")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    dtype: str = Field("auto", description="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice)")
    cache_dir: str | None = Field(None, description="Converted-GGUF cache (default ~/.cache/dialinsight_engine)")


class PeftLoraTrainer(Trainer):
    name = "peft_lora"
    Config = PeftLoraConfig
    description = "LoRA supervised fine-tuning with transformers + PEFT (CPU or GPU)"
    config: PeftLoraConfig

    # -- models --------------------------------------------------------------------------------
    def _cache_dir(self, base_dir: Path | None) -> Path | None:
        if self.config.cache_dir is None:
            return None
        p = Path(self.config.cache_dir).expanduser()
        return p if p.is_absolute() or base_dir is None else base_dir / p

    def load_base(self, *, base_dir: Path | None = None, device: str | None = None) -> tuple[Any, Any]:
        return models.load_base(self.config.base_model, base_dir=base_dir, cache_dir=self._cache_dir(base_dir),
                                device=device or self.config.device, dtype=self.config.dtype)

    def load_tuned(self, out_dir: Path, *, base_dir: Path | None = None, device: str | None = None) -> tuple[Any, Any]:
        from peft import PeftModel

        adapter = out_dir / ADAPTER
        if not (adapter / "adapter_config.json").exists():
            raise UserError(f"no trained adapter in {out_dir}", hint="run the train stage first")
        model, tokenizer = self.load_base(base_dir=base_dir, device=device)
        tuned = PeftModel.from_pretrained(model, str(adapter))
        # merged weights make generation as fast as the base model's
        merged = tuned.merge_and_unload()
        merged.eval()
        return merged, tokenizer

    def identity(self, base_dir: Path | None = None) -> dict[str, Any]:
        import peft
        import torch
        import transformers

        return {"base_model": models.base_identity(self.config.base_model, base_dir),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "peft": peft.__version__}}

    # -- training ------------------------------------------------------------------------------
    def train(self, conversations: list[list[dict[str, str]]], out_dir: Path, *,
              base_dir: Path | None = None, progress: Callable[[str, int | None], Any] | None = None,
              log: Any = None, max_steps: int | None = None,
              on_step: Callable[[int], None] | None = None) -> TrainResult:
        import torch

        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        out_dir.mkdir(parents=True, exist_ok=True)
        model, tokenizer = self.load_base(base_dir=base_dir)
        general = self._general(len(conversations), base_dir)
        fitting, dropped = fit_length(tokenizer, [*conversations, *general], cfg.max_length, log)
        examples = [ex for _, ex in fitting]
        total_steps = _total_steps(cfg, max_steps, len(examples))
        fingerprint = _fingerprint(cfg, examples, total_steps, self.identity(base_dir))
        finished = _finished_result(out_dir, fingerprint)
        if finished is not None:
            return finished

        loop = _LoraLoop(cfg, model, tokenizer.pad_token_id, total_steps)
        start_step, losses = loop.resume(load_checkpoint(out_dir, fingerprint, log), log)
        schedule = _Schedule(len(examples), cfg.batch_size, cfg.seed)
        t0 = time.perf_counter()
        bar = progress("training", total_steps) if progress is not None else contextlib.nullcontext(None)
        with bar as advance:
            if advance is not None and start_step:
                advance(start_step)
            for step in range(start_step, total_steps):
                batches = [[examples[i] for i in schedule.micro_batch(step * cfg.gradient_accumulation + k)]
                           for k in range(cfg.gradient_accumulation)]
                losses.append(loop.step(step, batches))
                mean_loss, done = losses[-1]["loss"], step + 1
                if log is not None:  # the loss curve in run.log too, not only on the bar
                    log.info("train step %d/%d: loss %.4f, lr %.3g", done, total_steps, mean_loss,
                             losses[-1]["lr"])
                if done % cfg.checkpoint_every == 0 and done < total_steps:
                    save_checkpoint(out_dir, {"fingerprint": fingerprint, "step": done, "losses": losses},
                                    loop.state())
                if advance is not None:
                    advance(1, description=f"training: loss {mean_loss:.3f}")
                if on_step is not None:
                    on_step(done)

        loop.peft_model.eval()
        merged_dir = save_model(loop.peft_model, tokenizer, out_dir, merge=cfg.merge)
        state = {"fingerprint": fingerprint, "steps": total_steps, "examples": len(examples),
                 "dropped_too_long": dropped, "general_rows": len(general), "resumed_from": start_step,
                 "losses": losses, "seconds": round(time.perf_counter() - t0, 2),
                 "merged": bool(merged_dir), "general_prompts": general_prompts(general)}
        atomic.write_text(out_dir / STATE, json.dumps(state, indent=2) + "\n")
        (out_dir / CHECKPOINT).unlink(missing_ok=True)
        (out_dir / CHECKPOINT_META).unlink(missing_ok=True)
        return _result_from_state(out_dir, state)

    def _general(self, n_domain: int, base_dir: Path | None) -> list[list[dict[str, str]]]:
        """The general rows (`mix_general`) replayed beside `n_domain` domain rows."""
        mix = self.config.mix_general
        if mix is None:
            return []
        path = Path(mix.path).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return read_general(path, general_count(n_domain, mix.fraction), self.config.seed)


class _LoraLoop:
    """The adapter, optimizer and scheduler of one run, and one optimizer step over them."""

    def __init__(self, cfg: PeftLoraConfig, model: Any, pad_id: int, total_steps: int) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import get_scheduler

        torch.manual_seed(cfg.seed)  # the adapter's initial weights
        lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=cfg.target_modules, task_type="CAUSAL_LM")
        try:
            self.peft_model: Any = get_peft_model(model, lora)
        except ValueError as exc:
            raise UserError(f"LoRA setup failed: {exc}", key="train.target_modules") from None
        self.trainable = [p for p in self.peft_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scheduler = get_scheduler(cfg.lr_scheduler, self.optimizer,
                                       num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                                       num_training_steps=total_steps)
        causal: Any = self.peft_model.get_base_model()
        self.body: Any = causal.get_decoder()
        self.head: Any = causal.get_output_embeddings()
        self.device = next(model.parameters()).device
        self.pad_id = pad_id
        self.total_steps = total_steps

    def resume(self, ckpt: dict[str, Any] | None, log: Any) -> tuple[int, list[dict[str, Any]]]:
        """Load a checkpoint's state (when there is one); the step to start at and the losses so far."""
        import torch

        if ckpt is not None:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.peft_model, ckpt["adapter"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            torch.set_rng_state(ckpt["rng"])
            if log is not None:
                log.info("resuming from checkpoint at step %d/%d", ckpt["step"], self.total_steps)
        self.peft_model.train()
        return (ckpt["step"], ckpt["losses"]) if ckpt is not None else (0, [])

    def step(self, step: int, batches: list[list[Example]]) -> dict[str, Any]:
        """One optimizer step over `batches` (gradient accumulation); its loss-curve row. The
        loss is the mean over the answer tokens of all batches, and the vocabulary projection
        is computed only at those positions."""
        import torch

        n_target = sum(sum(1 for t in ex.labels[1:] if t != -100) for b in batches for ex in b)
        step_loss = 0.0
        for batch in batches:
            ids, mask, labels = _collate(batch, self.pad_id, self.device)
            hidden = self.body(input_ids=ids, attention_mask=mask).last_hidden_state
            targets = labels[:, 1:]
            keep = targets != -100
            logits = self.head(hidden[:, :-1][keep]).float()
            loss_sum = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
            (loss_sum / max(1, n_target)).backward()
            step_loss += loss_sum.item()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"step": step + 1, "loss": round(step_loss / max(1, n_target), 6),
                "lr": self.scheduler.get_last_lr()[0], "tokens": n_target}

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: adapter, optimizer, scheduler and RNG state."""
        import torch
        from peft import get_peft_model_state_dict

        return {"adapter": get_peft_model_state_dict(self.peft_model), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": torch.get_rng_state()}


def fit_length(tokenizer: Any, conversations: list[list[dict[str, str]]], max_length: int,
               log: Any = None) -> tuple[list[tuple[list[dict[str, str]], Example]], int]:
    """(conversation, its encoding) for every conversation within `max_length` tokens, and how
    many were left out (never cut: a cut answer teaches a cut answer)."""
    fitting, dropped = [], 0
    for conv in conversations:
        ex = encode(tokenizer, conv, max_length)
        if ex is None:
            dropped += 1
        else:
            fitting.append((conv, ex))
    if not fitting:
        raise UserError(f"no training example fits max_length = {max_length} ({dropped} left out)",
                        key="train.max_length")
    if dropped and log is not None:
        log.warning("%d conversations longer than max_length=%d left out", dropped, max_length)
    return fitting, dropped


def general_prompts(general: list[list[dict[str, str]]]) -> list[str]:
    """The user prompts of the replayed general rows: evaluators must not score them as unseen."""
    return [m["content"] for conv in general for m in conv if m["role"] == "user"]


def save_model(peft_model: Any, tokenizer: Any, out_dir: Path, *, merge: bool) -> Path | None:
    """The adapter to `adapter/` and, with `merge`, the merged model to `merged/` (each folder
    swapped in whole); the merged folder or None."""
    atomic.write_dir(out_dir / ADAPTER, lambda tmp: peft_model.save_pretrained(str(tmp)))
    if not merge:
        return None
    merged: Any = peft_model.merge_and_unload()

    def save_merged(tmp: Path) -> None:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))

    return atomic.write_dir(out_dir / MERGED, save_merged)


def save_checkpoint(out_dir: Path, meta: dict[str, Any], tensors: dict[str, Any]) -> None:
    """`tensors` (state dicts: tensors, numbers, strings, lists, dicts) to checkpoint.pt, then
    `meta` (fingerprint, step, losses) with the .pt's SHA-256 to checkpoint.json."""
    import torch

    path = out_dir / CHECKPOINT
    buffer = io.BytesIO()  # serialised in memory, then written atomically like every file
    torch.save(tensors, buffer)
    atomic.write_bytes(path, buffer.getvalue())
    atomic.write_json(out_dir / CHECKPOINT_META, {**meta, "sha256": atomic.file_sha256(path)})


def load_checkpoint(out_dir: Path, fingerprint: str, log: Any = None) -> dict[str, Any] | None:
    """The checkpoint in `out_dir` when it belongs to this run (same fingerprint, intact),
    else None, with the files discarded and the reason logged. The fingerprint and checksum
    are checked before torch reads the .pt, and torch reads it with `weights_only=True`: a
    pickle that would run code is refused, never executed."""
    import torch

    path, meta_path = out_dir / CHECKPOINT, out_dir / CHECKPOINT_META
    if not path.exists():
        meta_path.unlink(missing_ok=True)
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    why = None
    if not isinstance(meta, dict) or not {"fingerprint", "step", "losses", "sha256"} <= meta.keys():
        why = f"it has no valid {CHECKPOINT_META} (from an older version or not written by this trainer)"
    elif meta["fingerprint"] != fingerprint:
        why = "it is from another config or data set"
    elif atomic.file_sha256(path) != meta["sha256"]:
        why = f"it does not match the checksum in {CHECKPOINT_META} (changed or half-replaced)"
    state = None
    if why is None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for anything beyond tensors and containers
            why = f"it is not a plain tensor checkpoint, refused to unpickle it ({type(exc).__name__})"
    if why is not None or not isinstance(state, dict):
        message = f"discarded {path}: {why or 'unexpected content'}; training starts over"
        (log or logging.getLogger("dialinsight_engine.train")).warning(message)
        path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        return None
    return {**state, "step": int(meta["step"]), "losses": meta["losses"]}  # type: ignore[index]


class _Schedule:
    """Which examples each micro-batch takes: a seeded shuffle per epoch, so a resumed run
    sees exactly the batches an uninterrupted one would."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = max(1, math.ceil(n / batch_size))
        self._orders: dict[int, list[int]] = {}

    def micro_batch(self, index: int) -> list[int]:
        epoch, k = divmod(index, self.per_epoch)
        if epoch not in self._orders:
            order = list(range(self.n))
            random.Random(f"{self.seed}|epoch|{epoch}").shuffle(order)
            self._orders = {epoch: order}
        return self._orders[epoch][k * self.batch_size:(k + 1) * self.batch_size]


def _collate(batch: list[Example], pad_id: int, device: Any) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(ex.input_ids) for ex in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, ex in enumerate(batch):
        n = len(ex.input_ids)
        ids[i, :n] = torch.tensor(ex.input_ids)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(ex.labels)
    return ids.to(device), mask.to(device), labels.to(device)


def _fingerprint(cfg: PeftLoraConfig, examples: list[Example], total_steps: int, identity: dict) -> str:
    h = hashlib.sha256()
    h.update(cfg.model_dump_json(exclude={"device", "threads", "checkpoint_every"}).encode())
    h.update(json.dumps([identity.get("base_model"), total_steps]).encode())
    for ex in examples:
        h.update(json.dumps([ex.input_ids, ex.labels]).encode())
    return h.hexdigest()[:24]


def _total_steps(cfg: Any, max_steps: int | None, examples: int) -> int:
    """Optimizer steps of the run: the caller's or the spec's bound, else the epochs' worth."""
    per_step = cfg.batch_size * cfg.gradient_accumulation
    return max_steps or cfg.max_steps or max(1, math.ceil(cfg.epochs * examples / per_step))


def _finished_result(out_dir: Path, fingerprint: str) -> TrainResult | None:
    """The result of a finished run with this fingerprint (its adapter on disk), else None."""
    state_path = out_dir / STATE
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("fingerprint") == fingerprint and (out_dir / ADAPTER / "adapter_config.json").exists():
            return _result_from_state(out_dir, state)
    return None


def _result_from_state(out_dir: Path, state: dict[str, Any]) -> TrainResult:
    return TrainResult(
        out_dir=out_dir, steps=state["steps"], examples=state["examples"],
        dropped_too_long=state["dropped_too_long"], general_rows=state["general_rows"],
        resumed_from=state["resumed_from"], losses=state["losses"],
        merged_dir=out_dir / MERGED if state.get("merged") else None,
        extra={"seconds": state.get("seconds"), "fingerprint": state["fingerprint"],
               "general_prompts": state.get("general_prompts", [])})
