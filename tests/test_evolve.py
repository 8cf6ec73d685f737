"""Stage 2 (evolve): elimination rules, operators, and the stage on the scripted backend
(tests/fake_backend.py: deterministic rewrites, no model; the embedded model runs evolve in
test_generation_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dialinsight_engine import records as R
from dialinsight_engine.operators.base import InstructionView
from dialinsight_engine.operators.elimination import clean_rewrite, eliminate, repetition
from dialinsight_engine.operators.evol import AddConstraints, Breadth, Template, TemplateConfig
from dialinsight_engine.plugins import build_registry
from dialinsight_engine.run import Runner
from dialinsight_engine.run.dataset import read_output
from dialinsight_engine.spec import load_spec
from dialinsight_engine.spec.generation import EliminationSpec
from dialinsight_engine.stages.evolve import reinsert_placeholder, split_placeholder

import fake_backend

EXAMPLES = Path(__file__).resolve().parents[1] / "python" / "dialinsight_engine" / "data"
PARENT = "Summarise what the customer needs in two sentences.\n{dialogue}"


# -- rules -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("child", "reason"), [
    ("summarise what the customer  needs in two sentences.\n\n{dialogue}", "unchanged"),
    ("Summarise the needs and the budget of the customer in two sentences.", "placeholder_lost:{dialogue}"),
    ("Summarise.\n{dialogue}", "too_short"),
    ("Summarise the needs. " * 20 + "{dialogue}", "too_much_growth"),
    ("#Rewritten Instruction#: summarise the needs and budget.\n{dialogue}", "copied_prompt_words:#rewritten"),
    ("I'm sorry, I cannot rewrite this task for you today.\n{dialogue}", "refusal"),
    ('Here is the answer: {"area": "Fremont", "beds": 2}\n{dialogue}', "answered_instead"),
    ("List the " + "bedrooms and bathrooms, " * 6 + "\n{dialogue}", "repetitive"),
])
def test_each_elimination_rule_names_its_reason(child: str, reason: str) -> None:
    reasons = eliminate(PARENT, child, EliminationSpec())
    assert any(r.split(":")[0] == reason.split(":")[0] and r.startswith(reason) for r in reasons), reasons


def test_a_good_rewrite_passes_and_rules_can_be_switched_off() -> None:
    good = "Summarise in two sentences what the customer needs, and mention their budget.\n{dialogue}"
    assert eliminate(PARENT, good, EliminationSpec()) == []
    rules = EliminationSpec(unchanged=False, placeholders=False, min_chars=0, task_kept=False, information_gain=False)
    assert eliminate(PARENT, "Summarise.", rules) == []
    assert eliminate("Give JSON.\n{dialogue}", "Give a list of needs.\n{dialogue}",
                     EliminationSpec(keep_phrases=["JSON"], min_chars=0, task_kept=False)) == ["phrase_lost:JSON"]
    assert repetition("a b c d e") == 0.0


def test_clean_rewrite_and_placeholder_round_trip() -> None:
    assert clean_rewrite('  New task: "Summarise the needs."  ') == "Summarise the needs."
    text, first = split_placeholder("Read this chat.\n{dialogue}\nExtract the area.")
    assert (text, first) == ("Read this chat.\nExtract the area.", False)
    assert reinsert_placeholder("Extract the area and beds.", False) == "Extract the area and beds.\n\n{dialogue}"
    assert reinsert_placeholder("Extract it.", True) == "{dialogue}\n\nExtract it."
    assert reinsert_placeholder("Read {dialogue} now.", True) == "Read {dialogue} now."


def test_operator_prompts_carry_the_instruction_and_the_scene(tmp_path: Path) -> None:
    view = InstructionView("Summarise the needs.", "pricing", "rent, deposit and utilities", "summarise_needs", "",
                           "We are a rental agency. We also sell.", keep_placeholder=False)
    prompt = AddConstraints(AddConstraints.Config()).prompt(view)
    assert "Summarise the needs." in prompt and "We are a rental agency" in prompt and "{dialogue}" not in prompt
    keep = AddConstraints(AddConstraints.Config()).prompt(InstructionView(**{**view.__dict__, "keep_placeholder": True}))
    assert "{dialogue}" in keep
    assert "rent, deposit and utilities" in Breadth(Breadth.Config()).prompt(view)
    assert Breadth(Breadth.Config()).task_name("summarise_needs") == "summarise_needs-breadth"
    (tmp_path / "mine.txt").write_text("Make it polite: {{ instruction }} ({{ scene }})")
    mine = Template(TemplateConfig(template_file="mine.txt"), base_dir=tmp_path)
    assert mine.prompt(view) == "Make it polite: Summarise the needs. (pricing)"
    assert mine.task_name("x") == "x"


# -- the stage ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "dialogues.jsonl"
    lines = (EXAMPLES / "realestate_dialogues.jsonl").read_text().splitlines()
    path.write_text("\n".join(lines[:3]) + "\n")
    return path


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generation cache for the module: runs that ask the same rewrite pay once."""
    return tmp_path_factory.mktemp("cache")


