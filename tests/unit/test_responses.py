"""The Responses family's pure parts: input conversion, the event builder and the store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.engine.types import Usage
from app.errors import InvalidRequest, NotFound
from app.schemas.chat import ChatMessage
from app.schemas.responses import OutputTextDeltaEvent, ResponseObject, ResponsesRequest
from app.serving.generation import Finished
from app.serving.responses.convert import chat_request, history_messages
from app.serving.responses.events import ResponseBuilder
from app.serving.responses.store import ResponseStore
from app.serving.tools import ParsedCall
from tests.support.sse_client import parse_sse


def request(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate(fields)


def test_a_string_input_is_one_user_message() -> None:
    assert history_messages("hi", "r") == [ChatMessage(role="user", content="hi")]


def test_items_become_chat_messages_with_calls_and_results() -> None:
    body = request(
        input=[
            {"role": "developer", "content": "be terse"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "let me look"}],
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": '{"x":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
            {"type": "item_reference", "id": "x"},
        ]
    )
    messages = history_messages(body.input, "r")
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool"]
    assistant = messages[2]
    assert assistant.content == "let me look"
    assert [c.function.name for c in assistant.tool_calls or []] == ["f", "g"]
    assert messages[3].tool_call_id == "c1"
    assert messages[3].content == "42"


def test_a_call_with_no_assistant_text_before_it_is_its_own_message() -> None:
    body = request(
        input=[
            {"role": "user", "content": "go"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        ]
    )
    messages = history_messages(body.input, "r")
    assert messages[1].role == "assistant"
    assert messages[1].content is None


def test_image_parts_are_refused_with_the_item_named() -> None:
    body = request(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}])
    with pytest.raises(InvalidRequest, match=r"input\[0\]"):
        history_messages(body.input, "r")


def test_hosted_tools_are_left_out_and_instructions_come_first() -> None:
    body = request(
        input="hi",
        instructions="sys",
        tools=[
            {"type": "web_search"},
            {"type": "local_shell"},
            {"type": "custom", "name": "apply_patch"},
            {"type": "function", "name": "f", "parameters": {"type": "object"}},
        ],
    )
    chat = chat_request(body, history_messages(body.input, "r"), "r")
    assert [m.role for m in chat.messages] == ["system", "user"]
    assert [t.function.name for t in chat.tools or []] == ["f"]


def test_instructions_and_leading_developer_messages_are_one_system_turn() -> None:
    body = request(
        instructions="You are Codex.",
        input=[
            {"role": "developer", "content": "sandbox: read-only"},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": "later note"},
        ],
    )
    chat = chat_request(body, history_messages(body.input, "r"), "r")
    assert [m.role for m in chat.messages] == ["system", "user", "system"]
    assert chat.messages[0].content == "You are Codex.\n\nsandbox: read-only"


def test_tool_choice_forcing_a_hosted_tool_is_a_400() -> None:
    body = request(input="hi", tools=[{"type": "web_search"}], tool_choice={"type": "web_search"})
    with pytest.raises(InvalidRequest, match="web_search") as info:
        chat_request(body, history_messages(body.input, "r"), "r")
    assert info.value.param == "tool_choice"


def test_named_function_choice_and_text_format_map_to_chat_fields() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = request(
        input="hi",
        tools=[{"type": "function", "name": "f"}],
        tool_choice={"type": "function", "name": "f"},
        text={"format": {"type": "json_schema", "name": "out", "schema": schema}},
        max_output_tokens=7,
    )
    chat = chat_request(body, history_messages(body.input, "r"), "r")
    assert chat.tool_choice is not None
    assert not isinstance(chat.tool_choice, str)
    assert chat.tool_choice.function.name == "f"
    assert chat.response_format is not None
    assert chat.response_format.schema_dict() == schema
    assert chat.max_completion_tokens == 7


def test_empty_input_without_instructions_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="input is empty"):
        chat_request(request(input=[]), [], "r")


def template() -> ResponseObject:
    return ResponseObject(id="resp_1", created_at=1, status="in_progress", model="m")


def finished(reason: Any = "stop") -> Finished:
    return Finished(reason, Usage(5, 2, 3), None)


def test_the_delta_frame_is_the_models_json() -> None:
    builder = ResponseBuilder(template())
    builder.start()
    added = builder.text('he said "hi"\n')
    raw = json.loads(added[-1])
    model = OutputTextDeltaEvent(
        type="response.output_text.delta",
        sequence_number=raw["sequence_number"],
        item_id=raw["item_id"],
        output_index=0,
        delta='he said "hi"\n',
    )
    assert added[-1] == model.model_dump_json()


def test_events_are_numbered_in_order_and_the_response_is_built() -> None:
    builder = ResponseBuilder(template())
    events = [*builder.start(), *builder.text("a"), *builder.text("b")]
    events += builder.call(ParsedCall("f", '{"x":1}', id="call_1"))
    events += builder.finish(finished("tool_calls"))
    data = [json.loads(e) if isinstance(e, str) else e.model_dump() for e in events]
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    assert [d["type"] for d in data] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = builder.response
    assert final.status == "completed"
    assert [item.type for item in final.output] == ["message", "function_call"]
    assert final.usage is not None
    assert final.usage.input_tokens_details.cached_tokens == 2


def test_a_length_cut_is_incomplete() -> None:
    builder = ResponseBuilder(template())
    builder.text("a")
    events = builder.finish(finished("length"))
    assert events[-1].type == "response.incomplete"  # type: ignore[union-attr]  # a model
    assert builder.response.incomplete_details is not None
    assert builder.response.output[0].status == "incomplete"


def test_an_empty_reply_is_one_empty_message() -> None:
    builder = ResponseBuilder(template())
    builder.finish(finished())
    (item,) = builder.response.output
    assert item.type == "message"


def stored(response_id: str, text: str = "x") -> ResponseObject:
    return ResponseObject(id=response_id, created_at=1, status="completed", model=text)


def test_the_store_drops_the_least_recently_used_by_count() -> None:
    store = ResponseStore(max_responses=2)
    store.put(stored("a"), [])
    store.put(stored("b"), [])
    store.get("a")  # now b is the least recently used
    store.put(stored("c"), [])
    assert len(store) == 2
    store.get("a")
    with pytest.raises(NotFound):
        store.get("b")


def test_the_store_is_bounded_by_bytes() -> None:
    one = len(stored("a", "y" * 1000).model_dump_json())
    store = ResponseStore(max_bytes=int(one * 2.5))
    for name in "abcd":
        store.put(stored(name, "y" * 1000), [ChatMessage(role="user", content="q")])
    assert len(store) == 2
    assert store.bytes_used <= store.max_bytes
    store.put(stored("huge", "y" * one * 3), [])
    with pytest.raises(NotFound):
        store.get("huge")


def test_previous_keeps_the_conversation_and_its_output() -> None:
    store = ResponseStore()
    store.put(stored("a"), [ChatMessage(role="user", content="q")])
    conversation = store.previous("a")
    assert [m.role for m in conversation] == ["user", "assistant"]
    assert store.previous(None) == ()
    with pytest.raises(InvalidRequest) as info:
        store.previous("nope")
    assert info.value.param == "previous_response_id"


def test_a_codex_shaped_body_parses() -> None:
    body = request(
        model="gpt-5-codex",
        instructions="You are Codex.",
        input=[
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
        ],
        tools=[
            {
                "type": "function",
                "name": "shell",
                "parameters": {"type": "object"},
                "strict": False,
            },
            {"type": "local_shell"},
            {"type": "web_search", "external_web_access": False},
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
            {"type": "namespace", "name": "mcp__x", "tools": []},
        ],
        tool_choice="auto",
        parallel_tool_calls=False,
        reasoning={"effort": "medium", "summary": "auto"},
        store=False,
        stream=True,
        include=["reasoning.encrypted_content"],
        prompt_cache_key="abc",
        text={"verbosity": "low"},
    )
    assert len(body.tools or []) == 5


def test_a_named_event_is_framed_with_its_event_line() -> None:
    from app.api.sse import NamedEvent, encode
    from app.serving.render import RawJson

    assert encode(NamedEvent("x.y", RawJson('{"a":1}'))) == b'event: x.y\ndata: {"a":1}\n\n'
    assert encode(NamedEvent("ping", "")) == b"event: ping\ndata: \n\n"
    events = parse_sse(encode(NamedEvent("two", "a\nb")).decode())
    assert [(e.event, e.data) for e in events] == [("two", "a\nb")]
