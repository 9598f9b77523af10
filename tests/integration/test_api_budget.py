"""A request's cost budget at the HTTP layer (issue 17): 400s that name the limit and the
field, one metrics label for unmatched paths, 404s for bad static names, escaped log lines,
no model path for clients, heavy planning off the event loop."""

from __future__ import annotations

import io
import json
import logging
import resource

import pytest

from app.limits import MAX_MESSAGES, MAX_STOP_BYTES
from app.logging_setup import configure_logging
from tests.support.api import app_client
from tests.support.fake_engine import FakeEngine

USER = {"role": "user", "content": "hi"}


def error_of(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    return body["error"] if "error" in body and isinstance(body["error"], dict) else body


async def test_too_many_messages_is_a_400_naming_the_limit() -> None:
    # Row 4: a chat of 30,000 one-character turns froze the event loop for a minute.
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "x"} for i in range(30_001)]
    async with app_client() as (client, _):
        response = await client.post("/v1/chat/completions", json={"messages": turns})
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == "messages"
    assert MAX_MESSAGES.name in str(error["message"])


async def test_a_long_chat_is_planned_off_the_event_loop() -> None:
    engine = FakeEngine(n_ctx_slot=100_000)
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "x"} for i in range(2001)]
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/chat/completions", json={"messages": turns})
    assert response.status_code == 200
    assert engine.prepared  # the prompt was tokenized by ``prepare`` (a worker thread)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"messages": [USER], "stop": ["s" * 4000] * 3}, "stop"),
        ("/v1/completions", {"prompt": "hi", "stop": ["s" * 4000] * 3}, "stop"),
        (
            "/api/chat",
            {"model": "m", "messages": [USER], "options": {"stop": ["s" * 4000] * 3}},
            "options.stop",
        ),
        (
            "/generate",
            {"inputs": "hi", "parameters": {"stop": ["s" * 4000] * 3}},
            "parameters.stop",
        ),
    ],
)
async def test_stop_strings_over_the_byte_budget_are_400s(
    path: str, body: dict[str, object], param: str
) -> None:
    # Row 8: 64 stop strings of 16 KB made stop matching cost 0.15 s per token.
    async with app_client() as (client, _):
        response = await client.post(path, json=body)
    assert response.status_code in (400, 422), response.text
    text = response.text
    assert MAX_STOP_BYTES.name in text
    assert param.rsplit(".", 1)[-1] in text


async def test_unmatched_paths_share_one_metrics_label() -> None:
    # Row 6: 1,300 random 404 paths made one scrape 670 MB (a label per raw path).
    async with app_client() as (client, _):
        for i in range(300):
            await client.get(f"/no-such-route-{i}-" + "z" * 200)
        metrics = (await client.get("/metrics")).text
    assert "no-such-route" not in metrics
    assert 'route="<unmatched>"' in metrics
    assert len(metrics) < 200_000


@pytest.mark.parametrize("name", ["%00", "a" * 5000, "x%00.js", "..%2f..%2fetc%2fpasswd"])
async def test_bad_static_names_are_404s(name: str) -> None:
    # Row 9: /static/%00 and a 5,000-character name were 500s with two tracebacks each.
    async with app_client() as (client, _):
        response = await client.get(f"/static/{name}")
    assert response.status_code == 404


async def test_control_characters_in_paths_cannot_forge_text_log_lines() -> None:
    # Row 10: "%0a" in a URL wrote a line of the attacker's choosing into the text log.
    stream = io.StringIO()
    configure_logging("info", "text", stream=stream)
    try:
        async with app_client() as (client, _):
            await client.get("/nothing%0a2026-01-01T00:00:00.000+00:00 INFO  forged: yes")
    finally:
        configure_logging("info", "text")
    lines = [line for line in stream.getvalue().splitlines() if "nothing" in line]
    assert lines
    assert all(
        not line.startswith("2026-01-01T00:00:00.000") for line in stream.getvalue().splitlines()
    )
    assert "\\x0a" in lines[0]


async def test_deeply_nested_tool_arguments_in_the_history_are_a_400() -> None:
    # Row 11: arguments nested 5,000 deep overflowed the JSON parser: a 500.
    deep = "1"
    for _ in range(5000):
        deep = "[" + deep + "]"
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": deep}}
    messages = [
        USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        USER,
    ]
    async with app_client() as (client, _):
        response = await client.post("/v1/chat/completions", json={"messages": messages})
        after = await client.get("/health")
    assert response.status_code == 400
    assert "max_json_depth" in response.text
    assert after.status_code == 200


async def test_no_answer_shows_the_model_path() -> None:
    # Row 13: /api/show returned the model's absolute path.
    engine = FakeEngine()
    async with app_client(engine) as (client, _):
        answers = [
            (await client.post("/api/show", json={"model": "fake-model"})).text,
            (await client.get("/model-card")).text,
            (await client.get("/v1/models")).text,
            (await client.get("/api/tags")).text,
            (await client.get("/info")).text,
        ]
    path = engine.model_info().path
    assert path.startswith("/")
    for answer in answers:
        assert path not in answer
        assert "/models/" not in answer


async def test_ollama_embed_is_capped_like_openai() -> None:
    async with app_client(FakeEngine(embeddings=True)) as (client, _):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        response = await client.post("/api/embed", json={"model": "m", "input": ["a"] * 2000})
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The fake engine has no cap of its own; the Ollama schema or the engine refuses it.
    assert response.status_code == 400, response.text
    assert "input" in json.dumps(response.json())
    assert after - before < 100_000  # KiB: refused before any vectors were built


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": "hi", "max_tokens": 2}),
        ("/v1/chat/completions", {"messages": [USER], "max_tokens": 2}),
    ],
)
async def test_the_schema_meta_check_runs_in_the_one_worker_hop(
    path: str, body: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The jsonschema meta-schema check (milliseconds, more for a large schema) ran on the
    # event loop for /v1/completions; now plan and preparation share one worker-thread hop.
    import asyncio
    import uuid

    import jsonschema

    from app.api.deps import Call

    where: list[str] = []
    validator_for = jsonschema.validators.validator_for

    def spy(schema: object, *args: object, **kwargs: object) -> object:
        try:
            asyncio.get_running_loop()
            where.append("event loop")
        except RuntimeError:
            where.append("worker thread")
        return validator_for(schema, *args, **kwargs)  # type: ignore[arg-type]

    hops: list[str] = []
    off_loop = Call.off_loop

    async def counted(self: Call, work: object, *args: object) -> object:
        hops.append(getattr(work, "__name__", "?"))
        return await off_loop(self, work, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(jsonschema.validators, "validator_for", spy)
    monkeypatch.setattr(Call, "off_loop", counted)
    schema = {"type": "object", "description": uuid.uuid4().hex}  # not in the check's cache
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    async with app_client() as (client, _):
        for _ in range(2):  # the second time the check is cached: still one hop
            response = await client.post(path, json={**body, "response_format": fmt})
            assert response.status_code == 200, response.text
    assert where  # the first request checked the schema
    assert set(where) == {"worker thread"}
    assert hops == ["_planned", "_planned"]
