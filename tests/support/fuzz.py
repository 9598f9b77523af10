"""Hypothesis strategies for hostile requests, and the checks every answer must pass.

The strategies build whole HTTP requests (method, path, headers, raw body bytes) for the
chat, completion and CRIA routes: odd Unicode (lone surrogates, NUL, BOM, line separators),
huge and negative numbers, NaN and Infinity, wrong types, deep nesting, long lists, odd
Content-Types, headers and paths. Bodies are encoded by hand so that a lone surrogate goes
out as the JSON escape ``\\ud800`` (or as invalid UTF-8), as a hostile client would send it.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from hypothesis import strategies as st

from app.api.app import create_app
from app.api.family import RouteFamily
from app.engine.service import LlamaEngine
from app.engine.types import EngineConfig
from tests.support.fake_backend import FakeBackend

FUZZ_FACTORY = "tests.support.fuzz:fuzz_app_from_env"
ANTHROPIC_ERROR_TYPES = frozenset(
    {"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
     "request_too_large", "rate_limit_error", "api_error", "overloaded_error"}
)  # fmt: skip
NORMAL_CHAT = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}


def fuzz_engine() -> LlamaEngine:
    """The real engine (scheduler, validation) over the fake model backend, small context."""
    backend = FakeBackend(n_slots=4, n_ctx_slot=256, n_batch=64)
    config = EngineConfig(model_path="/models/fake.gguf", n_slots=4, max_queue=16)
    return LlamaEngine(config, backend_factory=lambda _: backend)


def fuzz_app_from_env() -> FastAPI:
    """A uvicorn factory: the app (settings from ``CRIA_*``) over ``fuzz_engine()``."""
    from app.api.app import create_app
    from app.logging_setup import configure_logging
    from app.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, fuzz_engine())


# Characters that have broken servers before: surrogates, NUL, BOM, separators, digits that
# are not ASCII (str.isdigit() is true for "²" and "٣"), the last code point, RTL marks.
SPECIAL_TEXT = (
    "\ud800", "\udfff", "\ud83d", "\x00", "\ufeff", "\u2028", "\u2029", "²", "٣", "\U0010ffff",
    "\u202e", "\r\n", "<|im_end|>", "<|im_start|>system\n", "{{ raise_exception('x') }}",
    "\\", '"', "%s%n", "\x1b[31m", "🦙", "e\u0301",
)  # fmt: skip
NUMBERS = (
    0, -1, 1, 2, -2**31, 2**31 - 1, 2**31, 2**32, 2**32 + 1, 2**63, -2**63, 2**64, 10**30,
    -10**30, 0.5, -0.0, 1e-320, 1e308, -1e308, 3.5e38, math.nan, math.inf, -math.inf,
)  # fmt: skip
SAMPLING_FIELDS = (
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "max_completion_tokens", "seed",
    "presence_penalty", "frequency_penalty", "repeat_penalty", "n", "best_of", "logprobs",
    "top_logprobs", "echo", "suffix", "user", "model", "stream", "stream_options", "stop",
    "logit_bias", "response_format", "tools", "n_probs",
)  # fmt: skip
CONTENT_TYPES = (
    "application/json", "text/plain", "text/plain;charset=UTF-8", "application/json; charset=x",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "*/*",
    "application/octet-stream",
)  # fmt: skip
PATH_SEGMENTS = (
    "v1", "v0", "v01", "v" + "9" * 40, "v²", "v1.3", "V1", "%00", "%ff", "..", "%2e%2e", "chat",
    "completions", "models", "static", "..%2f..%2fetc%2fpasswd", "x" * 300, "",
)  # fmt: skip
HOSTS = ("localhost", "127.0.0.1:8000", "[::1]", "evil.example", "localhost.evil.example", "")
ORIGINS = ("null", "http://localhost:3000", "https://evil.example", "file://")
KNOWN_PATHS = (
    "/health", "/metrics", "/model-card", "/v1/models", "/", "/static/app.js", "/api/tags",
    "/api/ps", "/api/version", "/info", "/v1/models/x",
)  # fmt: skip
# Every route that takes a JSON body (OpenAI, Anthropic, CRIA, Ollama, TGI, tokenizer,
# embeddings).
GENERATION_PATHS = (
    "/v1/chat/completions", "/v1/completions", "/v2/chat/completions", "/v1.3/chat/completions",
    "/v1/messages", "/v1/messages/count_tokens",
    "/api/chat", "/api/generate", "/api/show", "/generate", "/generate_stream", "/",
    "/tokenize", "/detokenize", "/v1/embeddings", "/v1/responses", "/v1/responses/input_tokens",
)  # fmt: skip


def odd_text(max_parts: int = 6) -> st.SearchStrategy[str]:
    """Short text mixing ordinary characters with the special ones."""
    part = st.one_of(st.text(max_size=6), st.sampled_from(SPECIAL_TEXT))
    return st.lists(part, max_size=max_parts).map("".join)


def odd_number() -> st.SearchStrategy[int | float]:
    """Boundary numbers, NaN, infinities, and any int or float."""
    return st.one_of(
        st.sampled_from(NUMBERS),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def json_value(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON-ish value (NaN and surrogates included), a few levels deep."""
    leaves = st.one_of(st.none(), st.booleans(), odd_number(), odd_text())
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(odd_text(2), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def field_value() -> st.SearchStrategy[Any]:
    """A value for one request field: plausible, extreme, or of the wrong type."""
    return st.one_of(
        odd_number(),
        odd_text(),
        st.booleans(),
        st.none(),
        st.lists(st.one_of(odd_text(), odd_number()), max_size=6),
        st.dictionaries(odd_text(2), st.one_of(odd_number(), odd_text()), max_size=4),
        json_value(),
    )


def logit_bias() -> st.SearchStrategy[dict[str, Any]]:
    """Keys that are token ids, almost token ids ("²", "-1", " 5", huge) or junk."""
    key = st.one_of(
        st.integers(min_value=-5, max_value=2**70).map(str),
        st.sampled_from(["²", "٣", "-1", " 5", "5 ", "1e3", "0x10", "", "007", "\U0001d7dd"]),
        odd_text(2),
    )
    return st.dictionaries(key, st.one_of(odd_number(), odd_text(1)), max_size=5)


def gbnf() -> st.SearchStrategy[str]:
    """GBNF sources: valid, broken, with odd repetitions or deep groups."""
    repetition = st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)).map(
        lambda pair: f'root ::= "a"{{{pair[0]},{pair[1]}}}'
    )
    deep = st.integers(1, 20_000).map(lambda k: "root ::= " + "(" * k + '"a"' + ")" * k)
    fixed = st.sampled_from(
        ['root ::= "yes" | "no"', "root ::= root", "root ::= [", "x ::= y", 'root ::= "a"{3}']
    )
    return st.one_of(repetition, deep, fixed, odd_text())


