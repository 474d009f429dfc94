"""Property-based fuzzing of the ingest routes over HTTP, against ``quarry serve`` in a child
process (a crash fails the test rather than the test run).

Bodies are generated as events (valid ones, and ones with any JSON value in any column, unknown
and odd column names, missing required fields), laid out as a JSON array, NDJSON, an Event Hub
message or Storage-blob lines, optionally gzip'd or deflated, then optionally damaged at the byte
level (truncated, bytes inserted or flipped, invalid UTF-8, wrapped in deep nesting, a lying
Content-Encoding). Properties: never a 5xx, the process stays alive, every 4xx is in the one
error shape, every answer comes quickly, and every acknowledged event is stored.

``make test`` runs a short, derandomized budget (40 examples, the same every run, so CI is
stable); ``make fuzz`` sets ``QUARRY_FUZZ_EXAMPLES`` (default 5,000) and draws new examples each
run (docs/fuzzing.md has the figures of a long run). A body that kills the server is saved
(``QUARRY_FUZZ_SAVE_DIR``, else next to the server's log) since the server cannot replay it.
"""

from __future__ import annotations

import gzip
import os
import re
import time
import zlib
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schema import default_catalog
from tests.support.serve import QuarryProcess

pytestmark = pytest.mark.fuzz

KEY = "fuzz-ingest-admin-key"
TABLE = "DeviceProcessEvents"
# A set budget (`make fuzz`) also draws new examples each run; the default one is derandomized
# so that CI sees the same examples every time.
EXAMPLES = int(os.environ.get("QUARRY_FUZZ_EXAMPLES", "40"))
DERANDOMIZE = "QUARRY_FUZZ_EXAMPLES" not in os.environ
ANSWER_WITHIN_S = 15.0  # bodies here are small: any answer slower than this is a bug

COLUMNS = [c.name for c in default_catalog().tables[TABLE].columns]
_ids = count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuarryProcess]:
    d = tmp_path_factory.mktemp("fuzz")
    # A small row limit so that generated bodies also cross it.
    srv = QuarryProcess(d / "data", d / "server.log", key=KEY,
                        env={"QUARRY_MAX_BODY_BYTES": str(1 << 20), "QUARRY_MAX_BATCH_ROWS": "50"})
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server: QuarryProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=ANSWER_WITHIN_S * 2) as c:
        yield c


# -- strategies -------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.sampled_from(["", "2024-05-01T12:00:00Z", "2024-13-45", "0001-01-01",
                              "1.02:03:04", '{"a": [1]}', "[[[", "NaN", "\u0000"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)
names = st.sampled_from(COLUMNS) | st.text(max_size=10) | st.sampled_from(
    ["MachineGroup", "_extra", "", "timestamp", "Timestamp ", "A" * 1100])


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.1234567Z", time.gmtime()),
        "DeviceId": "fuzz-dev", "ActionType": "ProcessCreated", "FileName": "cmd.exe",
        "ReportId": next(_ids),
    }
    for _ in range(draw(st.integers(0, 3))):
        what = draw(st.sampled_from(["set", "set", "drop", "deep"]))
        if what == "set":
            ev[draw(names)] = draw(values)
        elif what == "drop":
            ev.pop(draw(st.sampled_from(sorted(ev))), None)
        else:  # around the depth limit (64), and past what orjson serialises (254)
            ev[draw(names)] = f"{DEEP}{draw(st.sampled_from([63, 64, 65, 253, 255, 1100]))}"
    return ev


DEEP = "\u2063deep:"  # a marker layout() replaces by that many nested arrays


def layout(rows: list[Any], shape: str, category: str) -> bytes:
    return re.sub(rb'"\xe2\x81\xa3deep:(\d+)"',
                  lambda m: b"[" * int(m[1]) + b"]" * int(m[1]), _layout(rows, shape, category))


def _layout(rows: list[Any], shape: str, category: str) -> bytes:
    if shape == "json":
        return orjson.dumps(rows)
    if shape == "ndjson":
        return b"".join(orjson.dumps(r) + b"\n" for r in rows)
    records = [{"time": "2024-05-01T00:00:00Z", "category": category, "properties": r}
               for r in rows]
    if shape == "eventhub":
        return orjson.dumps({"records": records})
    return b"\n".join(orjson.dumps(r) for r in records)  # Storage-blob lines


