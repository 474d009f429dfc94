"""Prometheus metrics for ``GET /metrics``.

Each app has its own ``Metrics`` (its own ``CollectorRegistry``), created by ``create_app`` and
kept at ``app.state.metrics``: tests build many apps in one process, and the global default
registry would refuse the second registration of the same metric name.

Who counts what:

* ingest: ``metrics.ingest_events.labels(table=...).inc(n)`` for accepted rows,
  ``metrics.ingest_bytes.labels(table=...).inc(n)`` for request body bytes (before
  decompression), ``metrics.ingest_rejected.labels(table=..., reason=...).inc(n)`` for refused rows;
* the query runner: ``observe_query(outcome, seconds, rows)``;
* storage size per table is read from the data directory at scrape time (``StorageSizeCollector``),
  so it is right even after compaction or retention ran in the background.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schema.catalog import Catalog
from server.auth import QueryKey

# Query outcomes, as the label values of quarry_queries_total.
QUERY_OUTCOMES: tuple[str, ...] = (
    "ok",
    "truncated",
    "compile_error",
    "execution_error",
    "timeout",
    "rejected",  # concurrency limit: 429
    "resource_limit",  # memory limit
)


class StorageSizeCollector(Collector):
    """Bytes of Parquet per table, from ``<data>/<Table>/**/*.parquet`` at scrape time."""

    def __init__(self, data_dir: Path, catalog: Catalog) -> None:
        self.data_dir = data_dir
        self.catalog = catalog

    def collect(self) -> Iterable[Metric]:
        sizes = GaugeMetricFamily(
            "quarry_storage_bytes", "Bytes of Parquet stored per table", labels=["table"]
        )
        files = GaugeMetricFamily(
            "quarry_storage_files", "Parquet files stored per table", labels=["table"]
        )
        for name in self.catalog.tables:
            total, count = _dir_parquet_size(self.data_dir / name)
            sizes.add_metric([name], float(total))
            files.add_metric([name], float(count))
        yield sizes
        yield files


def _dir_parquet_size(root: Path) -> tuple[int, int]:
    total = count = 0
    if not root.is_dir():
        return 0, 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            if n.endswith(".parquet"):
                try:
                    total += os.stat(os.path.join(dirpath, n)).st_size
                    count += 1
                except FileNotFoundError:  # removed by compaction or retention meanwhile
                    continue
    return total, count


class Metrics:
    def __init__(self, data_dir: Path | None = None, catalog: Catalog | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ingest_events = Counter(
            "quarry_ingest_events", "Rows accepted by ingest", ["table"], registry=r
        )
        self.ingest_bytes = Counter(
            "quarry_ingest_bytes", "Request body bytes received by ingest", ["table"], registry=r
        )
        self.ingest_rejected = Counter(
            "quarry_ingest_rejected_events", "Rows refused by ingest", ["table", "reason"], registry=r
        )
        self.ingest_requests = Counter(
            "quarry_ingest_requests", "Ingest requests by HTTP status", ["status"], registry=r
        )
        self.queries = Counter(
            "quarry_queries", "Queries by outcome", ["outcome"], registry=r
        )
        self.query_latency = Histogram(
            "quarry_query_duration_seconds",
            "Query wall time (compile and execute)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.rows_returned = Counter(
            "quarry_query_rows_returned", "Rows returned by queries and exports", registry=r
        )
        # Pre-create the outcome series so dashboards see zeros, not absent series.
        for outcome in QUERY_OUTCOMES:
            self.queries.labels(outcome=outcome)
        if data_dir is not None and catalog is not None:
            r.register(StorageSizeCollector(data_dir, catalog))

    def observe_query(self, outcome: str, seconds: float, rows: int = 0) -> None:
        self.queries.labels(outcome=outcome).inc()
        self.query_latency.observe(seconds)
        if rows:
            self.rows_returned.inc(rows)


def get_metrics(request: Request) -> Metrics | None:
    """The app's metrics, or None when the app was built without them."""
    return getattr(request.app.state, "metrics", None)


def metrics_router() -> APIRouter:
    """``GET /metrics`` in Prometheus' text format; needs a key (query scope), like every route
    but /healthz."""
    router = APIRouter(tags=["health"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "content": {
                    "text/plain": {"example": 'quarry_queries_total{outcome="ok"} 12.0\n'}
                }
            }
        },
    )
    async def metrics(request: Request, _key: QueryKey) -> Response:
        m: Metrics | None = get_metrics(request)
        if m is None:
            return Response(b"", media_type=CONTENT_TYPE_LATEST)
        # Walking the data directory for sizes is blocking file I/O: off the event loop.
        body = await anyio.to_thread.run_sync(generate_latest, m.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
