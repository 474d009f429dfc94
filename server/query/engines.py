"""Engine choice: the query runner for ``QUARRY_ENGINE`` (duckdb, the default, or spark)."""

from __future__ import annotations

from typing import Any

from schema.catalog import Catalog
from server.query.runner import Connector, QueryLimits, QueryRunner

ENGINES = ("duckdb", "spark")


def make_runner(storage: Connector, catalog: Catalog, settings: Any, *, engine: str | None = None,
                metrics: Any | None = None) -> QueryRunner:
    """A runner for ``engine`` (default: ``settings.engine``) with the settings' query limits."""
    engine = engine or getattr(settings, "engine", "duckdb")
    limits = QueryLimits.from_settings(settings)
    if engine == "spark":
        from server.query.spark_runner import SparkQueryRunner

        return SparkQueryRunner(storage, catalog, limits, metrics=metrics, master=settings.spark_master,
                                conf=settings.spark_conf)
    if engine != "duckdb":
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    return QueryRunner(storage, catalog, limits, metrics=metrics)
