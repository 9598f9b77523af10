"""The page against a scripted OpenAI-style server (tests/support/scripted_chat.py).

The scripted server sends what the real one does not yet: reasoning deltas, tool-call
fragments, several models with a load state, 429/503 with Retry-After. Every request of
every test is intercepted: anything not for 127.0.0.1 is aborted and fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import ARTIFACTS_DIR, PHONE, PageWatch, wait_until
from tests.support.chat_page import (
    guard_localhost,
    open_page,
    recorded,
    screenshots,
    send,
    send_and_wait,
    turns,
)
from tests.support.server import ServerProcess, running_server

pytestmark = pytest.mark.browser

READY = "() => document.body.dataset.ready === 'true'"
MODEL_OPTIONS = "() => [...document.querySelectorAll('#model-select option')].map(o => o.value)"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    factory = "tests.support.scripted_chat:scripted_app"
    with running_server({}, factory=factory) as running:
        yield running


@pytest.fixture
def page(context: Any, server: ServerProcess) -> Iterator[Any]:
    """The page in a fresh profile, every request checked to stay on 127.0.0.1."""
    foreign = guard_localhost(context)
    page = open_page(context, server.base_url)
    watch = PageWatch(page)
    yield page
    assert foreign == []
    assert [e for e in watch.errors if "status of 429" not in e and "status of 503" not in e] == []


def test_model_picker_lists_served_models_and_the_request_carries_the_choice(
    page: Any, server: ServerProcess
) -> None:
    wait_until(page, f"() => ({MODEL_OPTIONS})().length === 3")
    assert page.evaluate(MODEL_OPTIONS) == ["alpha-7b", "beta-1b", "gamma-3b"]
    labels = page.locator("#model-select option").all_inner_texts()
    assert labels == ["alpha-7b · loaded", "beta-1b · not loaded", "gamma-3b"]
    assert page.input_value("#model-select") == "alpha-7b"
    send_and_wait(page, "first, with the default")
    assert recorded(server)[-1]["model"] == "alpha-7b"
    page.select_option("#model-select", "gamma-3b")
    send_and_wait(page, "second, with gamma")
    assert recorded(server)[-1]["model"] == "gamma-3b"
    # A new conversation starts on the model picked last; picking another there leaves the
    # first conversation's choice alone.
    page.click("#new-chat")
    assert page.input_value("#model-select") == "gamma-3b"
    page.select_option("#model-select", "beta-1b")
    send(page, "third, slow, with beta")  # the first token comes after 0.2 s
    # beta-1b is listed as not loaded: the wait says the model is loading.
    wait_until(
        page, "() => document.querySelector('.wait-label')?.textContent === 'Loading beta-1b…'"
    )
    page.keyboard.press("Escape")
    wait_until(page, "() => document.querySelector('.msg-assistant').dataset.state === 'stopped'")
    assert recorded(server)[-1]["model"] == "beta-1b"
    page.click("#conversation-list .conv-open:has-text('first, with the default')")
    assert page.input_value("#model-select") == "gamma-3b"
    page.reload()
    wait_until(page, READY)
    wait_until(page, f"() => ({MODEL_OPTIONS})().length === 3")
    assert page.input_value("#model-select") == "gamma-3b"
    send_and_wait(page, "fourth, after a reload")
    body = recorded(server)[-1]
    assert body["model"] == "gamma-3b"
    assert [c for r, c in turns(body) if r == "user"] == [
        "first, with the default",
        "second, with gamma",
        "fourth, after a reload",
    ]


@pytest.mark.parametrize("keyword", ["think", "think-alt"])
def test_a_reasoning_reply_renders_collapsed_above_the_answer(page: Any, keyword: str) -> None:
    send(page, f"Please {keyword} about it")
    wait_until(page, "() => document.querySelector('.msg-assistant').dataset.state === 'done'")
    reply = page.locator(".msg-assistant")
    details = reply.locator("details.reasoning")
    assert details.is_visible()
    assert details.get_attribute("open") is None  # collapsed
    assert not reply.locator(".reasoning-text").is_visible()
    assert details.locator("summary").inner_text().startswith("Thought for 8 tokens")
    assert reply.locator(".content").inner_text() == "The answer is 42."
    # The reasoning sits above the answer and opens on a click.
    boxes = [reply.locator(s).bounding_box() for s in ("details.reasoning", ".content")]
    assert boxes[0]["y"] < boxes[1]["y"]
    details.locator("summary").click()
    assert (
        reply.locator(".reasoning-text").inner_text() == "The user asks for the answer. It is 42."
    )
    # Reasoning is kept with the message but not sent back to the model.
    send_and_wait(page, "thanks")
    page.reload()
    wait_until(page, READY)
    assert page.locator(".msg-assistant").first.locator("details.reasoning").is_visible()
    if keyword == "think":
        screenshots(page, "reasoning")


def test_reasoning_streams_with_a_running_token_count(page: Any) -> None:
    page.evaluate(
        """() => { window.labels = [];
        new MutationObserver(() => {
          const label = document.querySelector('.msg-assistant .reasoning-label');
          if (label && !label.closest('[hidden]')) window.labels.push(label.textContent);
        }).observe(document.getElementById('messages'),
                   {subtree: true, childList: true, characterData: true}); }"""
    )
    send(page, "think slowly")  # "slow" in the text: 0.2 s between chunks
    wait_until(page, "() => window.labels.some(l => l.startsWith('Thought'))", timeout_s=30)
    streaming = [label for label in page.evaluate("window.labels") if label.startswith("Thinking")]
    assert len(set(streaming)) >= 3, streaming
    assert page.locator("details.reasoning").get_attribute("open") is None
    page.keyboard.press("Escape")


def test_tool_calls_show_as_blocks(page: Any) -> None:
    send(page, "use a tool please")
    wait_until(page, "() => document.querySelector('.msg-assistant').dataset.state === 'done'")
    block = page.locator(".msg-assistant .tool-call")
    assert block.count() == 1
    assert block.locator(".code-lang").inner_text() == "tool call · get_weather"
    assert block.locator("code").inner_text() == '{\n  "city": "Paris"\n}'


def test_copy_buttons_on_every_code_block_and_message(context: Any, page: Any) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    send_and_wait(page, "show me code")
    buttons = page.locator(".msg-assistant .code-block .copy-btn")
    assert buttons.count() == 2
    buttons.nth(1).click()
    wait_until(page, "() => document.querySelectorAll('.copy-btn')[1].textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == "echo two"
    page.locator(".msg-assistant [data-action=copy]").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("Two snippets:\n\n```python\nprint('one')\n```")
    page.locator(".msg-user [data-action=copy]").click()
    wait_until(page, "() => navigator.clipboard.readText().then(t => t === 'show me code')")


@pytest.mark.parametrize(
    ("text", "title", "detail"),
    [
        ("busy now?", "The server is busy", "Try again in 7 s."),
        ("still loading?", "The model is still loading", "Try again in 30 s."),
    ],
)
def test_429_and_503_say_when_to_try_again(page: Any, text: str, title: str, detail: str) -> None:
    send(page, text)
    wait_until(page, "() => document.querySelector('.msg-error')")
    card = page.locator(".msg-error").inner_text()
    assert title in card
    assert detail in card
    assert page.locator(".msg-user.msg-failed").count() == 1


def test_phone_width_drawer_and_main_states(context: Any, server: ServerProcess) -> None:
    foreign = guard_localhost(context)
    page = context.new_page()
    page.set_viewport_size(PHONE)
    page.goto(server.base_url)
    wait_until(page, READY)
    assert not page.is_visible("#sidebar")  # a drawer, closed on a phone
    send_and_wait(page, "think first")
    send_and_wait(page, "now show me code")
    assert page.locator("#composer").bounding_box()["width"] <= PHONE["width"]
    page.click("#toggle-sidebar")
    assert page.is_visible("#sidebar")
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    drawer = ARTIFACTS_DIR / "web-drawer-phone.png"
    page.screenshot(path=str(drawer))
    print(f"screenshot: {drawer}")  # noqa: T201
    page.click("#conversation-list .conv-open")
    assert not page.is_visible("#sidebar")
    assert foreign == []
