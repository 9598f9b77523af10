"""CRIA's frontend contract: {"prompt": ...}, no Content-Type, raw-text SSE, [DONE]."""

from __future__ import annotations

import json

import pytest

from tests.support.api import app_client
from tests.support.fake_engine import FailingMidStream, FakeEngine
from tests.support.sse_client import parse_sse

# Pieces with leading spaces, newlines, blank lines, a carriage return and non-ASCII text.
REPLY = "Bonjour !\n\nVoici\r\nune liste:\n- un\n-  deux ☕ fin"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v2/chat/completions"])
async def test_cria_body_without_content_type_streams_raw_text(path: str) -> None:
    engine = FakeEngine(reply=lambda prompt: REPLY)
    body = json.dumps({"prompt": "Say hello in French"}).encode()
    async with app_client(engine, system_prompt="You are CRIA.") as (client, _):
        response = await client.post(path, content=body)  # bytes: httpx sets no Content-Type
    assert "content-type" not in response.request.headers
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert events[-1].data == "[DONE]"
    pieces = [event.data for event in events[:-1]]
    assert len(pieces) == len(REPLY.split(" "))
    # An EventSource joins a piece's data lines with \n: the text comes back exactly,
    # except that SSE cannot carry a bare \r (it is a line break there).
    assert "".join(pieces) == REPLY.replace("\r\n", "\n")
    prompt = str(engine.submitted[0].prompt)
    assert prompt.startswith("<|im_start|>system\nYou are CRIA.<|im_end|>\n")
    assert "<|im_start|>user\nSay hello in French<|im_end|>\n<|im_start|>assistant\n" in prompt


async def test_cria_body_as_browser_text_plain() -> None:
    engine = FakeEngine(reply=lambda prompt: "Hi there")
    async with app_client(engine) as (client, _):
        response = await client.post(
            "/v1/chat/completions",
            content=json.dumps({"prompt": "Hello"}),
            headers={"Content-Type": "text/plain;charset=UTF-8"},
        )
    assert [event.data for event in parse_sse(response.text)] == ["Hi", " there", "[DONE]"]


async def test_cria_newline_only_pieces_survive_eventsource_parsing() -> None:
    engine = FakeEngine(reply=lambda prompt: "a \n \n\n b")
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/chat/completions", content=b'{"prompt": "x"}')
    raw = response.text
    assert "data:  \ndata: \n\n" in raw  # " \n" spans two data lines
    events = parse_sse(raw)
    assert "".join(event.data for event in events[:-1]) == "a \n \n\n b"


async def test_cria_empty_prompt_is_400() -> None:
    async with app_client() as (client, _):
        response = await client.post("/v1/chat/completions", content=b'{"prompt": ""}')
        wrong = await client.post("/v1/chat/completions", content=b'{"prompt": 5}')
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt"
    assert wrong.status_code == 400


async def test_messages_win_over_prompt() -> None:
    engine = FakeEngine(reply=lambda prompt: "ok")
    body = {"prompt": "ignored", "messages": [{"role": "user", "content": "Hi"}]}
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/chat/completions", json=body)
    assert response.json()["object"] == "chat.completion"


async def test_cria_error_after_start_is_one_error_event() -> None:
    async with app_client(FailingMidStream("Half a")) as (client, _):
        response = await client.post("/v1/chat/completions", content=b'{"prompt": "x"}')
    events = parse_sse(response.text)
    assert [event.data for event in events[:-1]] == ["Half a"]
    assert events[-1].json()["error"]["code"] == "generation_failed"


async def test_model_card_has_cria_fields_and_model_facts() -> None:
    async with app_client() as (client, _):
        response = await client.get("/model-card")
    card = response.json()
    for field in ("model_name", "version", "description", "developed_by", "language"):
        assert isinstance(card[field], str)
        assert card[field]
    assert card["model_name"] == "fake-model"
    assert card["description"] == "Fake Model"
    assert card["architecture"] == "llama"
    assert card["quantization"] == "Q4_1"
    assert card["parameters"] == 134_515_008
    assert card["context_length"] == 256
    assert card["offload"] == {
        "backend": "cpu",
        "device": "Fake CPU",
        "gpu_layers": 0,
        "total_layers": 30,
        "requested": "auto",
        "reason": "no GPU backend in this build",
        "fallback": True,
        "amx_guard": False,
    }
