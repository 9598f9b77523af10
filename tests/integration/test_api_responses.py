"""POST /v1/responses, GET /v1/responses/{id} and input_tokens over the whole app (FakeEngine)."""

from __future__ import annotations

import json
from typing import Any

from app.serving.responses.store import ResponseStore
from tests.support.api import app_client
from tests.support.fake_engine import FailingMidStream, FakeEngine
from tests.support.sse_client import parse_sse

REPLY = "Paris is the capital of France."
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def fake(reply: str = REPLY, **kwargs: Any) -> FakeEngine:
    return FakeEngine(reply=lambda prompt: reply, **kwargs)


def stream_events(text: str) -> list[dict[str, Any]]:
    events = parse_sse(text)
    for event in events:
        assert event.event == event.json()["type"]  # the SSE name is the data's type
    return [event.json() for event in events]


async def test_a_response_has_openai_shape_usage_and_is_retrievable() -> None:
    async with app_client(fake()) as (client, _):
        created = await client.post(
            "/v1/responses", json={"input": "Capital of France?", "instructions": "Be brief."}
        )
        body = created.json()
        fetched = await client.get(f"/v1/responses/{body['id']}")
    assert created.status_code == 200
    assert body["object"] == "response"
    assert body["id"].startswith("resp_")
    assert body["status"] == "completed"
    assert body["instructions"] == "Be brief."
    (item,) = body["output"]
    assert item["type"] == "message"
    assert item["role"] == "assistant"
    assert item["content"][0] == {
        "type": "output_text",
        "text": REPLY,
        "annotations": [],
        "logprobs": [],
    }
    usage = body["usage"]
    assert usage["output_tokens"] == len(REPLY.split(" "))
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}
    assert usage["output_tokens_details"] == {"reasoning_tokens": 0}
    assert fetched.status_code == 200
    assert fetched.json() == body


async def test_a_deleted_response_is_gone() -> None:
    async with app_client(fake()) as (client, _):
        body = (await client.post("/v1/responses", json={"input": "x"})).json()
        deleted = await client.delete(f"/v1/responses/{body['id']}")
        again = await client.delete(f"/v1/responses/{body['id']}")
        fetched = await client.get(f"/v1/responses/{body['id']}")
    assert deleted.json() == {"id": body["id"], "object": "response", "deleted": True}
    assert again.status_code == 404
    assert fetched.status_code == 404


