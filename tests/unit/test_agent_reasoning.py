"""Reasoning in the agent APIs: Anthropic thinking blocks, Responses reasoning items.

The event builders and the request settings (budget, template variables), without an
engine; the HTTP paths are in tests/integration/test_api_agent_reasoning.py.
"""

from __future__ import annotations

import json
from typing import Any

from app.engine.types import Usage
from app.schemas.anthropic import (
    ContentBlockDeltaEvent,
    MessagesRequest,
    ThinkingDelta,
)
from app.schemas.responses import ReasoningTextDeltaEvent, ResponseObject, ResponsesRequest
from app.serving.anthropic.events import BlockWriter, signature
from app.serving.anthropic.plan import thinking_settings
from app.serving.generation import Finished
from app.serving.policy import Limits
from app.serving.render import NamedEvent
from app.serving.responses.events import ResponseBuilder, event_name
from app.serving.responses.plan import reasoning_settings


def _data(event: NamedEvent) -> dict[str, Any]:
    raw = event.data if isinstance(event.data, str) else event.data.model_dump_json()
    data: dict[str, Any] = json.loads(raw)
    return data


def test_thinking_comes_first_as_its_own_block_signed_before_its_stop() -> None:
    writer = BlockWriter()
    events = [*writer.thinking("Let me "), *writer.thinking("see."), *writer.text("Paris.")]
    events += writer.close()
    assert [e.name for e in events] == [
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
    ]
    data = [_data(e) for e in events]
    assert data[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert [d["delta"] for d in data[2:4]] == [
        {"type": "thinking_delta", "thinking": "Let me "},
        {"type": "thinking_delta", "thinking": "see."},
    ]
    assert data[4]["delta"] == {"type": "signature_delta", "signature": signature("Let me see.")}
    assert [d["index"] for d in data if "index" in d] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert data[6]["content_block"] == {"type": "text", "text": ""}


def test_the_thinking_delta_frame_is_the_models_json() -> None:
    writer = BlockWriter()
    delta = writer.thinking('a "quoted"\nthought')[-1]
    model = ContentBlockDeltaEvent(index=0, delta=ThinkingDelta(thinking='a "quoted"\nthought'))
    assert delta.data == model.model_dump_json()


def test_the_signature_is_stable_and_depends_on_the_text() -> None:
    assert signature("x") == signature("x") != signature("y")
    assert signature("x")


def _messages(**fields: Any) -> MessagesRequest:
    body = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
    return MessagesRequest.model_validate({**body, **fields})


def test_thinking_settings_map_onto_the_reasoning_budget() -> None:
    limits = Limits(reasoning_budget=100)
    enabled = _messages(thinking={"type": "enabled", "budget_tokens": 12})
    assert thinking_settings(enabled.thinking, limits) == (12, {})
    disabled = _messages(thinking={"type": "disabled"})
    assert thinking_settings(disabled.thinking, limits) == (0, {"enable_thinking": False})
    assert thinking_settings(None, limits) == (100, {})  # absent: the server's default
    adaptive = _messages(thinking={"type": "adaptive"})
    assert thinking_settings(adaptive.thinking, Limits()) == (None, {})


def test_reasoning_effort_goes_to_the_template_and_none_asks_not_to_think() -> None:
    limits = Limits(reasoning_budget=50)
    high = ResponsesRequest.model_validate({"input": "Hi", "reasoning": {"effort": "high"}})
    assert reasoning_settings(high, limits) == (50, {"reasoning_effort": "high"})
    off = ResponsesRequest.model_validate({"input": "Hi", "reasoning": {"effort": "none"}})
    assert reasoning_settings(off, limits) == (0, {"enable_thinking": False})
    plain = ResponsesRequest.model_validate({"input": "Hi"})
    assert reasoning_settings(plain, Limits()) == (None, {})


def _template() -> ResponseObject:
    return ResponseObject(id="resp_1", created_at=1, status="in_progress", model="m")


def _finished(reason: Any = "stop") -> Finished:
    usage = Usage(prompt_tokens=5, cached_prompt_tokens=0, completion_tokens=9)
    return Finished(reason, usage, None)


def _json(event: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(event) if isinstance(event, str) else event.model_dump()
    return data


def test_reasoning_is_an_item_before_the_message_with_numbered_events() -> None:
    builder = ResponseBuilder(_template())
    events = [*builder.start(), *builder.reasoning("Hm, "), *builder.reasoning("easy.")]
    events += [*builder.text("Paris."), *builder.finish(_finished())]
    data = [_json(e) for e in events]
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    assert [d["type"] for d in data] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event_name(e) for e in events] == [d["type"] for d in data]
    assert data[2]["item"]["type"] == "reasoning"
    assert data[3]["part"] == {"type": "reasoning_text", "text": ""}
    assert data[6]["text"] == "Hm, easy."
    reasoning, message = builder.response.output
    assert reasoning.model_dump() == {
        "type": "reasoning",
        "id": reasoning.id,
        "status": "completed",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "Hm, easy."}],
    }
    assert message.type == "message"
    assert message.content[0].text == "Paris."  # type: ignore[union-attr]
    assert builder.response.usage is not None
    assert builder.response.usage.output_tokens_details.reasoning_tokens == 2


def test_the_reasoning_delta_frame_is_the_models_json() -> None:
    builder = ResponseBuilder(_template())
    raw = builder.reasoning('say "hi"\n')[-1]
    item_id = json.loads(raw)["item_id"]  # type: ignore[arg-type]
    model = ReasoningTextDeltaEvent(
        type="response.reasoning_text.delta",
        sequence_number=2,
        item_id=item_id,
        output_index=0,
        delta='say "hi"\n',
    )
    assert raw == model.model_dump_json()


def test_a_reply_cut_while_thinking_is_an_incomplete_reasoning_item() -> None:
    builder = ResponseBuilder(_template())
    builder.reasoning("still thinking")
    builder.finish(_finished("length"))
    (item,) = builder.response.output
    assert (item.type, item.status) == ("reasoning", "incomplete")
    assert builder.response.status == "incomplete"


def test_a_reply_that_only_thought_still_has_a_message() -> None:
    builder = ResponseBuilder(_template())
    builder.reasoning("thought")
    builder.finish(_finished())
    assert [item.type for item in builder.response.output] == ["reasoning", "message"]
