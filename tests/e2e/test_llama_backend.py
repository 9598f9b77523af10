"""The llama backend on the real default model (SmolLM2-135M-Instruct Q4_1)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from app.engine.backend import BatchToken, DecodeError
from app.engine.llama import load_backend
from app.engine.llama.backend import LlamaBackend
from app.engine.llama.devices import list_gpu_devices
from app.engine.types import EngineConfig, SamplingParams
from app.errors import ModelLoadError, ModelNotFound
from app.models.registry import resolve_model

N_CTX_SLOT = 512
STEPS = 20
GREEDY = SamplingParams(temperature=0.0)
CHAT_SEA = "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n"
CHAT_TRANSISTOR = (
    "<|im_start|>user\nExplain how a transistor works, with a little history of its "
    "invention.<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def backend(model_path: Path) -> Iterator[LlamaBackend]:
    b = load_backend(EngineConfig(model_path=str(model_path), n_slots=4, n_ctx_slot=N_CTX_SLOT))
    yield b
    b.close()


@pytest.fixture(autouse=True)
def _empty_kv(backend: LlamaBackend) -> Iterator[None]:
    yield
    for seq in range(backend.n_slots):
        backend.clear_seq(seq)


def prompt_tokens(
    seq: int, tokens: Sequence[int], start: int = 0, *, last: bool = True
) -> list[BatchToken]:
    """Tokens of one prompt (chunk) for ``seq``; logits only for the final prompt token."""
    end = start + len(tokens) - 1
    return [BatchToken(t, start + i, seq, last and start + i == end) for i, t in enumerate(tokens)]


def greedy_alone(
    backend: LlamaBackend, seq: int, prompt: list[int], steps: int = STEPS
) -> list[int]:
    """Prefill ``prompt`` alone and decode ``steps`` greedy tokens, one sequence per batch."""
    sampler = backend.new_sampler(GREEDY, 0)
    try:
        backend.decode(prompt_tokens(seq, prompt))
        out = [sampler.sample(len(prompt) - 1)]
        for k in range(steps - 1):
            backend.decode([BatchToken(out[-1], len(prompt) + k, seq, True)])
            out.append(sampler.sample(0))
    finally:
        sampler.close()
    backend.clear_seq(seq)
    return out


def text_of(backend: LlamaBackend, tokens: Sequence[int]) -> str:
    return b"".join(backend.token_to_bytes(t) for t in tokens).decode("utf-8")


# --- vocabulary -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text", ["Hello, world!", "  leading spaces\nand lines", "Café, naïve, 日本語, emoji 🦙🌊"]
)
def test_tokenize_round_trip(backend: LlamaBackend, text: str) -> None:
    tokens = backend.tokenize(text, add_special=False)
    assert tokens
    assert text_of(backend, tokens) == text


def test_tokenize_parses_special_tokens(backend: LlamaBackend) -> None:
    tokens = backend.tokenize("<|im_start|>user\nhi<|im_end|>", add_special=True)
    im_start, im_end = tokens[0], tokens[-1]
    assert backend.tokenize("<|im_start|>", add_special=False) == [im_start]
    assert backend.is_eog(im_end)  # <|im_end|> ends a ChatML turn
    assert not backend.is_eog(tokens[1])
    assert backend.token_to_bytes(im_start) == b""  # control tokens render as nothing


def test_tokenize_long_text(backend: LlamaBackend) -> None:
    text = "🦙 llamas and 日本語. " * 500
    tokens = backend.tokenize(text, add_special=False)
    assert len(tokens) > 4000
    assert text_of(backend, tokens) == text


def test_token_pieces_can_be_partial_utf8(backend: LlamaBackend) -> None:
    tokens = backend.tokenize("日本語の文章と🦙", add_special=False)
    pieces = [backend.token_to_bytes(t) for t in tokens]
    assert b"".join(pieces).decode("utf-8") == "日本語の文章と🦙"
    assert all(isinstance(p, bytes) for p in pieces)


# --- batch invariance -------------------------------------------------------------------------
def test_same_prompt_in_one_batch_matches_alone(backend: LlamaBackend) -> None:
    prompt = backend.tokenize(CHAT_SEA, add_special=True)
    reference = greedy_alone(backend, 0, prompt)
    samplers = [backend.new_sampler(GREEDY, 0) for _ in range(2)]
    backend.decode(prompt_tokens(0, prompt) + prompt_tokens(1, prompt))
    outs = [[samplers[0].sample(len(prompt) - 1)], [samplers[1].sample(2 * len(prompt) - 1)]]
    for k in range(STEPS - 1):
        backend.decode([BatchToken(outs[s][-1], len(prompt) + k, s, True) for s in (0, 1)])
        for s in (0, 1):
            outs[s].append(samplers[s].sample(s))
    for sampler in samplers:
        sampler.close()
    assert outs[0] == reference
    assert outs[1] == reference


def test_decode_mixed_with_a_prefill_chunk_matches_alone(backend: LlamaBackend) -> None:
    """Seq 0 decodes while seq 1's prompt is prefilled in chunks in the same batches."""
    prompt0 = backend.tokenize(CHAT_SEA, add_special=True)
    prompt1 = backend.tokenize(CHAT_TRANSISTOR + "Tell me more. " * 60, add_special=True)
    reference = greedy_alone(backend, 0, prompt0)
    sampler = backend.new_sampler(GREEDY, 0)
    backend.decode(prompt_tokens(0, prompt0))
    out = [sampler.sample(len(prompt0) - 1)]
    done1, chunk = 0, 7
    for k in range(STEPS - 1):
        batch = [BatchToken(out[-1], len(prompt0) + k, 0, True)]
        batch += prompt_tokens(1, prompt1[done1 : done1 + chunk], done1, last=False)
        done1 += chunk
        backend.decode(batch)
        out.append(sampler.sample(0))
    sampler.close()
    assert done1 < len(prompt1)  # every step really carried a prefill chunk
    assert out == reference


