"""The llguidance grammar stage: JSON Schemas (and tool-call grammars around them) as token masks.

llguidance (the Rust engine vLLM and SGLang use, and llama.cpp as an optional sampler)
compiles a JSON Schema in milliseconds where GBNF conversion and llama.cpp's parser take
a tenth of a second for a large enum, and computes a whole-vocabulary mask in about a
tenth of a millisecond. ``guidance_schema`` writes the llguidance grammar; this module
holds the model's tokenizer as llguidance sees it and one sequence's matcher.

The tokenizer gives each token the bytes llama.cpp's grammar sampler matches
(``llama_token_to_piece`` with control tokens rendered, as ``llama_grammar_apply_impl``
reads them), so a token passes here when it would pass there: end-of-generation tokens only
when the grammar is complete (llguidance's end-of-sequence tokens), tokens with an empty
piece or one starting with a NUL byte never (given bytes no grammar spells). Control tokens
(``[TOOL_CALLS]``, ``<|channel|>``) are llguidance special tokens: ``guidance_schema``
writes each literal that spells one as "that text, or that token" (llguidance would
otherwise force the text spelled out in plain tokens); inside free text (a character
class) they do not pass, where llama.cpp would let one through. Building the tokenizer reads
every piece once (a few tenths of a second), on the first schema.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import llguidance
import numpy as np

from app.engine.llama import _lib

if TYPE_CHECKING:
    from app.engine.llama.sampler import Candidates

logger = logging.getLogger(__name__)

# A byte no UTF-8 text contains: a piece behind it cannot be spelled by any grammar text.
_UNSPELLABLE = b"\xff"


def token_bytes(vocab: int) -> tuple[list[bytes], list[int], dict[str, int]]:
    """Each token's bytes as the grammar sees them, the end-of-generation tokens, and the
    other control tokens by text."""
    pieces: list[bytes] = []
    eog: list[int] = []
    markers: dict[str, int] = {}
    for token in range(_lib.vocab_n_tokens(vocab)):
        piece = _lib.token_piece(vocab, token, special=True)
        if _lib.vocab_is_eog(vocab, token):
            eog.append(token)
            piece = _UNSPELLABLE + piece
        elif not piece or piece[0] == 0:
            piece = _UNSPELLABLE + b"<%d>" % token
        elif _lib.vocab_is_control(vocab, token):
            markers.setdefault(piece.decode("utf-8", errors="replace"), token)
            piece = _UNSPELLABLE + piece
        pieces.append(piece)
    return pieces, eog, markers


class GuidanceVocab:
    """llguidance's view of one llama vocabulary, built on first use. Thread-safe."""

    def __init__(self, vocab: int) -> None:
        self._vocab = vocab
        self._lock = threading.Lock()
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._eog: frozenset[int] = frozenset()
        self._markers: dict[str, int] = {}

    @property
    def n_vocab(self) -> int:
        return _lib.vocab_n_tokens(self._vocab)

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                pieces, eog, self._markers = token_bytes(self._vocab)
                self._eog = frozenset(eog)
                # llguidance tokenizes text (it rarely needs to) with llama.cpp's own function.
                self._tokenizer = llguidance.LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]  # not in its stubs
                    tokens=pieces,
                    vocab_ptr=self._vocab,
                    tokenize_fptr=_lib.tokenize_address(),
                    eos_token=eog or None,
                    slices=None,
                )
                logger.debug("llguidance tokenizer built (%d tokens)", len(pieces))
            return self._tokenizer

    @property
    def eog(self) -> frozenset[int]:
        """End-of-generation tokens (after ``tokenizer`` was built)."""
        return self._eog

    @property
    def markers(self) -> dict[str, int]:
        """Control tokens that are no end of generation, by their text."""
        self.tokenizer  # noqa: B018 - built on first use
        return self._markers

    def compile(self, lark: str) -> llguidance.LLMatcher:
        """A matcher at the start of ``lark``; raises ``ValueError`` with llguidance's reason
        (also when no token can start the text the grammar allows)."""
        matcher = llguidance.LLMatcher(self.tokenizer, lark, log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        if not GuidanceConstraint(matcher.deep_copy(), self).allowed().any():
            raise ValueError("no token of this model starts the text the grammar allows")
        return matcher


class GuidanceConstraint:
    """One sequence's llguidance matcher behind the engine's grammar interface.

    ``allows`` asks about one token without moving; ``accept`` only ever gets tokens
    ``allows`` said yes to; ``mask`` sets every disallowed logit of a candidate array that
    is in token-id order to -inf. Engine thread only.
    """

    __slots__ = ("_bitmask", "_eog", "_matcher", "_n_vocab")

    def __init__(self, matcher: llguidance.LLMatcher, vocab: GuidanceVocab) -> None:
        self._matcher = matcher
        self._eog = vocab.eog
        self._n_vocab = vocab.n_vocab
        self._bitmask = np.zeros((self._n_vocab + 31) // 32, dtype=np.int32)

    def allows(self, token: int) -> bool:
        if token in self._eog:  # as llama.cpp: an end only where the grammar is complete
            return bool(self._matcher.is_accepting())
        return bool(self._matcher.validate_tokens([token]) == 1)

    def accept(self, token: int) -> None:
        if not self._matcher.consume_token(token):  # pragma: no cover - allows() said yes
            logger.warning("llguidance refused an allowed token: %s", self._matcher.get_error())

    def allowed(self) -> np.ndarray:
        """One 0/1 byte per token: whether the grammar lets it come next."""
        bitmask = self._bitmask
        self._matcher.unsafe_compute_mask_ptr(bitmask.ctypes.data, bitmask.nbytes)
        return np.unpackbits(bitmask.view(np.uint8), bitorder="little", count=self._n_vocab)

    def mask(self, candidates: Candidates) -> None:
        logits = candidates.data["logit"]
        logits[self.allowed() == 0] = -np.inf

    def close(self) -> None:
        """Nothing native to free (the matcher goes with its last reference)."""
