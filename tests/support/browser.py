"""Headless Chromium (Debian's ``chromium`` package) driven by Playwright for Python.

Never ``playwright install``: the browser is the system one at /usr/bin/chromium. Each launch
gets a fresh profile directory, and the flags keep Chromium itself off the network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = os.environ.get("CRIA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO_ROOT = Path(__file__).resolve().parents[2]
STATIC_DIR = REPO_ROOT / "app" / "web" / "static"
ARTIFACTS_DIR = REPO_ROOT / "artifacts"

DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def require_chromium() -> None:
    """Fail (not skip) with a clear message when the browser or Playwright is missing."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'")


@contextmanager
def chromium_context(profile_dir: Path | None = None, **options: Any) -> Iterator[Any]:
    """A persistent Chromium context: on ``profile_dir`` (kept afterwards, so a second
    launch on it is a browser restart with the same profile) or on a throwaway profile
    (deleted afterwards)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    profile = str(profile_dir) if profile_dir else tempfile.mkdtemp(prefix="cria-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport=DESKTOP,
                **options,
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        if profile_dir is None:
            shutil.rmtree(profile, ignore_errors=True)


@contextmanager
def chromium_browser() -> Iterator[Any]:
    """A headless Chromium; each ``browser.new_context()`` is a fresh, empty profile."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def wait_until(page: Any, expression: str, timeout_s: float = 30.0, arg: Any = None) -> Any:
    """Poll a JS function (source of ``(arg) => ...``) until it returns something truthy.

    Playwright's own ``wait_for_function`` evaluates a string inside the page, which the
    page's Content-Security-Policy (no 'unsafe-eval') rightly refuses; ``evaluate`` is fine.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(expression, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {expression}")
        time.sleep(0.05)


class PageWatch:
    """Console errors and uncaught exceptions of a page, to assert a clean run."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))


class RequestLog:
    """Every URL a page requests (including redirects, sub-resources and fetches)."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def record(self, request: Any) -> None:
        self.urls.append(request.url)

    def foreign(self, allowed_host: str = "127.0.0.1") -> list[str]:
        """URLs whose host is not ``allowed_host`` (data: and about: URLs never leave)."""
        bad = []
        for url in self.urls:
            parts = urlsplit(url)
            if parts.scheme in ("data", "about", "blob"):
                continue
            if parts.hostname != allowed_host:
                bad.append(url)
        return bad


def static_route_handler() -> Any:
    """A Playwright route handler serving app/web/static (and a blank harness page), no server."""
    media = {
        ".js": "text/javascript",
        ".css": "text/css",
        ".html": "text/html",
        ".svg": "image/svg+xml",
    }

    def handle(route: Any) -> None:
        path = urlsplit(route.request.url).path
        if path.startswith("/static/"):
            file = (STATIC_DIR / path.removeprefix("/static/")).resolve()
            if file.is_relative_to(STATIC_DIR) and file.is_file():
                route.fulfill(
                    body=file.read_bytes(), content_type=media.get(file.suffix, "text/plain")
                )
                return
        if path == "/harness.html":
            route.fulfill(
                body="<!doctype html><meta charset=utf-8><body></body>", content_type="text/html"
            )
            return
        route.fulfill(status=404, body="not found")

    return handle
