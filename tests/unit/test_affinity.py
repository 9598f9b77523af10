"""The conversation key: which request field wins, and which values can be echoed as a header."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.core import Metric

from app.api.affinity import MAX_KEY_CHARS, body_session_key, valid_key
from app.api.metrics import gateway_metrics
from app.engine.types import EngineStats


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"prompt_cache_key": "chat-1", "user": "alice"}, "chat-1"),
        ({"user": "alice", "metadata": {"user_id": "u-9"}}, "alice"),
        ({"metadata": {"user_id": "u-9"}}, "u-9"),
        ({"prompt_cache_key": 7, "user": "alice"}, "alice"),  # not a string: the next field
        ({"prompt_cache_key": "", "user": ""}, None),
        ({"metadata": "u-9"}, None),
        ({"messages": []}, None),
    ],
)
def test_body_key_prefers_prompt_cache_key_then_user_then_metadata(
    body: dict[str, Any], key: str | None
) -> None:
    assert body_session_key(body) == key


@pytest.mark.parametrize(
    "value",
    ["a", "conv 42", "Ab-_.:/=+~!", "x" * MAX_KEY_CHARS],
)
def test_valid_keys_are_echoed_as_they_are(value: str) -> None:
    assert valid_key(value) == value


@pytest.mark.parametrize(
    "value",
    ["", " padded", "padded ", "line\nbreak", "tab\there", "caf\u00e9", "x" * (MAX_KEY_CHARS + 1)],
)
def test_keys_that_are_no_safe_header_value_are_refused(value: str) -> None:
    assert valid_key(value) is None


def samples(families: list[Metric]) -> dict[str, tuple[float, dict[str, str]]]:
    return {f.name: (f.samples[0].value, f.samples[0].labels) for f in families}


def stats(**overrides: int) -> EngineStats:
    values = {
        "slots_busy": 3,
        "slots_total": 4,
        "queue_length": 5,
        "max_queue": 64,
        "kv_cells_used": 2048,
        "kv_cells_total": 8192,
        "prompt_tokens_total": 0,
        "cached_prompt_tokens_total": 0,
        "generated_tokens_total": 0,
        "requests_total": 0,
        "requests_active": 8,
    }
    values.update(overrides)
    return EngineStats(**values)


def test_gateway_metrics_use_the_endpoint_pickers_default_names() -> None:
    got = samples(list(gateway_metrics(stats())))
    assert got["vllm:num_requests_waiting"][0] == 5
    assert got["vllm:num_requests_running"][0] == 3
    assert got["vllm:kv_cache_usage_perc"][0] == 0.25
    assert got["vllm:gpu_cache_usage_perc"][0] == 0.25
    # 8192 one-token cells told as 16-token blocks
    assert got["vllm:cache_config_info"] == (1, {"block_size": "16", "num_gpu_blocks": "512"})


def test_gateway_kv_usage_is_zero_without_cells() -> None:
    got = samples(list(gateway_metrics(stats(kv_cells_used=0, kv_cells_total=0))))
    assert got["vllm:kv_cache_usage_perc"][0] == 0.0
