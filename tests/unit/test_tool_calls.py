"""Tool calls out of text (streamed in any split), tools into the prompt, the call grammar."""

from __future__ import annotations

import json

import pytest

from app.errors import InvalidRequest
from app.schemas.chat import ChatCompletionRequest
from app.serving.json_schema import enforceable_schema
from app.serving.tool_formats import CallSplitter
from app.serving.tools import ParsedCall, ToolCalls, takes_tools, tool_prompt

CALLS = ToolCalls(frozenset({"get_weather"}))
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
REPLY = (
    'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
)


def _split(pieces: list[str]) -> list[str | ParsedCall]:
    splitter = CallSplitter(CALLS.fmt, CALLS.names)
    out = [item for piece in pieces for item in splitter.push(piece)]
    return out + list(splitter.flush())


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_calls_come_out_whole_however_the_text_is_split(size: int) -> None:
    out = _split([REPLY[i : i + size] for i in range(0, len(REPLY), size)])
    text = "".join(item for item in out if isinstance(item, str))
    calls = [item for item in out if isinstance(item, ParsedCall)]
    assert text == "Sure."  # whitespace before a call is not content
    assert [json.loads(c.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert all(c.name == "get_weather" and c.id.startswith("call_") for c in calls)


def test_text_that_only_looks_like_a_call_stays_text() -> None:
    for text in ["a <tool_ca", "x <tool_call>{not json}</tool_call> y", '<tool_call>{"name": 1']:
        out = _split([text])
        assert "".join(i for i in out if isinstance(i, str)) == text
    unknown = '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'
    assert _split([unknown]) == [unknown]


def _body(**extra: object) -> ChatCompletionRequest:
    messages = [{"role": "user", "content": "Weather?"}]
    return ChatCompletionRequest.model_validate({"messages": messages, **extra})


def test_generic_format_describes_tools_in_the_system_message() -> None:
    prompt = tool_prompt(_body(tools=[TOOL]), "{{ messages }}")
    assert prompt.messages[0]["role"] == "system"
    assert "get_weather" in prompt.messages[0]["content"]
    assert prompt.template_tools is None
    assert prompt.grammar is not None
    assert prompt.grammar.trigger == "<tool_call>"  # auto: lazy
    assert prompt.calls is not None
    assert (prompt.calls.names, prompt.calls.fmt.name) == (CALLS.names, "generic")


def test_required_and_named_choices_are_not_lazy_and_none_offers_nothing() -> None:
    required = tool_prompt(_body(tools=[TOOL], tool_choice="required"), None).grammar
    assert required is not None
    assert not required.trigger
    assert required.gbnf.startswith("root ::= tc-call\n")  # one call, then the reply ends
    parallel = tool_prompt(
        _body(tools=[TOOL], tool_choice="required", parallel_tool_calls=True), None
    ).grammar
    assert parallel is not None
    assert parallel.gbnf.startswith("root ::= tc-call (tc-sep tc-call)*")
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert tool_prompt(_body(tools=[TOOL], tool_choice=named), None).grammar is not None
    none = tool_prompt(_body(tools=[TOOL], tool_choice="none"), None)
    assert none.grammar is None
    assert none.calls is None
    with pytest.raises(InvalidRequest, match="not in tools"):
        tool_prompt(
            _body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "x"}}), None
        )


def test_history_with_calls_and_results() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    history = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    body = ChatCompletionRequest.model_validate({"messages": history, "tools": [TOOL]})
    generic = tool_prompt(body, None).messages
    assert generic[2]["content"].startswith("<tool_call>\n")
    assert generic[3] == {"role": "user", "content": "<tool_response>\n18C\n</tool_response>"}
    native_template = "{% for t in tools %}{{ t }}{% endfor %}<tool_call>"
    assert takes_tools(native_template)
    native = tool_prompt(body, native_template)
    assert native.template_tools is not None
    assert native.messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert native.messages[2] == {"role": "tool", "content": "18C", "tool_call_id": "call_1"}


async def test_logprobs_stay_with_content_and_leave_calls_out() -> None:
    from app.engine.types import TokenLogprob, Usage
    from app.serving.generation import Finished
    from app.serving.logprobs import LoggedPiece, logprobs_of
    from app.serving.tools import split_tool_calls

    def lp(text: str) -> TokenLogprob:
        return TokenLogprob(text.encode(), -1.0)

    async def stream():  # type: ignore[no-untyped-def]
        yield LoggedPiece("Hi", [lp("Hi")])
        yield LoggedPiece(' <tool_call>{"name": "get_weather", "arguments": {}}', [lp("call")])
        yield LoggedPiece("</tool_call>", [lp("end")])
        yield Finished("stop", Usage(1, 0, 3), None)

    out = [item async for item in split_tool_calls(stream(), CALLS)]
    assert [t.token for item in out if isinstance(item, str) for t in logprobs_of(item)] == [b"Hi"]
    assert isinstance(out[1], ParsedCall)
    assert isinstance(out[-1], Finished)
    assert out[-1].reason == "tool_calls"
    assert out[-1].logprobs == ()


LOOSE_SCHEMA = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "format": "uri"},
        "retries": {"type": "integer", "minimum": 0},  # enforced (structured output II)
        "tags": {"type": "array", "items": {"type": "string", "format": "hostname"}},
        "ids": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    },
    "required": ["url"],
    "additionalProperties": False,
    "$schema": "http://json-schema.org/draft-07/schema#",
}


def _loose_tool(**extra: object) -> dict[str, object]:
    return {"type": "function", "function": {"name": "fetch", "parameters": LOOSE_SCHEMA, **extra}}


def test_what_the_grammar_cannot_enforce_is_dropped_from_a_tools_grammar_only() -> None:
    schema, dropped = enforceable_schema(LOOSE_SCHEMA)
    assert sorted(dropped) == [
        "`format: uri` (at properties.url)",
        "`uniqueItems` (at properties.ids)",
    ]
    assert schema == {
        **LOOSE_SCHEMA,
        "properties": {
            "url": {"type": "string"},
            "retries": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string", "format": "hostname"}},
            "ids": {"type": "array", "items": {"type": "integer"}},
        },
    }
    prompt = tool_prompt(_body(tools=[_loose_tool()], tool_choice="required"), None)
    assert prompt.grammar is not None
    (rule,) = prompt.grammar.json_rules
    assert "uri" not in rule.schema
    assert '"format": "uri"' in prompt.messages[0]["content"]  # the prompt shows it all


def test_a_strict_tool_still_refuses_what_the_grammar_cannot_enforce() -> None:
    with pytest.raises(InvalidRequest, match="format: uri"):
        tool_prompt(_body(tools=[_loose_tool(strict=True)], tool_choice="required"), None)
