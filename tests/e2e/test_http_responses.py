"""OpenAI's Responses API against the real model in a real server, with the openai SDK.

One server for the module (``server``/``client`` from tests/support/openai_fixtures.py);
replies are kept short. SmolLM2 has no native tool format: ``tool_choice: "required"``
constrains the reply with a grammar to a well-formed call, so a call comes back for any seed.
"""

from __future__ import annotations

import json
from typing import Literal

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.support.openai_fixtures import KEY
from tests.support.server import ServerProcess

MODEL = "SmolLM2-135M-Instruct.Q4_1"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def test_create_returns_a_completed_message(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input="Say hello.", instructions="Answer briefly.", max_output_tokens=16
    )
    assert response.object == "response"
    assert response.status in ("completed", "incomplete")
    assert response.output_text
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    assert response.usage.input_tokens_details.cached_tokens >= 0
    fetched = client.responses.retrieve(response.id)
    assert fetched.output_text == response.output_text
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_streaming_with_the_sdk_helper_and_with_create(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Count to five.", max_output_tokens=12) as s:
        streamed = list(s)
    deltas = [e.delta for e in streamed if e.type == "response.output_text.delta"]
    last = streamed[-1]
    # The SDK's get_final_response() wants response.completed; a cut reply is incomplete.
    assert last.type in ("response.completed", "response.incomplete")
    assert "".join(deltas) == last.response.output_text
    events = list(
        client.responses.create(model=MODEL, input="Hi", max_output_tokens=4, stream=True)
    )
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == len(numbers)
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")


def test_a_required_tool_call_then_its_output_via_previous_response_id(
    client: openai.OpenAI,
) -> None:
    first = client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]  # the SDK's TypedDict, as a dict
        tool_choice="required",
        max_output_tokens=60,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls, first.output
    call = calls[0]
    assert call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}],
        tools=[WEATHER],  # type: ignore[list-item]  # the SDK's TypedDict, as a dict
        max_output_tokens=24,
    )
    assert second.previous_response_id == first.id
    assert second.status in ("completed", "incomplete")
    assert second.output


class City(BaseModel):
    name: str
    country: str


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    parsed = client.responses.parse(
        model=MODEL,
        input="Name a city in France as JSON.",
        text_format=City,
        max_output_tokens=60,
    )
    assert isinstance(parsed.output_parsed, City)


def test_input_tokens_counts_without_generating(client: openai.OpenAI) -> None:
    count = client.responses.input_tokens.count(model=MODEL, input="Hello there", instructions="x")
    assert count.input_tokens > 2


def test_a_codex_shaped_body_is_answered(server: ServerProcess) -> None:
    body = {
        "model": "gpt-5-codex",
        "instructions": "You are Codex, a coding agent.",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "sandbox: read-only"}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "List the files."}],
            },
        ],
        "tools": [
            {
                "type": "function",
                "name": "shell",
                "description": "Run a command.",
                "strict": False,
                "parameters": {
                    "type": "object",
                    "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                    "required": ["command"],
                },
            },
            {"type": "local_shell"},
            {"type": "web_search", "external_web_access": False},
            {
                "type": "custom",
                "name": "apply_patch",
                "description": "Patch files.",
                "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
            },
            {
                "type": "function",
                "name": "update_plan",
                "parameters": {"type": "object", "properties": {}},
            },
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "019a-session",
        "text": {"verbosity": "low"},
        "max_output_tokens": 24,
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as http:
        response = http.post("/v1/responses", json=body)
    assert response.status_code == 200
    names = [
        line.removeprefix("event: ")
        for line in response.text.splitlines()
        if line.startswith("event: ")
    ]
    assert names[0] == "response.created"
    assert names[-1] in ("response.completed", "response.incomplete")


def test_an_error_has_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="x", previous_response_id="resp_unknown")
    assert info.value.param == "previous_response_id"


def test_an_openai_agents_tool_call_runs_end_to_end(server: ServerProcess) -> None:
    """openai-agents with its Responses model: the agent calls our tool, the run ends with it."""
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    called: list[str] = []

    @agents.function_tool
    def get_weather(city: Literal["Paris", "London", "Rome"]) -> str:
        """Current weather in a city."""
        called.append(city)
        return f"Sunny in {city}"

    sdk = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, timeout=120)
    agent = agents.Agent(
        name="weather",
        instructions="Use the tool to answer.",
        tools=[get_weather],
        model=agents.OpenAIResponsesModel(model=MODEL, openai_client=sdk),
        model_settings=agents.ModelSettings(tool_choice="required", max_tokens=60),
        tool_use_behavior="stop_on_first_tool",
    )
    result = agents.Runner.run_sync(agent, "What is the weather in Paris?")
    assert called, result
    assert result.final_output == f"Sunny in {called[0]}"
