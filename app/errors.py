"""The domain errors every layer raises (engine, serving, models, CLI).

The HTTP layer maps each class to a status and a body in one table (``app/api/errors.py``);
nothing looks at exception text. Engine-internal failures (``DecodeError``) stay in the engine.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the server raises on purpose (the name is historical)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(EngineError):
    """The request cannot be served as asked (bad sampling values, empty prompt, ...)."""


class ContextLengthExceeded(EngineError):
    """The prompt (plus the room asked for generation) does not fit a slot's context."""

    def __init__(self, prompt_tokens: int, limit: int, *, param: str | None = "messages") -> None:
        super().__init__(
            f"This model's context per request is {limit} tokens, but the prompt has "
            f"{prompt_tokens} tokens. Shorten the prompt or the conversation.",
            param=param,
        )
        self.prompt_tokens = prompt_tokens
        self.limit = limit


class Overloaded(EngineError):
    """The waiting queue is full; the caller should retry later."""

    def __init__(self, queue_length: int, max_queue: int, *, retry_after_s: int = 1) -> None:
        super().__init__(
            f"The server is busy: {queue_length} requests are waiting (limit {max_queue}). "
            f"Retry in about {retry_after_s} s."
        )
        self.queue_length = queue_length
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s


class ModelNotFound(EngineError):
    """The model asked for is not the one served, or a model file could not be found."""


class NotFound(EngineError):
    """A stored object asked for by id (such as a stored response) does not exist."""


class ModelLoadError(EngineError):
    """A model file exists but could not be loaded (not GGUF, truncated, corrupt, no memory)."""


class EngineNotReady(EngineError):
    """The engine is still loading the model."""


class EngineDead(EngineError):
    """The engine thread stopped (crash or shutdown) and takes no more requests."""


class GenerationFailed(EngineError):
    """The engine reported an error in the middle of a generation."""


class RequestCancelled(EngineError):
    """The engine cancelled a request whose client was still listening (e.g. shutdown)."""


class EngineCrashed(EngineError):
    """The engine process died under a running request (it restarts; the client may retry)."""


class DownloadFailed(EngineError):
    """A model could not be fetched (offline, the source refused, or it is not a GGUF)."""


class ModelInUse(EngineError):
    """The model cannot be removed now: it is the default or a pinned model, or it is busy."""
