"""Built-in plugin `training`: the train and eval stages, the `peft_lora` and `trl_sft` trainers and the
evaluators (registered through the `dialinsight_engine` entry-point group like any plugin).

Nothing here imports torch: the heavy libraries load only when a stage runs."""

from __future__ import annotations

from ..evaluate.domain import OfferedRecall, RequirementsF1, VisitAccuracy
from ..evaluate.general import GENERAL_EVALUATORS
from ..evaluate.lm_harness import LmEvalHarness
from ..hookspecs import hookimpl
from ..stages.eval import EvalStage
from ..stages.train import TrainStage
from ..train.peft_lora import PeftLoraTrainer
from ..train.trl_sft import TrlSftTrainer


@hookimpl
def register_stages() -> list[type]:
    return [TrainStage, EvalStage]


@hookimpl
def register_trainers() -> list[type]:
    return [PeftLoraTrainer, TrlSftTrainer]


@hookimpl
def register_evaluators() -> list[type]:
    return [RequirementsF1, VisitAccuracy, OfferedRecall, *GENERAL_EVALUATORS, LmEvalHarness]
