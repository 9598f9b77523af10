"""A deterministic fake ModelBackend for unit tests of the scheduler and the engine service.

Tokens 0..255 are single bytes (so text tokenizes byte by byte, and multibyte characters
are split over several tokens like byte-level BPE does); 256 is BOS and 257 the
end-of-generation token. The "model" keeps a real per-sequence KV list and checks that every
batch token lands at the next free position of its sequence, so scheduler bookkeeping
mistakes fail loudly. The next token is a function of the sequence's whole history (so
prefix reuse and batching cannot change the output); a ``reply`` function can script it.
Every decode batch is recorded for assertions on batch composition.

LoRA adapters: ``set_adapters`` applies a set to the following decodes (recorded per batch
in ``batch_adapters``); each KV cell remembers the set it was computed under, a decode that
extends cells computed under another set raises (a cached prefix reused across adapters),
and a non-empty set changes the replies (it is part of the history the reply sees).
"""

from __future__ import annotations

import pickle
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import replace

from app.engine.backend import BatchToken, DecodeError
from app.engine.types import AdapterSet, Grammar, LoraAdapter, ModelInfo, SamplingParams
from app.errors import InvalidRequest
from tests.support.fake_engine import fake_model_info

BOS = 256
EOG = 257
N_VOCAB = 258

Reply = Callable[[Sequence[int], int, int], int]
"""(history in the KV cache, tokens sampled so far by this request, seed) -> next token."""


class FakeBackendError(RuntimeError):
    """The scheduler broke the backend contract (wrong position, wrong thread, ...)."""


def hash_reply(eog_every: int | None = None) -> Reply:
    """Lowercase letters chosen by a hash of the history (and the seed); EOG now and then."""

    def reply(history: Sequence[int], n_sampled: int, seed: int) -> int:
        h = zlib.crc32(array("i", history).tobytes(), seed)
        if eog_every and h % eog_every == 0:
            return EOG
        return ord("a") + h % 26

    return reply


def scripted_reply(data: bytes, *, then_eog: bool = True) -> Reply:
    """Generate ``data`` one byte per token, then EOG (or spaces when ``then_eog`` is off)."""

    def reply(history: Sequence[int], n_sampled: int, seed: int) -> int:
        if n_sampled < len(data):
            return data[n_sampled]
        return EOG if then_eog else ord(" ")

    return reply


def text_tokens(text: str, *, add_special: bool = False) -> list[int]:
    """How FakeBackend tokenizes ``text``."""
    return ([BOS] if add_special else []) + list(text.encode("utf-8"))


class FakeSampler:
    """Reads the fake logits (the history) of one batch token and applies ``reply``."""

    def __init__(self, backend: FakeBackend, params: SamplingParams, seed: int) -> None:
        self.backend = backend
        self.params = params
        self.seed = seed if params.temperature > 0 else 0
        self.accepted: list[int] = []
        self.n_sampled = 0
        self.closed = False
        self.last_logprob = None  # the fake has no distribution to report

    def sample(self, batch_index: int) -> int:
        self.backend.check_thread()
        if self.closed:
            raise FakeBackendError("sample() on a closed sampler")
        history = self.backend.outputs.get(batch_index)
        if history is None:
            raise FakeBackendError(f"batch token {batch_index} has no logits")
        token = self.backend.reply(history, self.n_sampled, self.seed)
        self.n_sampled += 1
        self.accepted.append(token)
        return token

    def accept(self, token: int) -> None:
        self.accepted.append(token)

    def force(self, token: int) -> None:
        self.n_sampled += 1
        self.accepted.append(token)

    def close(self) -> None:
        if self.closed:
            raise FakeBackendError("sampler closed twice")
        self.closed = True


