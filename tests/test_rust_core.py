"""The Rust core's own checks run with the Python suite, so one command tests everything."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import dialinsight_engine._core as core

from conftest import REPO

pytestmark = [pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo (Rust toolchain) not installed"),
              pytest.mark.timeout(2000)]  # cargo test and clippy may take 900 s each


def test_extension_version_matches_the_crate():
    cargo_toml = (REPO / "Cargo.toml").read_text()
    assert f'version = "{core.version()}"' in cargo_toml


def test_cargo_test_passes():
    result = subprocess.run(["cargo", "test", "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "test result: ok" in result.stdout


def test_cargo_clippy_is_clean():
    result = subprocess.run(["cargo", "clippy", "--all-targets", "--quiet", "--", "-D", "warnings"], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
