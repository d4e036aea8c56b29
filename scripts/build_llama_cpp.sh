#!/usr/bin/env bash
# Build llama-cpp-python (which vendors llama.cpp) once into a wheel of our own, then install it into the given Python
# (without its dependencies: the Makefile installs them pinned, then prints the CPU features the build uses).
#
#   scripts/build_llama_cpp.sh .venv/bin/python              # for this CPU (the widest instructions it has, no AMX)
#   scripts/build_llama_cpp.sh .venv/bin/python avx2 DIR     # the AVX2 build's libraries unpacked into DIR, not
#                                                            # installed: LLAMA_CPP_LIB_PATH=DIR loads them instead
#
# Why a script of its own: it runs before the course's package is installed, and it must decide compiler flags.
# On x86-64 llama.cpp is built for AVX2 (x86-64-v3), plus the AVX-512 extensions this CPU lists in /proc/cpuinfo
# (AVX-512 F/BW/VL/DQ/CD, VBMI, VNNI, BF16; AVX-VNNI), each only where the CPU has it, so the build never holds an
# instruction this machine cannot run. Never -march=native or AMX: on a Xeon VM whose hypervisor does not enable AMX
# tiles for the process, llama.cpp's AMX build dies at its first eval ("general protection fault"). pip's own wheel
# cache ignores CMAKE_ARGS and would hand such a build back whatever flags are set later, so the wheel is kept in
# ~/.cache/sentiment-course/wheels/<hash of the pin and the flags>: compiled once (5-10 min on 2 cores) per machine
# and per set of flags.
set -euo pipefail
PY=${1:?usage: scripts/build_llama_cpp.sh PYTHON [auto|avx2] [LIBDIR]}
ISA=${2:-auto}
LIBDIR=${3:-}
cd "$(dirname "$0")/.."
PIN=$(grep -m1 '^llama-cpp-python' requirements.txt)
FLAGS=""
if [ "$(uname -m)" = x86_64 ]; then
  FLAGS="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
  CPU=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  has() { for f in "$@"; do [[ "$CPU" == *" $f "* ]] || return 1; done; }
  if [ "$ISA" = auto ]; then
    if has avx512f avx512bw avx512vl avx512dq avx512cd; then
      FLAGS="$FLAGS -DGGML_AVX512=ON"
      if has avx512vbmi; then FLAGS="$FLAGS -DGGML_AVX512_VBMI=ON"; fi
      if has avx512_vnni; then FLAGS="$FLAGS -DGGML_AVX512_VNNI=ON"; fi
      if has avx512_bf16; then FLAGS="$FLAGS -DGGML_AVX512_BF16=ON"; fi
    fi
    if has avx_vnni; then FLAGS="$FLAGS -DGGML_AVX_VNNI=ON"; fi
  elif [ "$ISA" != avx2 ]; then
    echo "Unknown instruction set '$ISA': use auto (this CPU's widest) or avx2." >&2; exit 2
  fi
fi
echo "llama.cpp build flags: ${FLAGS:-none (the defaults of llama.cpp)}"
WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/sentiment-course/wheels/$(echo "$PIN $FLAGS" | md5sum | cut -c1-12)"
if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "Compiling $PIN once (5-10 minutes on 2 cores) into $WHEELS ..."
  CMAKE_ARGS="$FLAGS" "$PY" -m pip wheel --no-deps --no-cache-dir -w "$WHEELS" "$PIN"
fi
if [ -n "$LIBDIR" ]; then
  mkdir -p "$LIBDIR"
  "$PY" - "$WHEELS" "$LIBDIR" <<'PYEOF'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("llama_cpp_python-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("llama_cpp/lib/"):
            (pathlib.Path(sys.argv[2]) / pathlib.Path(name).name).write_bytes(z.read(name))
PYEOF
  echo "llama.cpp libraries of the $ISA build in $LIBDIR (LLAMA_CPP_LIB_PATH=$LIBDIR)"
else
  # --no-deps: its dependencies come pinned from requirements.txt next (the Makefile), which then finds the pin of
  # llama-cpp-python satisfied and compiles nothing. So llama_cpp is imported (its CPU features printed) only after that.
  "$PY" -m pip install --force-reinstall --no-deps "$WHEELS"/llama_cpp_python-*.whl
fi
