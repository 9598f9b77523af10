"""The messages between the API process and an engine worker process, and their packing.

Transport: a ``multiprocessing`` Pipe of the spawn context. ``bench/ipc_bench.py`` measured
pyzmq's PAIR socket faster per message (tens of µs per step, under 1% of a CPU decode
step), but it runs an I/O thread in each process, which in the engine process competes with
ggml's threads; the Pipe has none and no dependency.

Every message is a tuple whose first item is its kind. The worker sends at most ONE ``STEP``
message per engine step, carrying every token event of that step; an ordinary token event
travels as a ``(text, token_id)`` tuple (a fraction of a frozen dataclass's pickle), final
and logprob events as ``TokenEvent``.

Errors cross as ``(class name, message, param, attributes)`` and come back as the same
``app.errors`` class: exception pickling would call ``__init__`` with the message alone,
which the errors with structured fields (``ContextLengthExceeded``, ``Overloaded``) refuse.
"""

from __future__ import annotations

from typing import Any

import app.errors as domain_errors
from app.engine.types import TokenEvent
from app.errors import EngineError

# API process -> worker
SUBMIT = "submit"  # (SUBMIT, GenerationRequest with the prompt as token ids)
ABORT = "abort"  # (ABORT, request_id)
EMBED = "embed"  # (EMBED, call_id, [text, ...])
LORA = "lora"  # (LORA, call_id, {adapter id: scale} | None): set scales, reply with the list
STOP = "stop"  # (STOP,): cancel everything, free the model, exit
# worker -> API process
READY = "ready"  # (READY, ModelInfo, EngineStats)
FAILED = "failed"  # (FAILED, PackedError): the model could not be loaded; the worker exits
STEP = "step"  # (STEP, [(request_id, [PackedEvent, ...], final), ...], EngineStats | None)
STATS = "stats"  # (STATS, EngineStats): the engine's snapshot while no step runs
REJECTED = "rejected"  # (REJECTED, request_id, PackedError): enqueue refused a submit
REPLY = "reply"  # (REPLY, call_id, ok, value or PackedError)

PackedEvent = tuple[str, int | None] | TokenEvent
PackedError = tuple[str, str, str | None, dict[str, Any]]
StepItem = tuple[str, list[PackedEvent], bool]


def pack_event(event: TokenEvent) -> PackedEvent:
    """A plain token event as ``(text, token_id)``; any other event as it is."""
    if event.finish_reason is None and event.logprob is None and event.error is None:
        return (event.text, event.token_id)
    return event


def unpack_event(request_id: str, packed: PackedEvent) -> TokenEvent:
    """The ``TokenEvent`` that ``pack_event`` packed."""
    if type(packed) is tuple:
        return TokenEvent(request_id, packed[0], packed[1])
    assert isinstance(packed, TokenEvent)
    return packed


def pack_step(request_id: str, events: list[TokenEvent]) -> StepItem:
    """One request's events of a step, and whether the last one ends it."""
    return (request_id, [pack_event(e) for e in events], events[-1].finish_reason is not None)


def pack_error(exc: BaseException) -> PackedError:
    """A domain error as plain values; anything else becomes an ``EngineError``'s message."""
    if isinstance(exc, EngineError):
        attrs = {k: v for k, v in vars(exc).items() if isinstance(v, str | int | float | None)}
        return (type(exc).__name__, exc.message, exc.param, attrs)
    return ("EngineError", f"{type(exc).__name__}: {exc}", None, {})


def unpack_error(packed: PackedError) -> EngineError:
    """The domain error ``pack_error`` packed (an ``EngineError`` if its class is unknown)."""
    name, message, param, attrs = packed
    cls = getattr(domain_errors, name, EngineError)
    if not (isinstance(cls, type) and issubclass(cls, EngineError)):
        cls = EngineError
    exc = cls.__new__(cls)
    EngineError.__init__(exc, message, param=param)
    for key, value in attrs.items():
        setattr(exc, key, value)
    return exc
