"""Hostile queries against the real server run as a separate process (``quarry serve``), so that a
crash of the engine fails a test instead of killing pytest: oversize and deeply nested queries
get a positioned 400 ``too_complex`` naming the limit; lone surrogates get 400 on every hunting and
Kusto route; array-producing queries end within the timeout and within the memory limit (the
server's peak RSS is read from /proc); /healthz answers while a large query compiles."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.live import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
KEY = "hardening-admin-key"
TIMEOUT_S = 6.0
MEMORY_LIMIT = "1GB"


class ServerProcess:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).with_name("quarry")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "server.cli"]
        self.log = (data_dir / "server.log").open("ab")
        full_env = {**os.environ, "QUARRY_ADMIN_KEY": KEY, "QUARRY_SCHEDULER_ENABLED": "false", **env}
        self.proc = subprocess.Popen(
            [*cmd, "serve", "--data-dir", str(data_dir / "data"), "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"the server exited with {self.proc.returncode}"
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=timeout)

    def status(self, field: str) -> int:
        """A /proc/<pid>/status field in kB (VmRSS, VmHWM: the peak resident set)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("hardening"), QUARRY_QUERY_TIMEOUT_S=str(TIMEOUT_S),
                      QUARRY_QUERY_MEMORY_LIMIT=MEMORY_LIMIT)
    try:
        yield s
    finally:
        s.stop()


