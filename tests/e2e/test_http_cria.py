"""CRIA's frontend request, reproduced byte for byte, against the real model.

The frontend POSTs ``{"prompt": ...}`` with no Content-Type (or a browser's text/plain)
and reads the events as an EventSource does: each event's data is raw text.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.server import ServerProcess, real_model_env, running_server
from tests.support.sse_client import EventSourceParser, SSEEvent

PROMPT = "Give me two short tips for learning to cook."
MAX_TOKENS = "40"


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[ServerProcess]:
    env = real_model_env(model_path, cria_max_tokens=MAX_TOKENS, system_prompt="You are CRIA.")
    with running_server(env) as process:
        yield process


def cria_request(server: ServerProcess, headers: dict[str, str]) -> tuple[int, str, list[SSEEvent]]:
    """POST the frontend's body with exactly ``headers`` (plus Host and Content-Length)."""
    url = urlsplit(server.base_url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=300)
    body = json.dumps({"prompt": PROMPT}).encode()
    connection.putrequest("POST", "/v1/chat/completions", skip_accept_encoding=True)
    for name, value in {**headers, "Content-Length": str(len(body))}.items():
        connection.putheader(name, value)
    connection.endheaders(body)
    response = connection.getresponse()
    parser = EventSourceParser()
    events: list[SSEEvent] = []
    while chunk := response.read1(4096):
        events.extend(parser.feed(chunk.decode("utf-8")))
    content_type = response.getheader("Content-Type") or ""
    connection.close()
    return response.status, content_type, events


@pytest.mark.parametrize(
    "headers",
    [{}, {"Content-Type": "text/plain;charset=UTF-8", "Accept": "text/event-stream"}],
    ids=["no-content-type", "browser-text-plain"],
)
def test_cria_frontend_request_gets_raw_text_events(
    server: ServerProcess, headers: dict[str, str]
) -> None:
    status, content_type, events = cria_request(server, headers)
    assert status == 200
    assert content_type.startswith("text/event-stream")
    assert events[-1].data == "[DONE]"
    pieces = [event.data for event in events[:-1]]
    assert len(pieces) > 3
    for piece in pieces:  # raw text, never OpenAI JSON chunks
        assert not piece.startswith('{"id"')
    text = "".join(pieces)
    assert text.strip()
    # Same prompt, system prompt, cap and (seeded) default sampling through the OpenAI route
    # (which adds no system prompt of its own): the same text, so the CRIA stream carries
    # every piece, newlines included.
    messages = [{"role": "system", "content": "You are CRIA."}, {"role": "user", "content": PROMPT}]
    openai_style = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"messages": messages, "max_tokens": int(MAX_TOKENS)},
        timeout=300,
    ).json()
    assert text == openai_style["choices"][0]["message"]["content"]
    assert openai_style["usage"]["completion_tokens"] <= int(MAX_TOKENS)