async def test_the_stream_is_the_full_event_sequence_numbered_in_order() -> None:
    async with app_client(fake()) as (client, _):
        response = await client.post("/v1/responses", json={"input": "hi", "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = stream_events(response.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    n = len(REPLY.split(" "))
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * n,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "[DONE]" not in response.text
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == REPLY
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == REPLY
    assert events[0]["response"]["status"] == "in_progress"


async def test_a_tool_call_is_a_function_call_item() -> None:
    async with app_client(fake(CALL)) as (client, _):
        body = (
            await client.post(
                "/v1/responses",
                json={"input": "weather?", "tools": [WEATHER, {"type": "web_search"}]},
            )
        ).json()
        stream = await client.post(
            "/v1/responses",
            json={
                "input": "weather?",
                "tools": [WEATHER],
                "tool_choice": "required",
                "stream": True,
            },
        )
    (call,) = body["output"]
    assert call["type"] == "function_call"
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    assert call["call_id"].startswith("call_")
    assert call["status"] == "completed"
    assert body["tools"] == [WEATHER]  # the hosted tool is not served, so not echoed
    types = [e["type"] for e in stream_events(stream.text)]
    assert types[2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]


async def test_max_output_tokens_makes_an_incomplete_response() -> None:
    async with app_client(fake()) as (client, _):
        whole = await client.post("/v1/responses", json={"input": "x", "max_output_tokens": 2})
        stream = await client.post(
            "/v1/responses", json={"input": "x", "max_output_tokens": 2, "stream": True}
        )
    body = whole.json()
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    assert stream_events(stream.text)[-1]["type"] == "response.incomplete"


async def test_errors_before_the_stream_are_openai_error_bodies() -> None:
    async with app_client(fake()) as (client, _):
        bad = await client.post("/v1/responses", json={"input": 5, "stream": True})
        forced = await client.post(
            "/v1/responses",
            json={
                "input": "x",
                "tools": [{"type": "web_search"}],
                "tool_choice": {"type": "web_search"},
            },
        )
        image = await client.post(
            "/v1/responses",
            json={"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
        )
    for response in (bad, forced, image):
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
    assert forced.json()["error"]["param"] == "tool_choice"


async def test_an_error_during_the_stream_ends_it_with_error_and_response_failed() -> None:
    async with app_client(FailingMidStream(error="KV cache full")) as (client, _):
        response = await client.post("/v1/responses", json={"input": "x", "stream": True})
        whole = await client.post("/v1/responses", json={"input": "x"})
    events = stream_events(response.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    error, failed = events[-2:]
    assert error["type"] == "error"
    assert error["code"] == "generation_failed"
    assert "KV cache full" in error["message"]
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "generation_failed"
    assert whole.status_code == 500
    assert whole.json()["error"]["code"] == "generation_failed"


async def test_previous_response_id_continues_the_conversation() -> None:
    engine = fake()
    async with app_client(engine) as (client, _):
        first = (await client.post("/v1/responses", json={"input": "Capital of France?"})).json()
        second = await client.post(
            "/v1/responses",
            json={"input": "And of Spain?", "previous_response_id": first["id"], "stream": True},
        )
    prompt = engine.submitted[-1].prompt
    prompt = str(prompt)  # a ChatPrompt prints as its text
    assert prompt.index("Capital of France?") < prompt.index(REPLY) < prompt.index("And of Spain?")
    final = stream_events(second.text)[-1]["response"]
    assert final["previous_response_id"] == first["id"]


async def test_function_call_output_follows_a_stored_call() -> None:
    engine = FakeEngine(reply=lambda p: CALL if "tool_response" not in p else "It is sunny.")
    async with app_client(engine) as (client, _):
        first = (
            await client.post("/v1/responses", json={"input": "weather?", "tools": [WEATHER]})
        ).json()
        (call,) = first["output"]
        answer = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
        second = await client.post(
            "/v1/responses",
            json={"input": [answer], "previous_response_id": first["id"], "tools": [WEATHER]},
        )
    assert second.json()["output"][0]["content"][0]["text"] == "It is sunny."
    prompt = engine.submitted[-1].prompt
    prompt = str(prompt)  # a ChatPrompt prints as its text
    assert "get_weather" in prompt
    assert "sunny" in prompt


async def test_unknown_and_unstored_ids_are_clear_errors() -> None:
    async with app_client(fake()) as (client, _):
        unstored = (await client.post("/v1/responses", json={"input": "x", "store": False})).json()
        fetched = await client.get(f"/v1/responses/{unstored['id']}")
        continued = await client.post(
            "/v1/responses", json={"input": "x", "previous_response_id": "resp_nope"}
        )
    assert unstored["store"] is False
    assert fetched.status_code == 404
    assert fetched.json()["error"]["code"] == "not_found"
    assert continued.status_code == 400
    assert continued.json()["error"]["param"] == "previous_response_id"


async def test_the_store_on_the_app_is_bounded() -> None:
    async with app_client(fake()) as (client, app):
        app.state.response_store = ResponseStore(max_responses=2)
        ids = [
            (await client.post("/v1/responses", json={"input": "x"})).json()["id"] for _ in "abc"
        ]
        statuses = [(await client.get(f"/v1/responses/{i}")).status_code for i in ids]
    assert statuses == [404, 200, 200]


async def test_input_tokens_counts_the_rendered_prompt_without_generating() -> None:
    engine = fake()
    async with app_client(engine) as (client, _):
        short = await client.post("/v1/responses/input_tokens", json={"input": "hi"})
        longer = await client.post(
            "/v1/responses/input_tokens",
            json={"input": "hi there friend", "instructions": "be kind to all"},
        )
    assert short.json()["object"] == "response.input_tokens"
    assert 0 < short.json()["input_tokens"] < longer.json()["input_tokens"]
    assert engine.submitted == []


async def test_the_openapi_document_has_the_responses_routes_and_body() -> None:
    async with app_client(fake()) as (client, _):
        document = (await client.get("/openapi.json")).json()
    assert "/v1/responses" in document["paths"]
    assert "/v1/responses/input_tokens" in document["paths"]
    assert "ResponsesRequest" in document["components"]["schemas"]


CODEX_BODY: dict[str, Any] = {
    "model": "gpt-5-codex",
    "instructions": "You are Codex.",
    "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "ro"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ls"}]},
        {"type": "reasoning", "summary": [], "encrypted_content": "gAAAA"},
        {"type": "custom_tool_call", "call_id": "c0", "name": "apply_patch", "input": "x"},
        {"type": "custom_tool_call_output", "call_id": "c0", "output": "done"},
    ],
    "tools": [
        {"type": "function", "name": "shell", "parameters": {"type": "object"}, "strict": False},
        {"type": "local_shell"},
        {"type": "web_search"},
        {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "high", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "s1",
}


async def test_a_codex_shaped_body_streams_to_completion() -> None:
    engine = fake()
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/responses", json=CODEX_BODY)
    assert response.status_code == 200, response.text
    final = stream_events(response.text)[-1]
    assert final["type"] == "response.completed"
    assert [t["name"] for t in final["response"]["tools"]] == ["shell"]
    assert final["response"]["reasoning"]["effort"] == "high"
    prompt = engine.submitted[-1].prompt
    prompt = str(prompt)  # a ChatPrompt prints as its text
    assert "You are Codex." in prompt
    assert "gAAAA" not in prompt


async def test_the_routes_sit_behind_the_api_key() -> None:
    async with app_client(fake(), api_key=["k1"]) as (client, _):
        refused = await client.post("/v1/responses", json={"input": "x"})
        counted = await client.post(
            "/v1/responses/input_tokens", json={"input": "x"}, headers={"x-api-key": "k1"}
        )
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert counted.status_code == 200
