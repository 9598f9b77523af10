"""logprobs in OpenAI's shapes, streamed and not, from the real model in a real server."""

from __future__ import annotations

import math

import httpx
import openai
import pytest

from tests.support.openai_fixtures import KEY
from tests.support.server import ServerProcess

MODEL = "SmolLM2-135M-Instruct.Q4_1"
ASK = [{"role": "user", "content": "Name a fruit."}]
GREEDY = {"temperature": 0.0, "max_tokens": 8}


def test_chat_logprobs_shape_sorted_and_greedy_token_first(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        logprobs=True,
        top_logprobs=5,
        **GREEDY,  # type: ignore[arg-type]
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None
    entries = choice.logprobs.content
    assert entries
    assert reply.usage is not None
    # One entry per generated token (the end-of-generation token has no text and no entry).
    expected = reply.usage.completion_tokens - (choice.finish_reason == "stop")
    assert len(entries) == expected
    assert "".join(e.token for e in entries) == choice.message.content
    for entry in entries:
        assert entry.logprob <= 0.0
        assert bytes(entry.bytes or []).decode("utf-8", "replace") == entry.token
        top = [t.logprob for t in entry.top_logprobs]
        assert len(top) == 5
        assert top == sorted(top, reverse=True)
        assert all(math.isfinite(t) for t in top)
        assert entry.top_logprobs[0].token == entry.token  # greedy picks the most likely
        assert math.isclose(entry.top_logprobs[0].logprob, entry.logprob)


def test_streamed_logprobs_match_the_non_streamed_ones(client: openai.OpenAI) -> None:
    args = {"model": MODEL, "messages": ASK, "logprobs": True, "top_logprobs": 2, **GREEDY}
    whole = client.chat.completions.create(**args)  # type: ignore[call-overload]
    chunks = list(client.chat.completions.create(stream=True, **args))  # type: ignore[call-overload]
    streamed = [
        e
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [
        (e.token, round(e.logprob, 4)) for e in whole.choices[0].logprobs.content
    ]


def test_no_logprobs_unless_asked(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=ASK, **GREEDY)  # type: ignore[arg-type]
    assert reply.choices[0].logprobs is None


def test_completions_logprobs(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt="The sky is", logprobs=3, **GREEDY)
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.tokens
    assert logprobs.token_logprobs
    assert logprobs.top_logprobs
    assert logprobs.text_offset is not None
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs)
    assert "".join(logprobs.tokens) == reply.choices[0].text
    assert logprobs.text_offset[0] == 0
    for token, top in zip(logprobs.tokens, logprobs.top_logprobs, strict=True):
        assert max(top, key=top.__getitem__) == token


@pytest.mark.parametrize("extra", [{"top_logprobs": 3}, {"logprobs": True, "top_logprobs": 21}])
def test_bad_logprobs_fields_are_400(server: ServerProcess, extra: dict[str, object]) -> None:
    reply = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"messages": ASK, "max_tokens": 2, **extra},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert reply.status_code == 400
    assert "top_logprobs" in reply.json()["error"]["message"]
