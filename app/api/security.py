"""Who may use the server: API keys, and which browser pages (Host and Origin checks).

API keys: ``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``, compared in constant time.
Keys are never logged; the 401 answer never echoes what was sent.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import ApiError, HostNotAllowed, OriginNotAllowed, Unauthorized, error_response
from app.api.family import family_of

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


# --- browsers: Host (DNS rebinding) and Origin (cross-site simple requests) -----------------

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Request headers a browser page may send cross-origin (CORS preflight): ours, and exactly
# what the openai SDKs send (openai-python 1.x-3.x, openai-node 4.x-6.x with
# dangerouslyAllowBrowser): platform and retry headers, helpers, organization and project;
# and the anthropic SDKs' own (version, betas, dangerouslyAllowBrowser's marker).
CORS_ALLOWED_HEADERS = (
    "Authorization", "Content-Type", "X-Api-Key", "Accept", "User-Agent", "X-Session-Id",
    "OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta", "Idempotency-Key",
    "Anthropic-Version", "Anthropic-Beta", "Anthropic-Dangerous-Direct-Browser-Access",
    "X-Stainless-Arch", "X-Stainless-Async", "X-Stainless-Custom-Poll-Interval",
    "X-Stainless-Helper", "X-Stainless-Helper-Method", "X-Stainless-Lang", "X-Stainless-OS",
    "X-Stainless-Package-Version", "X-Stainless-Poll-Helper", "X-Stainless-Raw-Response",
    "X-Stainless-Read-Timeout", "X-Stainless-Retry-Count", "X-Stainless-Runtime",
    "X-Stainless-Runtime-Version", "X-Stainless-Stream-Helper", "X-Stainless-Timeout",
)  # fmt: skip


def host_name(host_header: str) -> str | None:
    """The name in a ``Host`` header, lower case, without port or brackets; None if malformed."""
    value = host_header.strip().lower()
    if value.startswith("["):  # [v6]:port
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        name, sep, port = value.rpartition(":")
        if not sep:
            name = value
        elif not port.isdigit():
            return None
    name = name.rstrip(".")
    if not name or any(c in name for c in "/@ \\\t"):
        return None
    return name


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostPolicy:
    """Which ``Host`` headers the server answers: its defence against DNS rebinding.

    A page on ``evil.example`` that rebinds its name to 127.0.0.1 reaches the server with
    ``Host: evil.example``; only names the server was told about pass. Always allowed:
    localhost (and ``*.localhost``), 127.0.0.1, [::1] and the bound address, any port.
    Bound to every interface (0.0.0.0 or ::), IP literals and single-label names (a LAN
    host or a container name) pass too: no public DNS name can rebind to them.
    ``--allowed-host`` adds names (``*.example.com`` for subdomains); ``*`` turns the check off.
    """

    names: frozenset[str]
    suffixes: tuple[str, ...]
    any_host: bool
    every_interface: bool

    @classmethod
    def build(cls, bind_host: str, allowed_hosts: list[str]) -> HostPolicy:
        """The policy for a server bound to ``bind_host`` with these ``--allowed-host`` values."""
        entries = [entry.strip().lower() for entry in allowed_hosts if entry.strip()]
        names = set(LOOPBACK_NAMES)
        bound = bind_host.strip().strip("[]").lower()
        if bound and not _is_ip(bound):
            bound = host_name(bound) or ""
        if bound:
            names.add(bound)
        every_interface = bind_host.strip() in WILDCARD_BINDS
        if every_interface:
            names.add(socket.gethostname().lower())
        suffixes = [".localhost"]
        for entry in entries:
            if entry.startswith("*."):
                suffixes.append(entry[1:])
            elif entry != "*":
                names.add(host_name(entry) or entry)
        return cls(frozenset(names), tuple(suffixes), "*" in entries, every_interface)

    def allows(self, host_header: str | None) -> bool:
        """Whether a request with this ``Host`` header is answered (no header: not a browser)."""
        if self.any_host or host_header is None:
            return True
        name = host_name(host_header)
        if name is None:
            return False
        if name in self.names or name.endswith(self.suffixes):
            return True
        return self.every_interface and (_is_ip(name) or "." not in name)


def same_origin(origin: str, host_header: str | None) -> bool:
    """Whether ``origin`` is the server's own (the page was loaded from this Host)."""
    if host_header is None:
        return False
    scheme, sep, authority = origin.partition("://")
    return bool(sep) and scheme in ("http", "https") and authority == host_header.strip().lower()


class BrowserGuardMiddleware:
    """Pure ASGI: 403 for a foreign ``Host`` and for cross-origin writes from unlisted origins.

    Browsers send a "simple" cross-origin POST (``text/plain``, no custom header) without a
    CORS preflight, so CORS alone would let any website start generations; this refuses
    every non-GET request whose ``Origin`` is neither the server itself nor in the CORS
    allowlist. Requests without ``Origin`` (curl, SDKs, server-side code) pass.
    """

    def __init__(self, app: ASGIApp, *, hosts: HostPolicy, cors_origins: list[str]) -> None:
        self.app = app
        self.hosts = hosts
        self.any_origin = "*" in cors_origins
        self.origins = frozenset(cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = self.check(Headers(scope=scope), scope.get("method", "GET"))
            if problem is not None:
                await error_response(problem, family_of(scope))(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, headers: Headers, method: str) -> ApiError | None:
        """The error for a request that must not be answered, else None."""
        host = headers.get("host")
        if not self.hosts.allows(host):
            logger.warning("refused a request for Host %r (not an allowed host)", host)
            return HostNotAllowed(
                f"Host '{host}' is not allowed. This server answers localhost, 127.0.0.1, "
                "[::1] and its bound address; add other names with --allowed-host "
                "(a guard against DNS rebinding)."
            )
        origin = headers.get("origin")
        if origin is None or method in SAFE_METHODS or self.origin_allowed(origin, host):
            return None
        logger.warning("refused a %s from origin %r (not in the CORS allowlist)", method, origin)
        return OriginNotAllowed(
            f"Requests from the origin '{origin}' are not allowed; add it with --cors-origin."
        )

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """The CORS allowlist, or the server's own origin (its web page)."""
        return self.any_origin or origin in self.origins or same_origin(origin, host)
