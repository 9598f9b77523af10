"""The OpenAPI document describes the hand-read request bodies, with every $ref resolvable."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tests.support.api import app_client


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


async def test_openapi_document_has_the_body_schemas_and_resolves() -> None:
    async with app_client(docs=True) as (client, _):
        document = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert docs.status_code == 200
    schemas = document["components"]["schemas"]
    for ref in refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    chat = document["paths"]["/{api_version}/chat/completions"]["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]
    assert {ref["$ref"].rsplit("/", 1)[-1] for ref in body["oneOf"]} == {
        "ChatCompletionRequest",
        "CriaPromptRequest",
    }
    assert "messages" in schemas["ChatCompletionRequest"]["properties"]
    assert "429" in chat["responses"]
    completions = document["paths"]["/v1/completions"]["post"]
    assert completions["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CompletionRequest"
    }


async def test_the_document_promises_no_422() -> None:
    """Bad parameters are answered 400 with OpenAI's body, so no operation lists a 422."""
    async with app_client() as (client, _):
        document = (await client.get("/openapi.json")).json()
    statuses = {
        status
        for operations in document["paths"].values()
        for operation in operations.values()
        for status in operation["responses"]
    }
    assert "422" not in statuses
    assert "400" in statuses
    assert "HTTPValidationError" not in document["components"]["schemas"]


async def test_the_cdn_docs_pages_are_off_by_default() -> None:
    # Issue 17 row 13: /docs loaded an unpinned Swagger UI from a CDN on the origin where the
    # chat page keeps the API key; now only with --docs.
    async with app_client() as (client, _):
        for path in ("/docs", "/redoc"):
            assert (await client.get(path)).status_code == 404
        assert (await client.get("/openapi.json")).status_code == 200
