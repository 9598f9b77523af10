"""The demo chat page in a real headless Chromium against a real server with the real model.

Each server is a uvicorn process on 127.0.0.1 serving SmolLM2-135M (the default model).
A finished exchange is saved as screenshots under artifacts/ (desktop and phone widths).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import (
    ARTIFACTS_DIR,
    PHONE,
    PageWatch,
    RequestLog,
    wait_until,
)
from tests.support.server import ServerProcess, real_model_env, running_server

pytestmark = pytest.mark.browser

API_KEY = "demo-key-3f9a"
FIGURES_RE = re.compile(r"(\d+) tokens? · ([\d.]+) tok/s")


def health(server: ServerProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.base_url}/health", timeout=5).json()
    return body


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[ServerProcess]:
    with running_server(real_model_env(model_path, parallel="2")) as running:
        yield running


def preset(context: Any, *, max_tokens: int, temperature: float = 0.0) -> None:
    """Start the page with these settings in localStorage (as the Settings dialog saves them)."""
    settings = json.dumps({"systemPrompt": "", "temperature": temperature, "maxTokens": max_tokens})
    context.add_init_script(f"localStorage.setItem('cria.settings', {json.dumps(settings)})")


def send(page: Any, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def wait_for_replies(page: Any, count: int) -> None:
    """Wait until ``count`` replies have finished (or an error card shows up)."""
    wait_until(
        page,
        "(n) => document.querySelectorAll('.msg-assistant[data-state=done]').length >= n"
        " || document.querySelector('.msg-error')",
        timeout_s=180,
        arg=count,
    )
    errors = page.locator(".msg-error").all_inner_texts()
    assert errors == []


def last_reply(page: Any) -> Any:
    return page.locator(".msg-assistant").last


def expected_placement(offload: dict[str, Any]) -> tuple[str, str]:
    """The header chip and the "Runs on" line for the offload state the server reports."""
    gpu, total = offload["gpu_layers"], offload["total_layers"]
    device = f" ({offload['device']})" if offload["device"] else ""
    if offload["backend"] != "cpu" and gpu > 0:
        name = offload["backend"].upper()
        return f"{name} {gpu}/{total}", f"{name}{device}: {gpu}/{total} layers on the GPU"
    return "CPU", f"CPU only{device}"


def test_page_loads_with_every_request_to_localhost(context: Any, server: ServerProcess) -> None:
    log = RequestLog()
    context.on("request", log.record)
    page = context.new_page()
    watch = PageWatch(page)
    page.goto(server.base_url)
    page.wait_for_selector("#status-dot[data-state='ok']")
    wait_until(page, "() => document.querySelector('#model-tags').childElementCount > 0")
    wait_until(page, "() => document.getElementById('model-select').value")
    assert page.text_content("#model-name") == "SmolLM2-135M-Instruct.Q4_1"
    # Where the model runs is a fact of the host (CPU model, GPU build): the page must show
    # what the server reports, whatever that is.
    offload = httpx.get(f"{server.base_url}/model-card", timeout=5).json()["offload"]
    short, long = expected_placement(offload)
    assert page.locator("#model-tags .tag").all_text_contents() == ["Q4_1", "1,024 ctx", short]
    page.click("#model-button")
    facts = page.inner_text("#model-facts")
    assert "135M" in facts
    assert long in facts
    assert offload["reason"] in facts
    paths = {url.removeprefix(server.base_url) for url in log.urls}
    assert {
        "/",
        "/static/app.js",
        "/static/style.css",
        "/model-card",
        "/health",
        "/v1/models",
    } <= paths
    # The model picker lists the one served model (disabled: there is nothing to choose).
    assert page.input_value("#model-select") == "SmolLM2-135M-Instruct.Q4_1"
    assert log.foreign() == []
    assert watch.errors == []


def test_reply_streams_then_shows_tokens_per_second(context: Any, server: ServerProcess) -> None:
    preset(context, max_tokens=32)
    bodies: list[dict[str, Any]] = []
    context.on(
        "request",
        lambda r: r.url.endswith("/v1/chat/completions") and bodies.append(r.post_data_json),
    )
    page = context.new_page()
    watch = PageWatch(page)
    page.goto(server.base_url)
    # Record the reply's text every time the DOM changes while it is still streaming.
    page.evaluate(
        """() => { window.partials = [];
        new MutationObserver(() => {
          const msg = [...document.querySelectorAll('.msg-assistant')].pop();
          if (msg && msg.dataset.state === 'streaming')
            window.partials.push(msg.querySelector('.content').textContent);
        }).observe(document.getElementById('messages'),
                   {subtree: true, childList: true, characterData: true, attributes: true}); }"""
    )
    wait_until(page, "() => document.getElementById('model-select').value")  # /v1/models read
    send(page, "Write a short poem about the sea.")
    wait_for_replies(page, 1)
    final = last_reply(page).locator(".content").inner_text()
    partials = [p for p in page.evaluate("window.partials") if p and len(p) < len(final)]
    assert len(set(partials)) >= 2, partials
    figures = FIGURES_RE.search(last_reply(page).locator(".meta").inner_text())
    assert figures is not None
    assert 0 < int(figures.group(1)) <= 32
    assert float(figures.group(2)) > 0
    # A second turn sends the whole conversation.
    send(page, "Now make it rhyme.")
    wait_for_replies(page, 2)
    roles = [m["role"] for m in bodies[1]["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert bodies[1]["messages"][1]["content"].strip()
    assert bodies[0]["stream"] is True
    assert bodies[0]["stream_options"] == {"include_usage": True}
    assert bodies[0]["max_tokens"] == 32
    assert bodies[0]["model"] == "SmolLM2-135M-Instruct.Q4_1"  # the picker's model, accepted
    assert watch.errors == []
    save_screenshots(page, "exchange")


def save_screenshots(page: Any, name: str) -> None:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / f"web-{name}-desktop.png"))
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(100)
    page.screenshot(path=str(ARTIFACTS_DIR / f"web-{name}-phone.png"))


def busy_slots(server: ServerProcess) -> int:
    body = health(server)
    return int(body["slots_busy"]) + int(body["queue_length"])


def generated_tokens(server: ServerProcess) -> int:
    text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("cria_generated_tokens_total "):
            return int(float(line.split()[1]))
    raise AssertionError("cria_generated_tokens_total is not in /metrics")


ENDLESS_TOKENS = 900  # with ignore_eos the reply runs to exactly this many tokens


def endless_replies(sent: list[dict[str, Any]]) -> Any:
    """A route handler: the page's chat request with ``ignore_eos`` and a long
    ``max_tokens`` (the page has no such settings), so that its reply cannot end by itself
    before ENDLESS_TOKENS tokens; each body sent is added to ``sent``."""

    def handle(route: Any) -> None:
        body = json.loads(route.request.post_data or "{}")
        body.update(ignore_eos=True, max_tokens=ENDLESS_TOKENS)
        sent.append(body)
        route.continue_(post_data=json.dumps(body))

    return handle


def test_stop_ends_the_stream_and_frees_the_slot(context: Any, server: ServerProcess) -> None:
    preset(context, max_tokens=1000, temperature=0.7)
    page = context.new_page()
    sent: list[dict[str, Any]] = []
    page.route("**/v1/chat/completions", endless_replies(sent))
    page.goto(server.base_url)
    before = generated_tokens(server)
    send(page, "Count from 1 to 500, one number per line.")
    page.wait_for_selector(".msg-assistant[data-state='streaming']", timeout=180_000)
    wait_until(
        page,
        "() => document.querySelector('.msg-assistant .content').textContent.length > 10",
        timeout_s=120,
    )
    assert busy_slots(server) == 1  # the reply is being generated right now
    assert page.is_visible("#stop")
    page.keyboard.press("Escape")
    stopped_at = time.monotonic()
    page.wait_for_selector(".msg-assistant[data-state='stopped']", timeout=5_000)
    stopped_text = last_reply(page).locator(".content").inner_text()
    assert stopped_text
    assert last_reply(page).locator(".meta").inner_text().startswith("Stopped")
    deadline = stopped_at + 10  # the engine frees the slot at its next step
    while busy_slots(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert busy_slots(server) == 0
    freed_s = time.monotonic() - stopped_at
    # An abort, not an early end: a reply that ignores EOS ends only at ENDLESS_TOKENS; this
    # one ended far short of that, and its slot was free a moment after Stop.
    made = generated_tokens(server) - before
    assert [body["ignore_eos"] for body in sent] == [True]
    assert 0 < made < ENDLESS_TOKENS // 2, made
    assert freed_s < 3.0, freed_s
    # The text stays as it was and the page is ready for the next message.
    page.wait_for_timeout(300)
    assert last_reply(page).locator(".content").inner_text() == stopped_text
    assert page.is_visible("#send")
    page.fill("#input", "next")
    assert page.is_enabled("#send")


def test_api_key_server_asks_for_the_key_then_works(context: Any, model_path: Path) -> None:
    preset(context, max_tokens=16)
    with running_server(real_model_env(model_path, parallel="2", api_key=API_KEY)) as keyed:
        assert httpx.post(f"{keyed.base_url}/v1/chat/completions", json={}).status_code == 401
        auth_headers: list[str | None] = []
        context.on(
            "request",
            lambda r: (
                r.url.endswith("/completions")
                and auth_headers.append(r.headers.get("authorization"))
            ),
        )
        page = context.new_page()
        page.goto(keyed.base_url)
        send(page, "Say hello.")
        dialog = page.locator("#key-dialog")
        dialog.wait_for(state="visible")
        page.fill("#api-key-input", "not-the-key")
        page.press("#api-key-input", "Enter")
        wait_until(
            page,
            "() => document.getElementById('key-dialog-note').textContent.includes('not accepted')",
        )
        dialog.wait_for(state="visible")
        page.fill("#api-key-input", API_KEY)
        page.click("#key-dialog button[type=submit]")
        wait_for_replies(page, 1)
        assert last_reply(page).locator(".content").inner_text().strip()
        assert page.evaluate("localStorage.getItem('cria.apiKey')") == API_KEY
        assert auth_headers == [None, "Bearer not-the-key", f"Bearer {API_KEY}"]
        # After a reload the stored key is used at once: no dialog.
        page.reload()
        send(page, "Say goodbye.")
        wait_for_replies(page, 1)
        assert not dialog.is_visible()
        assert auth_headers[-1] == f"Bearer {API_KEY}"
