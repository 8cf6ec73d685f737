"""Trainer `trl_sft`: supervised fine-tuning with TRL's `SFTTrainer` and a PEFT LoRA adapter,
for users who already run TRL.

The conversations go to TRL as conversational prompt-completion rows (everything before the
final assistant message is the prompt), so TRL takes the loss on the completion only; packing
is off by default. The base model, the adapter folder, `train_state.json` and the length
filter are the same as `peft_lora`'s, so the eval stage and its guard load and judge either
trainer's model the same way. Checkpoints are the Hugging Face Trainer's own
(`trl/checkpoint-N`, every `checkpoint_every` steps); a rerun with the same config and data
resumes from the last one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from ..errors import UserError
from ..run import atomic
from .base import TrainResult
from .peft_lora import (
    STATE,
    PeftLoraConfig,
    PeftLoraTrainer,
    _finished_result,
    _result_from_state,
    _total_steps,
    fit_length,
    general_prompts,
    save_model,
)

#: the Hugging Face Trainer's checkpoint folder, removed once training finished
CHECKPOINTS = "trl"
FINGERPRINT_FILE = "fingerprint.txt"


class TrlSftConfig(PeftLoraConfig):
    packing: bool = Field(False, description="Pack several conversations into one sequence (TRL's `packing`)")
    completion_only_loss: bool = Field(
        True, description="Loss on the final assistant message only (false: on the whole conversation)")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory")


class TrlSftTrainer(PeftLoraTrainer):
    name = "trl_sft"
    Config = TrlSftConfig  # type: ignore[assignment]
    description = "LoRA supervised fine-tuning with TRL's SFTTrainer + PEFT (completion-only loss)"
    config: TrlSftConfig

    def identity(self, base_dir: Path | None = None) -> dict[str, Any]:
        import trl

        ident = super().identity(base_dir)
        ident["versions"]["trl"] = trl.__version__
        return ident

    def train(self, conversations: list[list[dict[str, str]]], out_dir: Path, *,
              base_dir: Path | None = None, progress: Callable[[str, int | None], Any] | None = None,
              log: Any = None, max_steps: int | None = None,
              on_step: Callable[[int], None] | None = None) -> TrainResult:
        try:
            import torch
            from datasets import Dataset
            from peft import LoraConfig
            from transformers.trainer_utils import get_last_checkpoint
            from trl import SFTConfig, SFTTrainer
        except ImportError as exc:
            raise UserError(f"trainer \"trl_sft\" needs TRL and datasets ({exc.name} is missing)",
                            key="train.trainer", hint="pip install 'dialinsight-engine[train]'") from None

        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        out_dir.mkdir(parents=True, exist_ok=True)
        model, tokenizer = self.load_base(base_dir=base_dir)
        general = self._general(len(conversations), base_dir)
        # the same length filter as peft_lora: a conversation that does not fit is left out, never cut
        fitting, dropped = fit_length(tokenizer, [*conversations, *general], cfg.max_length, log)
        kept = [conv for conv, _ in fitting]
        total_steps = _total_steps(cfg, max_steps, len(kept))
        fingerprint = _fingerprint(cfg, [ex.input_ids for _, ex in fitting], total_steps, self.identity(base_dir))
        finished = _finished_result(out_dir, fingerprint)
        if finished is not None:
            return finished

        ckpt_dir = out_dir / CHECKPOINTS
        resume = _checkpoint_to_resume(ckpt_dir, fingerprint, get_last_checkpoint)
        start_step = int(Path(resume).name.rsplit("-", 1)[1]) if resume else 0
        if resume and log is not None:
            log.info("resuming from checkpoint at step %d/%d", start_step, total_steps)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / FINGERPRINT_FILE).write_text(fingerprint)

        dataset = Dataset.from_list([{"prompt": conv[:-1], "completion": conv[-1:]} for conv in kept])
        args = self._sft_config(SFTConfig, model, ckpt_dir, total_steps)
        lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=cfg.target_modules, task_type="CAUSAL_LM")
        torch.manual_seed(cfg.seed)
        try:
            sft = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=lora)
        except ValueError as exc:
            raise UserError(f"TRL setup failed: {exc}", key="train") from None

        t0 = time.perf_counter()
        bar = progress("training", total_steps) if progress is not None else contextlib.nullcontext(None)
        with bar as advance:
            # our callback reports progress and losses; the Trainer's printer would write
            # every log dict to stdout
            from transformers.trainer_callback import PrinterCallback

            sft.remove_callback(PrinterCallback)
            sft.add_callback(_make_reporter_class()(total_steps, advance, log, on_step, start_step))
            sft.train(resume_from_checkpoint=resume)

        peft_model: Any = sft.model
        peft_model.eval()
        merged_dir = save_model(peft_model, tokenizer, out_dir, merge=cfg.merge)
        losses = [{"step": int(e["step"]), "loss": round(float(e["loss"]), 6),
                   "lr": float(e.get("learning_rate", 0.0)), "tokens": None}
                  for e in sft.state.log_history if "loss" in e and "step" in e]
        state = {"fingerprint": fingerprint, "steps": total_steps, "examples": len(kept),
                 "dropped_too_long": dropped, "general_rows": len(general), "resumed_from": start_step,
                 "losses": losses, "seconds": round(time.perf_counter() - t0, 2), "merged": bool(merged_dir),
                 "trainer": "trl_sft", "general_prompts": general_prompts(general)}
        atomic.write_text(out_dir / STATE, json.dumps(state, indent=2) + "\n")
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        return _result_from_state(out_dir, state)

    def _sft_config(self, config_cls: Any, model: Any, ckpt_dir: Path, total_steps: int) -> Any:
        """TRL's `SFTConfig` for this run: the same optimizer settings as peft_lora, checkpoints
        every `checkpoint_every` steps, no reporting, CPU unless the model is on a GPU."""
        import torch

        cfg = self.config
        on_gpu = next(model.parameters()).device.type == "cuda"
        checkpointing: dict[str, Any] = {_checkpointing_key(config_cls): cfg.gradient_checkpointing}
        return config_cls(
            output_dir=str(ckpt_dir), max_steps=total_steps, per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation, learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler,
            warmup_steps=int(cfg.warmup_ratio * total_steps),  # as peft_lora counts them
            max_grad_norm=1.0, seed=cfg.seed, data_seed=cfg.seed, logging_steps=1,
            save_strategy="steps", save_steps=cfg.checkpoint_every, save_total_limit=1,
            report_to="none", disable_tqdm=True, dataloader_num_workers=0, use_cpu=not on_gpu,
            bf16=on_gpu and next(model.parameters()).dtype == torch.bfloat16,
            max_length=cfg.max_length, packing=cfg.packing, completion_only_loss=cfg.completion_only_loss,
            **checkpointing,
        )


def _checkpointing_key(config_cls: type) -> str:
    """transformers 5 renamed `gradient_checkpointing` to `activation_checkpointing`."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _checkpoint_to_resume(ckpt_dir: Path, fingerprint: str, last: Callable[[str], str | None]) -> str | None:
    """The last Trainer checkpoint when it belongs to this config and data, else None (and
    checkpoints of another run are removed, so they are never mixed in)."""
    if not ckpt_dir.is_dir():
        return None
    stamp = ckpt_dir / FINGERPRINT_FILE
    if stamp.exists() and stamp.read_text().strip() == fingerprint:
        return last(str(ckpt_dir))
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return None


