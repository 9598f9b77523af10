"""The demo chat page in headless Chromium against the real app over a scripted FakeEngine.

The app (routes, SSE, errors, auth) is real and runs in a uvicorn process; only the engine
is scripted, so replies can carry hostile HTML and errors can be produced on demand.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.browser import RequestLog, wait_until
from tests.support.server import ServerProcess, running_server
from tests.support.web_apps import ENGINE_FAILURE

pytestmark = pytest.mark.browser

FAKE_FACTORY = "tests.support.web_apps:fake_app"

HOSTILE_REPLY = (
    "Here: <script>window.__xss = 1</script> and "
    '<img src=x onerror="window.__xss = 2"> and '
    "[click me](javascript:window.__xss=3) and **bold** done."
)
CODE_REPLY = "Use this:\n\n```python\nprint('hi')\n```\n\nThat is all."


def serve_fake(env: dict[str, str], *, wait_ready: bool = True) -> Any:
    """The real app over the scripted engine of tests/support/web_apps.py, in uvicorn."""
    return running_server(env, factory=FAKE_FACTORY, wait_ready=wait_ready)


@pytest.fixture(scope="module")
def code_server() -> Iterator[ServerProcess]:
    with serve_fake({"WEBTEST_REPLY": CODE_REPLY, "WEBTEST_CTX": "256"}) as running:
        yield running


COUNTS_JS = """() => [document.querySelectorAll('.msg-assistant[data-state=done]').length,
                      document.querySelectorAll('.msg-error').length]"""


def health(server: ServerProcess) -> httpx.Response:
    return httpx.get(f"{server.base_url}/health", timeout=5)


def send(page: Any, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def send_and_wait(page: Any, text: str) -> None:
    """Send ``text`` and wait until its reply finished or a new error card is shown."""
    done, errors = page.evaluate(COUNTS_JS)
    send(page, text)
    wait_until(
        page,
        f"() => {{ const [d, e] = ({COUNTS_JS})(); return d > {done} || e > {errors}; }}",
    )


def error_card(page: Any) -> str:
    wait_until(page, "() => document.querySelector('.msg-error')")
    return str(page.locator(".msg-error").last.inner_text())


@pytest.mark.parametrize("bypass_csp", [False, True], ids=["with-csp", "renderer-alone"])
def test_html_in_a_reply_is_text_and_runs_nothing(browser: Any, bypass_csp: bool) -> None:
    """Safe with the page's CSP, and safe without it: the renderer never makes elements."""
    context = browser.new_context(bypass_csp=bypass_csp)
    log = RequestLog()
    context.on("request", log.record)
    with serve_fake({"WEBTEST_REPLY": HOSTILE_REPLY}) as server:
        page = context.new_page()
        page.goto(server.base_url)
        send_and_wait(page, "Say something dangerous.")
        page.wait_for_timeout(300)  # time for an onerror handler to fire, if one existed
        reply = page.locator(".msg-assistant .content")
        shown = reply.inner_text()
        assert "<script>window.__xss = 1</script>" in shown
        assert '<img src=x onerror="window.__xss = 2">' in shown
        assert "[click me](javascript:window.__xss=3)" in shown
        assert reply.locator("strong").inner_text() == "bold"
        assert reply.locator("script, img, a").count() == 0
        assert page.evaluate("window.__xss") is None
        assert not [url for url in log.urls if url.endswith("/x")]
    context.close()


def test_settings_are_remembered_and_sent(context: Any, code_server: ServerProcess) -> None:
    bodies: list[dict[str, Any]] = []
    context.on(
        "request", lambda r: r.url.endswith("/completions") and bodies.append(r.post_data_json)
    )
    page = context.new_page()
    page.goto(code_server.base_url)
    page.click("#open-settings")
    page.fill("#settings-dialog textarea[name=systemPrompt]", "Be brief.")
    page.fill("#settings-dialog input[name=temperature]", "0.3")
    page.fill("#settings-dialog input[name=maxTokens]", "3")
    page.click("#settings-dialog button[type=submit]")
    wait_until(page, "() => (localStorage.getItem('cria.settings') || '').includes('Be brief.')")
    page.reload()
    page.click("#open-settings")
    assert page.input_value("#settings-dialog textarea[name=systemPrompt]") == "Be brief."
    assert page.input_value("#settings-dialog input[name=maxTokens]") == "3"
    page.keyboard.press("Escape")  # closes the dialog without saving
    send_and_wait(page, "Hello")
    body = bodies[-1]
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 3
    meta = page.locator(".msg-assistant .meta").inner_text()
    assert meta.startswith("3 tokens · ")
    assert "max tokens" in meta


