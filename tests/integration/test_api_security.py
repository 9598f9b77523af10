"""API keys (Bearer or X-Api-Key), public routes, and CORS from the allowlist."""

from __future__ import annotations

import pytest

from tests.support.api import app_client

USER = [{"role": "user", "content": "Hello"}]
KEYS = ["key-one-0123456789", "key-two-9876543210"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEYS[0]}"},
        {"Authorization": f"bearer {KEYS[1]}"},
        {"X-Api-Key": KEYS[1]},
    ],
    ids=["bearer", "bearer-lowercase-second-key", "x-api-key"],
)
async def test_a_configured_key_opens_every_api_route(headers: dict[str, str]) -> None:
    async with app_client(api_key=KEYS) as (client, _):
        chat = await client.post("/v1/chat/completions", json={"messages": USER}, headers=headers)
        completion = await client.post("/v1/completions", json={"prompt": "Hi"}, headers=headers)
        models = await client.get("/v1/models", headers=headers)
    assert chat.status_code == 200
    assert completion.status_code == 200
    assert models.status_code == 200


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "Missing API key"),
        ({"Authorization": "Bearer wrong"}, "Invalid API key"),
        ({"X-Api-Key": "wrong"}, "Invalid API key"),
        ({"Authorization": f"Basic {KEYS[0]}"}, "Missing API key"),
        ({"Authorization": f"Bearer {KEYS[0]}x"}, "Invalid API key"),
    ],
    ids=["missing", "wrong-bearer", "wrong-x-api-key", "basic-scheme", "key-prefix"],
)
async def test_missing_or_wrong_key_is_401(headers: dict[str, str], says: str) -> None:
    async with app_client(api_key=KEYS) as (client, _):
        for method, path, body in [
            ("POST", "/v1/chat/completions", {"messages": USER}),
            ("POST", "/v1/completions", {"prompt": "Hi"}),
            ("GET", "/v1/models", None),
            ("POST", "/v1/chat/completions", {"prompt": "CRIA style"}),
        ]:
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, path
            error = response.json()["error"]
            assert error["code"] == "invalid_api_key"
            assert error["type"] == "invalid_request_error"
            assert says in error["message"]
            assert KEYS[0] not in response.text
            assert response.headers["www-authenticate"] == "Bearer"


async def test_health_and_model_card_stay_public() -> None:
    async with app_client(api_key=KEYS) as (client, _):
        health = await client.get("/health")
        card = await client.get("/model-card")
    assert health.status_code == 200
    assert card.status_code == 200


async def test_no_keys_configured_means_open() -> None:
    async with app_client(api_key=[]) as (client, _):
        response = await client.post("/v1/chat/completions", json={"messages": USER})
    assert response.status_code == 200


async def test_cors_allows_a_listed_origin() -> None:
    origin = "http://localhost:3000"
    async with app_client() as (client, _):
        preflight = await client.options(
            "/v1/chat/completions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        response = await client.post(
            "/v1/chat/completions", json={"messages": USER}, headers={"Origin": origin}
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-origin"] == origin


async def test_cors_denies_an_unlisted_origin() -> None:
    origin = "https://evil.example"
    async with app_client() as (client, _):
        preflight = await client.options(
            "/v1/chat/completions",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        response = await client.post(
            "/v1/chat/completions", json={"messages": USER}, headers={"Origin": origin}
        )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in response.headers


async def test_cors_origin_setting_replaces_the_default() -> None:
    async with app_client(cors_origin=["https://cria.example"]) as (client, _):
        allowed = await client.get("/health", headers={"Origin": "https://cria.example"})
        local = await client.get("/health", headers={"Origin": "http://localhost:3000"})
    assert allowed.headers["access-control-allow-origin"] == "https://cria.example"
    assert "access-control-allow-origin" not in local.headers


async def test_preflight_does_not_need_the_key() -> None:
    async with app_client(api_key=KEYS) as (client, _):
        preflight = await client.options(
            "/v1/chat/completions",
            headers={
                "Origin": "http://localhost:8000",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key",
            },
        )
    assert preflight.status_code == 200


async def test_chat_page_and_its_assets_stay_public() -> None:
    async with app_client(api_key=KEYS) as (client, _):
        page = await client.get("/")
        script = await client.get("/static/sse.js")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert script.status_code == 200
