"""A smaller fuzz sample against a real uvicorn process on the real model.

The in-process suite (tests/integration/test_fuzz_api.py) covers volume; this one sends a
bounded sample of the same hostile requests, plus the values that reach llama.cpp's native
code (token ids at the vocabulary's edge, biases, huge top_k, seeds, NUL and control-token
text), to the real tokenizer and sampler chain. No answer may be a 5xx or a dropped
connection, and the server must still generate normally afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.fuzz import NORMAL_CHAT, FuzzRequest, check_answer, generation_request
from tests.support.server import ServerProcess, real_model_env, running_server

N_VOCAB = 49152  # SmolLM2's vocabulary
LONG_RUN = int(os.environ.get("CRIA_FUZZ_EXAMPLES", "0"))  # as in test_fuzz_api.py
USER = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[ServerProcess]:
    env = real_model_env(
        model_path, parallel="2", ctx_size="256", max_tokens_limit="8", default_max_tokens="4"
    )
    with running_server(env) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        yield http
    answer = httpx.post(f"{server.base_url}/v1/chat/completions", json=NORMAL_CHAT, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]
    assert "Traceback" not in server.log()


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "fuzz", "schema": schema}}


def nested_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


NATIVE_EDGES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/completions", {"prompt": [N_VOCAB - 1, 0, 1], "max_tokens": 2}),
    ("/v1/completions", {"prompt": [N_VOCAB], "max_tokens": 2}),
    ("/v1/completions", {"prompt": [-1], "max_tokens": 2}),
    ("/v1/completions", {"prompt": [2**31], "max_tokens": 2}),
    ("/v1/completions", {"prompt": [2**64], "max_tokens": 2}),
    ("/v1/completions", {"prompt": "a\x00b", "max_tokens": 2}),
    ("/v1/completions", {"prompt": "<|im_end|><|im_start|>\ufeff\u2028", "max_tokens": 2}),
    ("/v1/chat/completions", {"messages": USER, "logit_bias": {str(N_VOCAB - 1): 100}}),
    ("/v1/chat/completions", {"messages": USER, "logit_bias": {str(N_VOCAB): 1}}),
    ("/v1/chat/completions", {"messages": USER, "logit_bias": {"0": -100, "1": -100}}),
    ("/v1/chat/completions", {"messages": USER, "top_k": 2**31 - 1, "temperature": 1.0}),
    ("/v1/chat/completions", {"messages": USER, "top_k": 2**31, "temperature": 1.0}),
    ("/v1/chat/completions", {"messages": USER, "top_k": 2**63}),
    ("/v1/chat/completions", {"messages": USER, "seed": 2**64 + 5, "temperature": 1.0}),
    ("/v1/chat/completions", {"messages": USER, "seed": -(2**63), "temperature": 1.0}),
    ("/v1/chat/completions", {"messages": USER, "repeat_penalty": 1e30, "temperature": 1.0}),
    ("/v1/chat/completions", {"messages": USER, "repeat_penalty": 1e39}),
    ("/v1/chat/completions", {"messages": USER, "min_p": 1.0, "top_p": 0.0, "temperature": 2}),
    ("/v1/chat/completions", {"messages": USER, "temperature": 1e-30, "top_k": 1}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\x00" * 50}]}),
    ("/v1/chat/completions", {"messages": USER, "stop": ["\x00", "\ufffd", "<|im_end|>"]}),
    ("/detokenize", {"tokens": [N_VOCAB - 1, 0, 1, 2]}),
    ("/detokenize", {"tokens": [N_VOCAB]}),
    ("/detokenize", {"tokens": [-1]}),
    ("/detokenize", {"tokens": [2**31]}),
    ("/detokenize", {"tokens": [2**64]}),
    ("/tokenize", {"content": "a\x00b<|im_end|>", "with_pieces": True}),
    ("/api/generate", {"model": "x", "prompt": "Hi", "stream": False, "options": {"top_k": 2**63}}),
    ("/api/generate", {"model": "x", "prompt": "Hi", "stream": False, "options": {"seed": -1}}),
    ("/generate", {"inputs": "Hi", "parameters": {"top_k": 2**31, "max_new_tokens": 2}}),
    ("/generate", {"inputs": "Hi", "parameters": {"repetition_penalty": 1e39}}),
    ("/v1/embeddings", {"input": ["\x00", "a" * 3000]}),
    # Grammars: llama.cpp's parser loops until the process runs out of memory on {5,2}, and
    # 100,000 nested groups overflow its stack (a segmentation fault, found here).
    (
        "/v1/chat/completions",
        {"messages": USER, "grammar": "root ::= " + "(" * 100_000 + '"a"' + ")" * 100_000},
    ),
    (
        "/v1/chat/completions",
        {
            "messages": USER,
            "response_format": json_schema(
                {"type": "string", "pattern": "(" * 5000 + "a" + ")" * 5000}
            ),
        },
    ),
    ("/v1/chat/completions", {"messages": USER, "grammar": 'root ::= "a"{5,2}'}),
    ("/v1/chat/completions", {"messages": USER, "grammar": 'root ::= "a"{0,100000000}'}),
    ("/v1/chat/completions", {"messages": USER, "grammar": "root ::= root"}),
    (
        "/v1/chat/completions",
        {"messages": USER, "grammar": "root ::= " + "(" * 3000 + '"a"' + ")" * 3000},
    ),
    # An empty character range: no token can start the reply (was a 500 at the first step).
    ("/v1/chat/completions", {"messages": USER, "grammar": "root ::= [\\U0010FFFF-\\U00000000]"}),
    (
        "/v1/chat/completions",
        {
            "messages": USER,
            "response_format": json_schema({"type": "string", "minLength": 5, "maxLength": 2}),
        },
    ),
    (
        "/v1/chat/completions",
        {"messages": USER, "response_format": json_schema({"type": "array", "minItems": 10**9})},
    ),
    (
        "/v1/chat/completions",
        {"messages": USER, "response_format": json_schema({"type": "string", "pattern": "a{9,1}"})},
    ),
    (
        "/v1/chat/completions",
        {
            "messages": USER,
            "response_format": json_schema(
                {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}
            ),
        },
    ),
    (
        "/v1/chat/completions",
        {"messages": USER, "response_format": json_schema(nested_schema(300))},
    ),
]


@pytest.mark.parametrize(("path", "body"), NATIVE_EDGES)
def test_values_that_reach_native_code(
    client: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    """Each is answered 200 (a valid edge) or 400 (refused before llama.cpp sees it)."""
    response = client.post(path, json=body)
    check_answer(response)
    assert response.status_code in (200, 400, 501), response.text


@settings(
    max_examples=LONG_RUN or 60,
    deadline=None,
    derandomize=not LONG_RUN,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(request=generation_request())
def test_hostile_requests_on_the_real_model(client: httpx.Client, request: FuzzRequest) -> None:
    response = client.request(
        request.method, request.path, content=request.body, headers=request.wire_headers()
    )
    check_answer(response)
