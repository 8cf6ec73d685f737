"""The spec: one TOML file per domain, validated by these pydantic models.

Every key is documented in docs/spec.md. Paths are relative to the spec file; a path starting
with ``@examples/`` names example data shipped inside the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ..backends.schema_check import schema_problem
from ..errors import SpecError
from ..selection import compile_where
from .base import EXAMPLES_PREFIX, PluginRef, Section, SpecPath, Weight, compiled_patterns
from .evaluation import TaskEvalSpec
from .executor import ExecutorSpec
from .generation import BackendSpec, EvolutionSpec, LabelsSpec, ReviewMode, SamplingSpec
from .quality import QualitySpec
from .selection import SelectionKeys
from .study import StudySpec
from .training import EvalSpec, TrainSpec


class ProjectSpec(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$",
                      description="Run folder name: <runs_dir>/<name>/ (letters, digits, _.-; not starting with a dot)")
    description: str = ""
    business: str = Field("", description="Business requirements, available to templates as {{ business }}")
    runs_dir: SpecPath = Field("runs", description="Where runs are written, relative to the spec file's folder")
    seed: int = 0
    language: str = Field(
        "auto", pattern=r"^(auto|[A-Za-z]{2,3}([-_][A-Za-z0-9]+)*)$",
        description="Language of the dialogues: auto (detected from the script of a sample), en, zh, ja, ko, th, ...")


class DataSpec(SelectionKeys, Section):
    paths: list[SpecPath] = Field(min_length=1, description="Dialogue files or folders (relative to the spec)")
    format: str = Field("auto", description="Reader plugin: auto (by extension), jsonl, parquet, hf_dataset")
    on_error: Literal["fail", "skip"] = "fail"
    min_turns: int = Field(2, ge=1)
    max_dialogues: int | None = Field(None, ge=1, description="Keep only the first N dialogues (smoke runs)")
    role_map: dict[str, str] = Field(default_factory=dict, description="Rename roles on read, e.g. USER = 'customer'")
    options: dict[str, Any] = Field(default_factory=dict, description="Reader-specific options")

    def plugin_refs(self, loc: tuple[str | int, ...]) -> list[PluginRef]:
        if self.format == "auto":
            return []
        return [PluginRef("reader", self.format, (*loc, "format"), self.options, (*loc, "options"))]


class RoleSpec(Section):
    name: str
    aliases: list[str] = Field(default_factory=list, description="Role names in the data that mean this role")
    description: str = ""


class SceneSpec(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    weight: Weight = 1.0
    keywords: list[str] = Field(default_factory=list, description="Case-insensitive words or phrases")
    regex: list[str] = Field(default_factory=list, description="Python regular expressions (case-insensitive)")
    min_hits: int = Field(1, ge=1, description="Matches needed (keywords and regexes together)")
    roles: list[str] = Field(default_factory=list, description="Only count matches in turns of these roles")
    intents: list[str] = Field(default_factory=list, description="Also match when the record's `intents` holds one")
    match: dict[str, Any] = Field(default_factory=dict,
                                  description="Also match when the record's fields meet these conditions (as [data] where)")

    @field_validator("match")
    @classmethod
    def _conditions_compile(cls, value: dict[str, Any]) -> dict[str, Any]:
        compile_where(value)
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        return compiled_patterns(value, "regex")


class TaskSpec(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    weight: Weight = 1.0
    scenes: list[str] = Field(default_factory=list, description="Scenes this task applies to (empty: all)")
    template: str | list[str] | None = Field(None, description="Jinja2 template(s); several give diverse seeds")
    template_file: SpecPath | None = None
    requirements: str = Field("", description="Task-specific business requirements, {{ requirements }}")
    output_schema: dict[str, Any] | None = Field(None, description="JSON schema the answer must follow")
    output_schema_file: SpecPath | None = None
    seeds_per_dialogue: int = Field(1, ge=1)
    eval: str | TaskEvalSpec | None = Field(
        None, description="Evaluator plugin name, or a [tasks.eval] table declaring how answers are scored")

    @field_validator("output_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = None if value is None else schema_problem(value)
        if problem:
            raise ValueError(f"output_schema is {problem}")
        return value

    @model_validator(mode="after")
    def _has_template(self) -> TaskSpec:
        if self.template is None and self.template_file is None:
            raise ValueError("a task needs `template` or `template_file`")
        return self

    def templates(self) -> list[str]:
        if self.template is None:
            return []
        return [self.template] if isinstance(self.template, str) else list(self.template)


ExportFormat = Literal["openai", "sharegpt", "alpaca", "prompt_completion"]


def _every_format() -> list[ExportFormat]:
    return ["openai", "sharegpt", "alpaca", "prompt_completion"]


class ExportSpec(Section):
    formats: list[ExportFormat] = Field(
        default_factory=_every_format,
        description="JSONL files to write: OpenAI chat, ShareGPT, Alpaca, TRL prompt-completion")
    system_prompt: str = Field("", description="System message added to every exported conversation")
    validation_fraction: float = Field(
        0.0, ge=0, lt=1, description="Share of dialogues held out as a validation split (0: no split)")
    split_seed: int = Field(0, description="Seed of the train/validation split (by dialogue)")
    hf_dataset: bool = Field(
        False, description="Also save a Hugging Face `datasets` folder (save_to_disk) with a dataset card")
    dataset_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Name of the data set in dataset_info.json and the card (default: the project name)")


class Spec(Section):
    """The whole spec. `source` and `base_dir` are set by the loader (private: not TOML keys)."""

    project: ProjectSpec
    data: DataSpec
    roles: list[RoleSpec] = Field(default_factory=list)
    scenes: list[SceneSpec] = Field(min_length=1)
    tasks: list[TaskSpec] = Field(min_length=1)
    evolution: EvolutionSpec = Field(default_factory=EvolutionSpec)
    review: ReviewMode = "skip"
    quality: QualitySpec = Field(default_factory=QualitySpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    labels: LabelsSpec = Field(default_factory=LabelsSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    train: TrainSpec | None = None
    eval: EvalSpec | None = None
    study: StudySpec | None = None
    backends: dict[str, BackendSpec] = Field(default_factory=dict)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)

    _source: Path | None = PrivateAttr(None)
    _base_dir: Path = PrivateAttr(default_factory=lambda: Path("."))

    @property
    def source(self) -> Path | None:
        """The spec file this was loaded from."""
        return self._source

    @source.setter
    def source(self, value: Path | None) -> None:
        self._source = value

    @property
    def base_dir(self) -> Path:
        """The spec file's folder: every relative path of the spec (data, runs_dir) starts here."""
        return self._base_dir

    @base_dir.setter
    def base_dir(self, value: Path) -> None:
        self._base_dir = value

    @model_validator(mode="after")
    def _cross_refs(self) -> Spec:
        scene_names = [s.name for s in self.scenes]
        for names, what in ((scene_names, "scene"), ([t.name for t in self.tasks], "task")):
            dupes = {n for n in names if names.count(n) > 1}
            if dupes:
                raise ValueError(f"duplicate {what} names: {sorted(dupes)}")
        for task in self.tasks:
            unknown = [s for s in task.scenes if s not in scene_names]
            if unknown:
                raise ValueError(f"task {task.name!r} names unknown scenes {unknown}; scenes are {scene_names}")
        self._check_ground_roles()
        return self

    def _check_ground_roles(self) -> None:
        tasks = [t.name for t in self.tasks]
        roles = [r.name for r in self.roles]  # dialogues are rendered with these names, not the aliases
        for task, names in self.labels.ground_roles.items():
            if task not in tasks:
                raise ValueError(f"labels.ground_roles names unknown task {task!r}; tasks are {tasks}")
            unknown = [n for n in names if n not in roles]
            if unknown and roles:  # without [[roles]], the data's own role names are used
                raise ValueError(f"labels.ground_roles.{task} names unknown roles {unknown}; roles are "
                                 f"{[r.name for r in self.roles]}")

    # -- helpers ---------------------------------------------------------------------------
    def resolve_path(self, path: str) -> Path:
        """A spec path: ``@examples/...`` is packaged data, else relative to the spec file."""
        if path.startswith(EXAMPLES_PREFIX):
            return examples_path(path.removeprefix(EXAMPLES_PREFIX), self.source)
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def runs_root(self) -> Path:
        """`project.runs_dir`, resolved: relative to the spec file's folder, like data paths."""
        return self.resolve_path(self.project.runs_dir).resolve()

    def run_dir(self) -> Path:
        """`<runs_dir>/<name>`, checked to stay inside runs_dir (a symlink out is refused)."""
        try:
            root = self.runs_root()
            run = (root / self.project.name).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise SpecError(f"cannot resolve the run folder: {exc}", file=self.source, key="project.runs_dir") from None
        if run.parent != root:
            raise SpecError(f"the run folder {root / self.project.name} resolves to {run}, outside "
                            f"runs_dir {root}", file=self.source, key="project.name")
        return run

    def plugin_refs(self, loc: tuple[str | int, ...] = ()) -> list[PluginRef]:
        refs = self.data.plugin_refs(("data",))
        refs += self.evolution.plugin_refs(("evolution",))
        refs += self.quality.plugin_refs(("quality",))
        refs += self.labels.plugin_refs(("labels",))
        if self.train is not None:
            refs += self.train.plugin_refs(("train",))
        if self.eval is not None:
            refs += self.eval.plugin_refs(("eval",))
        for name, backend in self.backends.items():
            refs += backend.plugin_refs(("backends", name))
        for i, task in enumerate(self.tasks):
            if isinstance(task.eval, str):
                refs.append(PluginRef("evaluator", task.eval, ("tasks", i, "eval")))
        return refs

    def section(self, dotted: str) -> Any:
        """The JSON-able value of a dotted section (used in stage fingerprints)."""
        value: Any = self.model_dump(mode="json")
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value


def examples_path(rest: str, source: Path | None = None) -> Path:
    """A file shipped in the package's data folder; a name that resolves outside it is refused."""
    from importlib.resources import files

    root = Path(str(files("dialinsight_engine") / "data")).resolve()
    path = (root / rest).resolve()
    if not path.is_relative_to(root):
        raise SpecError(f"{EXAMPLES_PREFIX}{rest} leaves the packaged examples folder {root}", file=source)
    return path
