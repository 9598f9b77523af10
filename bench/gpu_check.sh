#!/usr/bin/env bash
# The CUDA build on a machine with an NVIDIA GPU and no network: build it if needed, then print
# what our engine sees and does there (bench/gpu_check.py) next to llama.cpp's own llama-bench
# and llama-batched-bench of the same build. About 2 minutes plus the build (16 cores, one GPU
# architecture: a few minutes).
#
#   bench/gpu_check.sh [DATA_DIR]           run from the repository root
#   bench/gpu_check.sh --stage DATA_DIR     only stash DATA_DIR's files and start the build in
#                                           the background (for data split over two calls)
#
# DATA_DIR (default .device) holds what the machine cannot download:
#   llama_cpp_python-*.tar.gz   the pinned llama-cpp-python sdist (may be trimmed: no models/,
#                               docs, .git or other GPU backends), built with the machine's nvcc
#   *.whl                       Python packages missing there (diskcache for llama_cpp; fastapi,
#                               pydantic(-settings), sse-starlette, uvicorn, opentelemetry-api,
#                               pytest-asyncio for the server test), installed with --no-index
#   *.gguf or *.gguf.part-*     the model; parts are joined in name order
# Files are stashed in $GPU_CHECK_STASH (default /root/cria-gpu) so a second call on the same
# machine finds what the first brought. Logs and numbers go to $OUT (default ./gpu-check-out).
# PYTHON (default python3), CUDA_ARCHS (default native), JOBS (default all cores).

main() {
  set -uo pipefail
  local stage=0
  if [ "${1:-}" = --stage ]; then stage=1; shift; fi
  DATA=${1:-.device}
  REPO=$(pwd)
  STASH=${GPU_CHECK_STASH:-/root/cria-gpu}
  OUT=${OUT:-$REPO/gpu-check-out}
  PY=${PYTHON:-python3}
  mkdir -p "$STASH" "$OUT"
  [ -d "$DATA" ] && cp -a "$DATA"/. "$STASH"/
  export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}

  if [ "$stage" = 1 ]; then
    diagnose
    install_wheels
    if ! has_cuda_llama; then
      log "starting the build in the background ($STASH/build.log)"
      setsid nohup bash "$REPO/bench/gpu_check.sh" --build-only >"$STASH/build.log" 2>&1 </dev/null &
      sleep 5
      tail -3 "$STASH/build.log"
    fi
    return 0
  fi

  {
    log "$(date -u) on $(hostname): $(nproc) cores"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
    "$PY" --version
    install_wheels
    wait_for_build || return 1
    local model
    model=$(join_model) || return 1
    "$PY" -m pip show llama-cpp-python 2>/dev/null | head -2
    log "== our engine (bench/gpu_check.py)"
    PYTHONUNBUFFERED=1 "$PY" bench/gpu_check.py --model "$model" --json "$OUT/gpu_check.json"
    log "== nvidia-smi while idle again"
    nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
    llama_tools "$model"
    server_test "$model"
    log "done $(date -u)"
  } 2>&1 | tee "$OUT/gpu_check.log"
  cp "$STASH"/build.log "$STASH"/build-steps.log "$OUT"/ 2>/dev/null
  return 0
}

log() { printf '[gpu_check] %s\n' "$*"; }

# Into the environment itself (not a --target folder): the server test's subprocesses need them.
install_wheels() {
  if compgen -G "$STASH/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile "$STASH"/*.whl 2>&1 \
      | grep -v "^WARNING" || true
  fi
}

diagnose() {
  nvidia-smi -L
  command -v nvcc && nvcc --version | tail -1
  "$PY" --version
  "$PY" -c 'import scikit_build_core, cmake, ninja; print("build tools: scikit-build-core",
    scikit_build_core.__version__, "cmake", cmake.__version__)' || log "build tools missing"
  "$PY" -c 'import nvidia, pathlib; [print("nvidia wheel libs:", p) for p in
    (pathlib.Path(x) / "cu13/lib" for x in nvidia.__path__) if p.is_dir()]' || true
  ls /usr/local/cuda/lib64/libcublas.so* 2>/dev/null | head -2
  grep -m1 "model name" /proc/cpuinfo
}

# llama_cpp importable with the CUDA backend module next to its libraries.
has_cuda_llama() {
  "$PY" -c 'import pathlib, llama_cpp.llama_cpp as L, sys
sys.exit(0 if (pathlib.Path(L._base_path) / "libggml-cuda.so").is_file() else 1)' 2>/dev/null
}

