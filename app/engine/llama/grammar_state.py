"""One sequence's grammar: a constraint (llama.cpp's grammar sampler or llguidance's
matcher, behind one interface) and the laziness of tool-call triggers.

Laziness is ours, not llama.cpp's ``llama_sampler_init_grammar_lazy_patterns``: its trigger
replays the triggering token's text into the grammar and throws a C++ exception through the
C API when that text does not fit, which aborts the process under ctypes. Here the text
after the trigger is checked token by token before the grammar takes it, and a grammar that
cannot take it simply stays off.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from app.engine.llama import _lib

if TYPE_CHECKING:
    from app.engine.llama.sampler import Candidates

logger = logging.getLogger(__name__)


class Constraint(Protocol):
    """A grammar at some point of the text: which token may come next, and moving on."""

    def allows(self, token: int) -> bool:
        """Whether ``token`` may come next (no state change)."""
        ...

    def accept(self, token: int) -> None:
        """Move past ``token`` (one ``allows`` said yes to)."""
        ...

    def mask(self, candidates: Candidates) -> None:
        """Set the logit of every token that may not come next to -inf."""
        ...

    def close(self) -> None:
        """Free what it holds."""
        ...


class SingleCandidate:
    """A one-token candidate array, to ask a grammar about one token."""

    __slots__ = ("array", "data")

    def __init__(self) -> None:
        self.data = (_lib.TokenData * 1)()
        self.array = _lib.TokenDataArray(data=self.data, size=1, selected=-1, sorted=False)


class NativeConstraint:
    """llama.cpp's grammar sampler (a raw GBNF grammar, or a schema llguidance refused).

    ``allows`` and ``mask`` are llama.cpp's grammar apply (never throws); ``accept`` only
    ever gets tokens that ``allows`` said yes to, so the native accept cannot throw.
    """

    __slots__ = ("_handle", "_single")

    def __init__(self, handle: _lib.SamplerHandle) -> None:
        self._handle: _lib.SamplerHandle | None = handle
        self._single = SingleCandidate()

    def allows(self, token: int) -> bool:
        single: Any = self._single.array  # ctypes fields take Python ints
        single.data[0].id = token
        single.data[0].logit = 1.0
        single.size = 1
        single.selected = -1
        single.sorted = False
        _lib.raw_sampler_apply(self._handle, ctypes.byref(single))
        return bool(single.data[0].logit != float("-inf"))

    def accept(self, token: int) -> None:
        _lib.raw_sampler_accept(self._handle, token)

    def mask(self, candidates: Candidates) -> None:
        _lib.raw_sampler_apply(self._handle, candidates.ref)

    def close(self) -> None:
        if self._handle is not None:
            _lib.sampler_free(self._handle)
            self._handle = None


class GrammarState:
    """One sequence's grammar: off until its trigger shows up (when it has one), then on.

    A lazy grammar whose trigger was followed by text it cannot take stays off for good.
    """

    __slots__ = ("_constraint", "_make", "_pending", "_piece", "_tokenize", "_trigger", "active")

    def __init__(
        self,
        make: Callable[[], Constraint],
        trigger: str,
        piece: Callable[[int], bytes],
        tokenize: Callable[[bytes], list[int]],
    ) -> None:
        self._make = make
        self._trigger = trigger.encode("utf-8")
        self._piece = piece
        self._tokenize = tokenize
        self._pending = bytearray()  # generated text while waiting for the trigger
        self._constraint: Constraint | None = None if trigger else make()
        self.active = self._constraint is not None

    @property
    def constraint(self) -> Constraint:
        assert self._constraint is not None
        return self._constraint

    def allows(self, token: int) -> bool:
        """Whether the (active) grammar lets ``token`` come next."""
        return self.constraint.allows(token)

    def mask(self, candidates: Candidates) -> None:
        """Mask the (active) grammar's disallowed tokens in ``candidates`` (id order)."""
        self.constraint.mask(candidates)

    def accept(self, token: int) -> None:
        """Advance the grammar by ``token`` (or look for the trigger while off)."""
        if self._constraint is not None:
            self._constraint.accept(token)
            return
        if not self._trigger:  # gave up (see _engage)
            return
        before = len(self._pending)
        self._pending += self._piece(token)
        at = self._pending.find(self._trigger, max(0, before - len(self._trigger) + 1))
        if at >= 0:
            self._engage(bytes(self._pending[at + len(self._trigger) :]))

    def _engage(self, rest: bytes) -> None:
        self._pending.clear()
        constraint = self._constraint = self._make()
        for token in self._tokenize(rest) if rest else []:
            if not constraint.allows(token):
                logger.debug("lazy grammar stays off: %r does not fit after the trigger", rest)
                self.close()
                self._trigger = b""
                return
            constraint.accept(token)
        self.active = True

    def close(self) -> None:
        if self._constraint is not None:
            self._constraint.close()
            self._constraint = None
        self.active = False
