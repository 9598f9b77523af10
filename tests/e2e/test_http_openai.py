"""The OpenAI SDK against a real uvicorn process serving the real default model.

Greedy (temperature 0) requests make the streamed and non-streamed text comparable.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.openai_fixtures import KEY
from tests.support.server import ServerProcess
from tests.support.sse_client import parse_sse

# The server adds no system prompt to OpenAI requests; a client that wants one sends it.
QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
GREEDY = {"temperature": 0.0, "max_tokens": 40}


def test_sdk_lists_the_served_model(client: openai.OpenAI) -> None:
    (model,) = client.models.list().data
    assert model.id == "SmolLM2-135M-Instruct.Q4_1"
    assert client.models.retrieve(model.id).id == model.id


def test_sdk_chat_streamed_text_equals_non_streamed(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model="SmolLM2-135M-Instruct.Q4_1",
        messages=QUESTION,
        **GREEDY,
    )
    text = whole.choices[0].message.content
    assert text
    assert "Paris" in text
    assert whole.usage is not None
    assert whole.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct.Q4_1",
        messages=QUESTION,
        stream=True,
        stream_options={"include_usage": True},
        **GREEDY,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


async def test_async_sdk_chat_and_completions(server: ServerProcess) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{server.base_url}/v1", api_key=KEY, timeout=120
    ) as sdk:
        whole = await sdk.chat.completions.create(
            model="SmolLM2-135M-Instruct.Q4_1",
            messages=QUESTION,
            **GREEDY,
        )
        stream = await sdk.chat.completions.create(
            model="SmolLM2-135M-Instruct.Q4_1",
            messages=QUESTION,
            stream=True,
            **GREEDY,
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream])
        assert streamed == whole.choices[0].message.content
        prompt = "The three primary colours are"
        text = await sdk.completions.create(
            model="SmolLM2-135M-Instruct.Q4_1",
            prompt=prompt,
            **GREEDY,
        )
        pieces = await sdk.completions.create(
            model="SmolLM2-135M-Instruct.Q4_1",
            prompt=prompt,
            stream=True,
            **GREEDY,
        )
        streamed_text = "".join([c.choices[0].text async for c in pieces if c.choices])
    assert text.choices[0].text
    assert streamed_text == text.choices[0].text


def test_sdk_completions_sync(client: openai.OpenAI) -> None:
    prompt = "def fibonacci(n):"
    whole = client.completions.create(model="SmolLM2-135M-Instruct.Q4_1", prompt=prompt, **GREEDY)
    stream = client.completions.create(
        model="SmolLM2-135M-Instruct.Q4_1",
        prompt=prompt,
        stream=True,
        **GREEDY,
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == whole.choices[0].text
    assert whole.choices[0].finish_reason in ("stop", "length")


def test_raw_sse_framing_on_the_real_model(server: ServerProcess) -> None:
    body = {
        "messages": QUESTION,
        "stream": True,
        "stream_options": {"include_usage": True},
        **GREEDY,
    }
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json=body,
        headers={"X-Api-Key": KEY},
        timeout=120,
    )
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["cache-control"] == "no-cache"
    assert response.text.endswith("data: [DONE]\n\n")
    events = parse_sse(response.text)
    chunks = [event.json() for event in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == []
    contents = [c for c in chunks[1:-2] if c["choices"][0]["delta"].get("content")]
    assert len(contents) == len(chunks) - 3  # no empty content chunks are sent
    # A token can add no text (held-back UTF-8 bytes), so pieces <= tokens.
    assert chunks[-1]["usage"]["completion_tokens"] >= len(contents) > 0


def test_context_overflow_is_a_400(client: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "hello " * 1500}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", messages=long)
    assert caught.value.code == "context_length_exceeded"
    assert "1024" in caught.value.message


def test_any_model_name_and_bad_key(server: ServerProcess, client: openai.OpenAI) -> None:
    # A placeholder model name (what LangChain, LlamaIndex and HF clients send) is served by
    # the loaded model, and the response names the real one.
    answer = client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=4)
    assert answer.model == "SmolLM2-135M-Instruct.Q4_1"
    with (
        openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="wrong") as bad,
        pytest.raises(openai.AuthenticationError),
    ):
        bad.models.list()