def _error(r: httpx.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text[:500]
    body = r.json()
    assert isinstance(body, dict)
    return body


# -- item 2 and 6: size limits before the compiler and the engine --------------------------


def test_ten_thousand_conjuncts_are_refused_not_run(srv: ServerProcess) -> None:
    # ~10,000 and-ed comparisons (~200 KB) crashed DuckDB; 2,000 (~37 KB, under the text limit,
    # 7.6 s and 2.3 GB in DuckDB) pass the size check and meet the expression limit instead
    for n, limit in ((10_000, "query_max_bytes"), (2_000, "query_max_expression_nodes")):
        text = "DeviceProcessEvents | where " + " and ".join(f"ProcessId != {i}" for i in range(n))
        t0 = time.monotonic()
        with srv.client() as c:
            r = c.post("/api/query", json={"query": text})
        assert time.monotonic() - t0 < 5
        body = _error(r, 400)
        first = body["errors"][0]  # type: ignore[index]
        assert first["code"] == "too_complex"
        assert limit in first["message"]
        assert first["line"] == 1 and first["column"] >= 1
    assert srv.alive()


def test_deep_nesting_is_refused_with_its_position(srv: ServerProcess) -> None:
    text = "print x = " + "(" * 5000 + "1" + ")" * 5000
    with srv.client() as c:
        r = c.post("/api/query", json={"query": text})
        first = _error(r, 400)["errors"][0]  # type: ignore[index]
        assert first["code"] == "too_complex" and "query_max_depth" in first["message"]
        assert first["column"] > 10  # where the nesting passes the limit, not the start
        # a left-deep chain is as deep as it is long; the parser must not recurse over it
        r = c.post("/api/query", json={"query": "print x = " + "+".join(["1"] * 20_000)})
        assert _error(r, 400)["errors"][0]["code"] == "too_complex"  # type: ignore[index]
        # a long in-list: named limit, quickly
        t0 = time.monotonic()
        items = ",".join(str(i) for i in range(14_000))
        r = c.post("/api/query", json={"query": f"print x = 1 | where x in ({items})"})
        assert time.monotonic() - t0 < 5
        assert "query_max_list_items" in _error(r, 400)["errors"][0]["message"]  # type: ignore[index]
    assert srv.alive()


def test_healthz_answers_while_a_large_query_compiles(srv: ServerProcess) -> None:
    # ~120 KB of `1+1+...`: parsing it takes seconds on this machine before the depth limit
    # refuses it (a compile of many thousands of extend columns behaves the same)
    text = "print x = " + "+".join(["1"] * 60_000)
    assert len(text) < 131_072
    done: list[float] = []

    def post() -> None:
        t0 = time.monotonic()
        with srv.client() as c:
            c.post("/api/query", json={"query": text})
        done.append(time.monotonic() - t0)

    t = threading.Thread(target=post)
    t.start()
    time.sleep(0.15)
    health: list[float] = []
    while t.is_alive() and len(health) < 20:
        t0 = time.monotonic()
        assert httpx.get(srv.url + "/healthz", timeout=5).status_code == 200
        health.append(time.monotonic() - t0)
        time.sleep(0.05)
    t.join()
    assert health, "the query finished before /healthz was asked"
    # Before, /healthz waited seconds for the compile (4 s in the issue). Compiling runs on a
    # worker thread with the cyclic collector paused (its full passes held the GIL ~0.8 s); the
    # bound leaves room for a loaded 2-core CI machine.
    assert max(health) < 1.5, (health, done)
    # an oversize text is refused without parsing it
    t0 = time.monotonic()
    with srv.client() as c:
        r = c.post("/api/query", json={"query": "print x = 1 // " + "a" * 300_000})
    assert time.monotonic() - t0 < 1.5
    assert "query_max_bytes" in _error(r, 400)["errors"][0]["message"]  # type: ignore[index]


# -- item 4: lone surrogates on every hunting and Kusto route ------------------------------

# JSON texts whose strings decode to a lone surrogate: in the query text, inside a KQL string
# literal (a JSON escape), as a KQL \u escape, and in a query parameter
BAD_QUERIES = ['print x = 1 \\ud800', 'print x = \\"\\ud800\\"', 'print x = \\"\\\\ud800\\"']
BAD_PARAM = '"declare query_parameters(p:string); print p"'


def _raw(body: str) -> bytes:
    return body.encode()


def test_lone_surrogates_are_400_on_every_route(srv: ServerProcess) -> None:
    routes = [
        ("/api/query", '{{"query": "{q}"}}'),
        ("/api/query/export?format=csv", '{{"query": "{q}"}}'),
        ("/api/advancedqueries/run", '{{"Query": "{q}"}}'),
        ("/api/advancedhunting/run", '{{"Query": "{q}"}}'),
        ("/security/runHuntingQuery", '{{"Query": "{q}"}}'),
        ("/v1.0/security/runHuntingQuery", '{{"Query": "{q}"}}'),
        ("/v1/rest/query", '{{"db": "Quarry", "csl": "{q}"}}'),
        ("/v2/rest/query", '{{"db": "Quarry", "csl": "{q}"}}'),
        ("/api/detections/rules", '{{"name": "r", "query": "{q}"}}'),
    ]
    headers = {"Content-Type": "application/json"}
    with srv.client() as c:
        for path, shape in routes:
            for q in BAD_QUERIES:
                r = c.post(path, content=_raw(shape.format(q=q)), headers=headers)
                assert r.status_code == 400, (path, q, r.status_code, r.text[:300])
        # the GET form takes the text from the URL: a %-escaped lone surrogate
        r = c.get("/api/advancedqueries", params={"key": "print x = \"\\ud800\""})
        assert r.status_code == 400, r.text[:300]
        # query parameters, natively and as Kusto's properties
        for path in ("/api/query", "/api/query/export"):
            r = c.post(path, headers=headers,
                       content=_raw('{"query": ' + BAD_PARAM + ', "parameters": {"p": "a\\ud800"}}'))
            assert r.status_code == 400, (path, r.text[:300])
            assert "surrogate" in r.text
        for path in ("/v1/rest/query", "/v2/rest/query"):
            props = {"Parameters": {"p": "x"}}
            body = orjson.dumps({"db": "Quarry", "csl": "declare query_parameters(p:string); print p",
                                 "properties": orjson.dumps(props).decode()}).decode()
            body = body.replace('\\"x\\"', '\\"\\\\ud800\\"')  # the parameter, inside properties' JSON
            r = c.post(path, content=_raw(body), headers=headers)
            assert r.status_code == 400, (path, r.text[:300])
    assert srv.alive()


# -- item 5: array producers bounded, timeout and memory real --------------------------------


def test_array_producers_end_in_time_and_memory(srv: ServerProcess) -> None:
    base_kb = srv.status("VmRSS")
    results = []
    with srv.client(timeout=TIMEOUT_S + 30) as c:
        for text in (
            # Kusto's documented answer: range() returns at most 1,048,576 values
            "print a = range(1, 100000000, 1) | mv-expand a | count",
            # make_list over 1e8 rows: the memory limit stops it (or the timeout)
            "range x from 1 to 100000000 step 1 | summarize l = make_list(x) | project n = array_length(l)",
            "range x from 1 to 100000000 step 1 | summarize l = make_set(x) | project n = array_length(l)",
            "range x from 1 to 3 step 1 | extend T = datetime(2020-01-01) "
            "| make-series n = count() on T from datetime(1000-01-01) to datetime(9000-01-01) step 1s",
        ):
            t0 = time.monotonic()
            r = c.post("/api/query", json={"query": text})
            results.append((text, r.status_code, time.monotonic() - t0, r.text[:200]))
    peak_kb = srv.status("VmHWM")
    for text, status, elapsed, body in results:
        assert elapsed < TIMEOUT_S + 2, (text, elapsed)
        assert status in (200, 400, 504), (text, status, body)
    assert results[0][1] == 200 and orjson.loads(results[0][3])["rows"] == [[1_048_576]]
    # the memory limit is 1 GB; DuckDB's own structures and the Python heap come on top
    assert peak_kb - base_kb < 2_000_000, (base_kb, peak_kb, results)
    assert srv.alive()


def test_a_query_that_never_ends_is_stopped_at_the_timeout(srv: ServerProcess) -> None:
    heavy = ("range i from 1 to 200000 step 1 | extend k = 1 "
             "| join kind=inner (range j from 1 to 200000 step 1 | extend k = 1) on k | count")
    t0 = time.monotonic()
    with srv.client(timeout=TIMEOUT_S + 30) as c:
        r = c.post("/api/query", json={"query": heavy})
    elapsed = time.monotonic() - t0
    assert r.status_code == 504, r.text[:300]
    assert TIMEOUT_S - 0.5 < elapsed < TIMEOUT_S + 2
    assert srv.alive()
