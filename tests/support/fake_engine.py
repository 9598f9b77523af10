"""A fake Engine for testing the HTTP layer and the web page without a model.

It streams a scripted reply one "token" (word) at a time, honours max_tokens, stop strings
(crudely), abort, a bounded queue and context limits, and reports stats like the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from app.engine.embeddings import normalize
from app.engine.lora import AdapterScales
from app.engine.stream import EventStream
from app.engine.types import (
    ChatPrompt,
    Embeddings,
    EngineHealth,
    EngineStats,
    FinishReason,
    GenerationRequest,
    Grammar,
    LoraAdapter,
    ModelInfo,
    OffloadInfo,
    Timings,
    TokenEvent,
    Usage,
)
from app.errors import (
    ContextLengthExceeded,
    EngineDead,
    EngineNotReady,
    InvalidRequest,
    Overloaded,
)

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def fake_model_info(
    n_slots: int = 4, n_ctx_slot: int = 256, offload: OffloadInfo | None = None
) -> ModelInfo:
    """Model facts shaped like the real default model's."""
    return ModelInfo(
        path="/models/fake-model.Q4_1.gguf",
        name="fake-model",
        architecture="llama",
        quantization="Q4_1",
        n_params=134_515_008,
        size_bytes=98_362_432,
        n_ctx_train=8192,
        n_ctx_slot=n_ctx_slot,
        n_slots=n_slots,
        n_vocab=49152,
        chat_template=CHATML_TEMPLATE,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        description="llama ?B Q4_1",
        metadata={"general.architecture": "llama", "general.name": "Fake Model"},
        offload=offload
        or OffloadInfo(
            backend="cpu",
            device_name="Fake CPU",
            layers_offloaded=0,
            layers_total=30,
            requested="auto",
            reason="no GPU backend in this build",
            fallback=True,
        ),
    )


def prompt_text(request: GenerationRequest) -> str:
    """The prompt as text (token ids joined by spaces): what scripted replies look at."""
    if isinstance(request.prompt, str):
        return request.prompt
    if isinstance(request.prompt, ChatPrompt):
        return request.prompt.text
    return " ".join(str(t) for t in request.prompt)


@dataclass
class _Live:
    request: GenerationRequest
    queue: asyncio.Queue[TokenEvent] = field(default_factory=asyncio.Queue)
    cancelled: bool = False


