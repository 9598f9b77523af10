"""Anthropic Messages: the request rewritten for the shared kernels, and the event builders."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.api.routes.anthropic import anthropic_error, anthropic_error_type
from app.api.sse import encode, error_event
from app.engine.types import Usage as EngineUsage
from app.schemas.anthropic import MessagesRequest, TextDelta
from app.schemas.common import ErrorDetail
from app.serving.anthropic.convert import chat_request, stop_reason, wire_usage
from app.serving.anthropic.events import BlockWriter, tool_use_block
from app.serving.generation import Finished
from app.serving.render import NamedEvent
from app.serving.tools import ParsedCall

TOOL = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def request(**fields: Any) -> MessagesRequest:
    body = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
    return MessagesRequest.model_validate({**body, **fields})


def test_system_blocks_become_one_system_message_and_cache_control_is_ignored() -> None:
    chat = chat_request(
        request(
            system=[
                {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Answer in French."},
            ],
            metadata={"user_id": "u1"},
            service_tier="auto",
        )
    )
    first, second = chat.messages
    assert (first.role, first.text()) == ("system", "You are terse.\nAnswer in French.")
    assert (second.role, second.text()) == ("user", "Hi")


def test_tool_use_and_tool_result_blocks_become_calls_and_tool_messages() -> None:
    chat = chat_request(
        request(
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "...", "signature": "s"},
                        {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                         "input": {"city": "Paris"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1",
                         "content": [{"type": "text", "text": "timeout"}], "is_error": True},
                        {"type": "text", "text": "Try again?"},
                    ],
                },
            ],
            tools=[TOOL],
        )
    )  # fmt: skip
    roles = [m.role for m in chat.messages]
    assert roles == ["user", "assistant", "tool", "user"]
    assistant, result, user = chat.messages[1:]
    assert assistant.text() == "Let me look."
    assert assistant.tool_calls is not None
    (call,) = assistant.tool_calls
    assert (call.id, call.function.name) == ("toolu_1", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert (result.tool_call_id, result.text()) == ("toolu_1", "Error: timeout")
    assert user.text() == "Try again?"
    assert chat.tools is not None
    assert chat.tools[0].function.parameters == TOOL["input_schema"]


def test_a_user_turn_of_only_tool_results_adds_no_empty_user_message() -> None:
    chat = chat_request(
        request(
            messages=[
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "a", "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "a", "content": "sunny"}]},
            ]
        )
    )  # fmt: skip
    assert [m.role for m in chat.messages] == ["user", "assistant", "tool"]
    assert chat.messages[2].text() == "sunny"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, ("auto", None)),
        ({"type": "any"}, ("required", None)),
        ({"type": "any", "disable_parallel_tool_use": True}, ("required", False)),
        ({"type": "none"}, ("none", None)),
    ],
)
def test_tool_choice_maps_onto_chat_tool_choice(
    choice: dict[str, Any], expected: tuple[str, bool | None]
) -> None:
    chat = chat_request(request(tools=[TOOL], tool_choice=choice))
    assert (chat.tool_choice, chat.parallel_tool_calls) == expected


def test_a_named_tool_choice_names_the_function() -> None:
    chat = chat_request(request(tools=[TOOL], tool_choice={"type": "tool", "name": "get_weather"}))
    assert chat.tool_choice is not None
    assert not isinstance(chat.tool_choice, str)
    assert chat.tool_choice.function.name == "get_weather"


def test_sampling_fields_carry_over() -> None:
    chat = chat_request(
        request(stop_sequences=["END"], temperature=0.5, top_p=0.9, top_k=7, stream=True)
    )
    assert chat.stop_list() == ("END",)
    assert (chat.temperature, chat.top_p, chat.top_k, chat.max_tokens) == (0.5, 0.9, 7, 16)
    assert chat.stream


@pytest.mark.parametrize(
    ("reason", "stop", "expected"),
    [
        ("stop", None, "end_turn"),
        ("stop", "END", "stop_sequence"),
        ("length", None, "max_tokens"),
        ("tool_calls", None, "tool_use"),
    ],
)
def test_stop_reason(reason: Any, stop: str | None, expected: str) -> None:
    finished = Finished(reason, EngineUsage(5, 0, 2), None, stop_sequence=stop)
    assert stop_reason(finished) == expected


def test_usage_splits_cached_prompt_tokens_out_of_input_tokens() -> None:
    usage = wire_usage(EngineUsage(prompt_tokens=100, cached_prompt_tokens=60, completion_tokens=9))
    assert usage.model_dump() == {
        "input_tokens": 40,
        "output_tokens": 9,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "overloaded_error"),
    ],
)
def test_error_type_follows_the_status(status: int, kind: str) -> None:
    assert anthropic_error_type(status) == kind


def test_error_body_and_named_error_event() -> None:
    detail = ErrorDetail(message="boom", type="server_error")
    body = anthropic_error(detail, 500).model_dump()
    assert body == {"type": "error", "error": {"type": "api_error", "message": "boom"}}
    event = error_event(RuntimeError("x"), lambda exc: '{"type":"error"}', "error")
    assert event == b'event: error\ndata: {"type":"error"}\n\n'


def test_a_named_event_is_framed_with_its_event_line() -> None:
    assert encode(NamedEvent("content_block_delta", TextDelta(text="a\nb"))) == (
        b'event: content_block_delta\ndata: {"type":"text_delta","text":"a\\nb"}\n\n'
    )


def test_block_writer_numbers_blocks_and_pings_once() -> None:
    writer = BlockWriter()
    call = ParsedCall("get_weather", '{"city": "Paris"}', id="call_abc")
    events = [*writer.text("Hi"), *writer.text("!"), *writer.tool_use(call), *writer.close()]
    names = [e.name for e in events]
    assert names == [
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
    ]
    data = [
        json.loads(e.data if isinstance(e.data, str) else e.data.model_dump_json()) for e in events
    ]
    assert [d.get("index") for d in data if "index" in d] == [0, 0, 0, 0, 1, 1, 1]
    assert data[5]["content_block"] == {
        "type": "tool_use", "id": "toolu_abc", "name": "get_weather", "input": {}
    }  # fmt: skip
    assert data[6]["delta"] == {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'}
    assert writer.ping() == []


def test_tool_input_that_is_no_object_becomes_empty() -> None:
    assert tool_use_block(ParsedCall("f", '"just text"')).input == {}
    assert tool_use_block(ParsedCall("f", "not json")).input == {}


def test_anthropic_defined_tools_are_left_out() -> None:
    server_tools = [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 8},
        {"type": "bash_20250124", "name": "bash"},
    ]
    chat = chat_request(request(tools=[*server_tools, TOOL]))
    assert chat.tools is not None
    assert [t.function.name for t in chat.tools] == ["get_weather"]
    assert chat_request(request(tools=server_tools)).tools is None


def test_a_custom_tool_needs_an_input_schema() -> None:
    with pytest.raises(ValueError, match="input_schema"):
        request(tools=[{"name": "f"}])