def json_schema() -> st.SearchStrategy[Any]:
    """JSON Schemas: plausible keywords with hostile values, nesting, patterns."""
    keyword = st.sampled_from(
        ["type", "properties", "items", "pattern", "minLength", "maxLength", "minItems",
         "enum", "$ref", "anyOf", "required", "format", "const", "$defs"]
    )  # fmt: skip
    leaf = st.one_of(
        st.sampled_from([{"type": "string"}, {"type": "integer"}, {"pattern": "(" * 3000}]),
        st.dictionaries(keyword, field_value(), max_size=3),
    )
    nested = st.integers(1, 400).map(
        lambda k: functools.reduce(lambda inner, _: {"type": "array", "items": inner}, range(k), {})
    )
    return st.one_of(leaf, nested, field_value())


def response_format() -> st.SearchStrategy[Any]:
    """OpenAI's response_format with a hostile schema (or junk)."""
    schema = st.fixed_dictionaries({"name": st.just("x"), "schema": json_schema()})
    return st.one_of(
        st.fixed_dictionaries({"type": st.just("json_schema"), "json_schema": schema}),
        st.fixed_dictionaries({"type": st.just("json_object"), "schema": json_schema()}),
        field_value(),
    )


def sampling_fields() -> st.SearchStrategy[dict[str, Any]]:
    """Any subset of the sampling fields, each with a hostile value."""
    values: dict[str, st.SearchStrategy[Any]] = dict.fromkeys(SAMPLING_FIELDS, field_value())
    values["logit_bias"] = st.one_of(logit_bias(), field_value())
    values["stream"] = st.one_of(st.booleans(), field_value())
    values["stop"] = st.one_of(st.lists(odd_text(), max_size=8), odd_text(), field_value())
    values["grammar"] = st.one_of(gbnf(), field_value())
    values["response_format"] = response_format()
    return st.fixed_dictionaries({}, optional=values)


