"""POST /v1/messages and /v1/messages/count_tokens over the whole app with the FakeEngine."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support.api import app_client, eventually
from tests.support.claude_code import claude_code_body
from tests.support.fake_engine import FailingMidStream, FakeEngine
from tests.support.sse_client import parse_sse

REPLY = "Paris is the capital of France."
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
USER = [{"role": "user", "content": "What is the capital of France?"}]
TOOL = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def fake(reply: str = REPLY, **kwargs: Any) -> FakeEngine:
    return FakeEngine(reply=lambda prompt: reply, **kwargs)


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": USER, **fields}


def events_of(text: str) -> list[tuple[str, dict[str, Any]]]:
    return [(event.event, event.json()) for event in parse_sse(text)]


async def test_message_has_anthropic_shape_and_usage() -> None:
    async with app_client(fake()) as (client, _):
        response = await client.post(
            "/v1/messages", json=body(), headers={"anthropic-version": "2023-06-01"}
        )
    assert response.status_code == 200
    message = response.json()
    assert message["id"].startswith("msg_")
    assert response.headers["x-request-id"] in message["id"]
    assert (message["type"], message["role"], message["model"]) == (
        "message",
        "assistant",
        "fake-model",
    )
    assert message["content"] == [{"type": "text", "text": REPLY}]
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)
    usage = message["usage"]
    assert usage["output_tokens"] == len(REPLY.split(" "))
    assert usage["input_tokens"] > 0
    assert usage["cache_read_input_tokens"] == 0


async def test_stream_is_anthropics_event_sequence_without_done() -> None:
    async with app_client(fake()) as (client, _):
        response = await client.post("/v1/messages", json=body(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in response.text
    events = events_of(response.text)
    names = [name for name, _ in events]
    assert all(data["type"] == name for name, data in events)  # event line = data's type
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert (start["content"], start["stop_reason"]) == ([], None)
    assert start["usage"]["input_tokens"] > 0
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert "".join(d["text"] for d in deltas) == REPLY
    assert {d["type"] for d in deltas} == {"text_delta"}
    end = events[-2][1]
    assert end["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert end["usage"]["output_tokens"] == len(REPLY.split(" "))


async def test_max_tokens_ends_with_max_tokens_and_is_clamped() -> None:
    engine = fake()
    async with app_client(engine, max_tokens_limit=3) as (client, _):
        response = await client.post("/v1/messages", json=body(max_tokens=1000))
    assert response.json()["stop_reason"] == "max_tokens"
    assert engine.submitted[0].sampling.max_tokens == 3


async def test_a_stop_sequence_is_reported_as_such() -> None:
    async with app_client(fake()) as (client, _):
        plain = await client.post("/v1/messages", json=body(stop_sequences=["capital"]))
        streamed = await client.post(
            "/v1/messages", json=body(stop_sequences=["capital"], stream=True)
        )
    message = plain.json()
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "capital")
    assert "capital" not in message["content"][0]["text"]
    end = [data for name, data in events_of(streamed.text) if name == "message_delta"]
    assert end[0]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "capital"}


async def test_sampling_fields_and_system_reach_the_engine() -> None:
    engine = fake()
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    async with app_client(engine) as (client, _):
        response = await client.post(
            "/v1/messages",
            json=body(
                system=system,
                temperature=0.2,
                top_p=0.8,
                top_k=5,
                metadata={"user_id": "x"},
                thinking={"type": "enabled", "budget_tokens": 1024},
                some_future_field={"a": 1},
            ),
        )
    assert response.status_code == 200
    assert response.headers["x-session-id"] == "x"  # metadata.user_id: the affinity key
    (request,) = engine.submitted
    assert str(request.prompt).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    sampling = request.sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k) == (0.2, 0.8, 5)


async def test_tool_use_reply_non_streamed() -> None:
    engine = fake("Let me check. " + CALL)
    async with app_client(engine) as (client, _):
        response = await client.post(
            "/v1/messages", json=body(tools=[TOOL], tool_choice={"type": "auto"})
        )
    message = response.json()
    assert message["stop_reason"] == "tool_use"
    text, call = message["content"]
    assert text == {"type": "text", "text": "Let me check."}
    assert call["type"] == "tool_use"
    assert call["id"].startswith("toolu_")
    assert (call["name"], call["input"]) == ("get_weather", {"city": "Paris"})
    grammar = engine.submitted[0].sampling.grammar
    assert grammar is not None
    assert grammar.trigger == "<tool_call>"  # auto: the grammar waits for a call to start


async def test_tool_use_reply_streamed() -> None:
    async with app_client(fake(CALL)) as (client, _):
        response = await client.post(
            "/v1/messages", json=body(tools=[TOOL], tool_choice={"type": "any"}, stream=True)
        )
    events = events_of(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    block = events[1][1]["content_block"]
    assert (block["type"], block["name"], block["input"]) == ("tool_use", "get_weather", {})
    delta = events[3][1]["delta"]
    assert delta["type"] == "input_json_delta"
    assert json.loads(delta["partial_json"]) == {"city": "Paris"}
    assert events[5][1]["delta"]["stop_reason"] == "tool_use"


async def test_tool_choice_any_forces_a_call_and_none_offers_no_tools() -> None:
    engine = fake()
    async with app_client(engine) as (client, _):
        await client.post("/v1/messages", json=body(tools=[TOOL], tool_choice={"type": "any"}))
        await client.post("/v1/messages", json=body(tools=[TOOL], tool_choice={"type": "none"}))
    forced, none = engine.submitted
    assert forced.sampling.grammar is not None
    assert forced.sampling.grammar.trigger == ""  # constrained from the first token
    assert none.sampling.grammar is None
    assert "get_weather" not in str(none.prompt)


async def test_a_tool_result_turn_is_rendered_for_the_model() -> None:
    engine = fake()
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "P"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C, sunny"},
            ],
        },
    ]
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/messages", json=body(messages=messages, tools=[TOOL]))
    assert response.status_code == 200
    prompt = engine.submitted[0].prompt
    prompt = str(prompt)  # a ChatPrompt prints as its text
    assert '{"name": "get_weather", "arguments": {"city": "P"}}' in prompt
    assert "<tool_response>\n18 C, sunny\n</tool_response>" in prompt


async def test_count_tokens_counts_without_generating() -> None:
    engine = fake()
    async with app_client(engine) as (client, _):
        short = await client.post(
            "/v1/messages/count_tokens", json={"model": "m", "messages": USER}
        )
        longer = await client.post(
            "/v1/messages/count_tokens",
            json={"model": "m", "messages": USER, "system": "Be brief.", "tools": [TOOL]},
        )
    assert short.status_code == 200
    assert set(short.json()) == {"input_tokens"}
    assert longer.json()["input_tokens"] > short.json()["input_tokens"] > 0
    assert engine.submitted == []


async def test_errors_have_anthropics_shape() -> None:
    async with app_client(fake(), strict_model_names=True) as (client, _):
        missing = await client.post("/v1/messages", json={"model": "fake-model", "messages": USER})
        bad_json = await client.post(
            "/v1/messages", content=b"{nope", headers={"content-type": "application/json"}
        )
        unknown = await client.post("/v1/messages", json=body(model="claude-opus-4"))
        bad_choice = await client.post(
            "/v1/messages",
            json=body(model="fake-model", tools=[TOOL], tool_choice={"type": "tool", "name": "x"}),
        )
        image = await client.post(
            "/v1/messages",
            json=body(
                model="fake-model",
                messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}],
            ),
        )
    for response, status, kind in [
        (missing, 400, "invalid_request_error"),
        (bad_json, 400, "invalid_request_error"),
        (unknown, 404, "not_found_error"),
        (bad_choice, 400, "invalid_request_error"),
        (image, 400, "invalid_request_error"),
    ]:
        assert response.status_code == status, response.text
        data = response.json()
        assert data["type"] == "error"
        assert data["error"]["type"] == kind
        assert set(data["error"]) == {"type", "message"}
    assert "max_tokens" in missing.json()["error"]["message"]


async def test_a_full_queue_is_a_rate_limit_error() -> None:
    engine = fake(" ".join(["word"] * 50), n_slots=1, max_queue=0, token_delay_s=0.02)
    async with app_client(engine) as (client, _):
        running = asyncio.ensure_future(client.post("/v1/messages", json=body()))
        await eventually(lambda: engine.stats().slots_busy == 1)
        refused = await client.post("/v1/messages", json=body())
        await running
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 1


async def test_an_error_mid_stream_is_an_error_event_and_the_stream_ends() -> None:
    async with app_client(FailingMidStream("Partial", "out of memory")) as (client, _):
        response = await client.post("/v1/messages", json=body(stream=True))
    assert response.status_code == 200
    events = events_of(response.text)
    name, data = events[-1]
    assert name == "error"
    assert data == {"type": "error", "error": {"type": "api_error", "message": "out of memory"}}
    assert "message_stop" not in [n for n, _ in events]


async def test_api_keys_work_through_x_api_key() -> None:
    async with app_client(fake(), api_key=["sk-local"]) as (client, _):
        none = await client.post("/v1/messages", json=body())
        wrong = await client.post("/v1/messages", json=body(), headers={"x-api-key": "nope"})
        right = await client.post(
            "/v1/messages",
            json=body(),
            headers={"x-api-key": "sk-local", "anthropic-version": "2023-06-01"},
        )
        counted = await client.post(
            "/v1/messages/count_tokens",
            json={"model": "m", "messages": USER},
            headers={"x-api-key": "sk-local"},
        )
    assert none.status_code == wrong.status_code == 401
    assert none.json()["error"]["type"] == "authentication_error"
    assert right.status_code == counted.status_code == 200


async def test_cors_preflight_allows_the_anthropic_sdk_headers() -> None:
    origin = "http://app.example"
    async with app_client(fake(), cors_origin=[origin]) as (client, _):
        response = await client.options(
            "/v1/messages",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": (
                    "x-api-key,anthropic-version,anthropic-dangerous-direct-browser-access"
                ),
            },
        )
    assert response.status_code == 200
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "anthropic-version" in allowed
    assert "x-api-key" in allowed


async def test_a_claude_code_shaped_request_is_answered() -> None:
    engine = fake(n_ctx_slot=4096)
    async with app_client(engine) as (client, _):
        response = await client.post(
            "/v1/messages",
            json=claude_code_body("claude-sonnet-4-5-20250929"),
            headers={"anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking"},
        )
    assert response.status_code == 200, response.text
    names = [name for name, _ in events_of(response.text)]
    assert names[0] == "message_start"
    assert names[-1] == "message_stop"
    (request,) = engine.submitted
    assert request.sampling.grammar is not None  # the tools' schemas all compiled
    assert request.sampling.max_tokens == 4096  # 32000 clamped to the slot


async def test_a_request_with_only_anthropic_server_tools_is_answered_without_them() -> None:
    engine = fake()
    web_search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/messages", json=body(tools=[web_search]))
    assert response.status_code == 200, response.text
    assert response.json()["content"] == [{"type": "text", "text": REPLY}]
    assert engine.submitted[0].sampling.grammar is None
