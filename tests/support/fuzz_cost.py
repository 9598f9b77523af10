"""Cost-aware fuzz strategies (issue 17): requests that are small on the wire but ask for a
lot of work - large counts, deep nesting, special-token floods, long stop strings, huge
penalty windows - on every route family. What a test checks is not only the status but
that each one is answered in bounded time and leaves no memory behind.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.support.fuzz import FuzzRequest

SPECIALS = ("<|im_end|>", "<|im_start|>", "<|endoftext|>", "<think>", "\x00", "\u2028")


def special_flood() -> st.SearchStrategy[str]:
    """Text that is mostly special-token markup, up to ~100 KB."""
    return st.builds(
        lambda token, n, filler: (token + filler) * n,
        st.sampled_from(SPECIALS),
        st.integers(1, 10_000),
        st.sampled_from(["", "\n", "system\n", "a"]),
    )


def deep_json(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def many_turns() -> st.SearchStrategy[list[dict[str, str]]]:
    return st.builds(
        lambda n, text: [
            {"role": ("user", "assistant")[i % 2], "content": text} for i in range(n | 1)
        ],
        st.integers(1, 6000),
        st.sampled_from(["x", "<|im_end|>", "hi there"]),
    )


def _chat(messages: list[dict[str, Any]], **extra: Any) -> tuple[str, dict[str, Any]]:
    return "/v1/chat/completions", {"messages": messages, "max_tokens": 2, **extra}


def costly_body() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """One costly (path, JSON body)."""
    user = [{"role": "user", "content": "hi"}]
    counts = st.integers(0, 10**9)
    deep_call = st.integers(10, 6000).map(
        lambda d: [
            *user,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c",
                        "type": "function",
                        "function": {"name": "f", "arguments": deep_json(d)},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
            *user,
        ]
    )
    return st.one_of(
        many_turns().map(_chat),
        special_flood().map(lambda t: _chat([{"role": "user", "content": t}])),
        special_flood().map(lambda t: ("/tokenize", {"content": t})),
        special_flood().map(lambda t: ("/v1/completions", {"prompt": t, "max_tokens": 2})),
        deep_call.map(_chat),
        counts.map(
            lambda n: (
                "/api/generate",
                {
                    "model": "m",
                    "prompt": "hi",
                    "stream": False,
                    "options": {"repeat_last_n": n, "num_predict": 2},
                },
            )
        ),
        st.integers(1, 64).map(
            lambda n: _chat(user, stop=["s" * (16_384 // n) + str(i) for i in range(n)])
        ),
        st.integers(1, 3000).map(
            lambda n: ("/api/embed", {"model": "m", "input": [f"text {i}" for i in range(n)]})
        ),
        st.integers(1, 3000).map(
            lambda n: ("/v1/embeddings", {"input": ["word " * 50] * min(n, 256)})
        ),
        st.integers(1, 100_000).map(
            lambda n: (
                "/api/chat",
                {
                    "model": "m",
                    "stream": False,
                    "messages": [{"role": "user", "content": "a" * n}],
                    "options": {"num_predict": 2},
                },
            )
        ),
    )


def costly_request() -> st.SearchStrategy[FuzzRequest]:
    """A costly request, as the fuzz suites send them."""
    return costly_body().map(
        lambda pb: FuzzRequest(
            "POST", pb[0], json.dumps(pb[1]).encode(), {"Content-Type": "application/json"}
        )
    )
