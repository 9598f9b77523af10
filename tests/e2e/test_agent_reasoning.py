"""Reasoning through the agent APIs on the real model, with the real SDKs.

ONE server on a copy of the default model carrying DeepSeek-R1's template (written with
``gguf-new-metadata``, as tests/e2e/test_model_families.py does). That template's
generation prompt opens the ``<think>`` block, so every reply starts inside it: SmolLM2
"thinks" until the reasoning budget (the server's, or Anthropic's ``budget_tokens``) makes
the engine close the block, then answers. (Qwen3's template leaves opening the block to the
model, which only a grammar makes SmolLM2 do, and these two APIs take no raw grammar.)
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.support.openai_fixtures import KEY
from tests.support.server import ServerProcess, real_model_env, running_server

TEMPLATE = (
    Path(__file__).parents[1]
    / "fixtures"
    / "templates"
    / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"
)
ASK = [{"role": "user", "content": "Name a color."}]


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on the default model with a template whose prompt opens the thinking block."""
    copy = tmp_path_factory.mktemp("thinking") / "r1.gguf"
    tool = Path(sys.executable).with_name("gguf-new-metadata")
    subprocess.run(
        [str(tool), "--chat-template-file", str(TEMPLATE), str(model_path), str(copy)],
        check=True,
        capture_output=True,
    )
    env = real_model_env(copy, api_key=KEY, parallel="1", ctx_size="2048", reasoning_budget="6")
    try:
        with running_server(env) as running:
            yield running
    finally:
        copy.unlink(missing_ok=True)


@pytest.fixture
def claude(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.base_url, api_key=KEY, timeout=180) as client:
        yield client


def test_anthropic_thinking_block_then_text(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="m",
        max_tokens=30,
        messages=ASK,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 5},
        extra_body={"temperature": 0},
    )
    thinking, *rest = message.content
    assert thinking.type == "thinking"
    assert thinking.thinking
    assert thinking.signature
    assert "</think>" not in thinking.thinking
    # After the block the model may write anything (SmolLM2 parrots "</think>"): content.
    assert [block.type for block in rest] == ["text"]
    assert len(thinking.thinking) < 80  # the budget's five tokens, not the whole reply


def test_anthropic_stream_has_thinking_deltas(claude: anthropic.Anthropic) -> None:
    kinds: list[str] = []
    with claude.messages.stream(
        model="m",
        max_tokens=30,
        messages=ASK,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 5},
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                kinds.append(event.delta.type)
        final = stream.get_final_message()
    assert "thinking_delta" in kinds
    assert kinds.index("signature_delta") > kinds.index("thinking_delta")
    assert final.content[0].type == "thinking"
    assert final.content[0].thinking
    assert final.content[0].signature


def test_responses_reasoning_item(server: ServerProcess) -> None:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, timeout=180) as client:
        response = client.responses.create(
            model="m",
            input="Name a color.",
            max_output_tokens=30,
            reasoning={"effort": "low"},
            temperature=0,
        )
    reasoning = response.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.content
    assert reasoning.content[0].type == "reasoning_text"
    assert reasoning.content[0].text
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens > 0
    assert [item.type for item in response.output[1:]] in ([], ["message"])