def message() -> st.SearchStrategy[Any]:
    """One chat message: usually a dict with a role and content, sometimes junk."""
    role = st.one_of(
        st.sampled_from(["user", "system", "developer", "assistant", "tool", "function", ""]),
        odd_text(2),
        field_value(),
    )
    part = st.fixed_dictionaries(
        {
            "type": st.one_of(st.just("text"), odd_text(1)),
            "text": st.one_of(odd_text(), field_value()),
        }
    )
    content = st.one_of(odd_text(), st.lists(part, max_size=3), field_value())
    good = st.fixed_dictionaries(
        {"role": role}, optional={"content": content, "name": st.one_of(odd_text(), field_value())}
    )
    return st.one_of(good, good, good, field_value())


def chat_body() -> st.SearchStrategy[dict[str, Any]]:
    """A chat completion body with hostile messages and sampling fields."""
    messages = st.one_of(st.lists(message(), min_size=1, max_size=4), field_value())
    return st.tuples(st.fixed_dictionaries({"messages": messages}), sampling_fields()).map(
        lambda parts: {**parts[0], **parts[1]}
    )


def completion_body() -> st.SearchStrategy[dict[str, Any]]:
    """A text completion body: text, token ids (any ints), lists of strings, or junk."""
    prompt = st.one_of(
        odd_text(),
        st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=12),
        st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=12),
        st.lists(odd_text(), max_size=3),
        field_value(),
    )
    return st.tuples(st.fixed_dictionaries({"prompt": prompt}), sampling_fields()).map(
        lambda parts: {**parts[0], **parts[1]}
    )


def cria_body() -> st.SearchStrategy[dict[str, Any]]:
    """CRIA's ``{"prompt"}`` body, with hostile prompts and stray fields."""
    return st.fixed_dictionaries(
        {"prompt": st.one_of(odd_text(), field_value())},
        optional={"model": field_value(), "stream": field_value(), "max_tokens": field_value()},
    )


def token_ids() -> st.SearchStrategy[list[int]]:
    """Token id lists: in the vocabulary, at its edge, negative or beyond 64 bits."""
    return st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=300),
            st.sampled_from([-1, 49151, 49152, 2**31 - 1, 2**31, 2**32, 2**63, 2**64]),
            st.integers(min_value=-(2**70), max_value=2**70),
        ),
        max_size=10,
    )


def other_family_body() -> st.SearchStrategy[dict[str, Any]]:
    """Ollama, TGI, tokenizer and embeddings bodies with hostile values."""
    options = st.one_of(sampling_fields(), field_value())
    ollama = st.fixed_dictionaries(
        {"model": st.one_of(odd_text(), field_value())},
        optional={
            "messages": st.one_of(st.lists(message(), max_size=3), field_value()),
            "prompt": st.one_of(odd_text(), field_value()),
            "options": options,
            "stream": field_value(),
            "format": st.one_of(st.just("json"), field_value()),
            "keep_alive": field_value(),
        },
    )
    tgi = st.fixed_dictionaries(
        {"inputs": st.one_of(odd_text(), field_value())},
        optional={"parameters": options, "stream": field_value()},
    )
    tokenize = st.fixed_dictionaries(
        {},
        optional={
            "content": st.one_of(odd_text(), field_value()),
            "messages": st.one_of(st.lists(message(), max_size=3), field_value()),
            "tokens": st.one_of(token_ids(), field_value()),
            "add_special": field_value(),
            "with_pieces": field_value(),
            "input": st.one_of(odd_text(), st.lists(odd_text(), max_size=3), field_value()),
            "encoding_format": st.one_of(st.sampled_from(["float", "base64"]), field_value()),
        },
    )
    return st.one_of(ollama, tgi, tokenize)


