"""Engine value types: frozen dataclasses shared by the scheduler, the backend and serving.

No HTTP words here and no llama_cpp imports: these are the engine's own vocabulary.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

GpuLayers = int | Literal["all", "auto"]


class FinishReason(enum.StrEnum):
    """Why a generation ended."""

    STOP = "stop"  # end-of-generation token or a stop string
    LENGTH = "length"  # max_tokens reached or the slot context is full
    CANCELLED = "cancelled"  # aborted by the caller (client went away)
    ERROR = "error"  # the engine failed while generating this request
    REFUSED = "refused"  # the request's grammar asks for text no token spells


@dataclass(frozen=True)
class JsonRule:
    """A grammar rule converted from a JSON Schema: ``name ::= <the schema's JSON values>``."""

    name: str  # the GBNF rule name the grammar refers to (letters, digits and '-')
    schema: str  # the JSON Schema as JSON text (canonical: sorted keys), also the cache key


@dataclass(frozen=True)
class Grammar:
    """A constraint on the generated text, enforced token by token by llama.cpp's grammar sampler.

    ``gbnf`` is GBNF source with a ``root`` rule; it may refer to the rules of ``json_rules``,
    which the backend converts from JSON Schema. With a ``trigger``, the grammar is lazy:
    generation is free until the text ``trigger`` appears, and ``root`` then constrains the
    text after it (a tool call starting in the middle of a reply). ``param`` names the request
    field it came from, for error messages.
    """

    gbnf: str
    json_rules: tuple[JsonRule, ...] = ()
    trigger: str = ""
    param: str | None = None


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling settings; temperature 0 means greedy."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    max_tokens: int | None = None  # None: until end-of-generation or the slot context is full
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    # Show control tokens' text in the output (``[TOOL_CALLS]``, ``<|python_tag|>``, Harmony's
    # channels): a model family's call and reasoning markers that the serving layer parses.
    # End-of-generation tokens stay hidden.
    special_text: bool = False
    # A reasoning budget: after this many generated tokens still inside the thinking block
    # (``reasoning_markers``: its open and close text; ``reasoning_open``: the prompt
    # already opened it), the engine writes the close marker itself and the answer follows.
    reasoning_budget: int | None = None
    reasoning_markers: tuple[str, str] = ("", "")
    reasoning_open: bool = False
    grammar: Grammar | None = None  # constrain the output (JSON mode, JSON Schema, GBNF, tools)
    logprobs: int | None = None  # report each token's logprob and this many top alternatives


