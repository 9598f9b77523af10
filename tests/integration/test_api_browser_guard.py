"""Browser-origin safety over real HTTP: the Host allowlist (DNS rebinding), cross-origin
writes without a preflight, and the CORS preflight of the openai SDKs' headers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.server import FAKE_ENGINE_ENV, FAKE_FACTORY, ServerProcess, running_server
from tests.support.sse_client import parse_sse

CHAT = {"messages": [{"role": "user", "content": "Hi"}]}
# What openai-node sends (src/client.ts buildHeaders + getPlatformHeaders, openai 4.x-6.x),
# besides Authorization and Content-Type.
OPENAI_NODE_HEADERS = [
    "accept", "user-agent", "x-stainless-retry-count", "x-stainless-timeout", "x-stainless-lang",
    "x-stainless-package-version", "x-stainless-os", "x-stainless-arch", "x-stainless-runtime",
    "x-stainless-runtime-version", "x-stainless-helper-method", "openai-organization",
    "openai-project",
]  # fmt: skip


def start(**settings: str) -> Any:
    env = {f"CRIA_{name.upper()}": value for name, value in settings.items()}
    env[FAKE_ENGINE_ENV] = json.dumps({"reply": "Hello there"})
    return running_server(env, factory=FAKE_FACTORY)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start(allowed_host="cria.example,*.lan", cors_origin="https://cria.example") as running:
        yield running


def port(server: ServerProcess) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def post(
    server: ServerProcess, headers: dict[str, str], body: bytes | None = None
) -> httpx.Response:
    content = body if body is not None else json.dumps(CHAT).encode()
    return httpx.post(
        f"{server.base_url}/v1/chat/completions", content=content, headers=headers, timeout=10
    )


def assert_403(response: httpx.Response, code: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", code)
    assert error["message"]


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:{port}", "localhost:{port}", "LocalHost", "[::1]:{port}", "app.localhost:1",
     "cria.example", "cria.example:443", "box.lan:8000"],
)  # fmt: skip
def test_local_and_configured_hosts_are_answered(server: ServerProcess, host: str) -> None:
    response = post(server, {"Host": host.format(port=port(server))})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello there"


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}", "localhost.evil.example",
     "192.168.1.20:{port}", "[::1", "localhost:http", "cria.example.evil.example"],
)  # fmt: skip
def test_other_hosts_are_refused_dns_rebinding(server: ServerProcess, host: str) -> None:
    headers = {"Host": host.format(port=port(server))}
    assert_403(post(server, headers), "host_not_allowed")
    # Every route: a rebinding page must not read the health or the model list either.
    health = httpx.get(f"{server.base_url}/health", headers=headers, timeout=10)
    assert_403(health, "host_not_allowed")


def test_every_interface_bind_answers_ip_literals_and_single_label_names() -> None:
    with start(host="0.0.0.0") as running:
        for host in ("192.168.1.20:8000", "[fe80::1]:8000", "cria-server:8000", "10.0.0.7"):
            assert post(running, {"Host": host}).status_code == 200, host
        assert_403(post(running, {"Host": "evil.example"}), "host_not_allowed")


def test_allowed_host_star_turns_the_check_off() -> None:
    with start(allowed_host="*") as running:
        assert post(running, {"Host": "anything.example"}).status_code == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost:3000"])
def test_simple_cross_origin_post_from_an_unlisted_origin_is_refused(
    server: ServerProcess, origin: str
) -> None:
    # A "simple" request (text/plain, no custom header) gets no preflight from a browser.
    headers = {"Origin": origin, "Content-Type": "text/plain;charset=UTF-8"}
    response = post(server, headers, b'{"prompt": "spend the model"}')
    assert_403(response, "origin_not_allowed")
    assert "access-control-allow-origin" not in response.headers


def test_cria_frontend_on_an_allowed_origin_keeps_working(server: ServerProcess) -> None:
    headers = {"Origin": "https://cria.example", "Content-Type": "text/plain;charset=UTF-8"}
    response = post(server, headers, b'{"prompt": "Hello"}')
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://cria.example"
    assert [e.data for e in parse_sse(response.text)] == ["Hello", " there", "[DONE]"]


def test_same_origin_page_and_clients_without_origin_keep_working(server: ServerProcess) -> None:
    same = post(server, {"Origin": server.base_url, "Content-Type": "application/json"})
    assert same.status_code == 200
    assert post(server, {"Content-Type": "application/json"}).status_code == 200  # curl, SDKs
    # A cross-origin GET is answered but not readable by the page (no CORS header).
    models = httpx.get(
        f"{server.base_url}/v1/models", headers={"Origin": "https://evil.example"}, timeout=10
    )
    assert models.status_code == 200
    assert "access-control-allow-origin" not in models.headers


def openai_python_headers() -> list[str]:
    """The headers the installed openai SDK really sends with a chat request."""
    sent: list[httpx.Headers] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers)
        return httpx.Response(400, json={"error": {"message": "captured"}})

    transport = httpx.MockTransport(answer)
    with (
        openai.OpenAI(
            base_url="http://127.0.0.1/v1",
            api_key="k",
            max_retries=0,
            http_client=httpx.Client(transport=transport),
        ) as client,
        pytest.raises(openai.BadRequestError),
    ):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    # The browser sets these itself; a page cannot ask for them.
    browser_owned = {"host", "connection", "accept-encoding", "content-length"}
    return [name for name in sent[0] if name not in browser_owned]


@pytest.mark.parametrize("sdk", ["openai-python", "openai-node"])
def test_preflight_allows_what_the_openai_sdks_send(server: ServerProcess, sdk: str) -> None:
    names = openai_python_headers() if sdk == "openai-python" else OPENAI_NODE_HEADERS
    assert any(name.startswith("x-stainless-") for name in names)
    preflight = httpx.options(
        f"{server.base_url}/v1/chat/completions",
        headers={
            "Origin": "https://cria.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": ",".join([*names, "authorization", "content-type"]),
            "Access-Control-Request-Private-Network": "true",
        },
        timeout=10,
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == "https://cria.example"
    allowed = {
        h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
    }
    assert set(names) - allowed == set()
    assert preflight.headers["access-control-allow-private-network"] == "true"