def responses_body() -> st.SearchStrategy[dict[str, Any]]:
    """OpenAI Responses bodies: hostile input items, tools, text formats and ids."""
    text_part = st.fixed_dictionaries(
        {
            "type": st.sampled_from(["input_text", "output_text", "input_image", ""]),
            "text": field_value(),
        }
    )
    item = st.one_of(
        message(),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["message", "function_call", "function_call_output"])},
            optional={
                "role": st.sampled_from(["user", "assistant", "developer", "tool"]),
                "content": st.one_of(odd_text(), st.lists(text_part, max_size=3), field_value()),
                "call_id": st.one_of(odd_text(1), field_value()),
                "name": st.one_of(st.just("f"), odd_text(1), field_value()),
                "arguments": st.one_of(st.just("{}"), odd_text(), field_value()),
                "output": st.one_of(odd_text(), st.lists(text_part, max_size=2), field_value()),
            },
        ),
        st.fixed_dictionaries({"type": st.one_of(st.just("reasoning"), odd_text(1))}),
    )
    tool = st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("function"), "name": st.one_of(st.just("f"), odd_text(1))},
            optional={"parameters": st.one_of(json_schema(), field_value())},
        ),
        st.fixed_dictionaries(
            {"type": st.one_of(st.sampled_from(["web_search", "custom"]), odd_text(1))}
        ),
        field_value(),
    )
    fmt = st.fixed_dictionaries(
        {"type": st.one_of(st.sampled_from(["text", "json_object", "json_schema"]), odd_text(1))},
        optional={"name": field_value(), "schema": st.one_of(json_schema(), field_value())},
    )
    return st.fixed_dictionaries(
        {"input": st.one_of(odd_text(), st.lists(item, max_size=4), field_value())},
        optional={
            "instructions": st.one_of(odd_text(), field_value()),
            "tools": st.one_of(st.lists(tool, max_size=3), field_value()),
            "tool_choice": st.one_of(
                st.sampled_from(["auto", "none", "required"]),
                st.fixed_dictionaries(
                    {"type": st.sampled_from(["function", "web_search"]), "name": field_value()}
                ),
                field_value(),
            ),
            "text": st.one_of(st.fixed_dictionaries({"format": fmt}), field_value()),
            "max_output_tokens": field_value(),
            "temperature": field_value(),
            "previous_response_id": st.one_of(odd_text(1), field_value()),
            "stream": st.one_of(st.booleans(), field_value()),
            "store": field_value(),
            "reasoning": field_value(),
            "include": field_value(),
        },
    )


def anthropic_block() -> st.SearchStrategy[Any]:
    """A content block of an Anthropic message: text, tool_use, tool_result, or junk."""
    text = st.fixed_dictionaries(
        {
            "type": st.one_of(st.just("text"), odd_text(1)),
            "text": st.one_of(odd_text(), field_value()),
        },
        optional={"cache_control": field_value()},
    )
    tool_use = st.fixed_dictionaries(
        {
            "type": st.just("tool_use"),
            "id": st.one_of(odd_text(2), field_value()),
            "name": st.one_of(st.just("get_weather"), odd_text(2)),
            "input": json_value(),
        }
    )
    tool_result = st.fixed_dictionaries(
        {"type": st.just("tool_result"), "tool_use_id": st.one_of(odd_text(2), field_value())},
        optional={
            "content": st.one_of(odd_text(), st.lists(text, max_size=2), field_value()),
            "is_error": field_value(),
        },
    )
    thinking = st.fixed_dictionaries({"type": st.just("thinking"), "thinking": field_value()})
    return st.one_of(text, text, tool_use, tool_result, thinking, field_value())


def anthropic_body() -> st.SearchStrategy[dict[str, Any]]:
    """An Anthropic Messages (or count_tokens) body with hostile blocks, tools and fields."""
    message = st.fixed_dictionaries(
        {
            "role": st.one_of(st.sampled_from(["user", "assistant"]), field_value()),
            "content": st.one_of(
                odd_text(), st.lists(anthropic_block(), max_size=3), field_value()
            ),
        }
    )
    tool = st.fixed_dictionaries(
        {"name": st.one_of(st.just("get_weather"), odd_text(2)), "input_schema": json_schema()},
        optional={"description": odd_text(), "type": field_value(), "strict": field_value()},
    )
    tool_choice = st.fixed_dictionaries(
        {"type": st.one_of(st.sampled_from(["auto", "any", "tool", "none"]), field_value())},
        optional={
            "name": st.one_of(st.just("get_weather"), odd_text(2)),
            "disable_parallel_tool_use": field_value(),
        },
    )
    optional: dict[str, st.SearchStrategy[Any]] = {
        "system": st.one_of(odd_text(), st.lists(anthropic_block(), max_size=2), field_value()),
        "stop_sequences": st.one_of(st.lists(odd_text(), max_size=4), field_value()),
        "tools": st.one_of(st.lists(tool, max_size=3), field_value()),
        "tool_choice": st.one_of(tool_choice, field_value()),
        "thinking": st.one_of(
            st.fixed_dictionaries({"type": st.just("enabled"), "budget_tokens": odd_number()}),
            field_value(),
        ),
        "stream": st.one_of(st.booleans(), field_value()),
        **dict.fromkeys(("temperature", "top_p", "top_k", "metadata"), field_value()),
    }
    return st.fixed_dictionaries(
        {"model": st.one_of(st.just("claude"), field_value()),
         "max_tokens": st.one_of(st.integers(1, 8), field_value()),
         "messages": st.one_of(st.lists(message, min_size=1, max_size=4), field_value())},
        optional=optional,
    )  # fmt: skip


