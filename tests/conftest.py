"""Fixtures shared by test modules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import launch


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """The run's one headless Chromium (tests/support/browser.py); open a context per test."""
    yield from launch()
