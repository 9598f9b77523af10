"""POST /v1/chat/completions over the whole app (in-process) with the FakeEngine."""

from __future__ import annotations

from typing import Any

from tests.support.api import app_client
from tests.support.fake_engine import FakeEngine
from tests.support.sse_client import parse_sse

REPLY = "Paris is the capital of France."
USER = [{"role": "user", "content": "What is the capital of France?"}]


def fake(**kwargs: Any) -> FakeEngine:
    return FakeEngine(reply=lambda prompt: REPLY, **kwargs)


async def test_non_streamed_chat_completion_has_openai_shape_and_usage() -> None:
    engine = fake()
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/chat/completions", json={"messages": USER})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake-model"
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": REPLY},
        "logprobs": None,
        "finish_reason": "stop",
    }
    n_words = len(REPLY.split(" "))
    assert body["usage"]["completion_tokens"] == n_words
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + n_words
    assert response.headers["x-request-id"] in body["id"]


async def test_stream_is_role_first_then_content_then_finish_then_done() -> None:
    async with app_client(fake()) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json={"messages": USER, "stream": True}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    events = parse_sse(response.text)
    assert events[-1].data == "[DONE]"
    chunks = [event.json() for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = chunks[1:-1]
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in contents)
    assert all(c["choices"][0]["finish_reason"] is None for c in contents)
    assert "".join(c["choices"][0]["delta"]["content"] for c in contents) == REPLY
    last = chunks[-1]["choices"][0]
    assert last["delta"] == {}
    assert last["finish_reason"] == "stop"
    assert all("usage" not in chunk for chunk in chunks)


async def test_stream_with_include_usage_ends_with_a_usage_chunk() -> None:
    body = {"messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    async with app_client(fake()) as (client, _):
        response = await client.post("/v1/chat/completions", json=body)
    chunks = [event.json() for event in parse_sse(response.text)[:-1]]
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == len(REPLY.split(" "))
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_max_tokens_ends_with_length() -> None:
    async with app_client(fake()) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json={"messages": USER, "max_tokens": 2}
        )
        completion = await client.post(
            "/v1/chat/completions", json={"messages": USER, "max_completion_tokens": 3}
        )
    assert response.json()["choices"][0]["finish_reason"] == "length"
    assert response.json()["choices"][0]["message"]["content"] == "Paris is"
    assert completion.json()["usage"]["completion_tokens"] == 3


async def test_openai_chat_gets_no_default_system_prompt() -> None:
    """The default system prompt is CRIA's contract only: OpenAI chats are rendered as sent."""
    engine = fake()
    async with app_client(engine, system_prompt="You are CRIA.") as (client, _):
        await client.post("/v1/chat/completions", json={"messages": USER})
        own = [{"role": "system", "content": "Be brief."}, *USER]
        await client.post("/v1/chat/completions", json={"messages": own})
    first, second = (str(request.prompt) for request in engine.submitted)
    assert first == f"<|im_start|>user\n{USER[0]['content']}<|im_end|>\n<|im_start|>assistant\n"
    assert "You are CRIA." not in second
    assert second.startswith("<|im_start|>system\nBe brief.<|im_end|>")


async def test_content_parts_and_developer_role_are_accepted() -> None:
    engine = fake()
    messages = [
        {"role": "developer", "content": "Rules."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
    ]
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/chat/completions", json={"messages": messages})
    assert response.status_code == 200
    prompt = str(engine.submitted[0].prompt)
    assert "<|im_start|>system\nRules.<|im_end|>" in prompt
    assert "<|im_start|>user\none\ntwo<|im_end|>" in prompt
    # The template wrote BOS itself (<|im_start|> is the fake's BOS): the engine adds none.
    assert engine.submitted[0].add_special is False


async def test_sampling_fields_reach_the_engine() -> None:
    engine = fake()
    body = {
        "messages": USER,
        "temperature": 0,
        "top_p": 0.5,
        "seed": 7,
        "stop": ["\n\n", "END"],
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logit_bias": {"42": -100, "7": 5.5},
        "user": "someone",
    }
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    sampling = engine.submitted[0].sampling
    assert sampling.temperature == 0.0
    assert sampling.top_p == 0.5
    assert sampling.seed == 7
    assert sampling.stop == ("\n\n", "END")
    assert sampling.presence_penalty == 0.5
    assert sampling.frequency_penalty == -0.5
    assert dict(sampling.logit_bias) == {42: -100.0, 7: 5.5}


async def test_max_tokens_default_comes_from_settings() -> None:
    engine = fake()
    async with app_client(engine, default_max_tokens=3) as (client, _):
        response = await client.post("/v1/chat/completions", json={"messages": USER})
    assert engine.submitted[0].sampling.max_tokens == 3
    assert response.json()["choices"][0]["finish_reason"] == "length"


async def test_served_name_file_name_and_alias_are_accepted() -> None:
    async with app_client(fake()) as (client, _):
        for name in ("fake-model", "fake-model.Q4_1.gguf", "fake-model.Q4_1"):
            response = await client.post(
                "/v1/chat/completions", json={"model": name, "messages": USER}
            )
            assert response.status_code == 200, name
            assert response.json()["model"] == "fake-model"


async def test_any_model_name_is_served_by_the_loaded_model() -> None:
    async with app_client(fake()) as (client, _):
        for name in ("gpt-4o", "tgi", "", "SMOLLM2"):
            response = await client.post(
                "/v1/chat/completions", json={"model": name, "messages": USER}
            )
            assert response.status_code == 200, name
            assert response.json()["model"] == "fake-model"  # the real model, not the name sent


async def test_strict_model_names_refuse_other_names_but_keep_aliases() -> None:
    async with app_client(fake(), strict_model_names=True, model="smollm2") as (client, _):
        other = await client.post(
            "/v1/chat/completions", json={"model": "gpt-4o", "messages": USER}
        )
        for alias in ("smollm2", "SmolLM2", "fake-model", "fake-model.Q4_1.gguf"):
            served = await client.post(
                "/v1/chat/completions", json={"model": alias, "messages": USER}
            )
            assert served.status_code == 200, alias
            assert served.json()["model"] == "fake-model"
    assert other.status_code == 404
    error = other.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert "gpt-4o" in error["message"]


async def test_any_api_version_segment_serves_chat() -> None:
    async with app_client(fake()) as (client, _):
        v2 = await client.post("/v2/chat/completions", json={"messages": USER})
        bad = await client.post("/latest/chat/completions", json={"messages": USER})
    assert v2.status_code == 200
    assert v2.json()["choices"][0]["message"]["content"] == REPLY
    assert bad.status_code == 404
    assert bad.json()["error"]["code"] == "not_found"
