"""Pytest fixtures for the browser tests: one headless Chromium per module, a fresh context
per test (a laptop-sized viewport). Registered in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import chromium_browser, require_chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, shared by the tests of one module."""
    require_chromium()
    with chromium_browser() as running:
        yield running


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser context (own storage) at 1280x860."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    yield context
    context.close()
