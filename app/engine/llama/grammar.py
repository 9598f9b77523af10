"""Grammars for constrained generation: which engine enforces a grammar, a compile cache.

A grammar with JSON Schema rules (``response_format``, Ollama's ``format``, TGI's JSON
grammar, tool parameters inside a tool-call format's grammar) goes to llguidance
(``guidance``, ``guidance_schema``): it compiles schemas in milliseconds and masks the
vocabulary in a tenth of a millisecond. When llguidance refuses one (a keyword it does not
implement, such as ``uniqueItems``; GBNF around the rules it cannot read), the grammar falls
back to the converter here: llama-cpp-python's ``SchemaConverter`` (a port of llama.cpp's
``json_schema_to_grammar.py``), extended in ``schema_grammar`` with number ranges, formats
and ``allOf``, parsed by llama.cpp's grammar sampler. A raw GBNF ``grammar`` (no JSON rules)
always runs on llama.cpp's grammar sampler, which reads its dialect exactly.

Compiled grammars are kept per grammar in a small LRU (by count and bytes); every sequence
gets its own copy (a clone of the parsed rules, or a copy of llguidance's matcher) wrapped
as a ``grammar_state.Constraint``. Laziness (tool-call triggers) is in ``grammar_state``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from llguidance import LLMatcher

from app.engine.llama import _lib
from app.engine.llama.gbnf_nullable import nullable_repetition_product
from app.engine.llama.grammar_state import Constraint, NativeConstraint
from app.engine.llama.guidance import GuidanceConstraint, GuidanceVocab
from app.engine.llama.guidance_schema import to_lark
from app.engine.llama.schema_grammar import new_converter, schema_rules
from app.engine.types import Grammar
from app.errors import InvalidRequest
from app.limits import MAX_NULLABLE_REPETITION

logger = logging.getLogger(__name__)

CACHE_SIZE = 64
CACHE_BYTES = 8 * 1024 * 1024  # GBNF text of the cached grammars together (a proxy for
# their parsed size, which llama.cpp does not report; a parsed rule costs a few times more)


def to_gbnf(grammar: Grammar) -> str:
    """The whole GBNF source: ``grammar.gbnf`` plus the rules converted from its schemas."""
    if not grammar.json_rules:
        return grammar.gbnf
    converter = new_converter()
    aliases: list[str] = []
    for rule in grammar.json_rules:
        try:
            name = schema_rules(converter, json.loads(rule.schema), rule.name)
        except Exception as exc:  # the converter raises assertions, KeyError, ValueError, re.error
            raise InvalidRequest(
                f"The JSON schema cannot be turned into a grammar: {exc}", param=grammar.param
            ) from exc
        if name != rule.name:
            aliases.append(f"{rule.name} ::= {name}")
    return "\n".join([grammar.gbnf, *aliases, converter.format_grammar()])


# llama.cpp expands x{m,n} into about n rules and never checks m <= n: {5,2} makes its
# parser loop until the process runs out of memory. Its parser also recurses once per
# nested group: a deep enough ( ( ( ... overflows the native stack. Each repetition, their
# sum (forty {0,100000} took minutes) and the alternatives (each is matched against the
# vocabulary) are bounded too. All are checked first, in one linear pass; then the
# nullable-repetition product (gbnf_nullable), in another.
MAX_REPETITION = 2_000  # as llama.cpp's own JSON-schema converter
MAX_TOTAL_REPETITION = 20_000
MAX_ALTERNATIVES = 20_000
MAX_GROUP_DEPTH = 256


def repetition_problem(gbnf: str) -> str | None:
    """Why ``gbnf`` must not reach llama.cpp's parser, if it must not: a ``{m,n}`` with
    n < m or over ``MAX_REPETITION``, repetitions over ``MAX_TOTAL_REPETITION`` together,
    more than ``MAX_ALTERNATIVES`` alternatives, groups nested deeper than
    ``MAX_GROUP_DEPTH``, or a nullable-repetition product over ``max_nullable_repetition``.

    Skips string literals, character classes and comments; leaves other syntax errors to
    llama.cpp's own parser.
    """
    i, n, depth, total = 0, len(gbnf), 0, 0
    if _count_outside_quotes(gbnf, "|") > MAX_ALTERNATIVES:
        return f"more than {MAX_ALTERNATIVES} alternatives (limit max_alternatives)"
    while i < n:
        c = gbnf[i]
        if c in "()":
            depth += 1 if c == "(" else -1
            if depth > MAX_GROUP_DEPTH:
                return f"groups nest deeper than {MAX_GROUP_DEPTH} levels"
        elif c in '"[':
            i = _skip_quoted(gbnf, i + 1, '"' if c == '"' else "]")
        elif c == "#":
            i = gbnf.find("\n", i)
            i = n if i < 0 else i
        elif c == "{":
            end = gbnf.find("}", i)
            if end < 0:
                return None
            problem, count = _bounds_problem(gbnf[i + 1 : end])
            total += count
            problem = problem or _total_problem(total)
            if problem is not None:
                return problem
            i = end
        i += 1
    return _nullable_problem(gbnf)


def _nullable_problem(gbnf: str) -> str | None:
    product = nullable_repetition_product(gbnf)
    limit = MAX_NULLABLE_REPETITION
    if product <= limit.value:
        return None
    shown = f"{product:,}" if product < 10**9 else "over 10^9"
    return (
        f"repetitions of something that can match nothing count {shown} (nested ones "
        f"multiply, ones in a row add), over the limit {limit.name} = {limit.value}; "
        "write x{0,n} rather than (x?){0,n}"
    )


def _total_problem(total: int) -> str | None:
    if total <= MAX_TOTAL_REPETITION:
        return None
    return f"repetitions add up to more than {MAX_TOTAL_REPETITION} (limit max_total_repetition)"


def _count_outside_quotes(gbnf: str, char: str) -> int:
    """How often ``char`` occurs outside literals, classes and comments (an upper bound:
    a quick count first, the exact one only when the quick one is over)."""
    quick = gbnf.count(char)
    if quick <= MAX_ALTERNATIVES:
        return quick
    found, i, n = 0, 0, len(gbnf)
    while i < n:
        c = gbnf[i]
        if c in '"[':
            i = _skip_quoted(gbnf, i + 1, '"' if c == '"' else "]")
        elif c == "#":
            i = gbnf.find("\n", i)
            i = n if i < 0 else i
        elif c == char:
            found += 1
        i += 1
    return found


def _skip_quoted(text: str, i: int, close: str) -> int:
    while i < len(text) and text[i] != close:
        i += 2 if text[i] == "\\" else 1
    return i


def _bounds_problem(inside: str) -> tuple[str | None, int]:
    parts = [part.strip() for part in inside.split(",")]
    if len(parts) > 2 or not all(part.isascii() and (part.isdigit() or not part) for part in parts):
        return None, 0  # not a repetition llama.cpp reads: its parser reports it
    if any(len(part) > 12 for part in parts):
        return f"repetition {{{inside[:40]}}} is larger than {MAX_REPETITION}", 0
    low = int(parts[0]) if parts[0] else 0
    high = int(parts[1]) if len(parts) == 2 and parts[1] else None
    if high is not None and high < low:
        return f"repetition {{{inside}}} has its maximum below its minimum", 0
    count = max(low, high or 0)
    if count > MAX_REPETITION:
        return f"repetition {{{inside}}} is larger than {MAX_REPETITION} (limit max_repetition)", 0
    return None, count


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


def _allows_a_first_token(handle: _lib.SamplerHandle, n_vocab: int) -> bool:
    """Whether the grammar, at its start, lets any token through (apply changes no state).

    A grammar that lets none through (an empty character range, say) would only fail at
    the first sampling step, after the request was accepted: it is refused here instead.
    """
    data = np.zeros(n_vocab, dtype=_TOKEN_DATA)
    data["id"] = np.arange(n_vocab, dtype=np.int32)
    pointer = data.ctypes.data_as(ctypes.POINTER(_lib.TokenData))
    array = _lib.TokenDataArray(data=pointer, size=n_vocab, selected=-1, sorted=False)
    _lib.raw_sampler_apply(handle, ctypes.byref(array))
    return bool(np.isfinite(data["logit"][: array.size]).any())


class GrammarCache:
    """Compiled grammars by grammar (LRU); hands out per-sequence constraints. Thread-safe."""

    def __init__(self, vocab: int, size: int = CACHE_SIZE, max_bytes: int = CACHE_BYTES) -> None:
        self._vocab = vocab
        self._guidance = GuidanceVocab(vocab)
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self._compiled: OrderedDict[_Key, _Compiled] = OrderedDict()
        self._sizes: dict[_Key, int] = {}

    @property
    def cached_bytes(self) -> int:
        """Bytes of grammar source (GBNF or llguidance's Lark) the cached grammars came from."""
        return self._bytes

    def check(self, grammar: Grammar) -> None:
        """Compile ``grammar`` now (or find it compiled); raises ``InvalidRequest``."""
        self._template(grammar)

    def new_constraint(self, grammar: Grammar) -> Constraint:
        """A fresh constraint (at the grammar's start) that the caller owns."""
        key = _key(grammar)
        template = self._template(grammar)
        with self._lock:  # still cached: copy under the lock (not freed meanwhile)
            template = self._compiled.get(key, template)
            if isinstance(template, LLMatcher):
                return GuidanceConstraint(template.deep_copy(), self._guidance)
            return NativeConstraint(_lib.sampler_clone(template))

    def _template(self, grammar: Grammar) -> _Compiled:
        key = _key(grammar)
        with self._lock:
            found = self._compiled.get(key)
            if found is not None:
                self._compiled.move_to_end(key)
                return found
        compiled, size = self._guided(grammar) or self._native(grammar)
        with self._lock:
            if key in self._compiled:  # compiled twice at once: keep the first
                _free(compiled)
                return self._compiled[key]
            self._compiled[key] = compiled
            self._sizes[key] = size
            self._bytes += size
            # The newest stays even when alone over the byte bound (its request needs it).
            while len(self._compiled) > 1 and (
                len(self._compiled) > self._size or self._bytes > self._max_bytes
            ):
                old_key, old = self._compiled.popitem(last=False)
                self._bytes -= self._sizes.pop(old_key)
                _free(old)
        return compiled

    def _guided(self, grammar: Grammar) -> tuple[_Compiled, int] | None:
        """llguidance's matcher for a grammar with JSON rules; None: llama.cpp's turn."""
        try:
            lark = to_lark(grammar, self._guidance.markers)
            if lark is None:
                return None
            return self._guidance.compile(lark), len(lark)
        except Exception as exc:  # llguidance's reasons; GBNF its reader cannot read
            logger.info("llguidance refused a grammar (%s); llama.cpp enforces it", exc)
            return None

    def _native(self, grammar: Grammar) -> tuple[_Compiled, int]:
        gbnf = to_gbnf(grammar)
        problem = repetition_problem(gbnf)
        if problem is not None:
            raise InvalidRequest(f"The grammar is not valid GBNF: {problem}", param=grammar.param)
        _lib.take_native_problems()
        compiled = _lib.sampler_grammar(self._vocab, gbnf)
        if compiled is None:
            native = "; ".join(_lib.take_native_problems()) or "it does not parse"
            raise InvalidRequest(f"The grammar is not valid GBNF: {native}", param=grammar.param)
        if not _allows_a_first_token(compiled, _lib.vocab_n_tokens(self._vocab)):
            _lib.sampler_free(compiled)
            raise InvalidRequest(
                "The grammar allows no text that any token of this model starts.",
                param=grammar.param,
            )
        return compiled, len(gbnf)

    def close(self) -> None:
        """Free every compiled grammar."""
        with self._lock:
            for compiled in self._compiled.values():
                _free(compiled)
            self._compiled.clear()
            self._sizes.clear()
            self._bytes = 0


_Key = tuple[str, tuple[Any, ...]]
_Compiled = _lib.SamplerHandle | LLMatcher


def _free(compiled: _Compiled) -> None:
    if not isinstance(compiled, LLMatcher):  # a matcher goes with its last reference
        _lib.sampler_free(compiled)


def _key(grammar: Grammar) -> tuple[str, tuple[Any, ...]]:
    return grammar.gbnf, grammar.json_rules
