"""The static checks run with the suite, so one command tests everything: ruff (style,
imports, and the complexity and function-length limits pyproject sets) and mypy over the
package, both as configured in pyproject.toml."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import REPO


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


@pytest.mark.skipif(_missing("ruff"), reason="ruff not installed (the dev extra)")
def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "python", "tests"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.mark.timeout(1200)  # a first run without mypy's cache takes minutes on two cores
@pytest.mark.skipif(_missing("mypy"), reason="mypy not installed (the dev extra)")
def test_mypy_is_clean() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    result = subprocess.run([sys.executable, "-m", "mypy", "python/dialinsight_engine"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout
