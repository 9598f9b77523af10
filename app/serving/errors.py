"""Errors the serving layer raises while turning engine events into wire responses."""

from __future__ import annotations

from app.engine.errors import EngineError


class GenerationFailed(EngineError):
    """The engine reported an error in the middle of a generation."""


class RequestCancelled(EngineError):
    """The engine cancelled a request whose client was still listening (e.g. shutdown)."""
