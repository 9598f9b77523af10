"""Model families end to end: the default model carrying real families' chat templates.

Each template is written onto a copy of the default model with ``gguf-new-metadata`` (the
``gguf`` package), so the server reads it from the GGUF file as it would from the real
family's model, detects the family's call syntax and constrains forced calls with a grammar
in that syntax. SmolLM2 knows none of these formats: the grammar makes every forced call
well-formed, which is what these tests check (small contexts, one slot, few tokens).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from app.engine.types import EngineConfig
from app.schemas.tools import ToolDefinition
from app.serving.reasoning import HARMONY, ReasoningPlan, after_reasoning
from app.serving.tool_formats import FORMATS, ToolSpec
from tests.support.openai_fixtures import KEY
from tests.support.server import ServerProcess, real_model_env, running_server

TEMPLATES = Path(__file__).parents[1] / "fixtures" / "templates"
FAMILIES = {
    "qwen3": "Qwen-Qwen3-0.6B",
    "llama3": "meta-llama-Llama-3.1-8B-Instruct",
    "mistral-nemo": "mistralai-Mistral-Nemo-Instruct-2407",
    "qwen3-coder": "Qwen3-Coder",
}
MARKUP = ("<tool_call>", "[TOOL_CALLS]", "<function=", '"parameters"')
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
THINK = ("<think>", "</think>")


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_server(
    request: pytest.FixtureRequest, model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ServerProcess]]:
    """A server on a copy of the default model carrying the family's template."""
    family = request.param
    copy = tmp_path_factory.mktemp("families") / f"{family}.gguf"
    tool = Path(sys.executable).with_name("gguf-new-metadata")
    template = TEMPLATES / f"{FAMILIES[family]}.jinja"
    subprocess.run(
        [str(tool), "--chat-template-file", str(template), str(model_path), str(copy)],
        check=True,
        capture_output=True,
    )
    env = real_model_env(copy, api_key=KEY, parallel="1", ctx_size="2048")
    try:
        with running_server(env) as server:
            yield family, server
    finally:
        copy.unlink(missing_ok=True)


@pytest.fixture
def sdk(family_server: tuple[str, ServerProcess]) -> Iterator[openai.OpenAI]:
    """The openai SDK on the family's server."""
    url = f"{family_server[1].base_url}/v1"
    with openai.OpenAI(base_url=url, api_key=KEY, timeout=180) as client:
        yield client


def _forced(sdk: openai.OpenAI, choice: object, **extra: object) -> object:
    return sdk.chat.completions.create(
        model="m",
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice=choice,  # type: ignore[arg-type]
        max_tokens=60,
        temperature=0,
        **extra,  # type: ignore[arg-type]
    )


def test_forced_and_named_calls_are_tool_calls(sdk: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", named):
        reply = _forced(sdk, choice)
        message = reply.choices[0].message  # type: ignore[attr-defined]
        assert reply.choices[0].finish_reason == "tool_calls"  # type: ignore[attr-defined]
        assert message.content is None
        [call] = message.tool_calls
        assert call.function.name == "get_weather"
        assert isinstance(json.loads(call.function.arguments)["city"], str)


def test_streamed_call_reassembles_to_the_same_call(sdk: openai.OpenAI) -> None:
    whole = _forced(sdk, "required", seed=7)
    with sdk.chat.completions.stream(
        model="m",
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        max_tokens=60,
        temperature=0,
        seed=7,
    ) as stream:
        final = stream.get_final_completion()
    streamed = final.choices[0].message
    expected = whole.choices[0].message.tool_calls[0]  # type: ignore[attr-defined]
    assert final.choices[0].finish_reason == "tool_calls"
    assert streamed.tool_calls is not None
    assert streamed.tool_calls[0].function.name == expected.function.name
    assert streamed.tool_calls[0].function.arguments == expected.function.arguments
    assert not streamed.content


def test_history_with_a_tool_result_gets_an_answer(
    family_server: tuple[str, ServerProcess], sdk: openai.OpenAI
) -> None:
    reply = _forced(sdk, "required")
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[attr-defined]
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 18}'},
    ]
    follow_up = sdk.chat.completions.create(
        model="m",
        messages=history,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=20,
    )
    assert follow_up.choices[0].finish_reason in ("stop", "length")
    if family_server[0] != "mistral-nemo":
        # Nemo's template ends the prompt at [/TOOL_RESULTS] with no assistant turn opened;
        # SmolLM2 (not Mistral) answers that with its end token at once: no text to check.
        assert follow_up.choices[0].message.content


def test_plain_chat_has_no_call_markup(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=20,
    )
    content = reply.choices[0].message.content or ""
    assert content
    assert not any(mark in content for mark in MARKUP)


@pytest.mark.parametrize("family_server", ["qwen3"], indirect=True)  # the thinking one
def test_reasoning_is_split_when_the_template_thinks(
    family_server: tuple[str, ServerProcess], sdk: openai.OpenAI
) -> None:
    grammar = 'root ::= "<think>" [a-z ]{3,20} "</think>" [a-z]{1,10}'
    reply = sdk.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Think, then say a word."}],
        max_tokens=40,
        extra_body={"grammar": grammar},
    )
    message = reply.choices[0].message
    assert message.model_extra is not None
    assert message.model_extra["reasoning_content"]
    assert message.content
    assert "<think>" not in message.content


def test_every_format_s_grammars_compile_in_llama_cpp(model_path: Path) -> None:
    from app.engine.llama import load_backend

    backend = load_backend(EngineConfig(model_path=str(model_path), n_slots=1, n_ctx_slot=256))
    tools = (ToolDefinition.model_validate(WEATHER),)
    try:
        for fmt in FORMATS.values():
            for forced, parallel in ((True, False), (True, True), (False, False), (False, True)):
                spec = ToolSpec(tools, forced, parallel)
                built = fmt().bind(spec).grammar(spec)
                if built is None:
                    continue
                backend.check_grammar(built)
                backend.check_grammar(after_reasoning(built, ReasoningPlan(HARMONY, False)))
                backend.check_grammar(after_reasoning(built, ReasoningPlan(THINK, True)))
    finally:
        backend.close()


@pytest.mark.parametrize("family_server", ["qwen3"], indirect=True)  # the thinking one
def test_reasoning_budget_closes_the_block(
    family_server: tuple[str, ServerProcess], sdk: openai.OpenAI
) -> None:
    grammar = 'root ::= "<think>" [a-z ]* "</think>" [a-z]{1,10}'
    reply = sdk.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Think long, then say a word."}],
        max_tokens=60,
        temperature=0,
        extra_body={"grammar": grammar, "reasoning_budget": 6},
    )
    message = reply.choices[0].message
    assert message.model_extra is not None
    thought = message.model_extra["reasoning_content"]
    assert thought
    assert len(thought) < 60  # six tokens of thinking, not the whole reply
    assert message.content