def test_chunked_prefill_matches_one_batch(backend: LlamaBackend) -> None:
    """Prefill in chunks of 5 gives the same continuation (what prefix reuse relies on)."""
    prompt = backend.tokenize(CHAT_TRANSISTOR, add_special=True)
    reference = greedy_alone(backend, 2, prompt)
    sampler = backend.new_sampler(GREEDY, 0)
    for start in range(0, len(prompt), 5):
        backend.decode(prompt_tokens(2, prompt[start : start + 5], start))
    last_index = (len(prompt) - 1) % 5
    out = [sampler.sample(last_index)]
    for k in range(STEPS - 1):
        backend.decode([BatchToken(out[-1], len(prompt) + k, 2, True)])
        out.append(sampler.sample(0))
    sampler.close()
    assert out == reference


# --- sampling ---------------------------------------------------------------------------------
def sample_run(
    backend: LlamaBackend, params: SamplingParams, seed: int, steps: int = 12
) -> list[int]:
    prompt = backend.tokenize(CHAT_SEA, add_special=True)
    sampler = backend.new_sampler(params, seed)
    try:
        for t in prompt:
            sampler.accept(t)
        backend.decode(prompt_tokens(3, prompt))
        out = [sampler.sample(len(prompt) - 1)]
        for k in range(steps - 1):
            backend.decode([BatchToken(out[-1], len(prompt) + k, 3, True)])
            out.append(sampler.sample(0))
    finally:
        sampler.close()
        backend.clear_seq(3)
    return out


def test_same_seed_same_tokens(backend: LlamaBackend) -> None:
    params = SamplingParams(temperature=1.2, top_k=100, top_p=0.98, min_p=0.0)
    first = sample_run(backend, params, seed=1234)
    assert sample_run(backend, params, seed=1234) == first
    others = [sample_run(backend, params, seed=s) for s in (1, 2, 3)]
    assert any(o != first for o in others)  # the seed matters at this temperature


def test_logit_bias_steers_greedy(backend: LlamaBackend) -> None:
    greedy = sample_run(backend, GREEDY, 0, steps=2)
    banned = sample_run(
        backend, SamplingParams(temperature=0.0, logit_bias={greedy[0]: -100.0}), 0, steps=2
    )
    assert banned[0] != greedy[0]
    forced_token = backend.tokenize(" banana", add_special=False)[0]
    forced = sample_run(
        backend, SamplingParams(temperature=0.0, logit_bias={forced_token: 100.0}), 0, steps=3
    )
    assert forced == [forced_token] * 3


def test_repeat_penalty_changes_greedy_output(backend: LlamaBackend) -> None:
    plain = sample_run(backend, GREEDY, 0, steps=20)
    penalised = sample_run(
        backend,
        SamplingParams(temperature=0.0, repeat_penalty=2.0, presence_penalty=1.0),
        0,
        steps=20,
    )
    assert penalised != plain


def test_sampler_close_is_idempotent(backend: LlamaBackend) -> None:
    sampler = backend.new_sampler(SamplingParams(), 7)
    sampler.close()
    sampler.close()


