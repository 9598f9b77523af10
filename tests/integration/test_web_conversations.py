"""Conversations in the page, in real Chromium, against the real app over a FakeEngine.

The server records every chat request body (tests/support/web_apps.py), so the history
each action sends is checked where it matters: on the server side.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import chromium_context, wait_until
from tests.support.chat_page import (
    guard_localhost,
    open_page,
    recorded,
    screenshots,
    send,
    send_and_wait,
    turns,
    wait_done,
    wait_stored,
)
from tests.support.server import ServerProcess, running_server

pytestmark = pytest.mark.browser

REPLY = "Sure, here it is."
LAST_DONE = "() => document.querySelector('#messages > li:last-child')?.dataset.state === 'done'"
ASSISTANTS = "() => document.querySelectorAll('.msg-assistant').length"
READY = "() => document.body.dataset.ready === 'true'"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    env = {"WEBTEST_REPLY": REPLY, "WEBTEST_CTX": "2048", "WEBTEST_TOKEN_DELAY_S": "0.005"}
    with running_server(env, factory="tests.support.web_apps:fake_app") as running:
        yield running


def sidebar_titles(page: Any) -> list[str]:
    return [str(t) for t in page.locator("#conversation-list .conv-title").all_inner_texts()]


def bubbles(page: Any) -> list[str]:
    return [str(t) for t in page.locator("#messages .msg-user .bubble").all_inner_texts()]


def test_a_conversation_survives_a_reload_and_a_browser_restart(
    server: ServerProcess, tmp_path: Path
) -> None:
    profile = tmp_path / "profile"
    with chromium_context(profile) as context:
        foreign = guard_localhost(context)
        page = open_page(context, server.base_url)
        send_and_wait(page, "Remember the llama")
        send_and_wait(page, "And the alpaca")
        page.reload()
        wait_until(page, READY)
        assert bubbles(page) == ["Remember the llama", "And the alpaca"]
        assert page.locator(".msg-assistant[data-state=done]").count() == 2
        assert foreign == []
    with chromium_context(profile) as context:  # the same profile: a browser restart
        page = open_page(context, server.base_url)
        assert bubbles(page) == ["Remember the llama", "And the alpaca"]
        assert sidebar_titles(page) == ["Remember the llama"]
        assert REPLY in page.locator(".msg-assistant .content").last.inner_text()
        send_and_wait(page, "Third turn")
    assert turns(recorded(server)[-1]) == [
        ("user", "Remember the llama"),
        ("assistant", REPLY),
        ("user", "And the alpaca"),
        ("assistant", REPLY),
        ("user", "Third turn"),
    ]


def test_two_conversations_keep_their_own_histories(context: Any, server: ServerProcess) -> None:
    page = open_page(context, server.base_url)
    send_and_wait(page, "About cats")
    page.click("#new-chat")
    assert page.locator("#messages > li").count() == 0
    send_and_wait(page, "About dogs")
    assert sidebar_titles(page) == ["About dogs", "About cats"]
    page.click("#conversation-list .conv-open:has-text('About cats')")
    assert bubbles(page) == ["About cats"]
    send_and_wait(page, "More cats")
    assert turns(recorded(server)[-1]) == [
        ("user", "About cats"),
        ("assistant", REPLY),
        ("user", "More cats"),
    ]
    page.click("#conversation-list .conv-open:has-text('About dogs')")
    send_and_wait(page, "More dogs")
    assert turns(recorded(server)[-1]) == [
        ("user", "About dogs"),
        ("assistant", REPLY),
        ("user", "More dogs"),
    ]
    # Rename, then search by title.
    page.click("#conversation-list li:has-text('About dogs') [data-action=rename]")
    page.fill("#conversation-list .conv-rename", "Canine notes")
    page.press("#conversation-list .conv-rename", "Enter")
    page.reload()
    wait_until(page, READY)
    assert sidebar_titles(page) == ["Canine notes", "About cats"]
    assert bubbles(page) == ["About dogs", "More dogs"]  # the one open last
    page.fill("#search", "cat")
    assert sidebar_titles(page) == ["About cats"]
    page.fill("#search", "zebra")
    assert sidebar_titles(page) == []
    assert page.is_visible("#conversation-empty")


def test_export_delete_import_restores_both(
    context: Any, server: ServerProcess, tmp_path: Path
) -> None:
    page = open_page(context, server.base_url)
    send_and_wait(page, "First topic")
    page.click("#new-chat")
    send_and_wait(page, "Second topic")
    with page.expect_download() as download:
        page.click("#export-all")
    exported = tmp_path / "export.json"
    download.value.save_as(exported)
    document = json.loads(exported.read_text())
    assert document["format"] == "cria-chat"
    assert sorted(c["title"] for c in document["conversations"]) == ["First topic", "Second topic"]
    with page.expect_download() as one:
        page.click("#conversation-list li:has-text('First topic') [data-action=export]")
    single = json.loads(Path(one.value.path()).read_text())
    assert [c["title"] for c in single["conversations"]] == ["First topic"]
    for title in ("First topic", "Second topic"):
        page.click(f"#conversation-list li:has-text('{title}') [data-action=delete]")
        page.click("#confirm-dialog button[type=submit]")
        wait_until(
            page,
            "(t) => !document.querySelector('#conversation-list').textContent.includes(t)",
            arg=title,
        )
    page.reload()
    wait_until(page, READY)
    assert sidebar_titles(page) == []
    page.set_input_files("#import-file", str(exported))
    wait_until(page, "() => document.querySelectorAll('#conversation-list .conv').length === 2")
    # The banner follows the list's render (after the store's write resolves): wait for it.
    wait_until(
        page,
        "(t) => document.querySelector('#banner-text').textContent.includes(t)",
        arg="Imported 2 conversations",
    )
    assert not page.is_hidden("#banner")
    page.reload()
    wait_until(page, READY)
    assert sorted(sidebar_titles(page)) == ["First topic", "Second topic"]
    page.click("#conversation-list .conv-open:has-text('First topic')")
    assert bubbles(page) == ["First topic"]
    assert page.locator(".msg-assistant .content").inner_text() == REPLY


def test_regenerate_and_edit_send_the_right_history(context: Any, server: ServerProcess) -> None:
    page = open_page(context, server.base_url)
    send_and_wait(page, "one")
    send_and_wait(page, "two")
    send_and_wait(page, "three")
    before = len(recorded(server))
    # Regenerate the last answer: the same history, without the old answer.
    page.click(".msg-assistant:last-child [data-action=regenerate]")
    wait_until(page, LAST_DONE)
    wait_done(page, 3)
    bodies = recorded(server)
    assert len(bodies) == before + 1
    assert turns(bodies[-1]) == [
        ("user", "one"),
        ("assistant", REPLY),
        ("user", "two"),
        ("assistant", REPLY),
        ("user", "three"),
    ]
    assert page.locator(".msg-assistant").count() == 3
    # Edit the second message: the later turns are replaced.
    page.locator(".msg-user").nth(1).hover()
    page.locator(".msg-user").nth(1).locator("[data-action=edit]").click()
    page.fill(".edit-input", "two, edited")
    page.press(".edit-input", "Enter")
    wait_until(page, LAST_DONE)
    assert page.evaluate(ASSISTANTS) == 2
    assert turns(recorded(server)[-1]) == [
        ("user", "one"),
        ("assistant", REPLY),
        ("user", "two, edited"),
    ]
    assert bubbles(page) == ["one", "two, edited"]
    page.reload()
    wait_until(page, READY)
    assert bubbles(page) == ["one", "two, edited"]
    # Esc on an edit cancels it and sends nothing.
    count = len(recorded(server))
    page.locator(".msg-user").nth(0).locator("[data-action=edit]").click()
    page.press(".edit-input", "Escape")
    assert page.locator(".edit-input").count() == 0
    assert len(recorded(server)) == count
    screenshots(page, "conversation")


def test_stop_keeps_the_partial_answer_after_a_reload(context: Any) -> None:
    env = {"WEBTEST_REPLY": " ".join(f"w{i}" for i in range(300)), "WEBTEST_TOKEN_DELAY_S": "0.05"}
    with running_server(env, factory="tests.support.web_apps:fake_app") as slow:
        page = open_page(context, slow.base_url)
        send(page, "Go on")
        wait_until(
            page,
            "() => document.querySelector('.msg-assistant .content').textContent.includes('w3')",
        )
        page.keyboard.press("Escape")
        wait_until(
            page, "() => document.querySelector('.msg-assistant')?.dataset.state === 'stopped'"
        )
        partial = page.locator(".msg-assistant .content").inner_text()
        wait_stored(page, lambda rs: rs and rs[0]["messages"][-1].get("state") == "stopped")
        page.reload()
        wait_until(page, READY)
        assert page.locator(".msg-assistant").get_attribute("data-state") == "stopped"
        assert page.locator(".msg-assistant .content").inner_text() == partial
        assert page.locator(".msg-assistant .meta").inner_text().startswith("Stopped")
        # Deleting a conversation while its reply streams stops it, and it stays deleted.
        page.click("#new-chat")
        send(page, "Doomed")
        wait_until(
            page, "() => document.querySelector('.msg-assistant')?.dataset.state === 'streaming'"
        )
        page.click("#conversation-list li:has-text('Doomed') [data-action=delete]")
        page.click("#confirm-dialog button[type=submit]")
        wait_until(page, "() => !document.body.classList.contains('busy')")
        wait_stored(page, lambda rs: len(rs) == 1)
        page.reload()
        wait_until(page, READY)
        assert sidebar_titles(page) == ["Go on"]


def test_a_storage_failure_is_shown(context: Any, server: ServerProcess) -> None:
    context.add_init_script(
        "IDBObjectStore.prototype.put = function () {"
        " throw new DOMException('The quota has been exceeded.', 'QuotaExceededError'); };"
    )
    page = open_page(context, server.base_url)
    send_and_wait(page, "Will this be saved?")
    wait_until(page, "() => !document.getElementById('banner').hidden")
    banner = page.inner_text("#banner")
    assert "storage for this page is full" in banner
    assert page.get_attribute("#banner", "role") == "alert"


def set_system_prompt(page: Any, text: str) -> None:
    page.click("#open-settings")
    page.fill("#settings-dialog textarea[name=systemPrompt]", text)
    page.click("#settings-dialog button[type=submit]")


def test_settings_are_kept_per_conversation(context: Any, server: ServerProcess) -> None:
    page = open_page(context, server.base_url)
    set_system_prompt(page, "You are A.")
    send_and_wait(page, "in A")
    page.click("#new-chat")  # a new conversation starts from the last settings saved
    set_system_prompt(page, "You are B.")
    send_and_wait(page, "in B")
    page.click("#conversation-list .conv-open:has-text('in A')")
    send_and_wait(page, "A again")
    system = recorded(server)[-1]["messages"][0]
    assert system == {"role": "system", "content": "You are A."}
    page.reload()
    wait_until(page, READY)
    page.click("#conversation-list .conv-open:has-text('in B')")
    send_and_wait(page, "B again")
    assert recorded(server)[-1]["messages"][0]["content"] == "You are B."