class FakeEmbedder:
    """Embeds token lists as byte histograms over 8 buckets; checks it has one owner thread."""

    def __init__(self, n_ctx: int, n_seq_max: int) -> None:
        self.n_ctx = n_ctx
        self.n_seq_max = n_seq_max
        self.calls: list[list[list[int]]] = []
        self.threads: set[str] = set()
        self.closed = False
        self.fail_with: BaseException | None = None

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        self.threads.add(threading.current_thread().name)
        if self.fail_with is not None:
            raise self.fail_with
        if len(inputs) > self.n_seq_max or sum(map(len, inputs)) > self.n_ctx:
            raise FakeBackendError(f"embed batch too big: {[len(i) for i in inputs]}")
        self.calls.append([list(i) for i in inputs])
        vectors = []
        for tokens in inputs:
            vector = [0.0] * 8
            for token in tokens:
                vector[token % 8] += 1.0
            vectors.append(vector)
        return vectors

    def close(self) -> None:
        self.closed = True


class FakeBackend:
    """Implements app.engine.backend.ModelBackend deterministically, without a model.

    ``gate`` (set by default) holds ``decode`` while cleared; ``on_decode`` runs inside
    ``decode`` on the engine thread; ``fail_with`` makes the next decode raise it;
    ``decode_delay_s`` slows each decode down, and ``token_delay_s`` more for each token
    (a GPU-like decode: a batch costs about what one token does, or a CPU-like one).
    """

    def __init__(
        self,
        *,
        n_slots: int = 4,
        n_ctx_slot: int = 64,
        n_batch: int = 16,
        reply: Reply | None = None,
        decode_delay_s: float = 0.0,
        token_delay_s: float = 0.0,
    ) -> None:
        self._n_slots = n_slots
        self._n_ctx_slot = n_ctx_slot
        self.tokenized: list[tuple[str, bool]] = []  # (text, parse_special) per call
        self._n_batch = n_batch
        self.reply: Reply = reply or hash_reply()
        self.decode_delay_s = decode_delay_s
        self.token_delay_s = token_delay_s
        self.kv: list[list[int]] = [[] for _ in range(n_slots)]
        self.batches: list[list[BatchToken]] = []
        self.outputs: dict[int, tuple[int, ...]] = {}
        self.samplers: list[FakeSampler] = []
        self.clears: list[tuple[int, int]] = []
        self.saves: list[int] = []
        self.loads: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.on_decode: Callable[[Sequence[BatchToken]], None] | None = None
        self.fail_with: BaseException | None = None
        self.partial_clear_ok = True  # False: like a sliding-window cache, clear all or none
        self.closed = False
        self.owner: threading.Thread | None = None
        self.embedder: FakeEmbedder | None = None
        self.adapters: AdapterSet = ()
        self.lora: tuple[LoraAdapter, ...] = ()  # the adapters ``info`` lists
        self.adapter_switches = 0
        self.batch_adapters: list[AdapterSet] = []
        self.cell_sets: list[list[AdapterSet]] = [[] for _ in range(n_slots)]

    @property
    def n_slots(self) -> int:
        return self._n_slots

    @property
    def n_ctx_slot(self) -> int:
        return self._n_ctx_slot

    @property
    def n_batch(self) -> int:
        return self._n_batch

    def info(self) -> ModelInfo:
        info = fake_model_info(self._n_slots, self._n_ctx_slot)
        return replace(info, n_vocab=N_VOCAB, adapters=self.lora)

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        self.tokenized.append((text, parse_special))
        return text_tokens(text, add_special=add_special)

    def token_to_bytes(self, token: int) -> bytes:
        return bytes([token]) if token < 256 else b""

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def special_piece(self, token: int) -> bytes:
        return {BOS: b"<s>", EOG: b"</s>"}.get(token, bytes([token % 256]))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.special_piece(t) for t in tokens).decode("utf-8", errors="replace")

    def new_embedder(
        self, *, pooling: str, n_ctx: int, n_seq_max: int, n_threads: int
    ) -> FakeEmbedder:
        self.embedder = FakeEmbedder(n_ctx, n_seq_max)
        return self.embedder

    def check_thread(self) -> None:
        """Context methods must all run on one thread (the engine thread)."""
        me = threading.current_thread()
        if self.owner is None:
            self.owner = me
        elif self.owner is not me:
            raise FakeBackendError(f"context used from {me.name}, owned by {self.owner.name}")

    def decode(self, batch: Sequence[BatchToken]) -> None:
        self.check_thread()
        self.gate.wait()
        if self.on_decode is not None:
            self.on_decode(batch)
        if self.decode_delay_s or self.token_delay_s:
            time.sleep(self.decode_delay_s + self.token_delay_s * len(batch))
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc
        if not batch or len(batch) > self._n_batch:
            raise FakeBackendError(f"batch of {len(batch)} tokens (n_batch {self._n_batch})")
        # Like llama_decode: a batch that does not fit leaves the KV cache untouched.
        fill = [len(kv) for kv in self.kv]
        for bt in batch:
            if bt.pos != fill[bt.seq_id]:
                raise FakeBackendError(
                    f"seq {bt.seq_id}: token at pos {bt.pos}, kv has {fill[bt.seq_id]}"
                )
            if fill[bt.seq_id] >= self._n_ctx_slot:
                raise DecodeError(1, f"seq {bt.seq_id}: no KV cell left")
            fill[bt.seq_id] += 1
        self._check_adapters(batch)
        self.batches.append(list(batch))
        self.batch_adapters.append(self.adapters)
        marker = tuple(-1 - i for i, _ in self.adapters)  # adapters change the replies
        outputs: dict[int, tuple[int, ...]] = {}
        for i, bt in enumerate(batch):
            kv = self.kv[bt.seq_id]
            kv.append(bt.token)
            self.cell_sets[bt.seq_id].append(self.adapters)
            if bt.logits:
                outputs[i] = tuple(kv) + marker
        self.outputs = outputs

    def _check_adapters(self, batch: Sequence[BatchToken]) -> None:
        """A decode extends only cells computed under the adapter set it runs with."""
        for bt in batch:
            if any(s != self.adapters for s in self.cell_sets[bt.seq_id]):
                raise FakeBackendError(
                    f"seq {bt.seq_id}: cells of another adapter set reused under {self.adapters}"
                )

    def set_adapters(self, adapters: AdapterSet) -> None:
        self.check_thread()
        if adapters != self.adapters:
            self.adapter_switches += 1
        self.adapters = adapters

    def check_grammar(self, grammar: Grammar) -> None:
        """The fake takes any grammar with a root rule (it does not constrain anything)."""
        if "root ::=" not in grammar.gbnf:
            raise InvalidRequest("The grammar has no root rule.", param=grammar.param)

    def new_sampler(self, params: SamplingParams, seed: int) -> FakeSampler:
        self.check_thread()
        sampler = FakeSampler(self, params, seed)
        self.samplers.append(sampler)
        return sampler

    def clear_seq(self, seq_id: int, start_pos: int = 0) -> None:
        self.check_thread()
        if start_pos and not self.partial_clear_ok:
            raise RuntimeError(f"cannot drop positions >= {start_pos} of sequence {seq_id}")
        self.clears.append((seq_id, start_pos))
        del self.kv[seq_id][start_pos:]
        del self.cell_sets[seq_id][start_pos:]

    def save_seq(self, seq_id: int) -> bytes:
        self.check_thread()
        self.saves.append(seq_id)
        return pickle.dumps((self.kv[seq_id], self.cell_sets[seq_id]))

    def load_seq(self, seq_id: int, data: bytes) -> None:
        self.check_thread()
        self.loads.append(seq_id)
        tokens, sets = pickle.loads(data)
        self.kv[seq_id], self.cell_sets[seq_id] = list(tokens), list(sets)

    @property
    def trims_tail(self) -> bool:
        return self.partial_clear_ok

    def kv_cells_used(self) -> int:
        return sum(len(kv) for kv in self.kv)

    def close(self) -> None:
        self.closed = True