# --- KV cells and errors ----------------------------------------------------------------------
def test_clear_seq_frees_cells(backend: LlamaBackend) -> None:
    prompt = backend.tokenize(CHAT_TRANSISTOR, add_special=True)
    assert backend.kv_cells_used() == 0
    backend.decode(prompt_tokens(0, prompt) + prompt_tokens(1, prompt[:10]))
    assert backend.kv_cells_used() == len(prompt) + 10
    backend.clear_seq(0, start_pos=5)  # keep a prefix of 5 (prompt-prefix reuse)
    assert backend.seq_pos_range(0) == (0, 4)
    assert backend.kv_cells_used() == 5 + 10
    backend.clear_seq(0)
    backend.clear_seq(1)
    assert backend.kv_cells_used() == 0
    assert backend.seq_pos_range(0) == (-1, -1)


def test_full_slot_raises_decode_error(backend: LlamaBackend) -> None:
    assert backend.n_ctx_slot == N_CTX_SLOT
    filler = [BatchToken(100, p, 0, False) for p in range(backend.n_ctx_slot)]
    for start in range(0, len(filler), backend.n_batch):
        backend.decode(filler[start : start + backend.n_batch])
    with pytest.raises(DecodeError) as info:
        backend.decode([BatchToken(100, backend.n_ctx_slot, 0, True)])
    assert info.value.code != 0
    # Other sequences still decode.
    backend.decode([BatchToken(100, 0, 1, True)])


def test_bad_batches_raise_decode_error(backend: LlamaBackend) -> None:
    too_big = [BatchToken(100, p, 0, False) for p in range(backend.n_batch + 1)]
    with pytest.raises(DecodeError, match="larger than n_batch"):
        backend.decode(too_big)
    with pytest.raises(DecodeError) as info:
        backend.decode([BatchToken(100, 0, 0, False), BatchToken(100, 7, 0, True)])  # gap
    assert info.value.code == -1
    backend.decode([])  # an empty batch is a no-op


# --- model info -------------------------------------------------------------------------------
def test_info_of_the_default_model(backend: LlamaBackend, model_path: Path) -> None:
    info = backend.info()
    assert info.path == str(model_path)
    assert info.name == model_path.name.removesuffix(".gguf")
    assert info.architecture == "llama"
    assert info.quantization == "Q4_1"
    assert 130_000_000 < info.n_params < 140_000_000
    assert info.size_bytes == model_path.stat().st_size
    assert info.n_ctx_train == 8192
    assert (info.n_ctx_slot, info.n_slots) == (N_CTX_SLOT, 4)
    assert info.n_vocab == 49152
    assert info.chat_template is not None
    assert "<|im_start|>" in info.chat_template
    assert info.eos_token == "<|im_end|>"
    assert info.description.startswith("llama")
    assert info.metadata["general.architecture"] == "llama"
    assert info.metadata["llama.block_count"] == "30"
    assert all(len(v) < 600 for v in info.metadata.values())
    # n_gpu_layers=auto: on a GPU host a GPU build offloads; otherwise the CPU runs it all.
    gpus = list_gpu_devices()
    assert info.offload.layers_total == 31
    if gpus:
        assert info.offload.backend == gpus[0].backend
        assert info.offload.layers_offloaded > 0
    else:
        assert info.offload.backend == "cpu"
        assert info.offload.layers_offloaded == 0
    assert info.offload.reason


def test_alias_and_real_context_sizes(model_path: Path) -> None:
    """A tiny context: llama.cpp pads the per-sequence context and caps the batch at n_ctx;
    the backend reports the real values and both hold."""
    b = load_backend(
        EngineConfig(
            model_path=str(model_path), model_alias="tiny", n_slots=1, n_ctx_slot=100, n_batch=512
        )
    )
    try:
        assert b.info().name == "tiny"
        assert b.n_ctx_slot >= 100
        assert b.info().n_ctx_slot == b.n_ctx_slot
        assert b.n_batch <= 100
        fill = [BatchToken(100, p, 0, False) for p in range(b.n_ctx_slot)]
        for start in range(0, len(fill), b.n_batch):
            b.decode(fill[start : start + b.n_batch])
        assert b.kv_cells_used() == b.n_ctx_slot
    finally:
        b.close()
        b.close()  # idempotent


# --- load errors (in process, no crash) -------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="not found"):
        load_backend(EngineConfig(model_path=str(tmp_path / "missing.gguf")))