def encode(body: Any, style: str) -> bytes:
    """``body`` as bytes: ASCII-escaped JSON, raw UTF-8 (surrogates as invalid bytes), or bare."""
    if style == "ascii":
        return json.dumps(body, ensure_ascii=True).encode("ascii")
    text = json.dumps(body, ensure_ascii=False)
    return text.encode("utf-8", errors="surrogatepass")


SPECIAL_BODIES = (
    b"", b" ", b"null", b"[]", b"0", b'"text"', b"{", b'{"messages": [', b"\xff\xfe\x00",
    b"\xef\xbb\xbf{}", b'{"messages": NaN}', b'{"prompt": Infinity}', b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000, b'{"prompt": "\\ud800"}', b'{"prompt": "x\\u0000y"}',
    b'{"messages": [{"role": "user", "content": "\\udfff"}]}', b'{"prompt": 1' + b"0" * 5000 + b"}",
    b'{"prompt": "hi", "prompt": [1,2]}', b'{"messages": [{"role": "user", "content": "hi"}]' * 2,
)  # fmt: skip


def raw_body() -> st.SearchStrategy[bytes]:
    """The body of one request: a hostile chat, completion, CRIA, other family's, Responses
    or Anthropic body, or broken bytes."""
    structured = st.one_of(
        chat_body(),
        completion_body(),
        cria_body(),
        other_family_body(),
        responses_body(),
        anthropic_body(),
        json_value(),
    )
    encoded = st.tuples(structured, st.sampled_from(["ascii", "utf-8"])).map(
        lambda pair: encode(pair[0], pair[1])
    )
    return st.one_of(
        encoded, encoded, encoded, st.sampled_from(SPECIAL_BODIES), st.binary(max_size=64)
    )


def long_list_body() -> st.SearchStrategy[bytes]:
    """Bodies with long lists: many messages, many token ids, many stop strings or biases."""
    n = st.integers(min_value=100, max_value=20_000)
    return st.one_of(
        n.map(lambda k: encode({"prompt": list(range(k))}, "ascii")),
        n.map(lambda k: encode({"prompt": [2**33] * k}, "ascii")),
        n.map(lambda k: encode({"messages": [{"role": "user", "content": "a"}] * k}, "ascii")),
        n.map(lambda k: encode({"prompt": "x", "stop": ["s"] * k}, "ascii")),
        n.map(
            lambda k: encode({"prompt": "x", "logit_bias": {str(i): 1 for i in range(k)}}, "ascii")
        ),
        n.map(lambda k: encode({"prompt": "ab " * k, "max_tokens": 1}, "ascii")),
    )


@dataclass(frozen=True, repr=False)
class FuzzRequest:
    """One request to send."""

    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def wire_headers(self) -> dict[str, bytes]:
        """The headers as bytes (latin-1, as HTTP sends them; httpx would want ASCII)."""
        # (Stripped: h11 refuses to send values with leading or trailing whitespace.)
        return {name: value.strip(" \t").encode("latin-1") for name, value in self.headers.items()}

    def __repr__(self) -> str:  # bodies can be ~1 MB: show their start in failure reports
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        size = len(self.body)
        return f"FuzzRequest({self.method} {self.path!r}, {self.headers!r}, {size} B: {body!r})"


def _header_text() -> st.SearchStrategy[str]:
    # HTTP header values are latin-1 on the wire; control characters would be refused by
    # the client before anything is sent.
    return st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=40,
    )


