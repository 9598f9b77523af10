"""The page's pure modules (conversations, models, stream deltas, error words), run in a
real headless Chromium with no server: Playwright serves app/web/static itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import chromium_context, static_route_handler

pytestmark = pytest.mark.browser

ORIGIN = "http://cria.test"


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with chromium_context() as context:
        context.route(f"{ORIGIN}/**", static_route_handler())
        page = context.new_page()
        page.goto(f"{ORIGIN}/harness.html")
        page.add_script_tag(
            type="module",
            content="import * as conv from '/static/conversations.js';"
            "import * as models from '/static/models.js';"
            "import * as api from '/static/api.js';"
            "import * as fmt from '/static/format.js';"
            "import * as msg from '/static/messages.js';"
            "Object.assign(window, {conv, models, api, fmt, msg});",
        )
        page.wait_for_function("window.conv && window.models && window.api && window.msg")
        yield page


def call(page: Any, expression: str, *args: Any) -> Any:
    return page.evaluate(f"(args) => {expression}(...args)", list(args))


def test_titles_are_one_short_line(page: Any) -> None:
    assert call(page, "conv.titleFrom", "  Hello\n  world ") == "Hello"
    assert call(page, "conv.titleFrom", "") == "New chat"
    long = call(page, "conv.titleFrom", "word " * 40)
    assert len(long) <= 60
    assert long.endswith("…")


def test_request_leaves_out_failed_turns_and_names_the_model(page: Any) -> None:
    conversation = {
        "settings": {"systemPrompt": "Be brief.", "temperature": 0.5, "maxTokens": None},
        "messages": [
            {"role": "user", "content": "lost", "failed": True},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello", "reasoning": "secret", "state": "done"},
            {"role": "user", "content": "again"},
        ],
    }
    body = call(page, "conv.requestBody", conversation, "alpha")
    assert body["model"] == "alpha"
    assert "max_tokens" not in body
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    assert "model" not in call(page, "conv.requestBody", conversation, "")


def test_import_checks_every_field(page: Any) -> None:
    hostile = {
        "format": "cria-chat",
        "conversations": [
            {
                "id": "abc-1",
                "title": "Kept",
                "settings": {"temperature": 99, "systemPrompt": 5},
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "system", "content": "dropped"},
                    {"role": "assistant", "content": 7, "state": "weird", "toolCalls": "no"},
                    "junk",
                ],
            },
            {"id": "../../etc", "messages": []},
            {"title": "no messages"},
        ],
    }
    result = call(page, "conv.parseImport", json.dumps(hostile))
    assert result["skipped"] == 1
    kept, renamed = result["conversations"]
    assert kept["id"] == "abc-1"
    assert kept["settings"]["temperature"] == 2
    assert kept["settings"]["systemPrompt"] == "You are a helpful assistant."
    assert kept["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "state": "done"},
    ]
    assert renamed["id"] != "../../etc"  # a bad id gets a fresh one
    for bad, message in [("{", "not JSON"), ('{"a": 1}', "no conversations")]:
        error = page.evaluate(
            "(s) => { try { conv.parseImport(s); return ''; } catch (e) { return e.message; } }",
            bad,
        )
        assert message in error


def test_search_matches_every_word_of_the_title(page: Any) -> None:
    items = [
        {"title": "Python tips", "updatedAt": 1},
        {"title": "Tips for llamas", "updatedAt": 3},
        {"title": "Cooking", "updatedAt": 2},
    ]
    found = call(page, "conv.searchConversations", items, "TIPS")
    assert [c["title"] for c in found] == ["Tips for llamas", "Python tips"]
    found = call(page, "conv.searchConversations", items, "python tips")
    assert [c["title"] for c in found] == ["Python tips"]


def test_models_are_read_defensively(page: Any) -> None:
    body = {
        "data": [
            {"id": "a", "state": "Loaded"},
            {"id": "b", "loaded": False},
            {"id": "c", "status": {"value": "loading"}},
            {"name": "d"},
            {"id": "a"},
            None,
            {"id": 5},
        ]
    }
    assert call(page, "models.parseModels", body) == [
        {"id": "a", "state": "loaded"},
        {"id": "b", "state": "not loaded"},
        {"id": "c", "state": "loading"},
        {"id": "d", "state": None},
    ]
    for junk in (None, "x", {"data": "x"}, 5):
        assert call(page, "models.parseModels", junk) == []
    assert call(page, "models.needsLoading", "loading") is True
    assert call(page, "models.needsLoading", "loaded") is False
    served = [{"id": "a"}, {"id": "b"}]
    assert call(page, "models.effectiveModel", "b", served) == "b"
    assert call(page, "models.effectiveModel", "gone", served) == "a"
    assert call(page, "models.effectiveModel", "x", []) == "x"


def test_stream_deltas_and_tool_call_fragments(page: Any) -> None:
    read = "api.readDelta"
    assert call(page, read, {"content": "hi"}) == {
        "content": "hi",
        "reasoning": "",
        "toolCalls": [],
    }
    assert call(page, read, {"reasoning_content": "hm"})["reasoning"] == "hm"
    assert call(page, read, {"reasoning": "hm"})["reasoning"] == "hm"
    assert call(page, read, {"role": "assistant", "content": ""}) is None
    assert call(page, read, None) is None
    fragments = [
        [{"index": 0, "id": "c1", "function": {"name": "get_"}}],
        [{"index": 0, "function": {"name": "weather", "arguments": '{"a"'}}],
        [{"index": 1, "id": "c2", "function": {"name": "other", "arguments": "{}"}}],
        [{"index": 0, "function": {"arguments": ": 1}"}}],
    ]
    calls = page.evaluate(
        "(fs) => fs.reduce((calls, f) => api.mergeToolCalls(calls, f), [])", fragments
    )
    assert [(c["id"], c["name"], c["arguments"]) for c in calls] == [
        ("c1", "get_weather", '{"a": 1}'),
        ("c2", "other", "{}"),
    ]


def test_error_words_say_when_to_retry(page: Any) -> None:
    def words(kind: str, retry: int | None, code: str | None = None) -> list[str]:
        error = {"kind": kind, "retryAfter": retry, "code": code, "message": "m"}
        return list(call(page, "fmt.errorText", error))

    assert words("busy", 7)[1].endswith("Try again in 7 s.")
    assert words("busy", None)[1] == "Every slot is taken and the queue is full."
    assert words("loading", 300) == ["The model is still loading", "Try again in 5 min."]
    assert words("loading", None) == ["The model is still loading", "Try again in a few seconds."]
    assert words("loading", 4, "model_not_loaded") == [
        "The model is not available",
        "m Try again in 4 s.",
    ]


def test_reasoning_summary_words(page: Any) -> None:
    summary = "msg.reasoningSummary"
    assert call(page, summary, 1, True, None) == "Thinking… · 1 token"
    assert call(page, summary, 42, False, 3.14) == "Thought for 42 tokens · 3.1 s"
    assert call(page, summary, None, False, None) == "Reasoning"
