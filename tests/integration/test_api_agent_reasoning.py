"""Reasoning through the agent APIs on the fake engine with Qwen3's (thinking) template.

The fake engine writes ``<think> Easy. </think> Paris.`` word by word: Anthropic's
``/v1/messages`` must answer a ``thinking`` block then the text (streamed as
``thinking_delta``s and a ``signature_delta``), the Responses API a ``reasoning`` item then
the message (streamed as ``response.reasoning_text.*``), and the requests' thinking
settings must reach the engine (budget) and the template (``enable_thinking``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from app.engine.types import ModelInfo
from tests.support.api import app_client
from tests.support.fake_engine import FakeEngine
from tests.support.sse_client import parse_sse

TEMPLATE = Path(__file__).parents[1] / "fixtures" / "templates" / "Qwen-Qwen3-0.6B.jinja"
REPLY = "<think> Easy. </think> Paris."
USER = [{"role": "user", "content": "Capital of France?"}]
NO_THINKING = "<think>\n\n</think>\n\n"  # Qwen3's prompt end when asked not to think


class ThinkingEngine(FakeEngine):
    """The fake engine with Qwen3's chat template, replying with a thought and an answer."""

    def __init__(self) -> None:
        super().__init__(reply=lambda _: REPLY, n_ctx_slot=4096)

    def model_info(self) -> ModelInfo:
        return replace(super().model_info(), chat_template=TEMPLATE.read_text())


def _message(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 100, "messages": USER, **extra}


def _events(text: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = [event.json() for event in parse_sse(text)]
    return data


async def test_anthropic_thinking_is_a_block_before_the_text() -> None:
    engine = ThinkingEngine()
    async with app_client(engine) as (client, _):
        thinking = {"type": "enabled", "budget_tokens": 32}
        reply = await client.post("/v1/messages", json=_message(thinking=thinking))
    assert reply.status_code == 200, reply.text
    thought, text = reply.json()["content"]
    assert thought["type"] == "thinking"
    assert thought["thinking"].strip() == "Easy."
    assert thought["signature"]
    assert text == {"type": "text", "text": "Paris."}
    sampling = engine.submitted[0].sampling
    assert sampling.reasoning_budget == 32
    assert sampling.reasoning_markers == ("<think>", "</think>")


async def test_anthropic_stream_sends_thinking_deltas_then_the_text_block() -> None:
    async with app_client(ThinkingEngine()) as (client, _):
        body = _message(thinking={"type": "enabled", "budget_tokens": 32}, stream=True)
        reply = await client.post("/v1/messages", json=body)
    events = _events(reply.text)
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["thinking", "text"]
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    kinds = [d["type"] for d in deltas]
    assert kinds.index("signature_delta") == kinds.index("text_delta") - 1
    thought = "".join(d["thinking"] for d in deltas if d["type"] == "thinking_delta")
    assert thought.strip() == "Easy."
    assert "".join(d["text"] for d in deltas if d["type"] == "text_delta") == "Paris."
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert stops == [0, 1]
    assert events[-1]["type"] == "message_stop"


async def test_anthropic_disabled_thinking_asks_the_template_not_to_think() -> None:
    engine = ThinkingEngine()
    async with app_client(engine, reasoning_budget=64) as (client, _):
        await client.post("/v1/messages", json=_message(thinking={"type": "disabled"}))
        await client.post("/v1/messages", json=_message())  # absent: the server's default
    disabled, default = engine.submitted
    assert str(disabled.prompt).endswith(NO_THINKING)
    assert disabled.sampling.reasoning_budget == 0
    assert not str(default.prompt).endswith(NO_THINKING)
    assert default.sampling.reasoning_budget == 64


async def test_anthropic_earlier_thinking_blocks_are_accepted_and_not_resent() -> None:
    engine = ThinkingEngine()
    history = [
        *USER,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "SECRET THOUGHT", "signature": "abc"},
                {"type": "text", "text": "Paris."},
            ],
        },
        {"role": "user", "content": "And Spain?"},
    ]
    async with app_client(engine) as (client, _):
        reply = await client.post("/v1/messages", json=_message(messages=history))
    assert reply.status_code == 200, reply.text
    assert "SECRET THOUGHT" not in str(engine.submitted[0].prompt)


async def test_responses_reasoning_is_an_item_before_the_message() -> None:
    async with app_client(ThinkingEngine()) as (client, _):
        reply = await client.post("/v1/responses", json={"input": "Capital of France?"})
    body = reply.json()
    reasoning, message = body["output"]
    assert reasoning["type"] == "reasoning"
    assert reasoning["summary"] == []
    [part] = reasoning["content"]
    assert part["type"] == "reasoning_text"
    assert part["text"].strip() == "Easy."
    assert message["content"][0]["text"] == "Paris."
    usage = body["usage"]
    assert 0 < usage["output_tokens_details"]["reasoning_tokens"] < usage["output_tokens"]


async def test_responses_stream_sends_reasoning_text_events_in_sequence() -> None:
    async with app_client(ThinkingEngine()) as (client, _):
        body = {"input": "Capital of France?", "stream": True}
        reply = await client.post("/v1/responses", json=body)
    sse = parse_sse(reply.text)
    assert all(event.event == event.json()["type"] for event in sse)
    events = [event.json() for event in sse]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    first_text = types.index("response.output_text.delta")
    assert types.index("response.reasoning_text.done") < first_text
    added = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["reasoning", "message"]
    deltas = [e["delta"] for e in events if e["type"] == "response.reasoning_text.delta"]
    done = next(e for e in events if e["type"] == "response.reasoning_text.done")
    assert "".join(deltas) == done["text"]
    assert done["text"].strip() == "Easy."
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] > 0


async def test_responses_effort_none_asks_the_template_not_to_think() -> None:
    engine = ThinkingEngine()
    async with app_client(engine, reasoning_budget=64) as (client, _):
        body = {"input": "Hi", "reasoning": {"effort": "none"}}
        await client.post("/v1/responses", json=body)
        await client.post("/v1/responses", json={**body, "reasoning": {"effort": "high"}})
    off, high = engine.submitted
    assert str(off.prompt).endswith(NO_THINKING)
    assert off.sampling.reasoning_budget == 0
    assert not str(high.prompt).endswith(NO_THINKING)
    assert high.sampling.reasoning_budget == 64


async def test_responses_continuation_leaves_the_reasoning_out_of_the_prompt() -> None:
    engine = ThinkingEngine()
    async with app_client(engine) as (client, _):
        first = (await client.post("/v1/responses", json={"input": "Capital?"})).json()
        body = {"input": "And Spain?", "previous_response_id": first["id"]}
        second = await client.post("/v1/responses", json=body)
        items = [*first["output"], {"role": "user", "content": "Again?"}]
        third = await client.post("/v1/responses", json={"input": items})
    assert second.status_code == third.status_code == 200
    for request in engine.submitted[1:]:
        assert "Easy." not in str(request.prompt)
        assert "Paris." in str(request.prompt)
