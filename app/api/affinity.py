"""Conversation affinity: the key a load balancer hashes to keep a chat on one replica.

A chat's next turn is fast only on the replica whose KV cache (or host-RAM prompt cache)
holds its history, so a proxy in front of several replicas routes on a stable conversation
key (see deploy/haproxy/haproxy.cfg). Clients send it as the ``X-Session-Id`` header, or in
the body as OpenAI's ``prompt_cache_key`` or ``user`` (Anthropic's ``metadata.user_id``).
The server does not route anything itself; it echoes the key it saw in the ``X-Session-Id``
response header, so clients and proxies can check which key a request was routed on.

The header is read in the request-log middleware; the body fields are picked from the JSON
object the routes parse anyway (``app.api.deps.json_object``), never by parsing it again.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import Message, Scope

SESSION_HEADER = "X-Session-Id"
STATE_KEY = "session_key"  # request.state field the body's key is left in
MAX_KEY_CHARS = 256


def valid_key(value: object) -> str | None:
    """``value`` if it can be a header value as it is (1-256 visible ASCII characters)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_KEY_CHARS:
        return None
    if not value.isascii() or not value.isprintable() or value.strip() != value:
        return None
    return value


def body_session_key(body: dict[str, Any]) -> str | None:
    """The conversation key a JSON body carries: ``prompt_cache_key``, ``user``, then
    ``metadata.user_id`` (the first that is a usable header value)."""
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    for value in (body.get("prompt_cache_key"), body.get("user"), user_id):
        key = valid_key(value)
        if key is not None:
            return key
    return None


def remember_body_key(request: Request, body: dict[str, Any]) -> None:
    """Leave the body's conversation key in the request state for the response header."""
    key = body_session_key(body)
    if key is not None:
        setattr(request.state, STATE_KEY, key)


def echo_session_key(scope: Scope, message: Message) -> None:
    """Set ``X-Session-Id`` on a response start: the request's header, else its body key."""
    key = valid_key(Headers(scope=scope).get(SESSION_HEADER))
    if key is None:
        key = scope.get("state", {}).get(STATE_KEY)
    if key is not None:
        MutableHeaders(scope=message)[SESSION_HEADER] = key
