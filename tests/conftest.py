"""Test-run options shared by every test directory."""

from __future__ import annotations

import pytest


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
