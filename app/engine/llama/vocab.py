"""``LlamaVocabulary``: a model's tokenizer alone (llama.cpp's ``vocab_only`` load), no weights.

The API process uses it when the engine runs in a worker process (``app.engine.remote``):
counting, tokenizing and detokenizing stay synchronous and local, and a request is checked
(prompt length, token ids, grammar) before it is sent. A vocabulary-only load reads the
GGUF's tokenizer arrays only, so it takes a few MiB and a fraction of a second. Every method
only reads the immutable vocabulary and is safe from any thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from app.engine.llama import _lib
from app.engine.llama.grammar import GrammarCache
from app.engine.types import Grammar
from app.errors import ModelLoadError

logger = logging.getLogger(__name__)


class LlamaVocabulary:
    """The tokenizer of one GGUF file; see ``load_vocabulary``."""

    def __init__(self, model: int) -> None:
        self._model: int | None = model
        self._vocab = _lib.model_vocab(model)
        self.n_vocab = _lib.vocab_n_tokens(self._vocab)
        self._grammars = GrammarCache(self._vocab)

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        """Token ids of ``text`` (special-token text parsed if asked, as the backend does)."""
        return _lib.tokenize(self._vocab, text.encode("utf-8"), add_special, parse_special)

    def special_piece(self, token: int) -> bytes:
        """Raw bytes of one token's piece with control tokens rendered."""
        return _lib.token_piece(self._vocab, token, special=True)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """llama.cpp's inverse of ``tokenize`` (control tokens rendered)."""
        return _lib.detokenize(self._vocab, list(tokens)).decode("utf-8", errors="replace")

    def check_grammar(self, grammar: Grammar) -> None:
        """Compile ``grammar`` against this vocabulary; raises ``InvalidRequest`` if invalid."""
        self._grammars.check(grammar)

    def close(self) -> None:
        """Free the compiled grammars and the vocabulary-only model."""
        self._grammars.close()
        if self._model is not None:
            model, self._model = self._model, None
            _lib.model_free(model)


def load_vocabulary(path: str) -> LlamaVocabulary:
    """Load only the tokenizer of the GGUF at ``path``; raises ``ModelLoadError``."""
    _lib.backend_init()
    params = _lib.model_default_params()
    params.vocab_only = True
    params.n_gpu_layers = 0
    model = _lib.model_load(path, params)
    if model is None:
        raise ModelLoadError(f"llama.cpp could not read the vocabulary of {path}.", param="model")
    logger.debug("vocabulary of %s loaded", path)
    return LlamaVocabulary(model)
