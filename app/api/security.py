"""API keys: ``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``, compared in constant time.

Keys are never logged; the 401 answer never echoes what was sent.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import Request

from app.api.errors import Unauthorized

logger = logging.getLogger(__name__)


def supplied_key(request: Request) -> str | None:
    """The key a request carries, if any."""
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = request.headers.get("x-api-key")
    return api_key.strip() if api_key and api_key.strip() else None


def key_matches(supplied: str, keys: list[str]) -> bool:
    """Whether ``supplied`` is one of ``keys``; every key is compared, each in constant time."""
    given = supplied.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched


def require_api_key(request: Request) -> None:
    """Dependency: 401 unless the request carries a configured key (no keys: open)."""
    keys: list[str] = request.app.state.settings.api_key
    if not keys:
        return
    supplied = supplied_key(request)
    if supplied is None:
        raise Unauthorized(
            "Missing API key: send it as 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'."
        )
    if not key_matches(supplied, keys):
        raise Unauthorized("Invalid API key.")
