"""The example plugin package `plugins/dialinsight-readability`, installed with pip (into a
target folder put on PYTHONPATH, as a site-packages), found through its entry point, and run
through the registry and the assess stage. Never imported by path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import polars as pl
import pytest

from dialinsight_engine.run.dataset import read_output

from conftest import REPO, dialengine

PLUGIN = REPO / "plugins" / "dialinsight-readability"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("plugin")
    source = tmp / "src"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (target / "dialinsight_readability" / "__init__.py").exists()
    # the engine under test stays on the path (a worktree's, not whichever the venv points at)
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p)}


def test_installed_plugin_is_discovered_by_entry_point(installed):
    result = dialengine("plugins", "--json", env=installed, plugins="core,quality,readability")
    assert result.returncode == 0, result.stderr
    plugins = json.loads(result.stdout)
    assert plugins["readability"]["dist"] == "dialinsight-readability"
    assert plugins["readability"]["provides"] == {"metric": ["readability"]} and plugins["readability"]["error"] is None
    code = ("from dialinsight_engine.plugins import build_registry; import polars as pl; "
            "from dialinsight_engine.metrics.base import MetricContext; r = build_registry(); "
            "m = r.get('metric', 'readability').from_params({'column': 'text'}); "
            "out = m.score(pl.DataFrame({'text': ['The cat sat.', 'Notwithstanding considerable organisational "
            "responsibilities, comprehensive documentation necessitates extraordinary deliberation.']}), "
            "MetricContext.standalone()); print(out['score'].to_list())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**installed, "PATH": ""},
                         timeout=120)
    assert run.returncode == 0, run.stderr
    easy, hard = json.loads(run.stdout)
    assert easy > 0.9 and hard < 0.1


def test_installed_plugin_runs_in_the_assess_stage(installed, write_spec, tmp_path):
    spec = write_spec("""
[quality.metrics.readability]
weight = 0.5
params = { column = "instruction", max_sentence_words = 5.5 }

[quality.metrics.prompt_complexity]
weight = 1.0
""", name="p")
    bad = write_spec('\n[quality.metrics.readability]\nparams = { colum = "x" }\n', name="p", filename="bad.toml")
    result = dialengine("validate", str(bad), env=installed, plugins="core,generation,quality,readability")
    assert result.returncode == 2 and "colum" in result.stderr and "bad.toml:" in result.stderr
    result = dialengine("apply", str(spec), "--until", "assess", env=installed, plugins="core,generation,quality,readability")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "p"
    out = read_output(run / "assess")
    assert out["score_readability"].is_between(0, 1).all() and "readability__flesch" in out.columns
    long_sentences = out["readability__words_per_sentence"] > 5.5
    assert long_sentences.any() and not long_sentences.all()
    assert out["kept"].to_list() == (~long_sentences).to_list()
    flagged = out.filter(~pl.col("kept"))["reasons"].to_list()[0]
    assert flagged[0].startswith("readability: sentences average")
    manifest = json.loads((run / "assess" / "manifest.json").read_text())
    assert manifest["extra"]["plugins"]["metric:readability"] == "dialinsight-readability==0.1.0"
