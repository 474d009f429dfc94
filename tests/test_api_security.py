"""Safety of the hunting API over HTTP against the real server.

* KQL cannot reach DuckDB's file and extension functions (read_csv, read_text, COPY, ATTACH,
  INSTALL) or files outside the data directory, also through crafted string literals and
  identifiers: every such query is either refused with a 400 carrying diagnostics or runs with
  the crafted text as a plain value, and no file appears.
* Every route answers 401 without a key or with a bad one, and 403 with a key of the wrong scope.
* Every error is in the one JSON error shape (Kusto routes: Kusto's shape), never a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_api_support import (
    SEED_QUERY,
    LiveServer,
    assert_error_shape,
    seeded_server,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with seeded_server(tmp_path_factory.mktemp("security")) as s:
        yield s


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the data directory with a secret file the queries try to read."""
    d = tmp_path_factory.mktemp("outside")
    (d / "secret.csv").write_text("secret\nhunter2\n")
    return d


# Crafted payloads a string literal or identifier could carry; {d} is the outside directory.
PAYLOADS = [
    "'); COPY (SELECT 1) TO '{d}/copied.csv'; --",
    "\\'); COPY (SELECT 1) TO '{d}/copied2.csv'; --",
    "x'; ATTACH '{d}/attached.db' AS evil; --",
    "'; INSTALL httpfs; LOAD httpfs; --",
    "' || (SELECT * FROM read_csv('{d}/secret.csv')) || '",
    "' || read_text('{d}/secret.csv') || '",
    "\"); SELECT * FROM read_text('/etc/passwd'); --",
    "$$ || read_text('/etc/passwd') || $$",
    "\\\\'; COPY (SELECT 42) TO '{d}/copied3.parquet'; --",
]


def _string_literals(p: str) -> list[str]:
    """KQL spellings of the payload as a string literal (double, single, verbatim)."""
    dq = p.replace("\\", "\\\\").replace('"', '\\"')
    sq = p.replace("\\", "\\\\").replace("'", "\\'")
    forms = [f'"{dq}"', f"'{sq}'"]
    if '"' not in p:
        forms.append(f'@"{p}"')
    return forms


def _no_files_made(d: Path) -> None:
    assert sorted(p.name for p in d.iterdir()) == ["secret.csv"]


def _run(srv: LiveServer, q: str) -> dict[str, object]:
    with srv.client() as c:
        r = c.post("/api/query", json={"query": q})
    assert r.status_code in (200, 400), (q, r.status_code, r.text)
    body: dict[str, object] = r.json()
    if r.status_code == 400:
        assert_error_shape(r, 400)
    return body


@pytest.mark.parametrize("payload", PAYLOADS)
def test_crafted_string_literals_stay_values(srv: LiveServer, outside: Path, payload: str) -> None:
    p = payload.format(d=outside)
    for lit in _string_literals(p):
        # As a projected value: comes back exactly, character for character.
        body = _run(srv, f"DeviceProcessEvents | take 1 | project v = {lit}")
        assert body.get("rows") == [[p]], (lit, body)
        # As a filter value: matches nothing, runs fine.
        body = _run(srv, f"DeviceProcessEvents | where ProcessCommandLine == {lit} | count")
        assert body.get("rows") == [[0]], (lit, body)
        body = _run(srv, f"DeviceProcessEvents | where ProcessCommandLine contains {lit} | project ReportId")
        assert body.get("rows") == [], (lit, body)
    _no_files_made(outside)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_crafted_identifiers_stay_names(srv: LiveServer, outside: Path, payload: str) -> None:
    p = payload.format(d=outside)
    if "]" in p:
        pytest.skip("a bracketed identifier cannot hold ]")
    # The payload goes into the bracketed identifier as a KQL string literal, escaped as KQL
    # escapes it (backslash and the quote), so the name the compiler sees is exactly the payload.
    for quote in ('"', "'"):
        ident = "[" + quote + p.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote + "]"
        body = _run(srv, f"DeviceProcessEvents | take 1 | project {ident} = 1")
        assert body.get("columns") == [{"name": p, "type": "long"}], body
        # an unknown column or table with that name: a diagnostic, not execution
        body = _run(srv, f"DeviceProcessEvents | where {ident} == 1")
        assert "errors" in body
        body = _run(srv, f"{ident} | take 1")
        assert "errors" in body
    _no_files_made(outside)


