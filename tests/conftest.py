"""Test-wide defaults.

A test data directory holds no disk reserve and refuses no ingest for low free space unless the
test asks for it (tests/test_storage_disk.py, tests/test_e2e_disk_full.py): hundreds of data
directories, each with a fallocated ballast, would fill the disk that pytest keeps them on.
Explicit settings and a subprocess's own environment override these.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.browser import launch

os.environ.setdefault("QUARRY_MIN_FREE_BYTES", "0")
os.environ.setdefault("QUARRY_DISK_RESERVE_BYTES", "0")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """The run's one headless Chromium (tests/support/browser.py); open a context per test."""
    yield from launch()
