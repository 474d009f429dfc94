"""End-to-end: the hunting API over HTTP against the real server (uvicorn, storage, compiler).

One server for the module, with a small row cap (50) so truncation is cheap to show; the fixture
events go in through the real ingest API.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from schema import default_catalog
from tests.test_api_support import (
    SEED_EXPECTED_IDS,
    SEED_QUERY,
    LiveServer,
    assert_error_shape,
    seeded_server,
    utcnow,
)

pytestmark = pytest.mark.slow

CAP = 50
NETWORK_ROWS = 120  # more than the cap


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with seeded_server(tmp_path_factory.mktemp("hunting"), NETWORK_ROWS, max_rows=CAP) as s:
        yield s


def _is_kusto_datetime(v: object) -> bool:
    if not isinstance(v, str) or not v.endswith("Z"):
        return False
    # 7 fractional digits, as Defender sends them.
    date, _, frac = v[:-1].partition(".")
    dt.datetime.strptime(date, "%Y-%m-%dT%H:%M:%S")
    return len(frac) == 7 and frac.isdigit()


PROCESS_COLUMNS = [(c.name, c.type.name) for c in default_catalog().tables["DeviceProcessEvents"].columns]


def test_native_seed_query(srv: LiveServer) -> None:
    with srv.client() as c:
        r = c.post("/api/query", json={"query": SEED_QUERY})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(col["name"], col["type"]) for col in body["columns"]] == PROCESS_COLUMNS
    names = [col["name"] for col in body["columns"]]
    rows = [dict(zip(names, row, strict=True)) for row in body["rows"]]
    assert [row["ReportId"] for row in rows] == SEED_EXPECTED_IDS
    assert body["truncated"] is False
    assert all(_is_kusto_datetime(row["Timestamp"]) for row in rows)
    assert isinstance(rows[0]["ProcessId"], int)
    stamps = [row["Timestamp"] for row in rows]
    assert stamps == sorted(stamps)
    stats = body["stats"]
    assert set(stats) == {"elapsedMs", "compileMs", "rowsReturned", "partitionsScanned"}
    assert stats["rowsReturned"] == 3
    assert stats["elapsedMs"] >= stats["compileMs"] >= 0


def test_native_timespan_and_max_rows(srv: LiveServer) -> None:
    with srv.client() as c:
        r = c.post("/api/query", json={"query": SEED_QUERY, "timespan": "PT1H"})
        assert r.status_code == 200, r.text
        names = [col["name"] for col in r.json()["columns"]]
        ids = [dict(zip(names, row, strict=True))["ReportId"] for row in r.json()["rows"]]
        assert ids == [2, 3]  # the 90-minute-old event is outside the last hour
        r = c.post("/api/query", json={"query": SEED_QUERY, "maxRows": 2})
        assert r.status_code == 200
        assert len(r.json()["rows"]) == 2 and r.json()["truncated"] is True


@pytest.mark.parametrize("path", ["/api/advancedqueries/run", "/api/advancedhunting/run"])
def test_defender_seed_query(srv: LiveServer, path: str) -> None:
    with srv.client() as c:
        r = c.post(path, json={"Query": SEED_QUERY})
    assert r.status_code == 200, r.text
    body = r.json()
    schema = {s["Name"]: s["Type"] for s in body["Schema"]}
    assert list(schema) == [n for n, _ in PROCESS_COLUMNS]
    assert schema["Timestamp"] == "DateTime"
    assert schema["ProcessCommandLine"] == "String"
    assert schema["ProcessId"] == "Int64"
    assert [row["ReportId"] for row in body["Results"]] == SEED_EXPECTED_IDS
    assert all(_is_kusto_datetime(row["Timestamp"]) for row in body["Results"])
    assert "/volume" in body["Results"][1]["ProcessCommandLine"].lower()


def test_defender_power_bi_get_form(srv: LiveServer) -> None:
    with srv.client() as c:
        r = c.get("/api/advancedqueries", params={"key": SEED_QUERY})
    assert r.status_code == 200, r.text
    assert [row["ReportId"] for row in r.json()["Results"]] == SEED_EXPECTED_IDS


@pytest.mark.parametrize(
    "path", ["/security/runHuntingQuery", "/v1.0/security/runHuntingQuery", "/beta/security/runHuntingQuery"]
)
@pytest.mark.parametrize("casing", ["Pascal", "camel"])
def test_graph_seed_query(srv: LiveServer, path: str, casing: str) -> None:
    key = "Query" if casing == "Pascal" else "query"
    with srv.client() as c:
        r = c.post(path, json={key: SEED_QUERY})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["@odata.context"].endswith("#microsoft.graph.security.huntingQueryResults")
    assert [s["name"] for s in body["schema"]] == [n for n, _ in PROCESS_COLUMNS]
    assert {s["name"]: s["type"] for s in body["schema"]}["Timestamp"] == "DateTime"
    assert [row["ReportId"] for row in body["results"]] == SEED_EXPECTED_IDS


@pytest.mark.parametrize(
    ("timespan", "expected"),
    [
        ("PT1H", [2, 3]),
        ("PT45M", [2, 3]),
        ("PT15M", [3]),
        # interval forms relative to now
        ("{start}/{end}", [1, 2]),  # [now-2h, now-25min)
        ("PT35M/{end}", [2]),  # 35 minutes up to now-25min
        ("{start}/PT95M", [1, 2]),  # now-2h + 95 min = now-25min
    ],
)
def test_graph_timespan_restricts(srv: LiveServer, timespan: str, expected: list[int]) -> None:
    now = utcnow()
    start = (now - dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (now - dt.timedelta(minutes=25)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ts = timespan.format(start=start, end=end)
    with srv.client() as c:
        r = c.post("/v1.0/security/runHuntingQuery", json={"Query": SEED_QUERY, "Timespan": ts})
    assert r.status_code == 200, r.text
    assert [row["ReportId"] for row in r.json()["results"]] == expected


@pytest.mark.parametrize("bad", ["yesterday", "P", "PT-1H", "2024-13-01T00:00:00Z", "P1D/P2D", "12345"])
def test_graph_bad_timespan_is_400(srv: LiveServer, bad: str) -> None:
    with srv.client() as c:
        r = c.post("/security/runHuntingQuery", json={"Query": SEED_QUERY, "Timespan": bad})
    assert_error_shape(r, 400, "invalid_timespan")


def test_values_dynamic_and_timespan(srv: LiveServer) -> None:
    q = (
        "DeviceProcessEvents | where ReportId == 1 "
        "| project d = parse_json(AdditionalFields), "
        "span = datetime(2024-01-02 02:03:04.5) - datetime(2024-01-01 00:00:00), "
        "short = 90s, neg = 0s - 1h, ok = true, r = 1.5"
    )
    with srv.client() as c:
        r = c.post("/api/query", json={"query": q})
        assert r.status_code == 200, r.text
        body = r.json()
        types = {col["name"]: col["type"] for col in body["columns"]}
        assert types == {"d": "dynamic", "span": "timespan", "short": "timespan", "neg": "timespan",
                         "ok": "bool", "r": "real"}
        row = dict(zip(types, body["rows"][0], strict=True))
        assert row["d"] == {"Tags": ["usb"], "Score": 7}  # JSON, not a string holding JSON
        assert row["span"] == "1.02:03:04.5000000"
        assert row["short"] == "00:01:30"
        assert row["neg"] == "-01:00:00"
        assert row["ok"] is True and row["r"] == 1.5
        g = c.post("/security/runHuntingQuery", json={"Query": q}).json()
    assert g["results"][0]["d"] == {"Tags": ["usb"], "Score": 7}
    assert {s["name"]: s["type"] for s in g["schema"]}["span"] == "TimeSpan"


def test_row_cap_truncates_with_warning(srv: LiveServer) -> None:
    with srv.client() as c:
        r = c.post("/api/query", json={"query": "DeviceNetworkEvents"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["truncated"] is True
        assert len(body["rows"]) == CAP and body["stats"]["rowsReturned"] == CAP
        assert any("truncated" in w for w in body["warnings"])
        # maxRows above the server cap does not lift it
        r = c.post("/api/query", json={"query": "DeviceNetworkEvents", "maxRows": 10_000})
        assert len(r.json()["rows"]) == CAP
        d = c.post("/api/advancedhunting/run", json={"Query": "DeviceNetworkEvents"}).json()
        assert len(d["Results"]) == CAP and d["Stats"]["truncated"] is True
        # Graph's shape has no place for it: the cut is said in extra properties, not silent
        g = c.post("/security/runHuntingQuery", json={"Query": "DeviceNetworkEvents"}).json()
        assert len(g["results"]) == CAP and g["truncated"] is True
        assert any("truncated" in w for w in g["warnings"])
        g = c.post("/security/runHuntingQuery", json={"Query": "DeviceNetworkEvents | take 7"}).json()
        assert len(g["results"]) == 7 and "truncated" not in g  # Graph's own shape when whole
        # under the cap: not truncated
        r = c.post("/api/query", json={"query": "DeviceNetworkEvents | take 7"})
        assert len(r.json()["rows"]) == 7 and r.json()["truncated"] is False


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_export_returns_more_rows_than_the_cap(srv: LiveServer, fmt: str) -> None:
    q = "DeviceNetworkEvents | project ReportId, Timestamp, RemoteIP | sort by ReportId asc"
    with srv.client() as c, c.stream("POST", f"/api/query/export?format={fmt}", json={"query": q}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers.get("transfer-encoding") == "chunked"  # streamed, not buffered
        data = r.read()
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(data.decode())))
        ids = [int(x["ReportId"]) for x in rows]
        assert rows[0]["Timestamp"].endswith("Z")
    elif fmt == "ndjson":
        records = [orjson.loads(line) for line in data.splitlines()]
        ids = [x["ReportId"] for x in records]
        assert records[0]["Timestamp"].endswith("Z")
    else:
        table = pq.read_table(io.BytesIO(data))
        assert table.column_names == ["ReportId", "Timestamp", "RemoteIP"]
        assert str(table.schema.field("Timestamp").type) == "timestamp[us]"
        ids = table.column("ReportId").to_pylist()
    assert ids == list(range(NETWORK_ROWS))


def test_export_errors_are_json(srv: LiveServer) -> None:
    with srv.client() as c:
        assert_error_shape(c.post("/api/query/export?format=csv", json={"query": "Nope | take 1"}), 400,
                           "unknown_table")
        assert_error_shape(c.post("/api/query/export?format=xml", json={"query": SEED_QUERY}), 400)


def test_compile_error_carries_diagnostics(srv: LiveServer) -> None:
    with srv.client() as c:
        r = c.post("/api/query", json={"query": "DeviceProcessEvnts\n| take 1"})
        body = assert_error_shape(r, 400, "unknown_table")
        e = body["errors"][0]
        assert e["line"] == 1 and e["column"] == 1
        assert any("DeviceProcessEvents" in h for h in e["hints"])
        r = c.post("/api/query", json={"query": "DeviceProcessEvents\n| where NoSuchColumn == 1"})
        e = assert_error_shape(r, 400, "unknown_column")["errors"][0]
        assert e["line"] == 2 and e["column"] > 1
        # the Defender and Graph forms carry the same diagnostics
        for path, key in (("/api/advancedqueries/run", "Query"), ("/security/runHuntingQuery", "query")):
            r = c.post(path, json={key: "DeviceProcessEvents | wher x"})
            assert_error_shape(r, 400, "syntax")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/query", {}),
        ("/api/query", {"query": 5}),
        ("/api/query", {"query": ""}),
        ("/api/query", {"query": SEED_QUERY, "maxRows": -1}),
        ("/api/query", {"query": SEED_QUERY, "unknown": 1}),
        ("/api/advancedqueries/run", {"Querry": SEED_QUERY}),
        ("/security/runHuntingQuery", {"Query": None}),
        ("/api/query", "not an object"),
    ],
)
def test_bad_bodies_are_400(srv: LiveServer, path: str, body: object) -> None:
    with srv.client() as c:
        assert_error_shape(c.post(path, json=body), 400)


def test_malformed_json_is_400(srv: LiveServer) -> None:
    with srv.client() as c:
        r = c.post("/api/query", content=b'{"query": ', headers={"content-type": "application/json"})
    assert_error_shape(r, 400)


def test_schema_endpoints(srv: LiveServer) -> None:
    catalog = default_catalog()
    with srv.client() as c:
        body = c.get("/api/schema").json()
        assert [t["name"] for t in body["tables"]] == list(catalog.tables)
        t = c.get("/api/schema/DeviceProcessEvents").json()
        assert [(col["name"], col["type"]) for col in t["columns"]] == PROCESS_COLUMNS
        assert all(col["description"] for col in t["columns"])
        assert t["columns"][0]["dotnetType"] == "DateTime"
        r = c.get("/api/schema/DeviceProcesEvents")
        e = assert_error_shape(r, 404, "unknown_table")["errors"][0]
        assert "DeviceProcessEvents" in e["hints"]


def test_metrics(srv: LiveServer) -> None:
    def on_disk() -> int:
        return sum(f.stat().st_size for f in (srv.settings.data_dir / "DeviceProcessEvents").rglob("*.parquet"))

    srv.app.state.storage.flush()  # storage size counts Parquet on disk
    before = on_disk()
    assert before > 0
    with srv.client() as c:
        c.post("/api/query", json={"query": SEED_QUERY})
        c.post("/api/query", json={"query": "Nope"})
        text = c.get("/metrics").text
    sizes = {before, on_disk()}  # background compaction may rewrite the files meanwhile
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values['quarry_queries_total{outcome="ok"}'] >= 1
    assert values['quarry_queries_total{outcome="compile_error"}'] >= 1
    assert values["quarry_query_duration_seconds_count"] >= 2
    assert values["quarry_query_rows_returned_total"] >= 3
    assert values['quarry_ingest_events_total{table="DeviceProcessEvents"}'] == 6
    assert values['quarry_ingest_bytes_total{table="DeviceProcessEvents"}'] > 0
    assert values['quarry_storage_bytes{table="DeviceProcessEvents"}'] in sizes
    assert values['quarry_storage_files{table="DeviceProcessEvents"}'] >= 1


MY_PATHS = {
    "/api/query": "post",
    "/api/query/export": "post",
    "/api/advancedqueries/run": "post",
    "/api/advancedqueries": "get",
    "/api/advancedhunting/run": "post",
    "/security/runHuntingQuery": "post",
    "/v1.0/security/runHuntingQuery": "post",
    "/beta/security/runHuntingQuery": "post",
    "/api/schema": "get",
    "/api/schema/{table}": "get",
    "/v1/rest/query": "post",
    "/v2/rest/query": "post",
    "/v1/rest/mgmt": "post",
    "/metrics": "get",
}


def test_openapi_has_an_example_per_endpoint(srv: LiveServer) -> None:
    # The OpenAPI document is served behind a query key (only /healthz is open: issue 2).
    with srv.client() as c:
        spec = c.get("/api/openapi.json").json()
    for path, method in MY_PATHS.items():
        op = spec["paths"][path][method]
        text = orjson.dumps(op).decode()
        assert '"example' in text, f"{method.upper()} {path} has no example"
        if method == "post":
            body = orjson.dumps(op.get("requestBody", {})).decode()
            refs = [s for s in spec.get("components", {}).get("schemas", {}).values() if "examples" in s]
            assert '"example' in body or "$ref" in body and refs, f"{path}: request body has no example"


def test_defender_example_script(srv: LiveServer) -> None:
    """docs/examples/defender_hunting.py, written against the Defender API docs alone, runs the
    seed query against Quarry and prints the result."""
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "docs" / "examples" / "defender_hunting.py"
    env = {**os.environ, "API_URL": srv.url, "API_TOKEN": srv.keys["query"]}
    p = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("Schema: Timestamp (DateTime), DeviceId (String)")
    assert lines[1] == "3 result(s)"
    assert [orjson.loads(line)["ReportId"] for line in lines[2:]] == SEED_EXPECTED_IDS
    # a bad token: the script reports the HTTP error and fails
    env["API_TOKEN"] = "qk_wrong"
    p = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "HTTP 401 Unauthorized:" in p.stderr
    # a query Quarry rejects: the script reads Microsoft's error body (error.code, message)
    env["API_TOKEN"] = srv.keys["query"]
    p = subprocess.run([sys.executable, str(script), "DeviceProcessEvents | where Nope == 1"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "HTTP 400 BadRequest:" in p.stderr and "Nope" in p.stderr


# -- Microsoft's error shapes ------------------------------------------------------------------
# Clients written from Microsoft's documentation: Defender's "common errors" page
# ({"error": {"code", "message", "target"}}, target = the request id) and Graph's errors page
# ({"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}).


@pytest.mark.parametrize("path", ["/api/advancedqueries/run", "/api/advancedhunting/run"])
def test_defender_errors_have_microsofts_shape(srv: LiveServer, path: str) -> None:
    with srv.client() as c:
        r = c.post(path, json={"Query": "DeviceProcessEvents\n| where Nope == 1"})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == "BadRequest" and "Nope" in err["message"]
        assert err["target"] == r.headers["request-id"]
        # Quarry's positioned diagnostic is kept inside
        diag = err["details"][0]
        assert (diag["code"], diag["line"], diag["column"]) == ("unknown_column", 2, 9)
        r = c.post(path, json={"Querry": "DeviceInfo"})
        assert (r.status_code, r.json()["error"]["code"]) == (400, "InvalidRequestBody")
    with srv.client(scope=None) as anonymous:
        r = anonymous.post(path, json={"Query": "DeviceInfo"})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "Unauthorized")
    with srv.client(scope="ingest") as wrong:
        r = wrong.post(path, json={"Query": "DeviceInfo"})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "Forbidden")


@pytest.mark.parametrize(
    "path", ["/security/runHuntingQuery", "/v1.0/security/runHuntingQuery", "/beta/security/runHuntingQuery"]
)
def test_graph_errors_have_microsofts_shape(srv: LiveServer, path: str) -> None:
    with srv.client() as c:
        r = c.post(path, json={"query": "DeviceProcesEvents | take 1"},
                   headers={"client-request-id": "c0ffee00-0000-4000-8000-000000000001"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "badRequest" and "DeviceProcesEvents" in err["message"]
    inner = err["innerError"]
    assert inner["request-id"] == r.headers["request-id"]
    assert inner["client-request-id"] == "c0ffee00-0000-4000-8000-000000000001"
    assert dt.datetime.fromisoformat(inner["date"])
    assert err["details"][0]["code"] == "unknown_table"
    assert "DeviceProcessEvents" in err["details"][0]["hints"][0]
    with srv.client(scope=None) as anonymous:
        r = anonymous.post(path, json={"query": "DeviceInfo"})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthenticated")
