"""What the server does on a machine with an NVIDIA GPU, through our own engine.

Run by ``bench/gpu_check.sh`` (which builds llama.cpp with CUDA first if needed); prints:
  1. the devices and free memory as our device reader (ggml's device API) sees them;
  2. the ``auto`` offload decision for the model;
  3. single-stream and 8-stream decode tokens/s through ``LlamaEngine`` (all layers on the GPU);
  4. the memory the loaded model took on the device;
  5. the back-off ladder: with most of the device's memory held by another process, a context
     that does not fit with every layer on the GPU ("all"), and what ``auto`` picks there.
Greedy with ignore_eos, so each request generates exactly --tokens tokens.

    python bench/gpu_check.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from app.engine.llama import _lib, load_backend
from app.engine.llama.devices import (
    list_devices,
    list_gpu_devices,
    load_backends,
    nvidia_lib_dirs,
)
from app.engine.service import LlamaEngine
from app.engine.types import EngineConfig, GenerationRequest, GpuLayers, SamplingParams

MIB = 1024 * 1024
SYSTEM = "You are a helpful assistant."
TOPICS = ["the sea", "a city", "a forest", "the moon", "a river", "music", "a train", "winter"]


def prompt(i: int) -> str:
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWrite a long essay about "
        f"{TOPICS[i % len(TOPICS)]}.<|im_end|>\n<|im_start|>assistant\n"
    )


def show(title: str, value: object) -> None:
    print(f"{title}: {value}", flush=True)


def gpu_free_mib() -> list[tuple[str, int, int]]:
    return [(g.description, g.free_bytes // MIB, g.total_bytes // MIB) for g in list_gpu_devices()]


async def tokens_per_s(model: str, n_streams: int, tokens: int, layers: GpuLayers) -> float:
    """Aggregate decode tokens/s of ``n_streams`` requests on an engine with that many slots."""
    config = EngineConfig(
        model_path=model, n_slots=n_streams, n_ctx_slot=1024, n_gpu_layers=layers,
        prompt_cache=False,
    )  # fmt: skip
    engine = LlamaEngine(config)
    await engine.start()
    try:
        params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)

        async def one(i: int, tag: str) -> float:
            events = [
                e async for e in engine.submit(GenerationRequest(f"{tag}{i}", prompt(i), params))
            ]
            timings = events[-1].timings
            assert timings is not None
            return timings.decode_tokens_per_s

        await asyncio.gather(*(one(i, "warm") for i in range(n_streams)))
        best = 0.0
        for r in range(3):
            start = time.perf_counter()
            rates = await asyncio.gather(*(one(i, f"r{r}-") for i in range(n_streams)))
            wall = time.perf_counter() - start
            # Per-stream decode rates summed: prefill left out, like llama-bench's tg.
            best = max(best, sum(rates))
            print(
                f"  run {r}: {sum(rates):.1f} tok/s decode "
                f"({n_streams * tokens / wall:.1f} tok/s wall, prefill included)",
                flush=True,
            )
        info = engine.model_info().offload
        show("  offload", f"{info.backend} {info.layers_offloaded}/{info.layers_total} layers")
        return best
    finally:
        await engine.stop()


def hold_device_memory(leave_mib: int) -> subprocess.Popen[str] | None:
    """Start a process that cudaMallocs all but ``leave_mib`` of the first GPU's free memory."""
    gpus = list_gpu_devices()
    if not gpus:
        return None
    take = max(gpus[0].free_bytes - leave_mib * MIB, 0)
    libs = [str(p) for d in nvidia_lib_dirs() for p in sorted(d.glob("libcudart.so.*"))]
    code = (
        "import ctypes, sys\n"
        "for name in sys.argv[2:] + ['libcudart.so.13', 'libcudart.so.12', 'libcudart.so']:\n"
        "    try:\n        rt = ctypes.CDLL(name); break\n    except OSError: pass\n"
        "p = ctypes.c_void_p()\n"
        "err = rt.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(int(sys.argv[1])))\n"
        "print('held' if err == 0 else f'cudaMalloc error {err}', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(take), *libs],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    show("memory holder", f"{line} ({take // MIB} MiB taken)")
    if line != "held":
        proc.kill()
        return None
    return proc


def ladder(model: str, requested: GpuLayers, n_slots: int, n_ctx_slot: int) -> None:
    t0 = time.perf_counter()
    try:
        backend = load_backend(
            EngineConfig(model_path=model, n_slots=n_slots, n_ctx_slot=n_ctx_slot,
                         n_gpu_layers=requested, prompt_cache=False)
        )  # fmt: skip
    except Exception as exc:
        show(f"  {requested!s:>4}", f"load failed: {exc}")
        return
    info = backend.info().offload
    show(
        f"  {requested!s:>4}",
        f"{info.backend} {info.layers_offloaded}/{info.layers_total} layers, "
        f"fallback={info.fallback} ({time.perf_counter() - t0:.1f} s): {info.reason}",
    )
    backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--json", help="write the numbers here too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("app.engine.llama.loader").setLevel(logging.INFO)
    logging.getLogger("app.engine.llama.devices").setLevel(logging.INFO)
    results: dict[str, object] = {}

    _lib.backend_init()
    report = load_backends()
    show("llama.cpp lib", _lib.LIB_DIR)
    show("backends", f"dynamic={report.dynamic} registered={dict(report.registered)}")
    show("no-GPU reason", report.no_gpu_reason)
    print("== devices (ggml device API)")
    for d in list_devices():
        print(f"  {d.kind:5} {d.name:8} {d.description}: {d.free_bytes // MIB} MiB free "
              f"of {d.total_bytes // MIB} MiB")  # fmt: skip
    before = gpu_free_mib()
    results["gpus_before_load"] = before

    print("== auto offload decision (8 slots x 4096 tokens)")
    backend = load_backend(EngineConfig(model_path=args.model, n_slots=8, n_ctx_slot=4096))
    info = backend.info().offload
    show("  decision", f"{info.backend} {info.layers_offloaded}/{info.layers_total}: {info.reason}")
    after = gpu_free_mib()
    if before and after:
        used = before[0][1] - after[0][1]
        show("  device memory used by the loaded model + 8x4096 KV + buffers", f"{used} MiB")
        results["vram_used_after_load_mib"] = used
    results["auto"] = {"backend": info.backend, "layers": info.layers_offloaded,
                       "total": info.layers_total, "reason": info.reason}  # fmt: skip
    backend.close()

    print(f"== decode tokens/s through LlamaEngine ({args.tokens} tokens, greedy, best of 3)")
    for n in (1, 8):
        rate = asyncio.run(tokens_per_s(args.model, n, args.tokens, "all"))
        show(f"  {n} stream(s)", f"{rate:.1f} tok/s")
        results[f"engine_tps_{n}"] = rate

    print("== back-off ladder: another process holds all but 4096 MiB of the GPU")
    holder = hold_device_memory(4096)
    if holder is None:
        print("  (no GPU memory could be held: ladder skipped)")
    else:
        try:
            show("  free now", gpu_free_mib())
            # 8 slots x 32768 tokens of f16 KV: ~5.6 GiB on 30 layers, more than is left.
            for requested in ("all", "auto"):
                ladder(args.model, requested, 8, 32768)
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=30)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
