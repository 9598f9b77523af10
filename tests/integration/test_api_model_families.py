"""Each model family's template and call syntax through the HTTP API, on the fake engine.

The fake engine "generates" a family's recorded reply word by word; the server must render
the tools and the history with the family's own template and turn the reply back into
OpenAI ``tool_calls`` / ``reasoning_content`` and Ollama ``tool_calls`` / ``thinking``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from app.engine.types import ModelInfo
from tests.support.api import app_client
from tests.support.fake_engine import FakeEngine

TEMPLATES = Path(__file__).parents[1] / "fixtures" / "templates"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# family: (template, the reply the model writes, a marker the rendered tools show)
FAMILIES = {
    "qwen3": (
        "Qwen-Qwen3-0.6B",
        '<think> The user wants weather. </think> <tool_call> {"name": "get_weather", '
        '"arguments": {"city": "Paris"}} </tool_call>',
        "<tools>",
    ),
    "llama3": (
        "meta-llama-Llama-3.1-8B-Instruct",
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        "Given the following functions",
    ),
    "mistral-nemo": (
        "mistralai-Mistral-Nemo-Instruct-2407",
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        "[AVAILABLE_TOOLS]",
    ),
    "mistral-small": (
        "Mistral-Small-3.2-24B-Instruct-2506",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}',
        "[AVAILABLE_TOOLS]",
    ),
    "qwen3-coder": (
        "Qwen3-Coder",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "</function>\n</tool_call>",
        "<function>",
    ),
    "deepseek-r1": (
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
        "Thinking about it. </think> <\uff5ctool\u2581calls\u2581begin\uff5c>"
        "<\uff5ctool\u2581call\u2581begin\uff5c>function<\uff5ctool\u2581sep\uff5c>get_weather\n"
        '```json\n{"city": "Paris"}\n```<\uff5ctool\u2581call\u2581end\uff5c>'
        "<\uff5ctool\u2581calls\u2581end\uff5c>",
        "",
    ),
    "gpt-oss": (
        "openai-gpt-oss-120b",
        "<|channel|>analysis<|message|>The user wants weather.<|end|><|start|>assistant"
        "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
        '{"city": "Paris"}',
        "namespace functions",
    ),
}
HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_abc", "content": "18 degrees"},
]


class FamilyEngine(FakeEngine):
    """The fake engine with a family's chat template."""

    def __init__(self, template: str, reply: str) -> None:
        super().__init__(reply=lambda _: reply, n_ctx_slot=8192)
        self.template = template

    def model_info(self) -> ModelInfo:
        return replace(super().model_info(), chat_template=self.template)


def _engine(family: str) -> FamilyEngine:
    name, reply, _ = FAMILIES[family]
    return FamilyEngine((TEMPLATES / f"{name}.jinja").read_text(), reply)