def damage(body: bytes, kind: str, at: int, junk: bytes) -> bytes:
    at = at % (len(body) + 1)
    if kind == "truncate":
        return body[:at]
    if kind == "insert":
        return body[:at] + junk + body[at:]
    if kind == "flip" and body:
        i = at % len(body)
        return body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :]
    if kind == "bad-utf8":
        return body[:at] + b"\xc3\x28\xff" + body[at:]
    if kind == "deep":
        n = 200 + at % 3000
        return b"[" * n + body + b"]" * n
    return body


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    shape = draw(st.sampled_from(["json", "ndjson", "eventhub", "lines"]))
    rows: list[Any] = draw(st.lists(events() | values, max_size=8) if draw(st.booleans())
                           else st.lists(events(), max_size=60))
    category = draw(st.sampled_from([f"AdvancedHunting-{TABLE}", "AdvancedHunting-EmailEvents",
                                     "AdvancedHunting-", "Other"]))
    rows = rows * draw(st.sampled_from([1, 1, 1, 10]))  # sometimes past max_batch_rows (50)
    body = layout(rows, shape, category)
    body = damage(body, draw(st.sampled_from(["none", "none", "truncate", "insert", "flip",
                                              "bad-utf8", "deep"])),
                  draw(st.integers(0, 1 << 20)), draw(st.binary(max_size=8)))
    headers: dict[str, str] = {}
    encoding = draw(st.sampled_from(["identity", "gzip", "deflate", "lying-gzip"]))
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    if encoding != "identity":
        headers["Content-Encoding"] = "gzip" if encoding == "lying-gzip" else encoding
    if shape in ("eventhub", "lines"):
        skip = draw(st.booleans())
        return f"/api/ingest/streaming{'?skipUnknownTables=true' if skip else ''}", body, headers
    if shape == "ndjson":
        headers["Content-Type"] = "application/x-ndjson"
    return f"/api/ingest/{TABLE}", body, headers


# -- properties -------------------------------------------------------------------------------

ACCEPTED: list[int] = []


def check_answer(server: QuarryProcess, r: httpx.Response, elapsed: float) -> None:
    assert server.alive(), f"the server died; see {server.log_path}"
    assert r.status_code < 500, r.text[:500]
    assert elapsed < ANSWER_WITHIN_S, f"{elapsed:.1f} s"
    body = r.json()
    event(f"{r.status_code} {body['errors'][0]['code'] if r.status_code >= 400 else 'ok'}")
    if r.status_code >= 400:
        assert body["ok"] is False and isinstance(body["error"], str) and body["error"]
        assert body["errors"] and all(
            isinstance(e.get("code"), str) and isinstance(e.get("message"), str)
            for e in body["errors"])
        assert len(r.content) < 200_000, "echoed user text must be clipped"
        return
    assert r.status_code == 200
    tables = body.get("tables")
    ACCEPTED.append(tables.get(TABLE, {}).get("accepted", 0) if tables is not None
                    else body["accepted"])


@settings(max_examples=EXAMPLES, derandomize=DERANDOMIZE, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(req=requests())
def test_ingest_never_fails_on_any_body(server: QuarryProcess, client: httpx.Client,
                                        req: tuple[str, bytes, dict[str, str]]) -> None:
    route, body, headers = req
    started = time.monotonic()
    try:
        r = client.post(route, content=body, headers=headers)
    except httpx.TransportError:
        if server.alive():
            raise
        # Keep the body that killed the server: the next replay cannot reach it.
        # (QUARRY_FUZZ_SAVE_DIR: somewhere pytest's rotation of temporary folders will not reach)
        where = os.environ.get("QUARRY_FUZZ_SAVE_DIR") or Path(server.log_path).parent
        saved = Path(where) / "killer-request.bin"
        saved.write_bytes(orjson.dumps({"route": route, "headers": headers}) + b"\n" + body)
        pytest.fail(f"the server died (exit {server.proc.poll()}) on a request saved in {saved}")
    check_answer(server, r, time.monotonic() - started)


def test_every_acknowledged_event_is_stored(server: QuarryProcess, client: httpx.Client) -> None:
    """After the fuzzing above: what was acknowledged is exactly what is stored, and the server
    logged no internal error."""
    r = client.post("/api/query", json={"query": f"{TABLE} | count"})
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [[sum(ACCEPTED)]]
    log = Path(server.log_path).read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