def headers() -> st.SearchStrategy[dict[str, str]]:
    """Content-Type plus, sometimes, odd Authorization, Accept or X-Api-Key values."""
    return st.fixed_dictionaries(
        {"content-type": st.one_of(st.sampled_from(CONTENT_TYPES), _header_text())},
        optional={
            "authorization": st.one_of(st.just("Bearer "), _header_text()),
            "x-api-key": _header_text(),
            "anthropic-version": st.one_of(st.just("2023-06-01"), _header_text()),
            "accept": st.one_of(st.just("text/event-stream"), _header_text()),
            "accept-encoding": st.sampled_from(["gzip", "br", "identity;q=0", "*"]),
            "host": st.one_of(st.sampled_from(HOSTS), _header_text()),
            "origin": st.one_of(st.sampled_from(ORIGINS), _header_text()),
        },
    ).map(lambda h: {k: v for k, v in h.items() if v or k != "content-type"})


def generation_request() -> st.SearchStrategy[FuzzRequest]:
    """A POST to one of the generation routes with a hostile body and headers."""
    return st.builds(
        FuzzRequest,
        method=st.just("POST"),
        path=st.sampled_from(GENERATION_PATHS),
        body=st.one_of(raw_body(), raw_body(), raw_body(), long_list_body()),
        headers=headers(),
    )


def odd_path() -> st.SearchStrategy[str]:
    """Paths near the real ones: odd versions, encoded bytes, traversal, long segments."""
    segment = st.one_of(
        st.sampled_from(PATH_SEGMENTS),
        st.text(
            st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#%"),
            max_size=12,
        ),
    )
    return st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


def any_request() -> st.SearchStrategy[FuzzRequest]:
    """Any method on an odd path, with a body sometimes."""
    return st.builds(
        FuzzRequest,
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
        path=st.one_of(odd_path(), st.sampled_from(KNOWN_PATHS)),
        body=st.one_of(st.just(b""), raw_body()),
        headers=headers(),
    )


def check_answer(response: httpx.Response) -> None:
    """``check_reply`` for an httpx response."""
    request = response.request
    check_reply(
        request.method, request.url.path, response.status_code, response.headers, response.content
    )


def check_reply(
    method: str, path: str, status: int, headers: Mapping[str, str], content: bytes
) -> None:
    """No 5xx; every 4xx has its route family's error body; a 200 stream ends normally.

    ``headers`` must be looked up case-insensitively or given with lowercase names.
    """
    text = content.decode("utf-8", errors="replace")
    assert status < 500, f"{status}: {text[:500]}"
    if 400 <= status < 500 and method != "HEAD":
        _check_error_body(route_family(method, path), json.loads(text))
        if status == 429:
            assert int(headers["retry-after"]) >= 1
    if status != 200:
        return
    content_type = headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        data = [line for line in text.splitlines() if line.startswith("data:")]
        assert data, text[:500]
        family = route_family(method, path).name
        if family == "tgi":  # TGI streams end with their last token event, no [DONE]
            assert "error" not in json.loads(data[-1].removeprefix("data:")), data[-1]
        elif family == "responses":  # named events, the last one final, no [DONE]
            last = json.loads(data[-1].removeprefix("data:"))
            assert last["type"] in ("response.completed", "response.incomplete"), data[-2:]
        elif family == "anthropic":  # Anthropic's end with message_stop, no [DONE]
            assert json.loads(data[-1].removeprefix("data:"))["type"] == "message_stop", data[-3:]
        else:
            assert data[-1] == "data: [DONE]", data[-3:]
    elif content_type.startswith("application/x-ndjson"):
        last = json.loads(text.splitlines()[-1])
        assert last.get("done") is True, last


@functools.cache
def _reference_app() -> FastAPI:
    from app.settings import Settings

    return create_app(Settings())  # routes only: its lifespan (the engine) never starts


def route_family(method: str, path: str) -> RouteFamily:
    """The route family whose error shape an answer to ``method path`` must have: the one
    the app's own family table names for the route that matches (the default one if none)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    app = _reference_app()
    return app.state.families.family_of(scope)  # type: ignore[no-any-return]  # app.state


def _check_error_body(family: RouteFamily, body: Any) -> None:
    if family.name == "ollama":
        assert set(body) == {"error"}, body
        assert isinstance(body["error"], str)
        assert body["error"]
        return
    if family.name == "tgi":
        assert set(body) == {"error", "error_type"}, body
        assert isinstance(body["error"], str)
        assert body["error"]
        return
    if family.name == "anthropic":
        assert set(body) == {"type", "error"}, body
        assert body["type"] == "error"
        assert set(body["error"]) == {"type", "message"}, body
        assert body["error"]["type"] in ANTHROPIC_ERROR_TYPES, body
        assert body["error"]["message"]
        return
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
