"""The typed ctypes surface over llama-cpp-python's low-level bindings.

Apart from the log router (``_native_log``), this is the one module that imports
``llama_cpp``: every other module of the backend calls the small typed helpers here, so the
untyped bindings stay in one place. Model, context, vocab and memory pointers are plain
``int`` handles (ctypes ``c_void_p`` results; NULL comes back as ``None`` and the caller
turns it into a typed error); sampler handles are opaque ctypes pointer objects.

Importing this module routes llama.cpp's and ggml's log output into Python logging at DEBUG
(llama-cpp-python otherwise prints everything to stderr).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import threading
from typing import Any

# libstdc++ first, in the global scope: some builds of libggml export parts of libstdc++ (seen
# with GCC 13 and GGML_BACKEND_DL), and libllama, loaded by ctypes without the C++ runtime in
# the global scope, would bind to those and crash in std::regex on the first model load.
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)

import llama_cpp  # noqa: TID251 - this package is the llama_cpp boundary
from llama_cpp import llama_cpp as L  # noqa: TID251 - this package is the llama_cpp boundary

from app.engine.llama._native_log import install_native_log, take_native_problems

logger = logging.getLogger(__name__)
install_native_log()
__all__ = ["take_native_problems"]

LIB_DIR = llama_cpp.llama_cpp._base_path  # the folder holding libllama / libggml*.so

# Re-exported structs and constants the backend uses (ctypes types, not functions).
Batch = L.llama_batch
ModelParams = L.llama_model_params
ContextParams = L.llama_context_params
LogitBias = L.llama_logit_bias
FLASH_ATTN_AUTO: int = L.LLAMA_FLASH_ATTN_TYPE_AUTO
FLASH_ATTN_DISABLED: int = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
FLASH_ATTN_ENABLED: int = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
SPLIT_MODE_NONE: int = L.LLAMA_SPLIT_MODE_NONE

# ggml_type ids for the KV cache types we accept.
KV_CACHE_TYPES: dict[str, int] = {
    "f32": L.GGML_TYPE_F32,
    "f16": L.GGML_TYPE_F16,
    "bf16": 30,  # GGML_TYPE_BF16 (not exported as a constant by the bindings)
    "q8_0": L.GGML_TYPE_Q8_0,
    "q4_0": L.GGML_TYPE_Q4_0,
    "q4_1": L.GGML_TYPE_Q4_1,
    "q5_0": L.GGML_TYPE_Q5_0,
    "q5_1": L.GGML_TYPE_Q5_1,
}
# Bytes per element of each KV type (block size / bytes per block), for memory planning.
KV_TYPE_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
}

_backend_lock = threading.Lock()
_backend_ready = False


def backend_init() -> None:
    """Initialise the llama/ggml backend once per process."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            L.llama_backend_init()
            _backend_ready = True


def supports_gpu_offload() -> bool:
    """True when this llama.cpp build has a GPU backend (CUDA, Metal, Vulkan, ...)."""
    return bool(L.llama_supports_gpu_offload())


def build_has_amx() -> bool:
    """True when ggml's CPU backend was compiled with AMX int8 kernels."""
    try:
        lib = ctypes.CDLL(str(LIB_DIR / "libggml-cpu.so"))
        fn = lib.ggml_cpu_has_amx_int8
    except (OSError, AttributeError):
        return False
    fn.argtypes = []
    fn.restype = ctypes.c_int
    return bool(fn())


# ---------------------------------------------------------------------------------------
# Model and context
# ---------------------------------------------------------------------------------------
def model_default_params() -> Any:
    """A fresh ``llama_model_params`` with llama.cpp's defaults."""
    return L.llama_model_default_params()


def context_default_params() -> Any:
    """A fresh ``llama_context_params`` with llama.cpp's defaults."""
    return L.llama_context_default_params()


# An empty, NULL-terminated device list: llama_model_params.devices = this keeps a model
# (and its context) off every GPU. Module-level so the memory outlives every load.
_NO_DEVICES = (ctypes.c_void_p * 1)()


def no_devices() -> int:
    """Address for ``llama_model_params.devices`` that means "no GPU devices at all"."""
    return ctypes.addressof(_NO_DEVICES)


def model_load(path: str, params: Any) -> int | None:
    """llama_model_load_from_file; None on failure."""
    handle = L.llama_model_load_from_file(path.encode(), params)
    return int(handle) if handle else None