def _body(**extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    return {"messages": messages, "tools": [WEATHER], "max_tokens": 200, **extra}


@pytest.mark.parametrize("family", FAMILIES)
async def test_call_comes_back_as_tool_calls(family: str) -> None:
    engine = _engine(family)
    async with app_client(engine) as (client, _):
        reply = await client.post("/v1/chat/completions", json=_body(tool_choice="required"))
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    marker = FAMILIES[family][2]
    assert marker in str(engine.submitted[0].prompt)  # the family's template rendered the tools
    grammar = engine.submitted[0].sampling.grammar
    assert grammar is not None
    assert not grammar.trigger


@pytest.mark.parametrize("family", FAMILIES)
async def test_streamed_call_reassembles_and_leaks_no_markup(family: str) -> None:
    async with app_client(_engine(family)) as (client, _):
        reply = await client.post("/v1/chat/completions", json=_body(stream=True))
    chunks = [
        json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: {")
    ]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    content = "".join(d.get("content") or "" for d in deltas)
    assert content == ""
    pieces = [t for d in deltas for t in d.get("tool_calls") or []]
    assert pieces[0]["id"]
    assert pieces[0]["function"]["name"] == "get_weather"
    arguments = "".join(p["function"].get("arguments", "") for p in pieces)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("family", FAMILIES)
async def test_history_with_a_tool_result_renders_in_the_family_template(family: str) -> None:
    engine = _engine(family)
    async with app_client(engine) as (client, _):
        body = {"messages": HISTORY, "tools": [WEATHER], "max_tokens": 5}
        reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    assert "18 degrees" in str(engine.submitted[0].prompt)


async def test_arguments_stream_in_pieces() -> None:
    name, _, _ = FAMILIES["qwen3"]
    reply = (
        '<tool_call> {"name": "get_weather", "arguments": {"city": "Rio de Janeiro"}} </tool_call>'
    )
    engine = FamilyEngine((TEMPLATES / f"{name}.jinja").read_text(), reply)
    async with app_client(engine) as (client, _):
        out = await client.post("/v1/chat/completions", json=_body(stream=True))
    pieces = [
        t["function"].get("arguments")
        for line in out.text.splitlines()
        if line.startswith("data: {")
        for choice in json.loads(line[6:])["choices"]
        for t in choice["delta"].get("tool_calls") or []
    ]
    assert len([p for p in pieces if p]) >= 3  # not one piece when the call is complete
    assert "".join(p or "" for p in pieces) == '{"city": "Rio de Janeiro"}'


async def test_reasoning_is_split_from_the_answer() -> None:
    name = FAMILIES["qwen3"][0]
    engine = FamilyEngine(
        (TEMPLATES / f"{name}.jinja").read_text(), "<think> Easy. </think> Paris."
    )
    async with app_client(engine) as (client, _):
        whole = await client.post("/v1/chat/completions", json={"messages": HISTORY[:1]})
        streamed = await client.post(
            "/v1/chat/completions", json={"messages": HISTORY[:1], "stream": True}
        )
        kept = await client.post(
            "/v1/chat/completions", json={"messages": HISTORY[:1], "reasoning_format": "none"}
        )
    message = whole.json()["choices"][0]["message"]
    assert message["content"] == "Paris."
    assert message["reasoning_content"].strip() == "Easy."
    assert message["reasoning"] == message["reasoning_content"]
    deltas = [
        json.loads(line[6:])["choices"][0]["delta"]
        for line in streamed.text.splitlines()
        if line.startswith("data: {") and json.loads(line[6:])["choices"]
    ]
    assert "".join(d.get("reasoning_content") or "" for d in deltas).strip() == "Easy."
    assert "".join(d.get("content") or "" for d in deltas) == "Paris."
    assert kept.json()["choices"][0]["message"]["content"] == "<think> Easy. </think> Paris."


async def test_chat_template_kwargs_reach_the_template() -> None:
    engine = _engine("qwen3")
    async with app_client(engine) as (client, _):
        body = {"messages": HISTORY[:1], "chat_template_kwargs": {"enable_thinking": False}}
        await client.post("/v1/chat/completions", json=body)
    assert str(engine.submitted[0].prompt).endswith("<think>\n\n</think>\n\n")


@pytest.mark.parametrize("stream", [False, True])
async def test_ollama_tools_and_thinking(stream: bool) -> None:
    async with app_client(_engine("qwen3")) as (client, _):
        body = {
            "model": "fake-model",
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [WEATHER],
            "stream": stream,
        }
        reply = await client.post("/api/chat", json=body)
    assert reply.status_code == 200, reply.text
    lines = [json.loads(line) for line in reply.text.splitlines() if line.strip()]
    calls = [c for line in lines for c in line["message"].get("tool_calls") or []]
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert calls[0]["function"]["arguments"] == {"city": "Paris"}  # an object, as Ollama's
    thinking = "".join(line["message"].get("thinking") or "" for line in lines)
    assert thinking.strip() == "The user wants weather."
    assert "".join(line["message"]["content"] for line in lines).strip() == ""
    assert lines[-1]["done"]
    assert lines[-1]["done_reason"] == "stop"


async def test_ollama_history_with_tool_results() -> None:
    engine = _engine("qwen3")
    async with app_client(engine) as (client, _):
        body = {
            "model": "fake-model",
            "stream": False,
            "tools": [WEATHER],
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                    ],
                },
                {"role": "tool", "content": "18 degrees", "tool_name": "get_weather"},
            ],
        }
        reply = await client.post("/api/chat", json=body)
    assert reply.status_code == 200, reply.text
    prompt = str(engine.submitted[0].prompt)
    assert '"city": "Paris"' in prompt
    assert "<tool_response>\n18 degrees" in prompt


async def test_apply_template_renders_tools_and_kwargs() -> None:
    engine = _engine("qwen3")
    async with app_client(engine) as (client, _):
        body = {**_body(), "chat_template_kwargs": {"enable_thinking": False}}
        reply = await client.post("/apply-template", json=body)
    assert reply.status_code == 200, reply.text
    prompt = reply.json()["prompt"]
    assert "<tools>" in prompt
    assert '"name": "get_weather"' in prompt
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert engine.submitted == []  # nothing generated


async def test_a_file_without_a_template_gets_its_architecture_s_turns() -> None:
    class Gemma(FakeEngine):
        def model_info(self) -> ModelInfo:
            return replace(super().model_info(), chat_template=None, architecture="gemma2")

    async with app_client(Gemma()) as (client, _):
        reply = await client.post("/apply-template", json={"messages": HISTORY[:1]})
    assert reply.json()["prompt"].endswith(
        "<start_of_turn>user\nWeather in Paris?<end_of_turn>\n<start_of_turn>model\n"
    )


async def test_response_format_is_constrained_after_the_reasoning() -> None:
    engine = _engine("qwen3")
    async with app_client(engine) as (client, _):
        body = {"messages": HISTORY[:1], "response_format": {"type": "json_object"}}
        await client.post("/v1/chat/completions", json=body)
    grammar = engine.submitted[0].sampling.grammar
    assert grammar is not None
    assert grammar.gbnf.startswith('root ::= ("<think>" cria-thought "</think>" cria-ws)? ')


@pytest.mark.parametrize(
    ("family", "special"), [("qwen3", False), ("mistral-nemo", True), ("gpt-oss", True)]
)
async def test_control_token_markers_are_asked_for_as_text(family: str, special: bool) -> None:
    engine = _engine(family)
    async with app_client(engine) as (client, _):
        await client.post("/v1/chat/completions", json=_body())
    assert engine.submitted[0].sampling.special_text is special


async def test_reasoning_budget_reaches_the_engine() -> None:
    engine = _engine("qwen3")
    async with app_client(engine, reasoning_budget=64) as (client, _):
        await client.post("/v1/chat/completions", json={"messages": HISTORY[:1]})
        await client.post(
            "/v1/chat/completions", json={"messages": HISTORY[:1], "reasoning_budget": 0}
        )
    server_default, zero = (r.sampling for r in engine.submitted)
    assert server_default.reasoning_budget == 64
    assert server_default.reasoning_markers == ("<think>", "</think>")
    assert zero.reasoning_budget == 0
    assert str(engine.submitted[1].prompt).endswith("<think>\n\n</think>\n\n")  # asked not to think
