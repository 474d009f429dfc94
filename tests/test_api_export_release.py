"""``POST /api/query/export`` gives back its concurrency slot and DuckDB connection as soon as the
response ends, whatever ends it: the client going away (before the first byte, mid-stream, or
or while it waits on a slow reader) or the timeout. Over HTTP against the real server, with one slot,
so a slot left held shows up as a 429 for the next query."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.test_api_support import LiveServer, live_server

pytestmark = pytest.mark.slow

# 40 million rows, streamed by the join as they are read (a range alone is materialised): far
# more than a test ever reads.
BIG = (
    "range i from 1 to 2000 step 1 | extend k = 1 "
    "| join kind=inner (range j from 1 to 20000 step 1 | extend k = 1) on k "
    "| project i, j, s = strcat('row-', tostring(j))"
)
RELEASE_S = 3.0  # how soon the slot must come back (the timeout is far away)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("export_release"),
        max_concurrent_queries=1,
        query_queue_wait_s=RELEASE_S,
        query_timeout_s=120,
    ) as s:
        yield s


def _running(srv: LiveServer) -> int:
    runner = getattr(srv.app.state, "query_runner", None)
    return 0 if runner is None else int(runner.running)


def _wait_running(srv: LiveServer, want: int, within: float) -> None:
    deadline = time.monotonic() + within
    while _running(srv) != want:
        assert time.monotonic() < deadline, f"running stayed {_running(srv)}, wanted {want}"
        time.sleep(0.02)


def _slot_comes_back(srv: LiveServer) -> None:
    """A normal query gets the one slot (it waits up to the queue wait, not 429) and the runner
    holds no connection afterwards."""
    t0 = time.monotonic()
    with srv.client() as c:
        r = c.post("/api/query", json={"query": "print x = 1"})
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [[1]]
    assert time.monotonic() - t0 < RELEASE_S + 1
    _wait_running(srv, 0, 2.0)


def _raw_export(srv: LiveServer, query: str) -> socket.socket:
    body = orjson.dumps({"query": query})
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    head = (
        f"POST /api/query/export?format=ndjson HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {srv.keys['query']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


def test_disconnect_mid_stream_frees_the_slot(srv: LiveServer) -> None:
    with srv.client() as c, c.stream("POST", "/api/query/export?format=ndjson", json={"query": BIG}) as r:
        assert r.status_code == 200
        first = next(r.iter_bytes())
        assert first.startswith(b'{"i":')
        assert _running(srv) == 1  # the export holds the one slot while it streams
    # leaving the block closes the connection with most of the body unread
    _slot_comes_back(srv)


def test_disconnect_before_the_body_frees_the_slot(srv: LiveServer) -> None:
    """Gone right after sending the request: the query is primed (slot taken) and the response
    then meets a closed connection, before the body iterator ever runs."""
    sock = _raw_export(srv, BIG)
    _wait_running(srv, 1, 5.0)
    sock.close()
    _slot_comes_back(srv)


def test_export_that_completes_frees_the_slot(srv: LiveServer) -> None:
    with srv.client() as c:
        r = c.post("/api/query/export?format=csv", json={"query": "range i from 1 to 5 step 1"})
    assert r.status_code == 200 and r.text.split() == ["i", "1", "2", "3", "4", "5"]
    _slot_comes_back(srv)


def test_timeout_after_streaming_began_cuts_the_body_and_frees_the_slot(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The timeout covers the whole export, a slow reader's pauses included: the stream is cut
    (no chunked terminator, so the client cannot take it for a whole result), the slot comes back
    and the server keeps answering."""
    with live_server(
        tmp_path_factory.mktemp("export_timeout"), max_concurrent_queries=1, query_timeout_s=1.5,
        query_queue_wait_s=RELEASE_S,
    ) as s:
        got = 0
        with s.client() as c, c.stream("POST", "/api/query/export?format=ndjson", json={"query": BIG}) as r:
            assert r.status_code == 200
            chunks = r.iter_bytes()
            got += len(next(chunks))
            time.sleep(2.5)  # past the timeout while the export waits on us
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in chunks:
                    got += len(chunk)
        assert 0 < got < 40_000_000 * 10  # cut, far short of the whole result
        _slot_comes_back(s)
