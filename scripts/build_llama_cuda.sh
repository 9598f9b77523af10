#!/usr/bin/env bash
# Build the pinned llama-cpp-python with the CUDA backend into a Python environment.
#
#   scripts/build_llama_cuda.sh PYTHON        (PYTHON: the venv's python, e.g. .venv/bin/python)
#
# Used by `make cuda` and by Dockerfile.cuda (the same commands in both places). No GPU and no
# NVIDIA driver are needed to build, and the result imports and serves on hosts without them:
#   - GGML_BACKEND_DL=ON: ggml's backends are modules (libggml-cuda.so, libggml-cpu*.so) that the
#     server loads at start (app/engine/llama/devices.py); when the CUDA one cannot start (no
#     driver, no device) only the CPU backend registers and the server runs on the CPU.
#   - GGML_CUDA_NO_VMM=ON: ggml-cuda does not link the driver library (libcuda.so.1) at all, so
#     the module loads everywhere and the CUDA runtime reports "no driver" instead.
#   - the CUDA toolkit comes from PyPI (nvcc, cccl, cudart, cublas: CUDA 13.0), into a folder;
#     the runtime libraries the module needs (cudart, cublas) go into the environment itself.
#
# Settings (environment variables):
#   CUDA_ARCHS        CMAKE_CUDA_ARCHITECTURES. Default: "native" when nvidia-smi sees a GPU,
#                     else "90" (Hopper; its PTX also runs, JIT-compiled, on newer GPUs).
#   CPU_VARIANTS      "host" (default): one CPU module with the instruction sets this machine's
#                     CPU reports (/proc/cpuinfo), like the plain CPU build's -march=native
#                     (which ggml refuses with GGML_BACKEND_DL); or "all" (GGML_CPU_ALL_VARIANTS:
#                     one module per x86 level, the best is picked at run time; for images).
#   CUDA_HOME         use this CUDA toolkit (bin/nvcc, cublas) instead of the PyPI one.
#   CUDA_TOOLKIT_DIR  where the PyPI toolkit is installed (default build/cuda-toolkit).
#   LLAMA_BUILD_ROOT  source and CMake build folder, kept for rebuilds (default build/llama-cuda).
#   LLAMA_SDIST       a local llama-cpp-python sdist (.tar.gz) or unpacked folder (offline builds).
#   LLAMA_BENCH=1     also build llama.cpp's llama-bench and llama-batched-bench from the same
#                     build folder (into LLAMA_BUILD_ROOT/cmake/bin).
#   EXTRA_CMAKE_ARGS  more CMake arguments (e.g. -DLLAVA_BUILD=OFF: no libmtmd).
#   JOBS              parallel compile jobs (default: all cores).
#   VERBOSE=1         pip without -q (a failed build prints the compiler's output either way).
main() {
set -euo pipefail

PYTHON=${1:?usage: build_llama_cuda.sh PYTHON}
LLAMA_CPP_PYTHON_VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
# CUDA 13.0 toolkit and runtime (NVIDIA driver >= 580 at run time).
CUDA_PIP_BUILD="nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14"
CUDA_PIP_RUNTIME="nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.0.2.14"
CPU_VARIANTS=${CPU_VARIANTS:-host}
CUDA_TOOLKIT_DIR=${CUDA_TOOLKIT_DIR:-build/cuda-toolkit}
LLAMA_BUILD_ROOT=${LLAMA_BUILD_ROOT:-build/llama-cuda}
JOBS=${JOBS:-$(nproc)}
# Not PIP_QUIET: pip itself reads PIP_* variables from the environment.
pip_q=-q
if [ "${VERBOSE:-0}" = 1 ]; then pip_q=; fi

log() { printf '[build_llama_cuda] %s\n' "$*" >&2; }

if [ -z "${CUDA_ARCHS:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    CUDA_ARCHS=native
  else
    CUDA_ARCHS=90
  fi
fi

# --- 1. the CUDA toolkit --------------------------------------------------------------------
if [ -n "${CUDA_HOME:-}" ]; then
  CUDA_ROOT=$CUDA_HOME
  log "CUDA toolkit: $CUDA_ROOT (CUDA_HOME)"
else
  mkdir -p "$CUDA_TOOLKIT_DIR"
  CUDA_TOOLKIT_DIR=$(cd "$CUDA_TOOLKIT_DIR" && pwd)
  CUDA_ROOT=$CUDA_TOOLKIT_DIR/nvidia/cu13
  if [ ! -x "$CUDA_ROOT/bin/nvcc" ] || [ ! -e "$CUDA_ROOT/lib/libcublas.so.13" ]; then
    log "installing the CUDA toolkit from PyPI into $CUDA_TOOLKIT_DIR"
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install $pip_q --no-deps --target "$CUDA_TOOLKIT_DIR" --upgrade \
      $CUDA_PIP_BUILD
  fi
  # The wheels ship only versioned libraries; CMake's FindCUDAToolkit links the plain names.
  for lib in cudart cublas cublasLt; do
    ln -sf "lib$lib.so.13" "$CUDA_ROOT/lib/lib$lib.so"
  done
  [ -e "$CUDA_ROOT/lib64" ] || ln -s lib "$CUDA_ROOT/lib64"
fi
NVCC=$CUDA_ROOT/bin/nvcc
"$NVCC" --version | tail -1 >&2

# --- 2. the runtime libraries the CUDA backend loads (into the environment) ----------------
if [ -z "${CUDA_HOME:-}" ]; then
  # shellcheck disable=SC2086
  "$PYTHON" -m pip install $pip_q $CUDA_PIP_RUNTIME
fi

# --- 3. the source ---------------------------------------------------------------------------
mkdir -p "$LLAMA_BUILD_ROOT"
LLAMA_BUILD_ROOT=$(cd "$LLAMA_BUILD_ROOT" && pwd)
SRC=$LLAMA_BUILD_ROOT/src
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  sdist=${LLAMA_SDIST:-}
  if [ -z "$sdist" ]; then
    "$PYTHON" -m pip download $pip_q --no-deps --no-binary :all: \
      "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}" -d "$LLAMA_BUILD_ROOT"
    sdist=$LLAMA_BUILD_ROOT/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz
  fi
  rm -rf "$SRC"
  if [ -d "$sdist" ]; then
    cp -r "$sdist" "$SRC"
  else
    mkdir -p "$SRC"
    tar -xzf "$sdist" -C "$SRC" --strip-components=1
  fi
fi

# --- 4. build tools: scikit-build-core, cmake, ninja ------------------------------------------
# Kept in a folder (not pip's throw-away build environment) so that the CMake build folder stays
# usable after the install: rebuilds and the llama-bench target run the same cmake. Where the
# environment already has them (an offline GPU machine), those are used.
if "$PYTHON" -c 'import scikit_build_core, cmake, ninja' 2>/dev/null; then
  log "build tools: from $PYTHON's environment"
else
  TOOLS=$LLAMA_BUILD_ROOT/tools
  if ! PYTHONPATH=$TOOLS "$PYTHON" -c 'import scikit_build_core, cmake, ninja' 2>/dev/null; then
    "$PYTHON" -m pip install $pip_q --target "$TOOLS" --upgrade \
      'scikit-build-core[pyproject]>=0.9.2' cmake ninja
  fi
  export PYTHONPATH=$TOOLS${PYTHONPATH:+:$PYTHONPATH}
  export PATH=$TOOLS/bin:$PATH
fi
CMAKE=$("$PYTHON" -c 'import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, "cmake"))')

# --- 5. build and install -------------------------------------------------------------------
cmake_args="-DGGML_CUDA=ON -DGGML_BACKEND_DL=ON -DGGML_CUDA_NO_VMM=ON"
cmake_args+=" -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHS -DCMAKE_CUDA_COMPILER=$NVCC"
cmake_args+=" -DCUDAToolkit_ROOT=$CUDA_ROOT"
# Backend modules installed by ggml itself (the CPU variants) go next to the other libraries.
cmake_args+=" -DCMAKE_INSTALL_BINDIR=llama_cpp/lib"
case $CPU_VARIANTS in
  host)
    cmake_args+=" -DGGML_NATIVE=OFF"
    flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    # cpuinfo flag -> ggml option (x86); each option is set ON or OFF explicitly.
    for pair in sse4_2:SSE42 avx:AVX avx2:AVX2 avx_vnni:AVX_VNNI bmi2:BMI2 fma:FMA f16c:F16C \
      avx512f:AVX512 avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 \
      amx_tile:AMX_TILE amx_int8:AMX_INT8 amx_bf16:AMX_BF16; do
      case $flags in
        *" ${pair%%:*} "*) cmake_args+=" -DGGML_${pair#*:}=ON" ;;
        *) cmake_args+=" -DGGML_${pair#*:}=OFF" ;;
      esac
    done
    ;;
  all) cmake_args+=" -DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=ON" ;;
  *) log "CPU_VARIANTS must be host or all (got $CPU_VARIANTS)"; exit 2 ;;
