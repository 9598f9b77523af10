"""Routes for the demo chat page: ``/`` serves index.html, ``/static/...`` the page's assets.

Everything the page needs ships in ``app/web/static``; nothing is fetched from the internet.
A strict Content-Security-Policy backs up the page's own rule of never putting model text
into ``innerHTML``: even if a bug slipped through, inline scripts and foreign hosts are blocked.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

_HEADERS = {
    # The demo is edited while it runs; revalidate instead of caching stale assets.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


def _static_file(relative: str) -> Path:
    """Resolve ``relative`` inside STATIC_DIR, refusing anything that escapes it."""
    try:
        candidate = (STATIC_DIR / relative).resolve()
        found = candidate.is_relative_to(STATIC_DIR) and candidate.is_file()
    except (ValueError, OSError):  # a NUL byte, a name longer than the filesystem allows
        found = False
    if not found:
        raise HTTPException(status_code=404, detail="Not Found")
    if candidate.suffix not in _MEDIA_TYPES:
        raise HTTPException(status_code=404, detail="Not Found")
    return candidate


@router.api_route("/", methods=["GET", "HEAD"])
async def chat_page() -> FileResponse:
    """The demo chat page."""
    headers = {**_HEADERS, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
    return FileResponse(
        STATIC_DIR / "index.html", media_type=_MEDIA_TYPES[".html"], headers=headers
    )


@router.api_route("/static/{path:path}", methods=["GET", "HEAD"])
async def static_asset(path: str) -> FileResponse:
    """A static asset of the chat page (scripts, styles, icons)."""
    file = _static_file(path)
    return FileResponse(file, media_type=_MEDIA_TYPES[file.suffix], headers=dict(_HEADERS))


@router.api_route("/favicon.ico", methods=["GET", "HEAD"])
async def favicon() -> FileResponse:
    """The page icon, for browsers that ask for /favicon.ico regardless of the page's link."""
    return FileResponse(
        STATIC_DIR / "favicon.svg", media_type=_MEDIA_TYPES[".svg"], headers=dict(_HEADERS)
    )