def model_free(model: int) -> None:
    L.llama_model_free(model)


def context_init(model: int, params: Any) -> int | None:
    """llama_init_from_model; None on failure."""
    handle = L.llama_init_from_model(model, params)
    return int(handle) if handle else None


def context_free(ctx: int) -> None:
    L.llama_free(ctx)


def n_ctx(ctx: int) -> int:
    return int(L.llama_n_ctx(ctx))


def n_ctx_seq(ctx: int) -> int:
    return int(L.llama_n_ctx_seq(ctx))


def n_batch(ctx: int) -> int:
    """The largest batch one llama_decode takes in one pass (min of n_batch and n_ubatch)."""
    return min(int(L.llama_n_batch(ctx)), int(L.llama_n_ubatch(ctx)))


def n_seq_max(ctx: int) -> int:
    return int(L.llama_n_seq_max(ctx))


def model_keeps_state(model: int) -> bool:
    """Whether the model has a recurrent (or hybrid) memory, whose past cannot be cut at a
    position."""
    return bool(L.llama_model_is_recurrent(model)) or bool(L.llama_model_is_hybrid(model))


def model_vocab(model: int) -> int:
    return int(L.llama_model_get_vocab(model))


def model_int(model: int, what: str) -> int:
    """An integer fact about the model: n_layer, n_embd, n_head, n_head_kv, n_ctx_train,
    n_params, size, ftype."""
    fn = getattr(L, f"llama_model_{what}")
    return int(fn(model))


def vocab_n_tokens(vocab: int) -> int:
    return int(L.llama_vocab_n_tokens(vocab))


def ftype_name(ftype: int) -> str:
    name = L.llama_ftype_name(ftype)
    return name.decode() if name else ""


def model_desc(model: int) -> str:
    buf = ctypes.create_string_buffer(256)
    L.llama_model_desc(model, buf, len(buf))
    return buf.value.decode("utf-8", errors="replace")


def chat_template(model: int) -> str | None:
    raw = L.llama_model_chat_template(model, None)
    return raw.decode("utf-8", errors="replace") if raw else None


def _read_string(fill: Any, start: int = 256) -> str:
    """Call a llama ``(buf, size) -> needed length`` function, growing the buffer once."""
    buf = ctypes.create_string_buffer(start)
    needed = int(fill(buf, start))
    if needed < 0:
        return ""
    if needed >= start:
        buf = ctypes.create_string_buffer(needed + 1)
        fill(buf, needed + 1)
    return buf.value.decode("utf-8", errors="replace")


def model_metadata(model: int, max_value_chars: int) -> dict[str, str]:
    """All GGUF key/values as strings; longer values are cut to ``max_value_chars``."""
    out: dict[str, str] = {}
    for i in range(int(L.llama_model_meta_count(model))):
        key = _read_string(lambda b, n, i=i: L.llama_model_meta_key_by_index(model, i, b, n))
        # Ask for one char more than we keep, to know whether the value was cut.
        buf = ctypes.create_string_buffer(max_value_chars + 2)
        needed = int(L.llama_model_meta_val_str_by_index(model, i, buf, len(buf)))
        value = buf.value.decode("utf-8", errors="replace")
        if needed > max_value_chars:
            value = f"{value[:max_value_chars]}... ({needed} chars)"
        out[key] = value
    return out


def memory(ctx: int) -> int:
    return int(L.llama_get_memory(ctx))


def memory_seq_rm(mem: int, seq_id: int, p0: int, p1: int) -> bool:
    return bool(L.llama_memory_seq_rm(mem, seq_id, p0, p1))


def memory_seq_pos_range(mem: int, seq_id: int) -> tuple[int, int]:
    lo = L.llama_memory_seq_pos_min(mem, seq_id)
    return int(lo), int(L.llama_memory_seq_pos_max(mem, seq_id))


def state_seq_get(ctx: int, seq_id: int) -> bytes:
    """The state (KV cells) of one sequence, as llama_state_seq_get_data writes it."""
    size = int(L.llama_state_seq_get_size(ctx, seq_id))
    buf = (ctypes.c_uint8 * size)()
    written = int(L.llama_state_seq_get_data(ctx, buf, size, seq_id))
    if written == 0 or written > size:
        raise RuntimeError(f"llama_state_seq_get_data failed for sequence {seq_id}")
    return bytes(memoryview(buf)[:written])


