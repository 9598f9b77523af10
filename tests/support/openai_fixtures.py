"""A real server on the default model behind an API key, and an openai SDK client for it.

Module-scoped: each test module that uses ``server``/``client`` gets its own server process
(so one module's requests never shape another's KV caches); modules that need other
settings define their own ``server`` fixture, which takes precedence.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.server import ServerProcess, real_model_env, running_server

KEY = "e2e-key-7d1c"


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[ServerProcess]:
    """``cria`` on the default model with API key ``KEY``, one process per test module."""
    with running_server(real_model_env(model_path, api_key=KEY)) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    """The openai SDK pointed at ``server``."""
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, timeout=120) as sdk:
        yield sdk
