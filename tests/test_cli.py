"""The CLI surface: plugins listing (broken ones reported by name), schema, lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dialinsight_engine.run.dataset import read_output

from conftest import dialengine, install_plugin


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from dialinsight_engine.cli import main\n"
            "sys.argv=['dialengine','--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy=[m for m in ('torch','transformers','peft','vllm','llama_cpp','sentence_transformers') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "apply" in out


def test_plugins_lists_builtins_and_reports_a_broken_plugin_by_name(tmp_path):
    env = install_plugin(tmp_path / "site", "dialinsight-broken", "dialinsight_broken",
                         "import does_not_exist_anywhere\n", entry="broken")
    result = dialengine("plugins", "--json", env=env, plugins=None)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["core"]["provides"]["stage"] == ["ingest", "scenes", "seeds", "export"]
    assert info["core"]["dist"] == "dialinsight-engine"
    assert "No module named 'does_not_exist_anywhere'" in info["broken"]["error"]
    table = dialengine("plugins", env=env, plugins=None)
    # the listing is the output (stdout): `dialengine plugins | grep metric` finds the metric plugins
    assert table.returncode == 0 and "broken" in table.stdout and "No module named" in table.stdout
    assert [line for line in table.stdout.splitlines() if "metric:" in line] and table.stderr == ""


def test_installed_third_party_plugin_is_discovered_and_runs(write_spec, tmp_path):
    env = install_plugin(tmp_path / "site", "dialinsight-upper", "dialinsight_upper", '''
        import polars as pl
        from dialinsight_engine.hookspecs import hookimpl
        from dialinsight_engine.stages.base import Stage
        class Upper(Stage):
            name = "upper"
            order = 31
            def run(self, ctx):
                return ctx.input.with_columns(pl.col("instruction").str.to_uppercase())
        @hookimpl
        def register_stages():
            return [Upper]
        ''', entry="upper")
    listed = json.loads(dialengine("plugins", "--json", env=env, plugins="core,upper").stdout)
    assert listed["upper"]["provides"] == {"stage": ["upper"]} and listed["upper"]["version"] == "0.0.1"
    result = dialengine("apply", str(write_spec()), env=env, plugins="core,upper")
    assert result.returncode == 0, result.stderr
    out = read_output(tmp_path / "runs" / "t" / "export")
    assert out["instruction"].str.contains("EXTRACT THE REQUIREMENTS").any()


def test_schema_and_validate(write_spec):
    schema = dialengine("schema")
    assert schema.returncode == 0 and json.loads(schema.stdout)["title"] == "Spec"
    ok = dialengine("validate", str(write_spec()))
    assert ok.returncode == 0 and "2 tasks" in ok.stderr
    spec = write_spec(filename="bad.toml")
    spec.write_text(spec.read_text() + "\n[sampling]\nseeed = 1\n")
    bad = dialengine("validate", str(spec))
    assert bad.returncode == 2 and "did you mean 'seed'" in bad.stderr and "bad.toml:" in bad.stderr


def test_debug_shows_traceback_and_quiet_silences(write_spec, tmp_path):
    missing = str(tmp_path / "none.toml")
    plain = dialengine("validate", missing)
    debug = dialengine("--debug", "validate", missing)
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" in debug.stderr and "Traceback" not in plain.stderr
    quiet = dialengine("--quiet", "apply", str(write_spec()))
    assert quiet.returncode == 0 and quiet.stderr.strip() == ""


@pytest.mark.parametrize("given", [None, "dirty_decay_ms:10000"])
def test_polars_returns_freed_memory_unless_the_user_sets_jemalloc_up(given):
    """Importing the package before polars makes polars' jemalloc return freed pages at once
    (the driver's peak, docs/performance.md "The allocator"); a user's own setting wins."""
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    if given:
        env["_RJEM_MALLOC_CONF"] = given
    done = subprocess.run([sys.executable, "-c", "import dialinsight_engine, os, polars; "
                           "print(os.environ['_RJEM_MALLOC_CONF'])"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    # polars puts its own defaults first; jemalloc takes the last value of each option
    effective = dict(option.split(":") for option in done.stdout.strip().split(","))
    assert effective["dirty_decay_ms"] == (given or "dirty_decay_ms:0").split(":")[1]
