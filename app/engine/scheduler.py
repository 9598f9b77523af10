"""Continuous batching over one llama context, in the style of llama.cpp's ``llama-server``.

Each ``step`` (on the engine thread): handle aborts; admit waiting requests into free slots
(FIFO; the KV manager picks the slot and the reusable cached prefix); build ONE batch of at
most ``n_batch`` tokens - first one decode token for every decoding sequence, then prompt
chunks of prefilling sequences in the room left (at most ``prefill_budget`` prompt tokens
while other streams decode, so a long prompt arriving stretches no stream's inter-token
time much); decode; sample every sequence whose last batch token has logits; detokenize,
match stop strings, emit events, finish sequences.

LoRA adapters: llama.cpp applies them per context, so one decode runs one adapter set; each
step decodes the sequences of the set whose turn it is (``app.engine.lora.AdapterTurns``).

Failures stay with the request that caused them: a decode that fails with prompt chunks in
it is retried part by part, so only the sequence whose chunk cannot be decoded ends with an
error; an exception while admitting, sampling or releasing one sequence ends that one.

The only state shared with other threads is the waiting queue, the abort set and a few
counters, behind one small lock that is never held around model calls.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from time import perf_counter

from app.engine.backend import BatchToken, DecodeError, ModelBackend, SamplingDeadEnd
from app.engine.kv import KVManager
from app.engine.lora import AdapterTurns
from app.engine.output import SequenceOutput, TokenTable
from app.engine.pacing import PrefillPacer
from app.engine.prompt_cache import HostPromptCache
from app.engine.sequence import SeqState, Sequence
from app.engine.speculative import (
    NgramDrafter,
    SpecConfig,
    SpecState,
    StepCost,
    plan_drafts,
    plan_uniform,
)
from app.engine.types import EngineStats, FinishReason, TokenEvent
from app.errors import EngineDead, InvalidRequest, Overloaded

logger = logging.getLogger(__name__)

Delivery = list[tuple[object, list[TokenEvent]]]
"""Events of one step: (the request's sink, its events in order) for each request."""


class _Part:
    """What one sequence puts into a batch: tokens from its next free position.

    A decoding sequence's part is its last sampled token, then ``draft`` speculative tokens
    (every one of them with logits, to verify them).
    """

    __slots__ = ("draft", "real", "sample", "seq", "tokens")

    def __init__(self, seq: Sequence, tokens: list[int], sample: bool) -> None:
        self.seq = seq
        self.tokens = tokens
        self.sample = sample  # the last token's logits are sampled after the decode
        self.draft = 0
        self.real = 0  # of the draft tokens, those proposed (the rest pad it to a common length)


def in_seq_order(parts: list[_Part]) -> list[_Part]:
    """``parts`` by ascending sequence id.

    With one KV stream per sequence, llama.cpp cuts a batch into ubatches whose sequences
    have consecutive ids in batch order (``split_equal`` with ``sequential``), and each
    ubatch is one pass over every weight. Four decode tokens in the order 3, 2, 1, 0 cost
    four passes; in the order 0, 1, 2, 3 one. Admission order is not slot order once chats
    come back to their own slots.
    """
    return sorted(parts, key=lambda part: _seq_id(part.seq))


def _seq_id(seq: Sequence) -> int:
    assert seq.slot is not None
    return seq.slot.seq_id


def _batch(parts: list[_Part]) -> tuple[list[BatchToken], list[int]]:
    """The batch of ``parts`` and, per part, the first batch index to sample (or -1)."""
    batch: list[BatchToken] = []
    where: list[int] = []
    for part in parts:
        seq = part.seq
        assert seq.slot is not None
        sid, pos, last = seq.slot.seq_id, seq.n_past, len(part.tokens) - 1
        first = last - part.draft  # drafts: every token from the last sampled one on
        batch.extend(
            BatchToken(t, pos + i, sid, part.sample and i >= first)
            for i, t in enumerate(part.tokens)
        )
        where.append(len(batch) - 1 - part.draft if part.sample else -1)
    return batch, where


class Scheduler:
    """Slots, the waiting queue and the step loop body. ``step`` runs on one thread only.

    ``enqueue``, ``abort``, ``close``, ``wait_for_work`` and ``stats`` are thread-safe.
    ``deliver`` is called once per step, on the engine thread, with every event of the step.
    """

    def __init__(
        self,
        backend: ModelBackend,
        *,
        deliver: Callable[[Delivery], None],
        max_queue: int,
        prompt_cache: bool = True,
        host_cache: HostPromptCache | None = None,
        prefill_budget: int = 0,
        default_seed: int | None = None,
        speculative: SpecConfig | None = None,
    ) -> None:
        self._backend = backend
        self._deliver = deliver
        self._max_queue = max_queue
        self._prompt_cache = prompt_cache
        self._default_seed = default_seed
        self._n_ctx = backend.n_ctx_slot
        self._n_batch = backend.n_batch
        # Prompt tokens per step while other sequences decode (0: paced by measured costs).
        self._pacer = PrefillPacer(prefill_budget, backend.n_batch)
        self.kv = KVManager(backend, host_cache=host_cache if prompt_cache else None)
        # Shared with submitting threads, under _lock:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: deque[Sequence] = deque()
        self._aborts: set[str] = set()
        self._ids: set[str] = set()
        self._free = backend.n_slots
        self._closed: str | None = None
        # Engine thread only:
        self._running: list[Sequence] = []
        self._dirty: list[Sequence] = []
        self._tokens = TokenTable(backend)
        self._turns = AdapterTurns()
        # Speculative decoding needs a memory that can drop a rejected tail of cells.
        spec = speculative or SpecConfig()
        self._spec = spec if spec.enabled and backend.trims_tail else SpecConfig()
        self._cost = StepCost()
        # Counters (written by one thread, read anywhere):
        self.requests_total = 0
        self.prompt_tokens_total = 0
        self.cached_prompt_tokens_total = 0
        self.generated_tokens_total = 0
        self.draft_tokens_total = 0  # speculative draft tokens verified ...
        self.draft_accepted_total = 0  # ... and those accepted
        self.draft_verifications_total = 0  # ... in this many drafts
        self.steps = 0

    # ------------------------------------------------------------------ any thread
    def enqueue(self, seq: Sequence) -> None:
        """Queue a validated request; raises Overloaded, EngineDead or InvalidRequest."""
        with self._lock:
            if self._closed is not None:
                raise EngineDead(f"The engine is not running ({self._closed}).")
            if seq.request_id in self._ids:
                raise InvalidRequest(f"Request id {seq.request_id!r} is already in use.")
            waiting = len(self._waiting) - self._free
            if waiting >= self._max_queue:
                raise Overloaded(max(waiting, 0), self._max_queue)
            self._waiting.append(seq)
            self._ids.add(seq.request_id)
            self.requests_total += 1
            self._wake.notify()

    def abort(self, request_id: str) -> None:
        """End a request at the next step (unknown ids are ignored)."""
        with self._lock:
            if request_id in self._ids:
                self._aborts.add(request_id)
                self._wake.notify()

    def close(self, reason: str) -> None:
        """Take no more requests and cancel every live one at the next step."""
        with self._lock:
            if self._closed is None:
                self._closed = reason
            self._aborts |= self._ids
            self._wake.notify()

    def wait_for_work(self, timeout: float | None = None) -> bool:
        """Sleep until there is work; False once closed with nothing left to do."""
        with self._wake:
            while not (self._running or self._waiting or self._aborts):
                if self._closed is not None:
                    return False
                if not self._wake.wait(timeout):
                    return True
            return True

    def stats(self) -> EngineStats:
        """A snapshot without waiting on the engine thread (values may be one step old)."""
        host = self.kv.host_cache.stats() if self.kv.host_cache is not None else None
        return EngineStats(
            slots_busy=self.kv.busy(),
            slots_total=len(self.kv.slots),
            queue_length=max(0, len(self._waiting) - self._free),
            max_queue=self._max_queue,
            kv_cells_used=self.kv.cells_used(),
            kv_cells_total=len(self.kv.slots) * self._n_ctx,
            prompt_tokens_total=self.prompt_tokens_total,
            cached_prompt_tokens_total=self.cached_prompt_tokens_total,
            generated_tokens_total=self.generated_tokens_total,
            requests_total=self.requests_total,
            requests_active=len(self._ids),
            host_cache=host,
            draft_method=self._spec.method,
            draft_tokens_total=self.draft_tokens_total,
            draft_accepted_total=self.draft_accepted_total,
            draft_verifications_total=self.draft_verifications_total,
        )

    # ------------------------------------------------------------------ engine thread
    def step(self) -> None:
        """One scheduling step: aborts, admission, one decode, sampling, events."""
        self.steps += 1
        if self._aborts:
            self._apply_aborts(perf_counter())
        if self._waiting and self._free:
            self._admit(perf_counter())
        parts = self._plan()
        if parts:
            self._decode(parts)
        self._flush()

    def _decode(self, parts: list[_Part]) -> None:
        """Decode ``parts`` in one batch; if that fails, part by part, failing only the culprits.

        A failed llama_decode leaves the KV cache as it was, so the parts can be retried:
        first the decode tokens of the running streams together, then each prompt chunk.
        """
        try:
            self._decode_batch(parts)
            return
        except DecodeError as exc:
            if len(parts) == 1:
                self._fail(parts, exc)
                return
            logger.warning("decode of %d parts failed (%s); retrying part by part", len(parts), exc)
        self._drop_uncommitted(parts)
        decoding = [p for p in parts if p.seq.state is SeqState.DECODING]
        groups = ([decoding] if decoding else []) + [[p] for p in parts if p not in decoding]
        for group in groups:
            try:
                self._decode_batch(group)
            except DecodeError as exc:
                self._fail(group, exc)

    def _drop_uncommitted(self, parts: list[_Part]) -> None:
        """Clear cells a failed decode may have written past what the KV manager records."""
        for part in parts:
            slot = part.seq.slot
            if slot is None:
                continue
            try:
                self._backend.clear_seq(slot.seq_id, len(slot.tokens))
            except RuntimeError:
                logger.exception("could not clear the tail of slot %d", slot.seq_id)

    def _decode_batch(self, parts: list[_Part]) -> None:
        parts = in_seq_order(parts)
        batch, where = _batch(parts)
        started = perf_counter()
        try:
            self._backend.set_adapters(parts[0].seq.adapters)
        except RuntimeError as exc:
            raise DecodeError(-1, f"could not apply the LoRA adapters: {exc}") from exc
        self._backend.decode(batch)
        n_decode = sum(1 for p in parts if p.seq.state is SeqState.DECODING)
        n_draft = sum(p.draft for p in parts)
        if not n_draft:  # the pacer prices prompt tokens against plain decode steps
            self._pacer.observe(n_decode, len(batch) - n_decode, perf_counter() - started)
        self._after_decode(parts, where)
        if n_decode + n_draft == len(batch):  # decode tokens and drafts only: a step's price
            self._cost.observe(len(batch), perf_counter() - started)

    def _fail(self, parts: list[_Part], exc: DecodeError) -> None:
        logger.error("decode failed for %d sequences: %s", len(parts), exc)
        now = perf_counter()
        for part in parts:
            self._finish(part.seq, FinishReason.ERROR, now, error=f"decode failed: {exc}")

    def fail_all(self, reason: str) -> None:
        """The engine thread is dying: end every live request with ERROR, best effort."""
        with self._lock:
            if self._closed is None:
                self._closed = reason
            doomed = list(self._waiting) + self._running
            self._waiting.clear()
            self._aborts.clear()
            self._ids.clear()
        now = perf_counter()
        for seq in doomed:
            self._emit(seq, seq.final_event(FinishReason.ERROR, now, error=reason))
            if seq.sampler is not None:
                try:
                    seq.sampler.close()
                except Exception:  # the backend may be broken: keep failing the others
                    logger.exception("closing a sampler failed")
            seq.sampler = None
            if seq.slot is not None:
                self.kv.forget(seq.slot)
        self._running.clear()
        self._flush()

    def _apply_aborts(self, now: float) -> None:
        with self._lock:
            ids, self._aborts = self._aborts, set()
            queued = [seq for seq in self._waiting if seq.request_id in ids]
            if queued:
                self._waiting = deque(s for s in self._waiting if s.request_id not in ids)
        for seq in queued + [s for s in self._running if s.request_id in ids]:
            self._finish(seq, FinishReason.CANCELLED, now)

    def _admit(self, now: float) -> None:
        with self._lock:
            count = min(self._free, len(self._waiting))
            admitted = [self._waiting.popleft() for _ in range(count)]
            self._free -= count
        for seq in admitted:
            self._start(seq, now)

    def _start(self, seq: Sequence, now: float) -> None:
        """Put a sequence into the best free slot, keeping a shared cached prefix."""
        seq.t_admit = now
        seq.state = SeqState.PREFILLING
        self._running.append(seq)
        try:
            admission = self.kv.admit(
                seq.prompt,
                use_cache=self._prompt_cache and seq.request.use_cache,
                adapters=seq.adapters,
            )
        except Exception as exc:
            logger.exception("could not assign a slot to %s", seq.request_id)
            self._finish(seq, FinishReason.ERROR, now, error=f"slot assignment failed: {exc}")
            return
        seq.slot = admission.slot
        seq.n_cached = admission.reused
        self.prompt_tokens_total += seq.n_prompt
        self.cached_prompt_tokens_total += admission.reused
        params = seq.request.sampling
        seq.output = SequenceOutput(seq.request_id, params, self._tokens, self._n_ctx)
        try:
            seq.sampler = self._backend.new_sampler(params, self._seed_for(params.seed))
            # Penalties look at the last penalty_last_n tokens, prompt included.
            n = params.penalty_last_n
            history = seq.prompt if n < 0 else seq.prompt[len(seq.prompt) - n :] if n else []
            for token in history:
                seq.sampler.accept(token)
        except Exception as exc:
            logger.exception("could not set up sampling for %s", seq.request_id)
            self._finish(seq, FinishReason.ERROR, now, error=f"sampler setup failed: {exc}")
            return
        spec = self._spec
        if spec.enabled and seq.request.speculative:
            seq.spec = SpecState(NgramDrafter(seq.prompt, n_max=spec.n_max, n_min=spec.n_min))

    def _seed_for(self, seed: int | None) -> int:
        if seed is None:
            seed = self._default_seed
        if seed is None:
            return random.getrandbits(32)
        return seed & 0xFFFFFFFF

    def _plan(self) -> list[_Part]:
        """One decode token per decoding sequence, then prompt chunks in the room left.

        Only the sequences of the adapter set whose turn it is take part.
        """
        parts: list[_Part] = []
        room = self._n_batch
        turn = self._turns.pick(seq.adapters for seq in self._running)
        running = [seq for seq in self._running if seq.adapters == turn]
        for seq in running:
            if seq.state is SeqState.DECODING and room:
                parts.append(_Part(seq, [seq.generated[-1]], True))
                room -= 1
        if parts:  # streams are decoding: a prompt may take only its share of the step
            waiting = sum(s.n_prompt - s.n_past for s in running if s.state is SeqState.PREFILLING)
            room = min(room, self._pacer.budget(waiting))
        for seq in running:
            if room <= 0:
                break
            if seq.state is SeqState.PREFILLING:
                start = seq.n_past
                end = min(seq.n_prompt, start + room)
                parts.append(_Part(seq, seq.prompt[start:end], end == seq.n_prompt))
                room -= end - start
        if self._spec.enabled and room > 0:
            self._add_drafts(parts, room)
        return parts

    def _add_drafts(self, parts: list[_Part], room: int) -> None:
        """Append n-gram draft tokens to decoding sequences' parts, as many as pay off.

        Several decoding sequences all get the same number of draft tokens (a short or
        missing draft is padded; a pad token is verified like any other): llama.cpp decodes
        a batch of several sequences in ubatches of equal tokens per sequence, so one
        sequence's longer part costs a whole extra ubatch. A step with a sequence that may
        not draft (opted out, forced tokens) sends no drafts.
        """
        decoding = [p for p in parts if p.seq.state is SeqState.DECODING]
        specs = [p.seq.spec for p in decoding if p.seq.spec is not None and not p.seq.forced]
        if not decoding or len(specs) < len(decoding):
            return
        rooms = [self._draft_room(p.seq) for p in decoding]
        drafts = [s.drafter.propose(k) for s, k in zip(specs, rooms, strict=True)]
        if not any(drafts):
            return
        offers = [(s.p, len(d)) for s, d in zip(specs, drafts, strict=True)]
        n_tokens, ratio = sum(len(p.tokens) for p in parts), self._cost.ratio
        if len(decoding) == 1:
            counts = plan_drafts(offers, 1, n_tokens, ratio, self._spec.min_accept)
        else:
            k_max = min(min(rooms), room // len(decoding))
            k = plan_uniform(offers, n_tokens, ratio, self._spec.min_accept, k_max)
            counts = [k] * len(decoding)
        for part, spec, draft, count in zip(decoding, specs, drafts, counts, strict=True):
            n = min(count, room)
            if n <= 0:
                if draft:
                    spec.shadow = draft[0]  # checked against the next token for free
                continue
            real = draft[:n]
            pad = real[-1] if real else part.tokens[0]
            part.tokens = part.tokens + real + [pad] * (n - len(real))
            part.draft, part.real = n, len(real)
            room -= n

    def _draft_room(self, seq: Sequence) -> int:
        """Most draft tokens ``seq`` may send: within ``draft_max``, its ``max_tokens`` (a
        draft of k yields up to k + 1 tokens) and its slot's cells."""
        k = min(self._spec.draft_max, self._n_ctx - seq.n_past - 1)
        cap = seq.request.sampling.max_tokens
        return k if cap is None else min(k, cap - len(seq.generated) - 1)

    def _after_decode(self, parts: list[_Part], where: list[int]) -> None:
        now = perf_counter()
        kv = self.kv
        for part, index in zip(parts, where, strict=True):
            seq, n_draft = part.seq, part.draft
            assert seq.slot is not None
            kv.append(seq.slot, part.tokens[: len(part.tokens) - n_draft])
            if index < 0:
                continue
            seq.state = SeqState.DECODING
            if n_draft:
                drafts = part.tokens[-n_draft:]
                kv.stage(seq.slot, drafts)
                self._verify(seq, drafts, part.real, index, now)
                continue
            token = self._sample(seq, index, now)
            if token is not None:
                self._on_token(seq, token, now)
                self._check_budget(seq)

    def _verify(
        self, seq: Sequence, drafts: list[int], n_real: int, index: int, now: float
    ) -> None:
        """Sample the positions of ``[last, *drafts]`` in order with the sequence's own
        sampler while each sample equals the draft token after it; the first sample that
        differs (or the one after the last draft) is the sequence's next token. Every sample
        goes through the normal token path, so a stop in the middle ends the sequence there;
        the cells of the drafts not accepted are dropped from the KV cache. The acceptance
        counts and estimate cover the ``n_real`` proposed tokens, not the padding."""
        spec, slot = seq.spec, seq.slot
        assert spec is not None
        assert slot is not None
        accepted = 0
        for i in range(len(drafts) + 1):
            token = self._sample(seq, index + i, now)
            if token is None:
                break
            matched = i < len(drafts) and token == drafts[i]
            accepted += matched
            self._on_token(seq, token, now)
            self._check_budget(seq)
            if not matched or seq.state is SeqState.FINISHED or seq.forced:
                break
            self.kv.commit(slot)  # the draft token's cell now holds a token of the sequence
        if seq.state is not SeqState.FINISHED:
            self.kv.discard(slot)
        if n_real:
            spec.verified(n_real, min(accepted, n_real))
            self.draft_tokens_total += n_real
            self.draft_accepted_total += min(accepted, n_real)
            self.draft_verifications_total += 1

    def _sample(self, seq: Sequence, index: int, now: float) -> int | None:
        """The next token from batch token ``index``'s logits (or a forced one); None when
        sampling failed and the sequence ended."""
        assert seq.sampler is not None
        try:
            if seq.forced:
                token = seq.forced.pop(0)
                seq.sampler.force(token)
                return token
            return seq.sampler.sample(index)
        except SamplingDeadEnd as exc:
            # The request's fault: its grammar asks for text no token spells (a const
            # with a NUL character): a 400, not a server error.
            error = f"{exc} (see the request's grammar or schema)"
            self._finish(seq, FinishReason.REFUSED, now, error=error)
        except Exception as exc:
            logger.exception("sampling failed for %s", seq.request_id)
            self._finish(seq, FinishReason.ERROR, now, error=f"sampling failed: {exc}")
        return None

    def _check_budget(self, seq: Sequence) -> None:
        """Close a thinking block that ran past its reasoning budget (the tokens of the close
        marker replace the next samples)."""
        output = seq.output
        if seq.sampler is None or output is None or seq.forced:
            return
        if output.over_reasoning_budget(len(seq.generated)):
            closing = seq.request.sampling.reasoning_markers[1]
            seq.forced = self._backend.tokenize(closing, add_special=False)

    def _on_token(self, seq: Sequence, token: int, now: float) -> None:
        """Account one sampled token; its event and end come from the output stage."""
        self.generated_tokens_total += 1
        if not seq.t_first:
            seq.t_first = now
        seq.t_last = now
        seq.generated.append(token)
        if seq.spec is not None:
            seq.spec.observe(token)
        output = seq.output
        assert output is not None  # set at admission, before the first sample
        logprob = seq.sampler.last_logprob if seq.sampler is not None else None
        event, reason = output.on_token(
            token, n_generated=len(seq.generated), n_past=seq.n_past, logprob=logprob
        )
        if event is not None:
            self._emit(seq, event)
        if reason is not None:
            self._finish(seq, reason, now)

    def _finish(
        self, seq: Sequence, reason: FinishReason, now: float, *, error: str | None = None
    ) -> None:
        """Emit the final event, close the sampler and free the slot."""
        if seq.state is SeqState.FINISHED:
            return
        logger.debug(
            "request %s finished (%s): %d prompt (%d cached), %d generated",
            seq.request_id,
            reason,
            seq.n_prompt,
            seq.n_cached,
            len(seq.generated),
        )
        # A normal end releases held-back text; a cancel or an error drops it.
        text = seq.tail_text() if reason in (FinishReason.STOP, FinishReason.LENGTH) else ""
        self._emit(seq, seq.final_event(reason, now, text=text, error=error))
        seq.state = SeqState.FINISHED
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None
        slot = seq.slot
        if slot is not None:
            # Only an error drops the KV cells: after a normal end or a cancel (the user
            # pressed Stop) they hold a valid prefix for the conversation's next turn.
            try:
                self.kv.release(slot, keep=reason is not FinishReason.ERROR)
            except Exception:
                logger.exception("releasing slot %d failed; its cache is dropped", slot.seq_id)
                self.kv.forget(slot)
        admitted = seq in self._running
        if admitted:
            self._running.remove(seq)
        with self._lock:
            self._ids.discard(seq.request_id)
            if admitted:
                self._free += 1

    def _emit(self, seq: Sequence, event: TokenEvent) -> None:
        if not seq.out:
            self._dirty.append(seq)
        seq.out.append(event)

    def _flush(self) -> None:
        """Hand this step's events over in one call (one loop wake-up per step)."""
        if not self._dirty:
            return
        delivery: Delivery = []
        for seq in self._dirty:
            delivery.append((seq.sink, seq.out))
            seq.out = []
        self._dirty = []
        self._deliver(delivery)