def state_seq_set(ctx: int, seq_id: int, data: bytes) -> None:
    """Load a sequence state (from ``state_seq_get``) into sequence ``seq_id``."""
    buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    if int(L.llama_state_seq_set_data(ctx, buf, len(data), seq_id)) == 0:
        raise RuntimeError(f"llama_state_seq_set_data failed for sequence {seq_id}")


# ---------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------
def tokenize(vocab: int, data: bytes, add_special: bool, parse_special: bool = True) -> list[int]:
    """llama_tokenize (special-token text parsed if asked); grows the buffer when asked to."""
    capacity = len(data) + 8
    while True:
        tokens = (L.llama_token * capacity)()
        n = int(
            L.llama_tokenize(vocab, data, len(data), tokens, capacity, add_special, parse_special)
        )
        if n >= 0:
            return tokens[:n]
        if -n <= capacity:  # should not happen; avoid looping forever
            raise RuntimeError(f"llama_tokenize failed ({n})")
        capacity = -n


def tokenize_address() -> int:
    """The address of the native ``llama_tokenize`` (for libraries that call it themselves)."""
    address = ctypes.cast(L.llama_tokenize, ctypes.c_void_p).value
    assert address is not None
    return address


def token_piece(vocab: int, token: int, special: bool = False) -> bytes:
    """llama_token_to_piece: raw bytes of the piece (control tokens rendered if ``special``)."""
    size = 32
    while True:
        buf = ctypes.create_string_buffer(size)
        n = int(L.llama_token_to_piece(vocab, token, buf, size, 0, special))
        if n >= 0:
            return buf.raw[:n]
        size = -n


def detokenize(vocab: int, tokens: list[int]) -> bytes:
    """llama_detokenize with control tokens rendered; grows the buffer when asked to."""
    array = (L.llama_token * max(len(tokens), 1))(*tokens)
    capacity = 8 * len(tokens) + 16
    while True:
        buf = ctypes.create_string_buffer(capacity)
        n = int(L.llama_detokenize(vocab, array, len(tokens), buf, capacity, False, True))
        if n >= 0:
            return buf.raw[:n]
        if -n <= capacity:  # should not happen; avoid looping forever
            raise RuntimeError(f"llama_detokenize failed ({n})")
        capacity = -n


def token_text(vocab: int, token: int) -> str:
    if token < 0:
        return ""
    raw = L.llama_vocab_get_text(vocab, token)
    return raw.decode("utf-8", errors="replace") if raw else ""


def vocab_bos(vocab: int) -> int:
    return int(L.llama_vocab_bos(vocab))


def vocab_eos(vocab: int) -> int:
    return int(L.llama_vocab_eos(vocab))


def vocab_is_control(vocab: int, token: int) -> bool:
    """Whether ``token`` is a control token (``<|im_start|>``, ``[TOOL_CALLS]``...)."""
    return bool(L.llama_vocab_get_attr(vocab, token) & L.LLAMA_TOKEN_ATTR_CONTROL)


def vocab_is_eog(vocab: int, token: int) -> bool:
    return bool(L.llama_vocab_is_eog(vocab, token))


# ---------------------------------------------------------------------------------------
# Batches and decode (hot path: the backend binds these raw functions locally)
# ---------------------------------------------------------------------------------------
raw_decode: Any = L.llama_decode


def set_n_threads(ctx: int, n_threads: int, n_threads_batch: int) -> None:
    """Threads for the following decodes (generation, and prompt batches)."""
    L.llama_set_n_threads(ctx, n_threads, n_threads_batch)


raw_sampler_sample: Any = L.llama_sampler_sample
raw_sampler_accept: Any = L.llama_sampler_accept


def batch_init(n_tokens: int) -> Any:
    return L.llama_batch_init(n_tokens, 0, 1)


def batch_free(batch: Any) -> None:
    L.llama_batch_free(batch)


# ---------------------------------------------------------------------------------------
# Embeddings (a second context with pooling; see app/engine/llama/embeddings.py)
# ---------------------------------------------------------------------------------------
POOLING_TYPES: dict[str, int] = {
    "mean": L.LLAMA_POOLING_TYPE_MEAN,
    "cls": L.LLAMA_POOLING_TYPE_CLS,
    "last": L.LLAMA_POOLING_TYPE_LAST,
}