class FakeEngine:
    """Implements app.engine.protocol.Engine with scripted replies.

    ``reply`` maps a prompt to the reply text (default: echoes a fixed sentence);
    ``token_delay_s`` paces tokens; ``n_slots`` requests run at once, ``max_queue`` wait.
    ``tokenize`` gives one token per UTF-8 byte (ids 0..255; ``<|im_start|>`` style markers
    are not special here); ``embed`` (with ``embeddings=True``) hashes words into 16
    dimensions, so texts sharing words are closer.
    """

    def __init__(
        self,
        *,
        reply: Callable[[str], str] | None = None,
        token_delay_s: float = 0.0,
        n_slots: int = 4,
        max_queue: int = 8,
        n_ctx_slot: int = 256,
        start_delay_s: float = 0.0,
        embeddings: bool = False,
        offload: OffloadInfo | None = None,
        adapters: Sequence[str] = (),
    ) -> None:
        self.offload = offload
        # LoRA adapters by name (ids in order); requests record their ``lora`` in ``submitted``.
        self.adapters = tuple(
            LoraAdapter(i, name, f"/models/{name}.lora.gguf") for i, name in enumerate(adapters)
        )
        self._lora = AdapterScales(self.adapters)
        self.reply = reply or (lambda prompt: "Hello from the fake engine, one word at a time.")
        self.token_delay_s = token_delay_s
        self.n_slots = n_slots
        self.max_queue = max_queue
        self.n_ctx_slot = n_ctx_slot
        self.start_delay_s = start_delay_s
        self.embeddings = embeddings
        self.embedded: list[list[str]] = []
        self.state: str = "loading"
        self.dead_reason: str | None = None
        self.submitted: list[GenerationRequest] = []
        self.prepared: list[str] = []  # request ids ``prepare`` saw (off the event loop)
        self.aborted: list[str] = []
        self._live: dict[str, _Live] = {}
        self._running: set[str] = set()
        self._slot_free = asyncio.Event()
        self._prompt_total = 0
        self._generated_total = 0

    async def start(self) -> None:
        if self.start_delay_s:
            await asyncio.sleep(self.start_delay_s)
        self.state = "ready"

    async def stop(self) -> None:
        for request_id in list(self._live):
            self.abort(request_id)
        self.state = "stopped"

    def count_tokens(self, text: str, *, add_special: bool = True) -> int:
        return len(text.split()) + (1 if add_special else 0)

    def _require_ready(self) -> None:
        if self.state == "loading":
            raise EngineNotReady("The model is still loading.")
        if self.state != "ready":
            raise EngineDead(self.dead_reason or "The engine has stopped.")

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        self._require_ready()
        return ([256] if add_special else []) + list(text.encode("utf-8"))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.token_pieces(tokens)).decode("utf-8", errors="replace")

    def token_pieces(self, tokens: Sequence[int]) -> list[bytes]:
        self._require_ready()
        if any(not 0 <= t <= 256 for t in tokens):
            raise InvalidRequest("Token ids must be in [0, 257).", param="tokens")
        return [b"<s>" if t == 256 else bytes([t]) for t in tokens]

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        self._require_ready()
        if not self.embeddings:
            raise InvalidRequest("Embeddings are off on this server.", param="input")
        for i, text in enumerate(texts):
            if not text:
                raise InvalidRequest(f"input[{i}] is empty.", param="input")
            if len(text.encode()) > self.n_ctx_slot:
                raise ContextLengthExceeded(len(text.encode()), self.n_ctx_slot, param="input")
        self.embedded.append(list(texts))
        vectors = []
        for text in texts:
            vector = [0.0] * 16
            for word in text.lower().split():
                vector[zlib.crc32(word.strip(".,!?").encode()) % 16] += 1.0
            vectors.append(tuple(normalize(vector)))
        return Embeddings(tuple(vectors), sum(len(t.encode()) for t in texts))

    def check_grammar(self, grammar: Grammar) -> None:
        """The fake takes any grammar with a root rule (it does not constrain anything)."""
        if "root ::=" not in grammar.gbnf:
            raise InvalidRequest("The grammar has no root rule.", param=grammar.param)

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        self._require_ready()
        self.prepared.append(request.request_id)
        # The prompt text stays (replies are scripted on it); the ids are the fake's bytes.
        tokens = self.tokenize(prompt_text(request), add_special=request.add_special)
        return replace(request, prompt_tokens=tuple(tokens))

    def submit(self, request: GenerationRequest) -> EventStream:
        self._require_ready()
        prompt = prompt_text(request)
        n_prompt = self.count_tokens(prompt)
        if n_prompt >= self.n_ctx_slot:
            raise ContextLengthExceeded(n_prompt, self.n_ctx_slot)
        self._lora.resolve(request.lora)  # unknown adapter ids and bad scales: InvalidRequest
        waiting = len(self._live) - len(self._running)
        if len(self._running) >= self.n_slots and waiting >= self.max_queue:
            raise Overloaded(waiting, self.max_queue)
        self.submitted.append(request)
        live = _Live(request)
        self._live[request.request_id] = live
        return EventStream(request.request_id, self._stream(live, prompt, n_prompt), self.abort)

    async def _stream(self, live: _Live, prompt: str, n_prompt: int) -> AsyncIterator[TokenEvent]:
        rid = live.request.request_id
        try:
            while len(self._running) >= self.n_slots and not live.cancelled:
                self._slot_free.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_free.wait(), 0.05)
            self._running.add(rid)
            self._prompt_total += n_prompt
            words = self.reply(prompt).split(" ")
            limit = live.request.sampling.max_tokens
            n = 0
            reason = FinishReason.STOP
            stop_sequence: str | None = None
            text_so_far = ""
            for i, word in enumerate(words):
                if live.cancelled:
                    reason = FinishReason.CANCELLED
                    break
                if limit is not None and n >= limit:
                    reason = FinishReason.LENGTH
                    break
                piece = word if i == 0 else " " + word
                matched = [s for s in live.request.sampling.stop if s and s in text_so_far + piece]
                if matched:
                    stop_sequence = matched[0]
                    break
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                if live.cancelled:
                    reason = FinishReason.CANCELLED
                    break
                text_so_far += piece
                n += 1
                self._generated_total += 1
                yield TokenEvent(request_id=rid, text=piece, token_id=1000 + i)
            yield TokenEvent(
                request_id=rid,
                finish_reason=reason,
                usage=Usage(prompt_tokens=n_prompt, cached_prompt_tokens=0, completion_tokens=n),
                timings=Timings(queue_s=0.0, prefill_s=0.0, decode_s=0.0, decode_tokens_per_s=0.0),
                stop_sequence=stop_sequence,
            )
        finally:
            self._running.discard(rid)
            self._live.pop(rid, None)
            self._slot_free.set()

    def abort(self, request_id: str) -> None:
        live = self._live.get(request_id)
        if live is not None:
            live.cancelled = True
            self.aborted.append(request_id)

    async def lora_adapters(
        self, scales: Mapping[int, float] | None = None
    ) -> tuple[LoraAdapter, ...]:
        if scales is not None:
            self._lora.set_scales(scales)
        return self._lora.adapters()

    def health(self) -> EngineHealth:
        if self.state == "dead":
            return EngineHealth("dead", self.dead_reason)
        if self.state == "loading":
            return EngineHealth("loading", "loading the model")
        return EngineHealth("ready") if self.state == "ready" else EngineHealth("stopped")

    def stats(self) -> EngineStats:
        return EngineStats(
            slots_busy=len(self._running),
            slots_total=self.n_slots,
            queue_length=len(self._live) - len(self._running),
            max_queue=self.max_queue,
            kv_cells_used=0,
            kv_cells_total=self.n_slots * self.n_ctx_slot,
            prompt_tokens_total=self._prompt_total,
            cached_prompt_tokens_total=0,
            generated_tokens_total=self._generated_total,
            requests_total=len(self.submitted),
            requests_active=len(self._live),
        )

    def model_info(self) -> ModelInfo:
        if self.state == "loading":
            raise EngineNotReady("The model is still loading.")
        info = fake_model_info(self.n_slots, self.n_ctx_slot, self.offload)
        return replace(info, adapters=self.adapters)


class FailingMidStream(FakeEngine):
    """One piece of text (``text``), then an engine error ending the request."""

    def __init__(self, text: str = "Partial", error: str | None = None) -> None:
        super().__init__()
        self.text = text
        self.error = error

    def submit(self, request: GenerationRequest) -> EventStream:
        async def events() -> AsyncIterator[TokenEvent]:
            yield TokenEvent(request.request_id, text=self.text, token_id=1)
            yield TokenEvent(
                request.request_id,
                finish_reason=FinishReason.ERROR,
                usage=Usage(3, 0, 1),
                error=self.error,
            )

        self.submitted.append(request)
        return EventStream(request.request_id, events(), self.abort)


class RecordingEngine(FakeEngine):
    """A long reply, paced; records every abort call (the fake drops those of closed streams)."""

    def __init__(self, *, words: int = 200, token_delay_s: float = 0.01) -> None:
        reply = " ".join(f"w{i}" for i in range(words))
        super().__init__(reply=lambda prompt: reply, token_delay_s=token_delay_s)
        self.abort_calls: list[str] = []

    def abort(self, request_id: str) -> None:
        self.abort_calls.append(request_id)
        super().abort(request_id)