def _fingerprint(cfg: TrlSftConfig, token_ids: list[list[int]], total_steps: int, identity: dict) -> str:
    h = hashlib.sha256(b"trl_sft")
    h.update(cfg.model_dump_json(exclude={"device", "threads", "checkpoint_every"}).encode())
    h.update(json.dumps([identity.get("base_model"), total_steps]).encode())
    for ids in token_ids:
        h.update(json.dumps(ids).encode())
    return h.hexdigest()[:24]


def _make_reporter_class() -> type:
    from transformers import TrainerCallback

    class Reporter(TrainerCallback):
        """Moves the progress bar, writes each step's loss to the run log, calls `on_step`."""

        def __init__(self, total: int, advance: Any, log: Any, on_step: Callable[[int], None] | None,
                     start: int) -> None:
            self.total, self.advance, self.log, self.on_step = total, advance, log, on_step
            if advance is not None and start:
                advance(start)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                if self.log is not None:
                    self.log.info("train step %d/%d: loss %.4f, lr %.3g", state.global_step, self.total,
                                  logs["loss"], logs.get("learning_rate", 0.0))
                if self.advance is not None:
                    self.advance(1, description=f"training: loss {logs['loss']:.3f}")
                if self.on_step is not None:
                    self.on_step(state.global_step)

    return Reporter
