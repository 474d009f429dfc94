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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine", choices=("duckdb", "spark"), default="duckdb",
        help="engine the KQL execution suite (tests/kql) runs its queries on: the compiled SQL "
             "for that target over the same fixture rows (spark: one local[2] session per run)",
    )


def pytest_configure(config: pytest.Config) -> None:
    from tests.kql import fixtures

    fixtures.ENGINE = config.getoption("--engine")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.kql import fixtures

    fixtures.stop_spark()
