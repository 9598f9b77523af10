"""Property-based fuzzing of the whole app in-process: no input gives a 5xx.

The app runs the real ``LlamaEngine`` (scheduler, validation, tokenization path) over the
fake model backend, so a hostile value that would reach native code in production reaches
the same engine checks here. Each example is one hostile request; after each, the server
must still be healthy, and after the run a normal request must still work.
Bounded: a few hundred examples, seconds on two cores.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.api.app import create_app
from tests.support.api import make_settings
from tests.support.fuzz import (
    NORMAL_CHAT,
    FuzzRequest,
    anthropic_body,
    any_request,
    check_answer,
    encode,
    fuzz_engine,
    generation_request,
    responses_body,
)

BASE_URL = "http://localhost"  # an allowed Host (the Host guard refuses "testserver")
# CI runs a fixed, bounded sample (the same examples every run, so failures reproduce);
# CRIA_FUZZ_EXAMPLES=5000 runs a longer, random one.
LONG_RUN = int(os.environ.get("CRIA_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=LONG_RUN or 250,
    deadline=None,
    derandomize=not LONG_RUN,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(make_settings(max_tokens_limit=64), fuzz_engine())
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as test_client:
        assert test_client.get("/health").status_code == 200
        yield test_client
        assert_still_serving(test_client)
        assert_most_answers_come_from_routes()


ANSWERS: Counter[str] = Counter()
"""Every answer of this module's examples: its status, or "host-guard" for the Host guard's
403 (a fuzz run whose examples mostly stop there tests the guard, not the routes)."""


def answer_kind(response: httpx.Response) -> str:
    if response.status_code == 403 and "is not allowed. This server answers" in response.text:
        return "host-guard"
    return str(response.status_code)


def send(client: TestClient, request: FuzzRequest) -> None:
    # The path is relative: an absolute URL would override the client's base URL (an
    # allowed Host) and send every example to the Host guard's 403.
    response = client.request(
        request.method, request.path, content=request.body, headers=request.wire_headers()
    )
    kind = answer_kind(response)
    ANSWERS[kind] += 1
    event(f"answer {kind}")  # the status distribution, in --hypothesis-show-statistics
    check_answer(response)


def assert_most_answers_come_from_routes() -> None:
    total = sum(ANSWERS.values())
    if total:
        guarded = ANSWERS["host-guard"]
        assert guarded * 2 < total, f"most fuzz answers came from the Host guard: {ANSWERS}"


def assert_still_serving(client: TestClient) -> None:
    """Health is ok with nothing left busy or queued, and a normal chat request works."""
    health = client.get("/health")
    assert health.status_code == 200, health.text
    assert health.json()["slots_busy"] == 0
    assert health.json()["requests_active"] == 0
    answer = client.post("/v1/chat/completions", json=NORMAL_CHAT)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]


@FUZZ
@given(request=generation_request())
def test_generation_routes_never_answer_5xx(client: TestClient, request: FuzzRequest) -> None:
    send(client, request)
    assert client.get("/health").status_code == 200


@settings(FUZZ, max_examples=LONG_RUN or 150)
@given(
    body=anthropic_body(),
    path=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]),
    style=st.sampled_from(["ascii", "utf-8"]),
)
def test_anthropic_routes_never_answer_5xx(
    client: TestClient, body: dict[str, object], path: str, style: str
) -> None:
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    send(client, FuzzRequest("POST", path, encode(body, style), headers))


@settings(FUZZ, max_examples=LONG_RUN or 150)
@given(request=any_request())
def test_any_method_path_and_header_never_answers_5xx(
    client: TestClient, request: FuzzRequest
) -> None:
    send(client, request)


@settings(FUZZ, max_examples=LONG_RUN or 150)
@given(body=responses_body(), path=st.sampled_from(["/v1/responses", "/v1/responses/input_tokens"]))
def test_responses_bodies_never_answer_5xx(client: TestClient, body: Any, path: str) -> None:
    """OpenAI Responses bodies (items, tools, formats, ids) straight at the Responses routes."""
    headers = {"host": "localhost", "content-type": "application/json"}
    send(client, FuzzRequest("POST", path, encode(body, "utf-8"), headers))


@pytest.mark.parametrize(
    "body",
    [
        b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"prompt": "\\udfff"}',
        b'{"prompt": "a\\ud83d"}',
        b'{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"\\u00b2": 1}}',
        b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        b'{"messages": [{"role": "user", "content": "hi"}], "top_k": 9223372036854775808}',
        b'{"messages": [{"role": "user", "content": "hi"}], "repeat_penalty": 1e300}',
        b'{"prompt": [1, 2, 99999999999999999999]}',
        b'{"prompt": "x", "logit_bias": {"99999999999999999999": 1}}',
    ],
)
def test_known_bad_bodies_are_400(client: TestClient, body: bytes) -> None:
    """The findings of the fuzzing, kept as plain regression cases."""
    path = "/v1/completions" if body.startswith(b'{"prompt": [') else "/v1/chat/completions"
    if b'"logit_bias"' in body and b'"prompt"' in body:
        path = "/v1/completions"
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    check_answer(response)
    assert response.status_code == 400, response.text


def test_surrogate_pairs_are_text_not_errors(client: TestClient) -> None:
    """An escaped surrogate pair is one valid character (U+1F999); only lone halves are bad."""
    body = b'{"messages": [{"role": "user", "content": "\\ud83e\\udd99"}], "max_tokens": 2}'
    response = client.post("/v1/chat/completions", content=body)
    assert response.status_code == 200, response.text