FILE_FUNCTIONS = [
    "print x = read_csv('{d}/secret.csv')",
    "print x = read_text('{d}/secret.csv')",
    "print x = read_parquet('{d}/secret.csv')",
    "print x = read_blob('/etc/passwd')",
    "print x = glob('/etc/*')",
    "read_csv('{d}/secret.csv')",
    "DeviceProcessEvents | extend x = read_text('/etc/passwd')",
    "DeviceProcessEvents | extend x = getenv('HOME')",
    "externaldata (x:string) [@'file://{d}/secret.csv'] with (format='csv')",
    "externaldata (x:string) [@'https://example.com/x.csv']",
    "COPY DeviceProcessEvents TO '{d}/copy.csv'",
    "ATTACH '{d}/x.db'",
    "INSTALL httpfs",
    "DeviceProcessEvents | take 1; COPY (SELECT 1) TO '{d}/x.csv'",
    "evaluate python(typeof(*), 'result = df')",
    "DeviceProcessEvents | invoke read_csv('{d}/secret.csv')",
    "print x = current_setting('allowed_directories')",
    "print x = query('SELECT 1')",
]


@pytest.mark.parametrize("q", FILE_FUNCTIONS)
def test_file_and_extension_functions_are_unreachable(srv: LiveServer, outside: Path, q: str) -> None:
    q = q.format(d=outside)
    with srv.client() as c:
        r = c.post("/api/query", json={"query": q})
    body = assert_error_shape(r, 400)
    assert "hunter2" not in r.text and "root:" not in r.text
    assert body["errors"][0]["code"] in {
        "syntax", "unknown_function", "unsupported", "unknown_table", "type_mismatch", "compile_error",
        "unknown_column",
    }, body
    _no_files_made(outside)


def test_storage_connection_is_locked_down(srv: LiveServer, outside: Path) -> None:
    """Even SQL that a compiler bug let through could not read outside the data directory,
    load extensions or change the configuration: the connection itself refuses."""
    import duckdb

    con = srv.app.state.storage.connect()
    try:
        for sql in (
            f"SELECT * FROM read_csv('{outside}/secret.csv')",
            f"SELECT * FROM read_text('{outside}/secret.csv')",
            "SELECT * FROM read_text('/etc/passwd')",
            f"COPY (SELECT 1) TO '{outside}/x.csv'",
            f"ATTACH '{outside}/x.db' AS x",
            "INSTALL httpfs",
            "LOAD httpfs",
            "SET enable_external_access = true",
            "SET allowed_directories = ['/']",
            "SET lock_configuration = false",
        ):
            with pytest.raises(duckdb.Error):
                con.execute(sql).fetchall()
    finally:
        con.close()
    _no_files_made(outside)


# -- authentication and scopes -------------------------------------------------------------

ROUTES: list[tuple[str, str, dict[str, object] | None]] = [
    ("POST", "/api/query", {"query": SEED_QUERY}),
    ("POST", "/api/query/export?format=csv", {"query": SEED_QUERY}),
    ("POST", "/api/advancedqueries/run", {"Query": SEED_QUERY}),
    ("GET", "/api/advancedqueries?key=DeviceInfo", None),
    ("POST", "/api/advancedhunting/run", {"Query": SEED_QUERY}),
    ("POST", "/security/runHuntingQuery", {"Query": SEED_QUERY}),
    ("POST", "/v1.0/security/runHuntingQuery", {"Query": SEED_QUERY}),
    ("GET", "/api/schema", None),
    ("GET", "/api/schema/DeviceInfo", None),
    ("GET", "/metrics", None),
]
KUSTO_ROUTES: list[tuple[str, str, dict[str, object] | None]] = [
    ("POST", "/v2/rest/query", {"db": "Quarry", "csl": SEED_QUERY}),
    ("GET", "/v2/rest/query?db=Quarry&csl=DeviceInfo", None),
    ("POST", "/v1/rest/query", {"db": "Quarry", "csl": SEED_QUERY}),
    ("GET", "/v1/rest/query?db=Quarry&csl=DeviceInfo", None),
    ("POST", "/v1/rest/mgmt", {"db": "Quarry", "csl": ".show tables"}),
]