AdapterSet = tuple[tuple[int, float], ...]
"""LoRA adapters applied to a sequence: (adapter id, scale) pairs, by id, no zero scales.

The empty set is the base model. Sequences with different sets never share a decode (llama.cpp
applies adapters per context) and never share cached KV cells."""


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter loaded on the base model and served as a model of its own.

    ``id`` is its index in load order (llama-server's ``/lora-adapters`` id); ``scale`` is
    what a request that names the adapter gets (set at load, changed by ``lora_adapters``).
    """

    id: int
    name: str  # the model id clients name (``v1.3``)
    path: str
    scale: float = 1.0


@dataclass(frozen=True)
class LoraScale:
    """One adapter a request asks for: its id and scale (None: the adapter's current scale)."""

    id: int
    scale: float | None = None


@dataclass(frozen=True)
class PromptPart:
    """A span of a rendered chat: the template's scaffolding (``special``: special-token text
    such as ``<|im_start|>`` becomes control tokens) or a message's content (plain text)."""

    text: str
    special: bool


@dataclass(frozen=True)
class ChatPrompt:
    """A rendered chat as spans, so that only the template's own markers become control
    tokens: ``<|im_end|>`` typed inside a user message stays text and cannot forge a turn."""

    parts: tuple[PromptPart, ...]

    @property
    def text(self) -> str:
        """The whole prompt as one string (what the template rendered)."""
        return "".join(part.text for part in self.parts)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: a prompt (text, a rendered chat, or token ids) and how to sample the
    continuation.

    Text prompts are tokenized with special-token parsing on (llama-server does the same for
    a raw prompt); a ``ChatPrompt`` parses special tokens in its scaffolding only.
    ``prompt_tokens``, when set (``Engine.prepare``, off the event loop), are the prompt's
    token ids already and the engine does not tokenize again.
    ``add_special`` adds the model's BOS token when the model wants one.
    ``use_cache`` lets the scheduler reuse a free slot's KV cache for a shared prompt prefix.
    """

    request_id: str
    prompt: str | tuple[int, ...] | ChatPrompt
    sampling: SamplingParams = field(default_factory=SamplingParams)
    add_special: bool = True
    use_cache: bool = True
    prompt_tokens: tuple[int, ...] | None = None
    lora: tuple[LoraScale, ...] = ()  # LoRA adapters to run under (empty: the base model)
    speculative: bool = True  # False: never decode this request speculatively (n-gram drafts)


@dataclass(frozen=True)
class Usage:
    """Token accounting for one finished request."""

    prompt_tokens: int
    cached_prompt_tokens: int  # prompt tokens served from a slot's KV cache (not prefilled)
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Wall-clock timings for one finished request, in seconds."""

    queue_s: float  # submit -> admitted into a slot
    prefill_s: float  # admitted -> first token sampled
    decode_s: float  # first token -> last token
    decode_tokens_per_s: float


@dataclass(frozen=True)
class TokenLogprob:
    """A sampled token's log-probability and the most likely alternatives (best first).

    From the distribution the sampler saw: the logits after logit bias, repetition penalties
    and a grammar's mask, before temperature, top-k, top-p and min-p. Tokens are raw piece
    bytes (a piece may hold part of a UTF-8 character).
    """

    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    """One event of a request's stream.

    Every event but the last carries a text delta (possibly empty while UTF-8 bytes or a
    partial stop-string match are held back) and the sampled token id. The last event has
    ``finish_reason`` set, with ``usage`` and ``timings``; it may carry a final text delta
    (held-back text flushed at the end). ``error`` is a message when the reason is ERROR;
    ``stop_sequence`` is the request's stop string that ended the reply, when one did.
    """

    request_id: str
    text: str = ""
    token_id: int | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    error: str | None = None
    logprob: TokenLogprob | None = None  # when the request asked for logprobs
    stop_sequence: str | None = None  # final event: the stop string that matched, if any

    @property
    def is_final(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class Embeddings:
    """Pooled, L2-normalised embedding vectors, one per input, and the tokens they took."""

    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int


@dataclass(frozen=True)
class OffloadInfo:
    """Where the model runs and why: the outcome of the GPU offload decision."""

    backend: str  # "cuda", "metal", "vulkan", ... or "cpu"
    device_name: str | None  # e.g. "NVIDIA H100 80GB HBM3"; the CPU's name on CPU-only hosts
    layers_offloaded: int
    layers_total: int
    requested: str  # what the settings asked for: "auto", "all" or a number
    reason: str  # a sentence: why this choice (including any fallback)
    fallback: bool = False  # True when the engine had to back off from what was requested
    amx_guard: bool = False  # True when the AMX extra buffer type was disabled at load
    device_total_bytes: int | None = None  # the GPU's memory (None on the CPU)
    device_free_bytes: int | None = None  # the GPU's free memory when the load was planned


@dataclass(frozen=True)
class ModelInfo:
    """Facts about the loaded model, for /v1/models, the model card, health and logs."""

    path: str
    name: str  # the served model id: configured alias, else the file name without .gguf
    architecture: str  # general.architecture, e.g. "llama"
    quantization: str  # file type, e.g. "Q4_1"
    n_params: int
    size_bytes: int
    n_ctx_train: int
    n_ctx_slot: int  # context tokens per slot
    n_slots: int
    n_vocab: int
    chat_template: str | None  # Jinja source from tokenizer.chat_template
    bos_token: str  # text of the BOS token ("" if none)
    eos_token: str  # text of the EOS token ("" if none)
    description: str  # llama_model_desc, e.g. "llama ?B Q4_1"
    metadata: Mapping[str, str]  # all GGUF key/values as strings (large arrays omitted)
    offload: OffloadInfo
    adapters: tuple[LoraAdapter, ...] = ()  # LoRA adapters loaded on this model (load scales)
    system_prompt: str = ""  # the model's preset system prompt ("": none)


@dataclass(frozen=True)
class HostCacheStats:
    """The host-RAM prompt cache: saved conversations and what restoring them saved."""

    entries: int
    bytes_used: int
    capacity_bytes: int
    saves: int
    hits: int
    restored_tokens: int
    restored_bytes: int


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's load, for /health and metrics."""

    slots_busy: int
    slots_total: int
    queue_length: int
    max_queue: int
    kv_cells_used: int
    kv_cells_total: int
    prompt_tokens_total: int
    cached_prompt_tokens_total: int
    generated_tokens_total: int
    requests_total: int
    requests_active: int
    host_cache: HostCacheStats | None = None  # None when the host-RAM cache is off
    draft_method: str = "off"  # speculative decoding: "off" or "ngram"
    draft_tokens_total: int = 0  # draft tokens verified
    draft_accepted_total: int = 0  # draft tokens accepted (each one a decode saved)
    draft_verifications_total: int = 0  # drafts verified (sequence-steps with a draft)


EngineState = Literal["loading", "ready", "restarting", "failed", "dead", "stopped"]
"""``restarting``: the engine process died and a new one is starting; ``failed``: it died too
often to restart again (the reason says why); ``dead``: the model could not be loaded, or
the in-process engine thread stopped."""


@dataclass(frozen=True)
class EngineHealth:
    """Whether the engine can take requests, and if not, why."""

    state: EngineState
    reason: str | None = None
    restarts: int = 0  # times the engine process was restarted after a crash

    @property
    def ready(self) -> bool:
        return self.state == "ready"


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs to load a model and schedule requests.

    Built from the settings tree by the CLI/app (the engine never reads settings itself).
    """

    model_path: str
    model_alias: str | None = None
    n_slots: int = 4
    n_ctx_slot: int = 2048
    n_threads: int | None = None  # None: the physical cores this process may use
    n_batch: int = 512  # max tokens in one llama_decode call (prompt chunks + decode tokens)
    kv_cache_type: str = "f16"  # f16, q8_0, q4_0, f32, bf16
    n_gpu_layers: GpuLayers = "auto"
    gpu_memory_margin_mb: int = 512  # kept free on the device by n_gpu_layers=auto
    max_queue: int = 64
    prompt_cache: bool = True  # reuse a free slot's KV cache for a shared prompt prefix
    cache_ram_mb: int = 1024  # host-RAM copies of evicted conversations (0: off)
    prefill_budget: int = 0  # prompt tokens per step while others decode (0: paced)
    seed: int | None = None  # default seed for requests without one (None: random)
    embeddings: bool = False  # open a second, pooled context on the model for embed()
    embeddings_pooling: Literal["auto", "mean", "last", "cls"] = "auto"
    chat_template: str | None = None  # replaces the model's own template (--chat-template-file)
    system_prompt: str = ""  # a preset's: chats without a system message get it first
    lora: tuple[LoraAdapter, ...] = ()  # LoRA adapters to load on the model (ids 0..n-1)
    speculative: Literal["off", "ngram"] = "off"  # speculative decoding: n-gram drafts or none
    draft_max: int = 8  # most draft tokens per sequence per step
    draft_min_accept: float = 0.3  # least chance of acceptance for a draft token to be sent