# A CUDA toolkit folder with nvcc and cuBLAS: the system one, or the system one with the Python
# environment's nvidia-cublas wheel merged in (links in $STASH/cuda).
cuda_home() {
  local root="" nv cand
  for cand in "${CUDA_HOME:-}" /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"; do
    if [ -n "$cand" ] && [ -x "$cand/bin/nvcc" ]; then root=$(cd "$cand" && pwd -P); break; fi
  done
  [ -n "$root" ] || { log "no CUDA toolkit (nvcc) found" >&2; return 1; }
  if compgen -G "$root/lib64/libcublas.so*" >/dev/null || compgen -G "$root/lib/libcublas.so*" >/dev/null; then
    echo "$root"
    return
  fi
  nv=$("$PY" -c 'import nvidia, pathlib; print(next(str(p / "cu13") for p in map(pathlib.Path, nvidia.__path__) if (p / "cu13/lib").is_dir()))')
  local overlay=$STASH/cuda
  mkdir -p "$overlay/lib64" "$overlay/include"
  ln -sfn "$root/bin" "$overlay/bin"
  [ -e "$root/nvvm" ] && ln -sfn "$root/nvvm" "$overlay/nvvm"
  for f in "$root"/include/* "$nv"/include/*; do ln -sfn "$f" "$overlay/include/"; done
  for f in "$root"/lib64/* "$nv"/lib/*; do ln -sfn "$f" "$overlay/lib64/"; done
  for lib in cublas cublasLt cudart; do
    [ -e "$overlay/lib64/lib$lib.so" ] || ln -sfn "lib$lib.so.13" "$overlay/lib64/lib$lib.so"
  done
  # nvcc looks in targets/<arch>/{include,lib} next to where it was called from.
  mkdir -p "$overlay/targets/x86_64-linux"
  ln -sfn ../../include "$overlay/targets/x86_64-linux/include"
  ln -sfn ../../lib64 "$overlay/targets/x86_64-linux/lib"
  echo "$overlay"
}

build() {
  local sdist
  sdist=$(compgen -G "$STASH/llama_cpp_python-*.tar.gz" | head -1)
  if [ -z "$sdist" ]; then
    log "no CUDA llama_cpp installed and no llama_cpp_python sdist in $STASH"
    return 1
  fi
  local start=$SECONDS home
  home=$(cuda_home) || return 1
  log "building with CUDA_HOME=$home from $sdist"
  CUDA_HOME=$home CUDA_ARCHS=${CUDA_ARCHS:-native} LLAMA_SDIST=$sdist \
    LLAMA_BUILD_ROOT=$STASH/llama LLAMA_BENCH=1 JOBS=${JOBS:-$(nproc)} \
    EXTRA_CMAKE_ARGS=-DLLAVA_BUILD=OFF bash scripts/build_llama_cuda.sh "$PY" \
    > "$STASH/build-steps.log" 2>&1
  local rc=$?
  grep -E '^\[build_llama_cuda\]|error|Error' "$STASH/build-steps.log" | tail -20
  log "build rc=$rc in $((SECONDS - start)) s"
  return $rc
}

wait_for_build() {
  if [ -f "$STASH/build.pid" ] && [ ! -f "$STASH/build.rc" ]; then
    log "waiting for the background build (pid $(cat "$STASH/build.pid"))"
    local waited=0
    while [ ! -f "$STASH/build.rc" ] && kill -0 "$(cat "$STASH/build.pid")" 2>/dev/null; do
      sleep 5
      waited=$((waited + 5))
      if [ $((waited % 30)) = 0 ]; then
        log "  ${waited}s: $(wc -l < "$STASH/llama/cmake/.ninja_log" 2>/dev/null || echo 0) build steps done"
      fi
    done
    cat "$STASH/build.log"
  fi
  has_cuda_llama && return 0
  build || return 1
  has_cuda_llama
}

join_model() {
  local model=$STASH/model.gguf parts
  if [ ! -s "$model" ]; then
    parts=$(compgen -G "$STASH/*.gguf.part-*" | sort)
    if [ -n "$parts" ]; then
      # shellcheck disable=SC2086
      cat $parts > "$model"
    else
      model=$(compgen -G "$STASH/*.gguf" | grep -v '/model.gguf$' | head -1)
    fi
  fi
  if [ ! -s "$model" ]; then
    log "no model in $STASH" >&2
    return 1
  fi
  log "model $model: $(stat -c %s "$model") bytes, sha256 $(sha256sum "$model" | cut -c1-16)..." >&2
  echo "$model"
}

llama_tools() {
  local bin=$STASH/llama/cmake/bin model=$1
  if [ ! -x "$bin/llama-bench" ]; then
    log "no llama-bench in $bin: skipped"
    return
  fi
  log "== llama-bench -ngl 99 (same build; tg = single-stream decode tokens/s)"
  (cd "$bin" && ./llama-bench -m "$model" -ngl 99 -p 512 -n 256 -r 3 -fa 0,1)
  log "== llama-batched-bench -ngl 99 (S_TG = decode tokens/s of all streams)"
  (cd "$bin" && ./llama-batched-bench -m "$model" -ngl 99 -c 16384 -b 2048 -ub 512 -fa on \
    -npp 64 -ntg 256 -npl 1,8 2>&1 | grep -E '^\||^main')
}

server_test() {
  if ! "$PY" -c 'import fastapi, uvicorn, pydantic_settings, sse_starlette, pytest_asyncio' 2>/dev/null; then
    log "server packages missing: the CUDA server test is skipped"
    return
  fi
  log "== tests/e2e/test_cuda_build.py (the server on this GPU)"
  mkdir -p models
  ln -sfn "$1" models/SmolLM2-135M-Instruct.Q4_1.gguf
  timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/e2e/test_cuda_build.py -rs 2>&1 | tail -15
}

if [ "${1:-}" = --build-only ]; then
  set -uo pipefail
  REPO=$(pwd)
  STASH=${GPU_CHECK_STASH:-/root/cria-gpu}
  PY=${PYTHON:-python3}
  export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
  echo $$ > "$STASH/build.pid"
  build
  echo $? > "$STASH/build.rc"
  exit 0
fi
main "$@"
