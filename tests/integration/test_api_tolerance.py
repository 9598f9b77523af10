"""What real clients send is served: many stop strings, any model name, big max_tokens,
CRIA's versioned paths. The default system prompt and reply cap belong to CRIA's contract."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.api import app_client
from tests.support.fake_engine import FakeEngine
from tests.support.server import FAKE_ENGINE_ENV, FAKE_FACTORY, ServerProcess, running_server
from tests.support.sse_client import parse_sse

USER = [{"role": "user", "content": "Hello"}]
LONG_REPLY = " ".join(f"w{i}" for i in range(400))
# What Continue's autocomplete sends (9 stop strings), as seen in its requests.
CONTINUE_STOPS = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>", "<|endoftext|>",
                  "</fim_middle>", "</code>", "\n\n", "\r\n\r\n"]  # fmt: skip


def long_fake(**kwargs: Any) -> FakeEngine:
    return FakeEngine(reply=lambda prompt: LONG_REPLY, **kwargs)


@pytest.mark.parametrize("stops", [CONTINUE_STOPS, [f"<stop{i}>" for i in range(64)]])
async def test_many_stop_strings_are_accepted(stops: list[str]) -> None:
    engine = FakeEngine(reply=lambda prompt: "one two <stop3> three")
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/chat/completions", json={"messages": USER, "stop": stops})
    assert response.status_code == 200, response.text
    assert engine.submitted[0].sampling.stop == tuple(stops)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_beyond_the_context_is_clamped_not_refused(field: str) -> None:
    engine = long_fake(n_ctx_slot=256)
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/chat/completions", json={"messages": USER, field: 10**9})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] == "length"
    assert engine.submitted[0].sampling.max_tokens == 256  # what one slot can hold


async def test_max_tokens_limit_clamps_chat_and_completions() -> None:
    engine = long_fake()
    async with app_client(engine, max_tokens_limit=5) as (client, _):
        chat = await client.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 50})
        text = await client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 50})
        unset = await client.post("/v1/chat/completions", json={"messages": USER})
    for response in (chat, text, unset):
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["finish_reason"] == "length"
        assert response.json()["usage"]["completion_tokens"] == 5


async def test_cria_contract_gets_the_system_prompt_and_a_reply_cap() -> None:
    engine = long_fake()
    async with app_client(engine, system_prompt="You are CRIA.", cria_max_tokens=3) as (
        client,
        _,
    ):
        cria = await client.post("/v1/chat/completions", content=b'{"prompt": "Hi"}')
        openai_chat = await client.post("/v1/chat/completions", json={"messages": USER})
    assert [e.data for e in parse_sse(cria.text)] == ["w0", " w1", " w2", "[DONE]"]
    cria_request, openai_request = engine.submitted
    assert str(cria_request.prompt).startswith("<|im_start|>system\nYou are CRIA.<|im_end|>")
    assert "You are CRIA." not in str(openai_request.prompt)
    assert openai_request.sampling.max_tokens is None  # no CRIA cap: until the slot is full
    assert openai_chat.json()["choices"][0]["finish_reason"] == "stop"


async def test_cria_reply_cap_defaults_to_256() -> None:
    engine = long_fake(n_ctx_slot=1024)
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/chat/completions", content=b'{"prompt": "Hi"}')
    assert len(parse_sse(response.text)) == 256 + 1  # 256 pieces, then [DONE]
    assert engine.submitted[0].sampling.max_tokens == 256


@pytest.mark.parametrize("segment", ["v1", "v2", "v1.3", "latest", "cria-2024.05"])
async def test_cria_body_is_served_under_any_single_path_segment(segment: str) -> None:
    engine = FakeEngine(reply=lambda prompt: "Hi there")
    async with app_client(engine) as (client, _):
        response = await client.post(f"/{segment}/chat/completions", content=b'{"prompt": "x"}')
    assert [e.data for e in parse_sse(response.text)] == ["Hi", " there", "[DONE]"]


async def test_openai_body_stays_on_the_version_routes() -> None:
    async with app_client() as (client, _):
        v1 = await client.post("/v1/chat/completions", json={"messages": USER})
        other = await client.post("/v1.3/chat/completions", json={"messages": USER})
        deeper = await client.post("/a/b/chat/completions", content=b'{"prompt": "x"}')
    assert v1.status_code == 200
    assert other.status_code == 404
    assert "/v1/chat/completions" in other.json()["error"]["message"]
    assert deeper.status_code == 404


@pytest.fixture(scope="module")
def fake_server() -> Iterator[ServerProcess]:
    options = {FAKE_ENGINE_ENV: json.dumps({"reply": LONG_REPLY, "n_ctx_slot": 128})}
    with running_server(options, factory=FAKE_FACTORY) as server:
        yield server


def test_openai_sdk_with_placeholder_model_many_stops_and_huge_max_tokens(
    fake_server: ServerProcess,
) -> None:
    """The real openai SDK over real HTTP, sending what LangChain or Continue would."""
    with openai.OpenAI(base_url=f"{fake_server.base_url}/v1", api_key="unused") as client:
        answer = client.chat.completions.create(
            model="gpt-3.5-turbo", messages=USER, stop=CONTINUE_STOPS, max_tokens=100_000
        )
    assert answer.model == "fake-model"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 128


def test_cria_versioned_path_over_http(fake_server: ServerProcess) -> None:
    response = httpx.post(
        f"{fake_server.base_url}/v1.3/chat/completions",
        content=json.dumps({"prompt": "Hello"}),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
        timeout=10,
    )
    events = parse_sse(response.text)
    assert response.status_code == 200
    assert events[-1].data == "[DONE]"
    assert len(events) == 128 + 1  # the slot holds 128 tokens, below CRIA's 256 cap