def test_copy_button_and_new_chat(context: Any, code_server: ServerProcess) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    bodies: list[dict[str, Any]] = []
    context.on(
        "request", lambda r: r.url.endswith("/completions") and bodies.append(r.post_data_json)
    )
    page = context.new_page()
    page.goto(code_server.base_url)
    send_and_wait(page, "Show me code")
    page.click(".code-block .copy-btn")
    wait_until(page, "() => document.querySelector('.copy-btn').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == "print('hi')"
    page.click("#new-chat")
    assert page.locator("#messages > li").count() == 0
    assert page.is_visible("#empty")
    # Shift+Enter adds a line; Enter sends both lines as one message.
    page.fill("#input", "Fresh start")
    page.press("#input", "Shift+Enter")
    page.keyboard.type("second line")
    page.press("#input", "Enter")
    wait_until(page, "() => document.querySelectorAll('.msg-assistant[data-state=done]').length")
    assert page.locator(".msg-user .bubble").inner_text() == "Fresh start\nsecond line"
    # The page's own default system prompt (the server adds none to OpenAI requests).
    assert bodies[-1]["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Fresh start\nsecond line"},
    ]


def test_context_too_long_shows_the_server_message_then_recovers(
    context: Any, code_server: ServerProcess
) -> None:
    page = context.new_page()
    page.goto(code_server.base_url)
    send(page, "word " * 300)
    card = error_card(page)
    assert "too long" in card
    assert "context per request is 256 tokens" in card  # the server's own message
    assert page.locator(".msg-assistant").count() == 0
    send_and_wait(page, "short question")
    assert page.locator(".msg-assistant[data-state=done]").count() == 1


def test_queue_full_shows_retry_after_then_try_again_works(context: Any) -> None:
    env = {"WEBTEST_SLOTS": "1", "WEBTEST_MAX_QUEUE": "0", "WEBTEST_TOKEN_DELAY_S": "0.05"}
    env["WEBTEST_REPLY"] = " ".join(["word"] * 200)
    with serve_fake(env) as server:
        page = context.new_page()
        page.goto(server.base_url)
        body = {"messages": [{"role": "user", "content": "hold"}], "stream": True}
        url = f"{server.base_url}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, timeout=30) as held:
            # Once a token arrives, the only slot is generating for someone else. (Keep the
            # line iterator alive: closing it would close the connection.)
            lines = held.iter_lines()
            while '"content":"word' not in next(lines):
                pass
            assert health(server).json()["slots_busy"] == 1
            send(page, "Am I in?")
            card = error_card(page)
        assert "The server is busy" in card
        assert "Try again in 1 s" in card
        wait_until(page, "() => !document.getElementById('send').hidden")
        page.click(".msg-error button:has-text('Try again')")
        wait_until(
            page, "() => document.querySelector('.msg-assistant')?.dataset.state === 'streaming'"
        )
        page.click("#stop")
        wait_until(
            page, "() => document.querySelector('.msg-assistant')?.dataset.state === 'stopped'"
        )


def test_loading_server_says_so(context: Any) -> None:
    env = {"WEBTEST_START_DELAY_S": "600"}
    with serve_fake(env, wait_ready=False) as server:
        assert health(server).status_code == 503
        page = context.new_page()
        page.goto(server.base_url)
        # The page's first markup already says "loading" (while it connects): wait for the
        # health check's own label, then the model name it sets in the same step.
        wait_until(
            page,
            "() => document.getElementById('status-label').textContent === 'Loading the model…'",
        )
        assert page.get_attribute("#status-dot", "data-state") == "loading"
        assert page.text_content("#model-name") == "Model loading…"
        send(page, "Hello?")
        assert "The model is still loading" in error_card(page)


def test_server_gone_shows_a_network_error_and_the_page_stays_usable(context: Any) -> None:
    with serve_fake({}) as server:
        page = context.new_page()
        page.goto(server.base_url)
        wait_until(page, "() => document.getElementById('status-dot').dataset.state === 'ok'")
        server.process.send_signal(signal.SIGINT)
        server.process.wait(timeout=15)
        send(page, "Anyone there?")
        assert "Can't reach the server" in error_card(page)
        page.fill("#input", "typing still works")
        assert page.is_enabled("#send")
        settings = json.loads(
            page.evaluate("localStorage.getItem('cria.settings') || 'null'") or "null"
        )
        assert settings is None  # nothing was saved behind the user's back


def test_error_event_mid_stream_keeps_the_text_and_says_what_happened(context: Any) -> None:
    env = {"WEBTEST_FAIL_AFTER": "4", "WEBTEST_REPLY": "one two three four five six seven"}
    with serve_fake(env) as server:
        page = context.new_page()
        page.goto(server.base_url)
        send(page, "Go")
        card = error_card(page)
        assert "The reply stopped with an error" in card
        assert ENGINE_FAILURE in card
        reply = page.locator(".msg-assistant")
        assert reply.get_attribute("data-state") == "error"
        assert reply.locator(".content").inner_text() == "one two three four"
        assert reply.locator(".meta").inner_text() == "The reply was cut short."
        wait_until(page, "() => !document.getElementById('send').hidden")
        assert health(server).json()["slots_busy"] == 0