EVOLVE = """
[evolution]
rounds = {rounds}
max_tokens = 32
{extra}

[[evolution.operators]]
name = "add_constraints"
weight = {w1}

[[evolution.operators]]
name = "deepen"
weight = {w2}

[backends.default]
plugin = "scripted"
cache_dir = "{cache}"
"""


def _evolve(write_spec, data: Path, cache: Path, name: str, rounds: int = 1, w1: float = 1.0,  # type: ignore[no-untyped-def]
            w2: float = 1.0, extra: str = "") -> tuple[pl.DataFrame, Path]:
    registry = build_registry([fake_backend])
    text = EVOLVE.format(rounds=rounds, w1=w1, w2=w2, extra=extra, cache=cache.as_posix())
    spec = load_spec(write_spec(text, data=data, name=name, filename=f"{name}.toml"), registry)
    runner = Runner(spec, registry, quiet=True)
    runner.apply(until="evolve")
    return read_output(runner.run_dir / "evolve"), runner.run_dir


def test_zero_rounds_pass_the_seeds_through(write_spec, small_data: Path, shared_cache: Path) -> None:  # type: ignore[no-untyped-def]
    out, run_dir = _evolve(write_spec, small_data, shared_cache, "zero", rounds=0)
    seeds = read_output(run_dir / "seeds")
    assert out.drop(R.KEPT, R.REASONS).equals(seeds)
    assert out[R.KEPT].all() and (out[R.OPERATOR] == "seed").all()


@pytest.fixture(scope="module")
def evolved(tmp_path_factory: pytest.TempPathFactory, small_data: Path, shared_cache: Path):  # type: ignore[no-untyped-def]
    from conftest import CORE_SPEC

    base = tmp_path_factory.mktemp("evolved")

    def write(extra: str, *, data: Path, name: str, filename: str) -> Path:
        path = base / filename
        path.write_text(CORE_SPEC.format(name=name, runs=(base / "runs").as_posix(), data=data.as_posix(),
                                         on_error="fail") + extra)
        return path

    return _evolve(write, small_data, shared_cache, "one")