def _call(srv: LiveServer, scope: str | None, method: str, path: str, body: dict[str, object] | None,
          token: str | None = None):  # type: ignore[no-untyped-def]
    with srv.client(scope) as c:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return c.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_route_scopes(srv: LiveServer, method: str, path: str, body: dict[str, object] | None) -> None:
    assert_error_shape(_call(srv, None, method, path, body), 401, "unauthorized")
    r = _call(srv, None, method, path, body, token="qk_not-a-real-key")
    assert_error_shape(r, 401, "unauthorized")
    assert r.headers.get("www-authenticate") == "Bearer"
    assert_error_shape(_call(srv, "ingest", method, path, body), 403, "forbidden")
    assert _call(srv, "query", method, path, body).status_code == 200
    assert _call(srv, "admin", method, path, body).status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), KUSTO_ROUTES)
def test_kusto_route_scopes(srv: LiveServer, method: str, path: str, body: dict[str, object] | None) -> None:
    for scope, token, status in ((None, None, 401), (None, "qk_bad", 401), ("ingest", None, 403)):
        r = _call(srv, scope, method, path, body, token=token)
        assert r.status_code == status
        err = r.json()["error"]
        assert isinstance(err["code"], str) and isinstance(err["message"], str) and err["@message"]
    assert _call(srv, "query", method, path, body).status_code == 200


def test_no_500_for_odd_input(srv: LiveServer) -> None:
    odd = [
        "", " ", "|", "||||", "DeviceProcessEvents |", "let", "let x = ;", "print", "print 1/0",
        "DeviceProcessEvents | take -1", "DeviceProcessEvents | take 99999999999999999999999",
        "DeviceProcessEvents | where Timestamp > ago(-5000000d)",
        "DeviceProcessEvents | extend x = toint('abc') | project x",
        "DeviceProcessEvents | where ProcessCommandLine matches regex '('",
        "print datetime(2024-99-99)", "print x = 1e400", "\x00", "\ud7ff" * 3,
        "DeviceProcessEvents | summarize by ", "range i from 1 to 0 step 0",
        "print parse_json('{not json')", "print todynamic('[1,2')[5]",
        "DeviceProcessEvents" + " | where ReportId == 1" * 200,
        "(" * 500 + "1" + ")" * 500,
    ]
    with srv.client() as c:
        for q in odd:
            for path, body in (("/api/query", {"query": q}), ("/api/advancedhunting/run", {"Query": q})):
                r = c.post(path, json=body)
                assert r.status_code in (200, 400), (q[:60], r.status_code, r.text[:300])
                if r.status_code == 400:
                    assert_error_shape(r, 400)
            r = c.post("/v2/rest/query", json={"db": "Quarry", "csl": q})
            assert r.status_code in (200, 400), (q[:60], r.status_code, r.text[:300])


def test_no_500_for_odd_timespans_and_options(srv: LiveServer) -> None:
    """Bounds past the datetime range, and Kusto options past what a timedelta holds."""
    with srv.client() as c:
        for ts in ("P999999D", "P99999999D", "9999-12-31T00:00:00Z/P2D", "P1D/0001-01-01T12:00:00Z", "\x00", "P1D/"):
            r = c.post("/security/runHuntingQuery", json={"Query": SEED_QUERY, "Timespan": ts})
            assert_error_shape(r, 400, "invalid_timespan")
            r = c.post("/api/query/export", json={"query": SEED_QUERY, "timespan": ts})
            assert_error_shape(r, 400, "invalid_timespan")
        r = c.post("/v2/rest/query", json={"db": "Quarry", "csl": SEED_QUERY, "properties": {
            "Options": {"servertimeout": "99999999999.00:00:00"}}})
        assert r.status_code == 400 and r.json()["error"]["code"] == "General_BadRequest"