esac
cmake_args+=" ${EXTRA_CMAKE_ARGS:-}"
log "CMAKE_ARGS=$cmake_args"
log "building llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION: CUDA_ARCHS=$CUDA_ARCHS" \
  "CPU_VARIANTS=$CPU_VARIANTS JOBS=$JOBS"
start=$(date +%s)
# --no-cache-dir: pip's wheel cache is keyed by version only, so a cached CPU wheel would be
# reused (and this CUDA wheel would later be reused for a CPU install).
CMAKE_ARGS=$cmake_args CMAKE_BUILD_PARALLEL_LEVEL=$JOBS CUDACXX=$NVCC \
  "$PYTHON" -m pip install $pip_q --no-deps --no-cache-dir --force-reinstall \
  --no-build-isolation --config-settings=build-dir="$LLAMA_BUILD_ROOT/cmake" "$SRC"
log "llama-cpp-python built in $(($(date +%s) - start)) s"

if [ "${LLAMA_BENCH:-0}" = 1 ]; then
  # Same CMake cache, plus the tools (mtmd off: the tools folder adds its own).
  "$CMAKE" -S "$SRC" -B "$LLAMA_BUILD_ROOT/cmake" -DLLAMA_BUILD_TOOLS=ON -DLLAVA_BUILD=OFF \
    -DLLAMA_BUILD_SERVER=OFF >/dev/null
  "$CMAKE" --build "$LLAMA_BUILD_ROOT/cmake" --target llama-bench llama-batched-bench -j "$JOBS"
  log "llama-bench, llama-batched-bench: in $LLAMA_BUILD_ROOT/cmake/bin"
fi
}

main "$@"
