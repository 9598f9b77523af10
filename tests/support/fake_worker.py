"""Picklable factories for an engine worker process over the fake backend (spawn targets)."""

from __future__ import annotations

from collections.abc import Sequence

from app.engine.types import EngineConfig, Grammar
from tests.support.fake_backend import N_VOCAB, FakeBackend


def slow_fake_backend(config: EngineConfig) -> FakeBackend:
    """A fake backend sized by ``config``, 20 ms per decode (so a test can act mid-stream)."""
    backend = FakeBackend(
        n_slots=config.n_slots, n_ctx_slot=config.n_ctx_slot, n_batch=32, decode_delay_s=0.02
    )
    backend.lora = config.lora  # as the real loader does: the model info lists them
    return backend


class FakeVocabulary:
    """The fake backend's byte-level tokenizer, as the API process's vocabulary."""

    n_vocab = N_VOCAB

    def __init__(self) -> None:
        self._backend = FakeBackend()
        self.closed = False

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        return self._backend.tokenize(text, add_special=add_special, parse_special=parse_special)

    def special_piece(self, token: int) -> bytes:
        return self._backend.special_piece(token)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._backend.detokenize(tokens)

    def check_grammar(self, grammar: Grammar) -> None:
        self._backend.check_grammar(grammar)

    def close(self) -> None:
        self.closed = True


def fake_vocabulary(_: str) -> FakeVocabulary:
    """The vocabulary loader ``WorkerEngine`` takes."""
    return FakeVocabulary()
