"""Anthropic's Messages API against a real server on the default model, with the anthropic SDK.

One server for the module (a larger slot, for the Claude Code-shaped request with its many
tools); the SDK sends the API key as ``x-api-key``. SmolLM2 has no tool template, so calls
use the generic format; ``tool_choice: any`` constrains them with a grammar.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.support.claude_code import claude_code_body
from tests.support.openai_fixtures import KEY
from tests.support.server import ServerProcess, real_model_env, running_server
from tests.support.sse_client import parse_sse

MODEL = "SmolLM2-135M-Instruct.Q4_1"
SYSTEM = "You are a helpful assistant."
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# anthropic 2.x's create() has no temperature parameter any more; the API still takes one.
GREEDY = {"temperature": 0.0}
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[ServerProcess]:
    """The default model with 4096-token slots (Claude Code's tools take room) and a key."""
    env = real_model_env(model_path, api_key=KEY, ctx_size="4096", parallel="2")
    with running_server(env) as process:
        yield process


@pytest.fixture
def claude(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=server.base_url, api_key=KEY, timeout=120, max_retries=0
    ) as sdk:
        yield sdk


def test_create_and_stream_give_the_same_reply(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=MODEL, max_tokens=24, extra_body=GREEDY, system=SYSTEM, messages=QUESTION
    )
    assert message.type == "message"
    assert message.model == MODEL
    assert message.stop_reason in ("end_turn", "max_tokens")
    (block,) = message.content
    assert block.type == "text"
    assert "Paris" in block.text
    assert message.usage.output_tokens > 0
    with claude.messages.stream(
        model=MODEL, max_tokens=24, extra_body=GREEDY, system=SYSTEM, messages=QUESTION
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == block.text
    assert final.content[0].type == "text"
    assert final.content[0].text == block.text
    assert final.stop_reason == message.stop_reason
    assert final.usage.output_tokens == message.usage.output_tokens
    # The second, identical prompt found its prefix in the prompt cache.
    assert final.usage.cache_read_input_tokens
    total = final.usage.input_tokens + final.usage.cache_read_input_tokens
    assert total == message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)


def test_count_tokens_matches_the_prompt_a_reply_used(claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(model=MODEL, system=SYSTEM, messages=QUESTION)
    message = claude.messages.create(
        model=MODEL, max_tokens=4, system=SYSTEM, messages=QUESTION, stop_sequences=["\n"]
    )
    usage = message.usage
    assert counted.input_tokens == usage.input_tokens + (usage.cache_read_input_tokens or 0)


def test_a_stop_sequence_ends_the_reply_as_stop_sequence(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=MODEL,
        max_tokens=24,
        extra_body=GREEDY,
        system=SYSTEM,
        messages=QUESTION,
        stop_sequences=["Paris"],
    )
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "Paris"
    assert all("Paris" not in b.text for b in message.content if b.type == "text")


def test_tool_any_gives_a_tool_use_and_a_tool_result_turn_is_answered(
    claude: anthropic.Anthropic,
) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = claude.messages.create(
        model=MODEL, max_tokens=48, messages=ask, tools=[WEATHER], tool_choice={"type": "any"}
    )
    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if b.type == "tool_use"]
    assert calls
    call = calls[0]
    assert call.name == "get_weather"
    assert isinstance(call.input, dict)
    assert isinstance(call.input["city"], str)
    follow_up = [
        *ask,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "18 C and sunny"}
            ],
        },
    ]
    second = claude.messages.create(
        model=MODEL,
        max_tokens=32,
        messages=follow_up,
        tools=[WEATHER],
        tool_choice={"type": "none"},
    )
    assert second.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in second.content] == ["text"]


def test_tool_any_streamed_gives_the_parsed_input(claude: anthropic.Anthropic) -> None:
    ask = [{"role": "user", "content": "Weather in Rome?"}]
    with claude.messages.stream(
        model=MODEL, max_tokens=48, messages=ask, tools=[WEATHER], tool_choice={"type": "any"}
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    call = next(b for b in final.content if b.type == "tool_use")
    assert isinstance(call.input, dict)
    assert isinstance(call.input["city"], str)


def test_errors_come_as_the_sdks_typed_errors(
    claude: anthropic.Anthropic, server: ServerProcess
) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model=MODEL, max_tokens=8, messages=[])
    assert bad.value.status_code == 400
    assert isinstance(bad.value.body, dict)
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    with (
        anthropic.Anthropic(base_url=server.base_url, api_key="wrong", max_retries=0) as other,
        pytest.raises(anthropic.AuthenticationError),
    ):
        other.messages.create(model=MODEL, max_tokens=8, messages=QUESTION)


def test_a_claude_code_shaped_request_is_answered(server: ServerProcess) -> None:
    body = claude_code_body("claude-sonnet-4-5-20250929", max_tokens=16)
    response = httpx.post(
        f"{server.base_url}/v1/messages",
        json=body,
        headers={
            "x-api-key": KEY,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    events = parse_sse(response.text)
    names = [event.event for event in events]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert "error" not in names
    assert events[-2].json()["usage"]["output_tokens"] > 0
