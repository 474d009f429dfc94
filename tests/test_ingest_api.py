"""Ingest over HTTP against a real uvicorn server on loopback: success paths, one test per
bad-input class (status, error body, nothing written), back-pressure, streaming export replay."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from server.app import create_app
from server.settings import Settings
from tests.support.live import LiveServer as SharedLiveServer

ADMIN = "test-admin-key-ingest"
LIMIT = 1 << 20  # max_body_bytes for these tests


class LiveServer(SharedLiveServer):
    """The shared live server (tests/support/live.py) with direct reads of ``app.state.storage``."""

    def count(self, table: str) -> int:
        con = self.app.state.storage.connect()
        try:
            row = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        finally:
            con.close()
        assert row is not None
        return int(row[0])

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        con = self.app.state.storage.connect()
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()


def make_settings(data_dir: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(data_dir=data_dir, admin_key=ADMIN, max_body_bytes=LIMIT,
                                scheduler_enabled=False, flush_max_age_s=3600.0)
    base.update(kw)
    return Settings(**base)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(create_app(make_settings(tmp_path_factory.mktemp("ingest")))) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {ADMIN}"},
                      timeout=30) as c:
        yield c


_seq = iter(range(1, 10**9))


def ev(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.1234567Z", time.gmtime()),
        "DeviceId": "4f5e0c2a9d1b",
        "DeviceName": "ws-01.contoso.local",
        "ActionType": "ProcessCreated",
        "FileName": "cmd.exe",
        "ProcessCommandLine": "cmd.exe /c whoami",
        "ProcessId": 4242,
        "ReportId": next(_seq),
    }
    base.update(kw)
    return base


def nd(rows: list[Any]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


NDJSON = {"Content-Type": "application/x-ndjson"}
NDJSON_GZ = {**NDJSON, "Content-Encoding": "gzip"}


def assert_error_shape(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["ok"] is False
    assert isinstance(body["error"], str) and body["error"]
    assert body["errors"] and all("code" in e and "message" in e for e in body["errors"])
    return body


# -- success ----------------------------------------------------------------------------------


def test_json_array_is_stored_and_visible_at_once(live: LiveServer, client: httpx.Client) -> None:
    before = live.count("DeviceProcessEvents")
    rows = [ev(), ev(FileName="powershell.exe", ProcessCreationTime="2024-05-01T10:00:00+02:00")]
    r = client.post("/api/ingest/DeviceProcessEvents", content=orjson.dumps(rows))
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2 and r.json()["expired"] == 0
    # Acknowledged means readable: no sleep before looking.
    assert live.count("DeviceProcessEvents") == before + 2
    got = live.rows('SELECT ProcessCreationTime FROM "DeviceProcessEvents" WHERE ReportId = ?',
                    [rows[1]["ReportId"]])
    assert str(got[0][0]) == "2024-05-01 08:00:00"


def test_gzip_ndjson(live: LiveServer, client: httpx.Client) -> None:
    rows = [ev() for _ in range(500)]
    r = client.post("/api/ingest/DeviceProcessEvents", content=gzip.compress(nd(rows)),
                    headers=NDJSON_GZ)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 500
    ids = [x["ReportId"] for x in rows]
    got = live.rows('SELECT count(DISTINCT ReportId) FROM "DeviceProcessEvents" '
                    "WHERE ReportId BETWEEN ? AND ?", [min(ids), max(ids)])
    assert got[0][0] == 500


def test_sql_looking_value_is_stored_verbatim(live: LiveServer, client: httpx.Client) -> None:
    evil = "x'); DROP TABLE t; --"
    row = ev(ProcessCommandLine=evil, FileName='a"b')
    r = client.post("/api/ingest/DeviceProcessEvents", content=nd([row]), headers=NDJSON)
    assert r.status_code == 200, r.text
    got = live.rows('SELECT ProcessCommandLine, FileName FROM "DeviceProcessEvents" '
                    "WHERE ReportId = ?", [row["ReportId"]])
    assert got == [(evil, 'a"b')]


def test_expired_rows_are_counted(live: LiveServer, client: httpx.Client) -> None:
    old = ev(Timestamp="2001-01-01T00:00:00Z")
    r = client.post("/api/ingest/DeviceProcessEvents", content=orjson.dumps([old, ev()]))
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1 and r.json()["expired"] == 1


def test_empty_batch(client: httpx.Client) -> None:
    r = client.post("/api/ingest/DeviceProcessEvents", content=b"[]")
    assert r.status_code == 200 and r.json()["accepted"] == 0


# -- bad input: one test per class --------------------------------------------------------------


def _bad(live: LiveServer, client: httpx.Client, table: str, status: int, **req: Any
         ) -> dict[str, Any]:
    before = live.count(table) if live.app.state.storage.catalog.table(table) else None
    r = client.post(f"/api/ingest/{table}", **req)
    body = assert_error_shape(r, status)
    if before is not None:
        assert live.count(table) == before, "a rejected batch must write nothing"
    return body


def test_unknown_table_404_names_close_tables(live: LiveServer, client: httpx.Client) -> None:
    body = _bad(live, client, "DeviceProcesEvents", 404, content=orjson.dumps([ev()]))
    assert "DeviceProcessEvents" in body["errors"][0]["hints"]
    assert "DeviceProcessEvents" in body["error"]


@pytest.mark.parametrize(
    ("bad", "code", "column", "expected"),
    [
        ({"ProcesId": 4}, "unknown_column", "ProcesId", None),
        ({"ProcessId": "4242"}, "wrong_type", "ProcessId", "long"),
        ({"ProcessId": 1.5}, "wrong_type", "ProcessId", "long"),
        ({"FileName": 7}, "wrong_type", "FileName", "string"),
        ({"Timestamp": "14/05/2024 10:00"}, "invalid_datetime", "Timestamp", "datetime"),
        ({"Timestamp": None}, "missing_required", "Timestamp", "datetime"),
        ({"DeviceId": ""}, "missing_required", "DeviceId", "string"),
    ],
)
@pytest.mark.parametrize("ndjson", [True, False])
def test_bad_rows_400(live: LiveServer, client: httpx.Client, bad: dict[str, Any], code: str,
                      column: str, expected: str | None, ndjson: bool) -> None:
    rows = [ev(), ev(), ev(**bad), ev()]
    req: dict[str, Any] = ({"content": gzip.compress(nd(rows)), "headers": NDJSON_GZ} if ndjson
                           else {"content": orjson.dumps(rows)})
    body = _bad(live, client, "DeviceProcessEvents", 400, **req)
    assert len(body["errors"]) == 1
    e = body["errors"][0]
    assert (e["code"], e["row"], e["column"]) == (code, 2, column)
    assert e["value"] == bad[column]
    if expected:
        assert e["expected"] == expected
    else:
        assert e["hints"][0] == "ProcessId"
    if ndjson:
        assert e["line"] == 3


def test_missing_key_entirely(live: LiveServer, client: httpx.Client) -> None:
    row = ev()
    del row["DeviceId"]
    body = _bad(live, client, "DeviceProcessEvents", 400, content=orjson.dumps([ev(), row]))
    assert body["errors"][0]["code"] == "missing_required"


def test_errors_are_capped_at_100_one_per_row(live: LiveServer, client: httpx.Client) -> None:
    rows = [ev(ProcessId="x", FileName=1) for _ in range(250)]
    body = _bad(live, client, "DeviceProcessEvents", 400, content=nd(rows), headers=NDJSON)
    assert len(body["errors"]) == 100
    assert [e["row"] for e in body["errors"]] == list(range(100))
    assert "250 of 250" in body["error"]


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'[{"Timestamp": "2024-05-01T00:00:00Z", ', {}),
        (b'{"a": 1}\n{"a": 2}\n', {}),  # NDJSON sent as application/json
        (b'{"DeviceId": "x"}\nnot json\n', NDJSON),
        (b"", {}),
        (b'"a string"', {}),
        (b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}),
        (gzip.compress(b"[" + b'{"a":1},' * 1000 + b"{}]")[:-30], {"Content-Encoding": "gzip"}),
    ],
)
def test_malformed_body_400(live: LiveServer, client: httpx.Client, content: bytes,
                            headers: dict[str, str]) -> None:
    body = _bad(live, client, "DeviceProcessEvents", 400, content=content, headers=headers)
    assert body["errors"][0]["code"] in ("malformed_json", "malformed_body")


def test_body_over_limit_413(live: LiveServer, client: httpx.Client) -> None:
    pad = "A" * 1000
    rows = [ev(ProcessCommandLine=pad) for _ in range(LIMIT // 1000 + 10)]
    _bad(live, client, "DeviceProcessEvents", 413, content=nd(rows), headers=NDJSON)
    # The same data gzip'd is small on the wire but over the limit once decompressed.
    _bad(live, client, "DeviceProcessEvents", 413, content=gzip.compress(nd(rows)),
         headers=NDJSON_GZ)


def test_gzip_bomb_413(live: LiveServer, client: httpx.Client) -> None:
    from tests.test_ingest_convert import gzip_bomb

    bomb = gzip_bomb(256, b" ")  # 256 MiB of spaces, ~250 KiB on the wire
    _bad(live, client, "DeviceProcessEvents", 413, content=bomb, headers=NDJSON_GZ)


def test_unsupported_encoding_415(live: LiveServer, client: httpx.Client) -> None:
    _bad(live, client, "DeviceProcessEvents", 415, content=b"[]",
         headers={"Content-Encoding": "br"})


# -- streaming export -------------------------------------------------------------------------


def rec(table: str, props: dict[str, Any]) -> dict[str, Any]:
    return {"time": "2021-04-14T18:50:42.1532345Z", "tenantId": "4a653e38",
            "operationName": "Publish", "category": f"AdvancedHunting-{table}",
            "properties": props}


def test_streaming_event_hub_and_blob(live: LiveServer, client: httpx.Client) -> None:
    p1 = ev(MachineGroup="Servers", AppGuardContainerId="", AdditionalFields=None,
            SomeColumn2031={"new": True})
    n1 = {"Timestamp": ev()["Timestamp"], "DeviceId": "4f5e", "RemotePort": 443,
          "RemoteIP": "10.0.0.1", "ActionType": "ConnectionSuccess", "ReportId": 9,
          "MachineGroup": None}
    r = client.post("/api/ingest/streaming",
                    content=orjson.dumps({"records": [rec("DeviceProcessEvents", p1),
                                                      rec("DeviceNetworkEvents", n1)]}))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 2
    assert body["tables"]["DeviceNetworkEvents"]["accepted"] == 1
    assert body["unknownColumns"] == {"DeviceProcessEvents": ["MachineGroup", "SomeColumn2031"],
                                      "DeviceNetworkEvents": ["MachineGroup"]}
    extra = live.rows('SELECT _extra, AppGuardContainerId FROM "DeviceProcessEvents" '
                      "WHERE ReportId = ?", [p1["ReportId"]])
    assert orjson.loads(extra[0][0]) == {"MachineGroup": "Servers", "SomeColumn2031": {"new": True}}
    assert extra[0][1] == ""
    # The Storage-account shape: one record per line, gzip'd.
    p2 = ev(MachineGroup="Laptops")
    r = client.post("/api/ingest/streaming", content=gzip.compress(nd([rec("DeviceProcessEvents", p2)])),
                    headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["accepted"] == 1


def test_streaming_bad_record_rejects_everything(live: LiveServer, client: httpx.Client) -> None:
    before = (live.count("DeviceProcessEvents"), live.count("DeviceNetworkEvents"))
    good = rec("DeviceNetworkEvents", {"Timestamp": "2024-05-01T00:00:00Z", "DeviceId": "d"})
    bad = rec("DeviceProcessEvents", ev(ProcessId="12"))
    r = client.post("/api/ingest/streaming", content=orjson.dumps({"records": [good, bad]}))
    body = assert_error_shape(r, 400)
    assert body["errors"][0]["row"] == 1 and body["errors"][0]["column"] == "ProcessId"
    assert (live.count("DeviceProcessEvents"), live.count("DeviceNetworkEvents")) == before


def test_streaming_unknown_table(live: LiveServer, client: httpx.Client) -> None:
    before = live.count("DeviceProcessEvents")
    recs = [rec("DeviceProcessEvents", ev()), rec("EmailEvents", {"Timestamp": "2024-05-01"})]
    r = client.post("/api/ingest/streaming", content=nd(recs))
    body = assert_error_shape(r, 404)
    assert body["errors"][0]["table"] == "EmailEvents"
    assert live.count("DeviceProcessEvents") == before
    r = client.post("/api/ingest/streaming?skipUnknownTables=true", content=nd(recs))
    assert r.status_code == 200, r.text
    assert r.json()["skippedTables"] == {"EmailEvents": 1} and r.json()["accepted"] == 1


# -- back-pressure ----------------------------------------------------------------------------


def test_backpressure_503_with_retry_after(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_unflushed_rows=50, flush_max_rows=10**9)
    with LiveServer(create_app(settings)) as srv, httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
    ) as c:
        r = c.post("/api/ingest/DeviceProcessEvents", content=nd([ev() for _ in range(40)]),
                   headers=NDJSON)
        assert r.status_code == 200, r.text
        r = c.post("/api/ingest/DeviceProcessEvents", content=nd([ev() for _ in range(40)]),
                   headers=NDJSON)
        assert_error_shape(r, 503)
        assert int(r.headers["Retry-After"]) >= 1
        assert srv.count("DeviceProcessEvents") == 40


def test_streaming_backpressure_stores_no_table(tmp_path: Path) -> None:
    """A streaming batch spanning tables is refused whole: a client retrying the 503 must not
    store the tables that fitted a second time."""
    settings = make_settings(tmp_path, max_unflushed_rows=50, flush_max_rows=10**9)
    with LiveServer(create_app(settings)) as srv, httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
    ) as c:
        r = c.post("/api/ingest/DeviceProcessEvents", content=nd([ev() for _ in range(40)]),
                   headers=NDJSON)
        assert r.status_code == 200, r.text
        net = {"Timestamp": ev()["Timestamp"], "DeviceId": "d", "ActionType": "ConnectionSuccess"}
        recs = [rec("DeviceNetworkEvents", net) for _ in range(5)]  # these 5 alone would fit
        recs += [rec("DeviceProcessEvents", ev()) for _ in range(40)]
        r = c.post("/api/ingest/streaming", content=orjson.dumps({"records": recs}))
        assert_error_shape(r, 503)
        assert int(r.headers["Retry-After"]) >= 1
        assert (srv.count("DeviceNetworkEvents"), srv.count("DeviceProcessEvents")) == (0, 40)
