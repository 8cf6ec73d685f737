"""The trainer interface: chat rows in, a tuned model out (and back in for evaluation)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from ..plugins import Registry
    from ..spec import Spec


class TrainerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: advance(n, description=None): moves a progress bar and may relabel it (e.g. with the loss)
Advance = Callable[..., None]


@dataclass
class TrainResult:
    """What a training run produced (the train stage turns it into its manifest stats)."""

    out_dir: Path
    steps: int
    examples: int
    dropped_too_long: int
    general_rows: int
    resumed_from: int
    losses: list[dict[str, float]] = field(default_factory=list)
    merged_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Trainer(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[TrainerConfig]] = TrainerConfig
    description: ClassVar[str] = ""

    def __init__(self, config: TrainerConfig | None = None) -> None:
        self.config = config or self.Config()

    @abstractmethod
    def train(self, conversations: list[list[dict[str, str]]], out_dir: Path, *,
              base_dir: Path | None = None, progress: Callable[[str, int | None], Any] | None = None,
              log: Any = None, max_steps: int | None = None,
              on_step: Callable[[int], None] | None = None) -> TrainResult:
        """Fine-tune on chat conversations (the last assistant message is the target), writing
        everything under `out_dir`. A rerun after a kill resumes from the last checkpoint there.
        `max_steps` overrides the configured budget (ablations train the same number of steps);
        `on_step(step)` is called after each optimizer step."""

    @abstractmethod
    def load_tuned(self, out_dir: Path, *, base_dir: Path | None = None, device: str = "auto") -> tuple[Any, Any]:
        """(model, tokenizer) of the tuned model that `train` wrote to `out_dir`."""

    @abstractmethod
    def load_base(self, *, base_dir: Path | None = None, device: str = "auto") -> tuple[Any, Any]:
        """(model, tokenizer) of the untuned base model."""

    def identity(self, base_dir: Path | None = None) -> dict[str, Any]:
        """What fingerprints the trainer beyond its config (e.g. the base model's hash)."""
        return {}


def make_trainer(spec: Spec, registry: Registry) -> Trainer:
    """The `[train]` trainer plugin, configured from the spec's `[train]` parameters."""
    assert spec.train is not None
    cls: Any = registry.get("trainer", spec.train.trainer, where="train.trainer", file=str(spec.source))
    trainer: Trainer = cls(cls.Config.model_validate(spec.train.params()))
    return trainer
