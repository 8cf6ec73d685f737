"""Evaluator `lm_eval`: runs lm-evaluation-harness tasks on the model under evaluation.

Needs the `lm_eval` package (not a dependency of the engine). Tasks can be defined in local
YAML files (`include_path`), e.g. with `dataset_path: json` and
`dataset_kwargs: {data_files: {test: /path/to/file.jsonl}}`, so nothing is downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from ..errors import UserError
from .base import EvaluatorConfig, GeneralEvaluator
from .scoring import Score

if TYPE_CHECKING:
    from .lm import LanguageModel


class LmEvalConfig(EvaluatorConfig):
    tasks: list[str] = Field(min_length=1, description="lm-evaluation-harness task names")
    include_path: str | None = Field(None, description="Folder of local task YAML files")
    limit: int | None = Field(None, ge=1, description="Examples per task")
    num_fewshot: int | None = Field(None, ge=0)
    metric: str = Field("acc,none", description="Result key used as the main metric of the first task")


class LmEvalHarness(GeneralEvaluator):
    name = "lm_eval"
    Config = LmEvalConfig
    primary = "main"
    description = "lm-evaluation-harness tasks (needs the lm_eval package)"
    config: LmEvalConfig

    def evaluate(self, lm: LanguageModel, *, base_dir: Path | None, exclude: set[str]) -> list[Score]:
        try:
            import lm_eval
            from lm_eval.models.huggingface import HFLM
            from lm_eval.tasks import TaskManager
        except ImportError:
            raise UserError("evaluator lm_eval needs the lm_eval package", key="eval.evaluators.lm_eval",
                            hint="pip install lm_eval") from None
        include = None
        if self.config.include_path:
            p = Path(self.config.include_path).expanduser()
            include = str(p if p.is_absolute() or base_dir is None else base_dir / p)
        harness_lm = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=lm.batch_size)
        out = lm_eval.simple_evaluate(model=harness_lm, tasks=list(self.config.tasks), limit=self.config.limit,
                                      num_fewshot=self.config.num_fewshot,
                                      task_manager=TaskManager(include_path=include))
        scores: list[Score] = []
        n_samples = out.get("n-samples", {}) if isinstance(out, dict) else {}
        for task in self.config.tasks:
            metrics = out["results"].get(task, {})
            n = int((n_samples.get(task) or {}).get("effective", 0))
            for key, value in metrics.items():
                if isinstance(value, int | float) and "stderr" not in key:
                    scores.append(Score(f"{task}.{key}", float(value), n))
            if task == self.config.tasks[0] and self.config.metric in metrics:
                scores.append(Score("main", float(metrics[self.config.metric]), n))
        return scores
