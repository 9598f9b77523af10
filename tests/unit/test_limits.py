"""The table of request limits: one home (app/limits.py), the README in step, 400s that name
the limit and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.errors import InvalidRequest
from app.limits import (
    MAX_MESSAGES,
    MAX_STOP_BYTES,
    check_count,
    check_prompt_bytes,
    check_stops,
    clamp_last_n,
    json_depth,
    readme_table,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_the_one_in_app_limits() -> None:
    match = re.search(
        r"<!-- limits-table:start[^>]*-->\n(.*?)\n<!-- limits-table:end -->",
        README.read_text(),
        re.S,
    )
    assert match, "README.md has no limits-table markers"
    assert match.group(1) == readme_table(), "stale: run `make settings-table`"


def test_a_refusal_names_the_limit_and_the_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_count(MAX_MESSAGES, "messages", MAX_MESSAGES.value + 1)
    assert caught.value.param == "messages"
    assert "max_messages" in caught.value.message
    check_count(MAX_MESSAGES, "messages", MAX_MESSAGES.value)  # the bound itself is allowed


def test_prompt_bytes_scale_with_the_context() -> None:
    check_prompt_bytes("prompt", 64 * 2048, 2048)
    with pytest.raises(InvalidRequest, match="prompt_bytes_per_context_token"):
        check_prompt_bytes("prompt", 64 * 2048 + 1, 2048)


def test_stop_bytes_count_utf8_bytes_of_all_stops_together() -> None:
    check_stops("stop", ("a" * (MAX_STOP_BYTES.value // 2),) * 2)
    with pytest.raises(InvalidRequest) as caught:
        check_stops("options.stop", ("é" * (MAX_STOP_BYTES.value // 2), "x"))
    assert caught.value.param == "options.stop"


def test_penalty_last_n_is_clamped_to_the_slot_context() -> None:
    assert clamp_last_n(500_000_000, 2048) == 2048
    assert clamp_last_n(-1, 2048) == 2048
    assert clamp_last_n(64, 2048) == 64
    assert clamp_last_n(0, 2048) == 0


def test_json_depth_needs_no_recursion() -> None:
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    assert json_depth(deep) == 65  # stops counting past the limit
    assert json_depth({"a": [1, {"b": 2}]}) == 3
    assert json_depth("text") == 0