def model_n_embd(model: int) -> int:
    return int(L.llama_model_n_embd(model))


def embeddings_seq(ctx: int, seq_id: int, n_embd: int) -> list[float] | None:
    """The pooled embedding of ``seq_id`` after a decode; None when there is none."""
    pointer = L.llama_get_embeddings_seq(ctx, seq_id)
    if not pointer:
        return None
    return [float(x) for x in pointer[:n_embd]]


def memory_clear(mem: int) -> None:
    L.llama_memory_clear(mem, True)


# ---------------------------------------------------------------------------------------
# Samplers: handles are ctypes ``POINTER(llama_sampler)`` objects (falsy when NULL).
# ---------------------------------------------------------------------------------------
SamplerHandle = Any


def sampler_chain() -> SamplerHandle:
    params = L.llama_sampler_chain_default_params()
    params.no_perf = True
    chain = L.llama_sampler_chain_init(params)
    if not chain:
        raise RuntimeError("llama_sampler_chain_init failed")
    return chain


def sampler_add(chain: SamplerHandle, sampler: SamplerHandle) -> None:
    """Add ``sampler`` to ``chain`` (the chain takes ownership)."""
    L.llama_sampler_chain_add(chain, sampler)


def sampler_free(sampler: SamplerHandle) -> None:
    L.llama_sampler_free(sampler)


def sampler_make(kind: str, *args: Any) -> SamplerHandle:
    """``llama_sampler_init_<kind>(*args)``: greedy, dist, top_k, top_p, min_p, temp,
    penalties, logit_bias."""
    fn = getattr(L, f"llama_sampler_init_{kind}")
    handle = fn(*args)
    if not handle:
        raise RuntimeError(f"llama_sampler_init_{kind} failed")
    return handle


def sampler_grammar(vocab: int, gbnf: str) -> SamplerHandle | None:
    """llama_sampler_init_grammar with root rule ``root``; None when the grammar is invalid."""
    handle = L.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
    return handle or None


def sampler_clone(sampler: SamplerHandle) -> SamplerHandle:
    handle = L.llama_sampler_clone(sampler)
    if not handle:
        raise RuntimeError("llama_sampler_clone failed")
    return handle


# Candidate arrays (llama_token_data_array) and raw logits, for sampling outside
# llama_sampler_sample (grammar rejection sampling, logprobs).
TokenData = L.llama_token_data
TokenDataArray = L.llama_token_data_array
raw_sampler_apply: Any = L.llama_sampler_apply
raw_get_logits_ith: Any = L.llama_get_logits_ith


# ---------------------------------------------------------------------------------------
# LoRA adapters: handles are ctypes pointer objects (falsy when NULL), freed with the model.
# ---------------------------------------------------------------------------------------
AdapterHandle = Any


def adapter_lora_init(model: int, path: str) -> AdapterHandle | None:
    """llama_adapter_lora_init; None on failure (llama.cpp logs why)."""
    handle = L.llama_adapter_lora_init(model, path.encode())
    return handle or None


def adapter_meta(adapter: AdapterHandle) -> dict[str, str]:
    """An adapter's GGUF key/values (scalars only, as strings)."""
    out: dict[str, str] = {}
    for i in range(int(L.llama_adapter_meta_count(adapter))):
        key = _read_string(lambda b, n, i=i: L.llama_adapter_meta_key_by_index(adapter, i, b, n))
        out[key] = _read_string(
            lambda b, n, i=i: L.llama_adapter_meta_val_str_by_index(adapter, i, b, n)
        )
    return out


def set_adapters_lora(ctx: int, adapters: list[AdapterHandle], scales: list[float]) -> None:
    """llama_set_adapters_lora: exactly these adapters and scales from the next decode on.

    llama.cpp skips an unchanged set; a changed one makes the next decode re-reserve the
    compute graph.
    """
    n = len(adapters)
    if n == 0:
        L.llama_set_adapters_lora(ctx, None, 0, None)
        return
    handles = (L.llama_adapter_lora_p_ctypes * n)(*adapters)
    values = (ctypes.c_float * n)(*scales)
    if int(L.llama_set_adapters_lora(ctx, handles, n, values)):
        raise RuntimeError("llama_set_adapters_lora failed")
