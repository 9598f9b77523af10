"""Helpers for driving the chat page in the browser tests: open it, send, wait for replies,
read what the server recorded, keep every request on 127.0.0.1, save screenshots."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support.browser import ARTIFACTS_DIR, DESKTOP, PHONE, wait_until
from tests.support.server import ServerProcess

RECORDED_PATH = "/_test/requests"
DONE_JS = "() => document.querySelectorAll('.msg-assistant[data-state=done]').length"


def open_page(context: Any, url: str) -> Any:
    """A new tab on the page, once its saved conversations are loaded."""
    page = context.new_page()
    page.goto(url)
    wait_until(page, "() => document.body.dataset.ready === 'true'")
    return page


STORED_JS = """() => new Promise((resolve, reject) => {
  const open = indexedDB.open('cria-chat');
  open.onerror = () => reject(open.error);
  open.onsuccess = () => {
    const request = open.result.transaction('conversations').objectStore('conversations').getAll();
    request.onsuccess = () => { open.result.close(); resolve(request.result); };
    request.onerror = () => reject(request.error);
  };
})"""


def stored(page: Any) -> list[dict[str, Any]]:
    """The conversations in the page's IndexedDB right now."""
    records: list[dict[str, Any]] = page.evaluate(STORED_JS)
    return records


def wait_stored(page: Any, predicate: Any, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Wait until ``predicate(stored conversations)`` holds (a save finished)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = stored(page)
        if predicate(records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"the store never matched; it holds {records}")
        time.sleep(0.05)


def send(page: Any, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def wait_done(page: Any, count: int, timeout_s: float = 30.0) -> None:
    """Wait until ``count`` replies on screen are done; fail at once on an error card."""
    wait_until(
        page,
        "(n) => document.querySelectorAll('.msg-assistant[data-state=done]').length >= n"
        " || document.querySelector('.msg-error')",
        timeout_s=timeout_s,
        arg=count,
    )
    assert page.locator(".msg-error").all_inner_texts() == []


def send_and_wait(page: Any, text: str) -> None:
    done = int(page.evaluate(DONE_JS))
    send(page, text)
    wait_done(page, done + 1)


def recorded(server: ServerProcess) -> list[Any]:
    """Every chat request body the server received, oldest first."""
    bodies: list[Any] = httpx.get(f"{server.base_url}{RECORDED_PATH}", timeout=5).json()
    return bodies


def turns(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, content) of a request's messages, without the system prompt."""
    return [(m["role"], m["content"]) for m in body["messages"] if m["role"] != "system"]


def guard_localhost(context: Any) -> list[str]:
    """Intercept every request of ``context``: anything not for 127.0.0.1 is aborted and
    listed in the returned list (which a test asserts empty at its end)."""
    foreign: list[str] = []

    def handle(route: Any) -> None:
        parts = urlsplit(route.request.url)
        if parts.scheme in ("data", "blob") or parts.hostname == "127.0.0.1":
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    context.route("**/*", handle)
    return foreign


def screenshots(page: Any, name: str, *, phone: bool = True) -> list[Path]:
    """Save the page at desktop (and phone) width under artifacts/; prints the paths."""
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    paths = [ARTIFACTS_DIR / f"web-{name}-desktop.png"]
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=str(paths[0]))
    if phone:
        paths.append(ARTIFACTS_DIR / f"web-{name}-phone.png")
        page.set_viewport_size(PHONE)
        page.wait_for_timeout(100)
        page.screenshot(path=str(paths[1]))
        page.set_viewport_size(DESKTOP)
    for path in paths:
        print(f"screenshot: {path}")  # noqa: T201  (the test output names the artifacts)
    return paths
