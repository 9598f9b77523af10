"""Tool calling against the real model in a real server, with the openai SDK and LangChain.

SmolLM2's template has no tool support, so this runs the generic format (tools described in
the system message, ``<tool_call>`` blocks). ``required`` and named choices are constrained
by a grammar, so every call is well-formed and its arguments validate, for any seed.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.support.openai_fixtures import KEY
from tests.support.server import ServerProcess

MODEL = "SmolLM2-135M-Instruct.Q4_1"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 20}},
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


class GetWeather(BaseModel):
    """Current weather in a city."""

    city: str = Field(max_length=30)


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int


def _one_call(message: object) -> tuple[str, dict[str, object], str]:
    calls = message.tool_calls  # type: ignore[attr-defined]
    assert calls
    call = calls[0]
    assert call.id.startswith("call_")
    assert call.type == "function"
    return call.function.name, json.loads(call.function.arguments), call.id


def test_required_tool_call_is_well_formed_and_the_follow_up_works(client: openai.OpenAI) -> None:
    for seed in range(4):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=ASK,  # type: ignore[arg-type]
            tools=[WEATHER, TIME],  # type: ignore[list-item]
            tool_choice="required",
            parallel_tool_calls=False,
            seed=seed,
            max_tokens=80,
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert len(choice.message.tool_calls or ()) == 1  # parallel_tool_calls=False
        name, arguments, call_id = _one_call(choice.message)
        schema = WEATHER if name == "get_weather" else TIME
        jsonschema.validate(arguments, schema["function"]["parameters"])  # type: ignore[index]
    follow_up = client.chat.completions.create(
        model=MODEL,
        messages=[
            *ASK,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call_id, "content": '{"temperature_c": 18}'},
        ],  # type: ignore[list-item]
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        max_tokens=30,
        temperature=0.0,
    )
    assert follow_up.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert follow_up.choices[0].message.content or follow_up.choices[0].message.tool_calls


def test_forced_call_without_parallel_flag_is_one_call_that_ends_the_reply(
    client: openai.OpenAI,
) -> None:
    # parallel_tool_calls unset (the SDK's default): one call, then the reply ends, for any
    # seed (the grammar used to allow repeated calls until max_tokens).
    for seed in range(10):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=ASK,  # type: ignore[arg-type]
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice="required",
            seed=seed,
            max_tokens=120,
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        assert len(choice.message.tool_calls or []) == 1


def test_named_choice_calls_that_function(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=80,
    )
    name, arguments, _ = _one_call(reply.choices[0].message)
    assert name == "get_time"
    jsonschema.validate(arguments, TIME["function"]["parameters"])  # type: ignore[index]


def test_streamed_call_reassembles_into_the_same_call(client: openai.OpenAI) -> None:
    args = {
        "model": MODEL,
        "messages": ASK,
        "tools": [openai.pydantic_function_tool(GetWeather)],
        "tool_choice": "required",
        "temperature": 0.0,
        "max_tokens": 80,
    }
    whole = client.chat.completions.create(**args)  # type: ignore[call-overload]
    with client.chat.completions.stream(**args) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    streamed = final.choices[0].message.tool_calls
    assert streamed
    assert streamed[0].function.name == whole.choices[0].message.tool_calls[0].function.name
    assert isinstance(streamed[0].function.parsed_arguments, GetWeather)
    assert (
        streamed[0].function.arguments == whole.choices[0].message.tool_calls[0].function.arguments
    )


def test_tool_choice_none_never_calls(client: openai.OpenAI) -> None:
    for seed in range(3):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=ASK,  # type: ignore[arg-type]
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice="none",
            seed=seed,
            max_tokens=30,
        )
        assert reply.choices[0].message.tool_calls is None
        assert reply.choices[0].finish_reason in ("stop", "length")


def test_auto_reply_is_text_or_well_formed_calls(client: openai.OpenAI) -> None:
    for seed in range(3):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=ASK,  # type: ignore[arg-type]
            tools=[WEATHER],  # type: ignore[list-item]
            seed=seed,
            max_tokens=60,
        )
        message, reason = reply.choices[0].message, reply.choices[0].finish_reason
        # The model may call (the lazy grammar then makes the call well-formed) or not;
        # a second call can still run out of max_tokens ("length", left as text).
        for call in message.tool_calls or []:
            arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
            jsonschema.validate(arguments, WEATHER["function"]["parameters"])  # type: ignore[index]
        assert (reason == "tool_calls") == (reason != "length" and bool(message.tool_calls))
        assert message.tool_calls or message.content is not None


def test_bad_tool_schema_is_400_naming_it(server: ServerProcess) -> None:
    bad = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {
                    "n": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
                },
            },
            "strict": True,  # a tool that is not strict drops what the grammar cannot enforce
        },
    }
    body = {"messages": ASK, "tools": [bad], "tool_choice": "required", "max_tokens": 5}
    headers = {"Authorization": f"Bearer {KEY}"}
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=headers)
    assert reply.status_code == 400
    assert "uniqueItems" in reply.json()["error"]["message"]
    assert reply.json()["error"]["param"] == "tools"


def test_langchain_structured_output_and_bind_tools(server: ServerProcess) -> None:
    llm = ChatOpenAI(
        base_url=f"{server.base_url}/v1", api_key=KEY, model=MODEL, max_tokens=60, temperature=0.0
    )
    person = llm.with_structured_output(Person).invoke("Invent a person.")
    assert isinstance(person, Person)
    message = llm.bind_tools([GetWeather], tool_choice="any").invoke("Weather in Rome?")
    assert message.tool_calls
    assert message.tool_calls[0]["name"] == "GetWeather"
    assert isinstance(message.tool_calls[0]["args"]["city"], str)
