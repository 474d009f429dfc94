"""Limits that protect the service, over HTTP against the real server: the timeout stops a heavy
query with ``interrupt()``; ingest and light queries keep answering while it runs; excess
concurrent queries wait briefly and then get 429 with Retry-After."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_api_support import (
    HEAVY,
    SEED_EXPECTED_IDS,
    SEED_QUERY,
    LiveServer,
    assert_error_shape,
    ingest,
    live_server,
    network_events,
    seeded_server,
    utcnow,
)

pytestmark = pytest.mark.slow

TIMEOUT_S = 3.0
QUEUE_WAIT_S = 0.3


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with seeded_server(
        tmp_path_factory.mktemp("limits"),
        query_timeout_s=TIMEOUT_S,
        max_concurrent_queries=2,
        query_queue_wait_s=QUEUE_WAIT_S,
    ) as s:
        yield s


def _post(srv: LiveServer, body: dict[str, object], out: list[tuple[httpx.Response, float]]) -> None:
    t0 = time.monotonic()
    with srv.client() as c:
        r = c.post("/api/query", json=body)
    out.append((r, time.monotonic() - t0))


def test_heavy_query_times_out(srv: LiveServer) -> None:
    t0 = time.monotonic()
    with srv.client() as c:
        r = c.post("/api/query", json={"query": HEAVY})
        elapsed = time.monotonic() - t0
        body = assert_error_shape(r, 504, "timeout")
        assert "timeout" in body["error"]
        # stopped by the timer, not run to completion
        assert TIMEOUT_S - 0.1 <= elapsed < TIMEOUT_S + 5
        # the service is fine afterwards
        r = c.post("/api/query", json={"query": SEED_QUERY})
        assert r.status_code == 200
        metrics = c.get("/metrics").text
    assert 'quarry_queries_total{outcome="timeout"} 1.0' in metrics


def test_ingest_and_queries_answer_while_a_heavy_query_runs(srv: LiveServer) -> None:
    heavy: list[tuple[httpx.Response, float]] = []
    t = threading.Thread(target=_post, args=(srv, {"query": HEAVY}, heavy))
    t0 = time.monotonic()
    t.start()
    time.sleep(0.2)  # let it start
    ingest_times = []
    light: list[tuple[httpx.Response, float]] = []
    for i in range(3):
        s = time.monotonic()
        ingest(srv, "DeviceNetworkEvents", network_events(utcnow(), 20 + i))
        ingest_times.append(time.monotonic() - s)
    with srv.client(None) as c:
        s = time.monotonic()
        assert c.get("/healthz").status_code == 200
        health = time.monotonic() - s
    _post(srv, {"query": SEED_QUERY}, light)
    answered = time.monotonic() - t0
    t.join()
    heavy_elapsed = time.monotonic() - t0
    assert heavy[0][0].status_code == 504
    # Everything above answered while the heavy query was still running...
    assert answered < heavy_elapsed
    assert answered < TIMEOUT_S, (ingest_times, health, light[0][1])
    # ...and each in a fraction of the heavy query's time.
    assert max(ingest_times) < TIMEOUT_S / 2
    assert health < 0.5
    r, _ = light[0]
    assert r.status_code == 200
    names = [c["name"] for c in r.json()["columns"]]
    assert [dict(zip(names, row, strict=True))["ReportId"] for row in r.json()["rows"]] == SEED_EXPECTED_IDS


def test_excess_concurrent_queries_get_429(srv: LiveServer) -> None:
    heavy: list[tuple[httpx.Response, float]] = []
    threads = [threading.Thread(target=_post, args=(srv, {"query": HEAVY}, heavy)) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # both slots taken
    t0 = time.monotonic()
    with srv.client() as c:
        r = c.post("/api/query", json={"query": SEED_QUERY})
        waited = time.monotonic() - t0
        assert_error_shape(r, 429, "too_many_queries")
        assert int(r.headers["Retry-After"]) >= 1
        assert QUEUE_WAIT_S - 0.05 <= waited < TIMEOUT_S  # waited briefly, not for a slot
        r2 = c.post("/api/advancedhunting/run", json={"Query": SEED_QUERY})
        assert_error_shape(r2, 429)
    for t in threads:
        t.join()
    assert sorted(r.status_code for r, _ in heavy) == [504, 504]
    # slots are free again
    with srv.client() as c:
        assert c.post("/api/query", json={"query": SEED_QUERY}).status_code == 200


def test_shutdown_stops_a_running_query(tmp_path: Path) -> None:
    """Stopping the server while a heavy query runs (timeout far away) interrupts it, so storage
    closes cleanly and releases the data directory: a new server opens it at once."""
    heavy: list[tuple[httpx.Response, float]] = []
    with live_server(tmp_path, query_timeout_s=120) as s:

        def post() -> None:
            # the server cancels the request when its graceful shutdown runs out
            with contextlib.suppress(httpx.HTTPError):
                _post(s, {"query": HEAVY}, heavy)

        t = threading.Thread(target=post, daemon=True)
        t.start()
        deadline = time.monotonic() + 10
        while getattr(s.app.state, "query_runner", None) is None or s.app.state.query_runner.running == 0:
            assert time.monotonic() < deadline, "the heavy query did not start"
            time.sleep(0.02)
        runner = s.app.state.query_runner
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 15  # the 2 s graceful shutdown plus the interrupt
    assert runner.running == 0
    with live_server(tmp_path) as again, again.client() as c:
        assert c.post("/api/query", json={"query": "print x = 1"}).json()["rows"] == [[1]]