def test_one_round_evolves_every_seed_with_lineage(evolved) -> None:  # type: ignore[no-untyped-def]
    out, run_dir = evolved
    seeds = out.filter(pl.col(R.ROUND) == 0)
    children = out.filter(pl.col(R.ROUND) == 1)
    assert children.height == seeds.height > 0
    assert 0 < children[R.KEPT].sum() < children.height  # the scripted rewrites: some kept, some eliminated
    assert set(children[R.PARENT_ID]) == set(seeds[R.INSTRUCTION_ID])
    assert set(children[R.OPERATOR]) <= {"add_constraints", "deepen"}
    assert children[R.INSTRUCTION_ID].n_unique() == children.height
    for row in children.iter_rows(named=True):
        assert row[R.PROMPT] == R.compose_prompt(row[R.INSTRUCTION], row[R.DIALOGUE_TEXT])
        assert row[R.KEPT] == (not row[R.REASONS])
        if row[R.KEPT]:
            assert R.DIALOGUE_PLACEHOLDER in row[R.INSTRUCTION]
            parent = seeds.filter(pl.col(R.INSTRUCTION_ID) == row[R.PARENT_ID]).row(0, named=True)
            assert row[R.INSTRUCTION] != parent[R.INSTRUCTION]
            assert (row[R.DIALOGUE_ID], row[R.TASK], row[R.OUTPUT_SCHEMA]) == (
                parent[R.DIALOGUE_ID], parent[R.TASK], parent[R.OUTPUT_SCHEMA])
    report = json.loads((run_dir / "evolve" / "evolution_report.json").read_text())
    assert report["evolved"] == children.height and report["evolved_kept"] == children[R.KEPT].sum()
    diversity = report["diversity"]
    assert diversity["evolved_kept"] == children[R.KEPT].sum() >= diversity["distinct_kept"]
    assert diversity["seed_texts"] == seeds[R.INSTRUCTION].n_unique()
    assert sum(report["tried_per_operator"].values()) == children.height
    eliminated = children.filter(~pl.col(R.KEPT))
    assert sum(n for ops in report["eliminations_per_operator"].values() for n in ops.values()) >= eliminated.height
    assert report["task_check"]["method"] in ("embeddings", "keywords")
    manifest = json.loads((run_dir / "evolve" / "manifest.json").read_text())
    assert manifest["stats"]["backend"]["default"]["requests"] == children.height


def test_operator_weights_choose_the_operators(write_spec, small_data: Path, shared_cache: Path) -> None:  # type: ignore[no-untyped-def]
    out, _ = _evolve(write_spec, small_data, shared_cache, "deepen_only", w1=0.0, w2=1.0)
    assert set(out.filter(pl.col(R.ROUND) == 1)[R.OPERATOR]) == {"deepen"}


def test_failed_evolutions_retry_the_parent_next_round(write_spec, small_data: Path, shared_cache: Path) -> None:  # type: ignore[no-untyped-def]
    strict = "\n[evolution.elimination]\nmin_chars = 1400\nmax_chars = 1500\n"
    out, _ = _evolve(write_spec, small_data, shared_cache, "strict", rounds=2, extra=strict)
    seeds = out.filter(pl.col(R.ROUND) == 0)
    for round_no in (1, 2):
        children = out.filter(pl.col(R.ROUND) == round_no)
        assert children.height == seeds.height and not children[R.KEPT].any()
        assert all(any(r.startswith("too_short") for r in rs) for rs in children[R.REASONS])
        # nothing survived, so round 2 rewrites the seeds again
        assert set(children[R.PARENT_ID]) == set(seeds[R.INSTRUCTION_ID])
    assert seeds[R.KEPT].all()


def test_keep_ancestors_false_leaves_only_the_latest_of_each_lineage(evolved, write_spec, small_data: Path,  # type: ignore[no-untyped-def]
                                                                     shared_cache: Path) -> None:
    full, _ = evolved
    latest, _ = _evolve(write_spec, small_data, shared_cache, "latest", extra="keep_ancestors = false")
    assert latest.height == full.height
    evolved_ok = set(full.filter((pl.col(R.ROUND) == 1) & pl.col(R.KEPT))[R.PARENT_ID])
    seeds = latest.filter(pl.col(R.ROUND) == 0)
    for row in seeds.iter_rows(named=True):
        superseded = row[R.INSTRUCTION_ID] in evolved_ok
        assert row[R.KEPT] is not superseded
        assert ("superseded_by_evolution" in row[R.REASONS]) is superseded
    assert latest[R.KEPT].sum() == seeds.height  # one row per lineage


def test_keep_mode_shows_the_placeholder_and_eliminates_rewrites_that_lose_it(  # type: ignore[no-untyped-def]
        write_spec, small_data: Path, shared_cache: Path) -> None:
    out, _ = _evolve(write_spec, small_data, shared_cache, "keep", extra='placeholder = "keep"')
    children = out.filter(pl.col(R.ROUND) == 1)
    for row in children.iter_rows(named=True):
        lost = R.DIALOGUE_PLACEHOLDER not in row[R.INSTRUCTION]
        assert ("placeholder_lost:{dialogue}" in row[R.REASONS]) is lost
        assert not (lost and row[R.KEPT])
