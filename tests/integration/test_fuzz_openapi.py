"""Schemathesis against our own OpenAPI document: every route, valid and invalid inputs.

Schemathesis generates requests from the document (bodies, path parameters, headers), both
ones that conform and ones that break it, and sends them over HTTP to a real uvicorn
process serving the real engine over the fake model backend. Every answer must be below
500, every 4xx must carry OpenAI's error body, the connection must not drop, and the
server must still answer a normal request after every case.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode

from tests.support.fuzz import FUZZ_FACTORY, NORMAL_CHAT, check_reply
from tests.support.server import ServerProcess, running_server

EXAMPLES_PER_OPERATION = 10
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerProcess]:
    env = {"CRIA_MODEL": "fake-model", "CRIA_MAX_TOKENS_LIMIT": "64"}
    with running_server(env, factory=FUZZ_FACTORY) as server:
        yield server


def check_case(case: Case, server: ServerProcess) -> None:
    """Send one generated case; its answer and the server's health must be fine."""
    response = case.call(base_url=server.base_url, timeout=30)
    headers = {name.lower(): values[0] for name, values in response.headers.items()}
    try:
        check_reply(
            case.method, case.formatted_path, response.status_code, headers, response.content
        )
        assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200
    except AssertionError as exc:
        raise AssertionError(
            f"{case.as_curl_command()}\n--- server log:\n{server.log()[-3000:]}"
        ) from exc


def test_every_operation_answers_without_5xx(fuzz_server: ServerProcess) -> None:
    """Each operation of the document, with conforming and with broken inputs."""
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json")
    # Read streams to their end (schemathesis stops after 20 events by default): the fake
    # backend's short context bounds every stream.
    schema.config.max_stream_events = 100_000
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {operation.label for operation in operations}
    assert "POST /{api_version}/chat/completions" in labels
    assert "POST /v1/completions" in labels
    broken = set()
    for operation in operations:
        for mode in MODES:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Case) -> None:
                check_case(case, fuzz_server)

            try:
                run()
            except Unsatisfiable:
                # Nothing to break: a GET without parameters, or one whose only input is a
                # free-form string (/v1/models/{model_id}).
                assert mode is GenerationMode.NEGATIVE, operation.label
                continue
            if mode is GenerationMode.NEGATIVE:
                broken.add(operation.label)
    assert {"POST /{api_version}/chat/completions", "POST /v1/completions"} <= broken


def test_the_server_still_serves_after_the_run(fuzz_server: ServerProcess) -> None:
    answer = httpx.post(f"{fuzz_server.base_url}/v1/chat/completions", json=NORMAL_CHAT, timeout=30)
    assert answer.status_code == 200, answer.text
    assert "Traceback" not in fuzz_server.log()