def test_not_a_gguf_file(tmp_path: Path) -> None:
    # The header check (a plain message) is the resolver's, before any engine is built ...
    path = tmp_path / "page.gguf"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(ModelLoadError, match="not a GGUF model file"):
        resolve_model(str(path), tmp_path, download=False)
    # ... and the loader, handed such a file anyway, still fails cleanly (no crash).
    with pytest.raises(ModelLoadError, match="could not load") as info:
        load_backend(EngineConfig(model_path=str(path)))
    assert "invalid magic" in info.value.message  # llama.cpp's own reason is passed on


@pytest.mark.parametrize("keep_bytes", [3_000, 40_000_000])
def test_truncated_model(tmp_path: Path, model_path: Path, keep_bytes: int) -> None:
    path = tmp_path / "cut.gguf"
    with model_path.open("rb") as src:
        path.write_bytes(src.read(keep_bytes))
    with pytest.raises(ModelLoadError, match="could not load") as info:
        load_backend(EngineConfig(model_path=str(path), n_slots=1, n_ctx_slot=256))
    assert "truncated" in info.value.message


def test_bad_settings_are_load_errors(model_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="kv_cache_type 'q3_x'"):
        load_backend(EngineConfig(model_path=str(model_path), kv_cache_type="q3_x"))
    with pytest.raises(ModelLoadError, match="n_slots must be >= 1"):
        load_backend(EngineConfig(model_path=str(model_path), n_slots=0))


# --- ggml device API (ctypes bindings on libggml) ---------------------------------------------
def test_ggml_device_api_lists_the_cpu(backend: LlamaBackend) -> None:
    from app.engine.llama import _lib
    from app.engine.llama.devices import list_devices, list_gpu_devices, load_backends

    devices = list_devices()
    cpus = [d for d in devices if d.kind == "cpu"]
    assert cpus
    assert cpus[0].description
    assert cpus[0].total_bytes > 0
    gpus = list_gpu_devices()
    assert [g.index for g in gpus] == list(range(len(gpus)))
    if not _lib.supports_gpu_offload():
        assert gpus == []
        reason = backend.info().offload.reason
        if load_backends().gpu_backends:  # a GPU build on a host without that GPU
            assert reason.endswith("running on the CPU")
            assert " build, but no " in reason
        else:
            assert reason.startswith("this llama.cpp build has no GPU backend")


def test_empty_device_list_loads_on_the_cpu(model_path: Path) -> None:
    """The CPU fallback on GPU builds passes an empty NULL-terminated device list."""
    from app.engine.llama import _lib

    params = _lib.model_default_params()
    params.devices = _lib.no_devices()
    params.use_extra_bufts = False
    model = _lib.model_load(str(model_path), params)
    assert model is not None
    try:
        assert _lib.model_int(model, "n_layer") == 30
    finally:
        _lib.model_free(model)


def test_use_after_close_raises_instead_of_crashing(model_path: Path) -> None:
    b = load_backend(EngineConfig(model_path=str(model_path), n_slots=1, n_ctx_slot=256))
    sampler = b.new_sampler(GREEDY, 0)
    sampler.close()
    with pytest.raises(RuntimeError, match="sampler is closed"):
        sampler.sample(0)
    b.close()
    with pytest.raises(RuntimeError, match="backend is closed"):
        b.decode([BatchToken(100, 0, 0, True)])
    with pytest.raises(RuntimeError, match="backend is closed"):
        b.clear_seq(0)
    with pytest.raises(RuntimeError, match="backend is closed"):
        b.new_sampler(GREEDY, 0)
    assert b.kv_cells_used() == 0


def test_gpu_module_diagnosis(tmp_path: Path) -> None:
    """Why a GPU module registered no device: it does not load, no driver, or no device."""
    import ctypes.util

    from app.engine.llama.devices import diagnose_gpu_module

    broken = tmp_path / "libggml-cuda.so"
    broken.write_bytes(b"not an ELF file")
    assert diagnose_gpu_module("cuda", broken, []).startswith("its module did not load: ")
    loadable = Path(ctypes.util.find_library("m") or "libm.so.6")  # any library that loads
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        assert diagnose_gpu_module("cuda", loadable, []) == "driver not found"
    said = ["ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected"]
    assert diagnose_gpu_module("vulkan", loadable, said) == "the driver reports no device"
    said = ["ggml_vulkan: No devices found."]
    assert diagnose_gpu_module("vulkan", loadable, said) == f"the backend said: {said[0]}"
