#!/usr/bin/env bash
# Build llama-cpp-python (which vendors llama.cpp) once into a wheel of our own, then install it into the given Python.
#
#   scripts/build_llama_cpp.sh .venv/bin/python
#
# Why a script of its own: it runs before the course's package is installed, and it must decide compiler flags.
# On x86-64 llama.cpp is built for AVX2 (x86-64-v3), not -march=native: a native build on a recent Xeon uses AMX tile
# instructions, which crash ("general protection fault") where the hypervisor does not enable AMX. pip's own wheel
# cache ignores CMAKE_ARGS and would hand such a build back whatever flags are set later, so the wheel is kept in
# ~/.cache/sentiment-course/wheels/<hash of the pin and the flags>: compiled once (5-10 min on 2 cores) per machine.
set -euo pipefail
PY=${1:?usage: scripts/build_llama_cpp.sh PYTHON}
cd "$(dirname "$0")/.."
PIN=$(grep -m1 '^llama-cpp-python' requirements.txt)
FLAGS=""
if [ "$(uname -m)" = x86_64 ]; then
  FLAGS="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
fi
WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/sentiment-course/wheels/$(echo "$PIN $FLAGS" | md5sum | cut -c1-12)"
if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "Compiling $PIN once (5-10 minutes on 2 cores) into $WHEELS ..."
  CMAKE_ARGS="$FLAGS" "$PY" -m pip wheel --no-deps --no-cache-dir -w "$WHEELS" "$PIN"
fi
"$PY" -m pip install --force-reinstall --no-deps "$WHEELS"/llama_cpp_python-*.whl
