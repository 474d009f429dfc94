"""Query parameters end to end: `declare query_parameters` with values from the real
azure-kusto-data client (ClientRequestProperties.set_parameter -> properties.Parameters), the
Kusto REST body as the docs show it, and the native API's JSON `parameters`.

Rows come from the seed fixture (tests/test_api_support.py PROCESS_FIXTURE): ReportId 1..6 at
90, 30, 10, 180, 20 and 5 minutes ago; ids 1-3 have "/Volume" in the command line.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import orjson
import pytest
from azure.kusto.data import ClientRequestProperties, KustoClient
from azure.kusto.data.exceptions import KustoApiError

from tests.test_api_support import LiveServer, assert_error_shape, kusto_client, seeded_server

pytestmark = pytest.mark.slow

BY_PATTERN = """declare query_parameters(pattern:string, window:timespan = 2h);
DeviceProcessEvents
| where Timestamp > ago(window) and ProcessCommandLine contains pattern
| sort by Timestamp asc
| project ReportId"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with seeded_server(tmp_path_factory.mktemp("kusto_params")) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv: LiveServer) -> Iterator[KustoClient]:
    with kusto_client(srv) as c:
        yield c


def _ids(client: KustoClient, query: str, **params: object) -> list[int]:
    props = ClientRequestProperties()
    for name, value in params.items():
        props.set_parameter(name, value)  # type: ignore[arg-type]  # the client JSON-encodes any value
    table = client.execute("Quarry", query, props).primary_results[0]
    return [int(r["ReportId"]) for r in table]


def test_client_string_and_default_timespan(client: KustoClient) -> None:
    assert _ids(client, BY_PATTERN, pattern="/Volume") == [1, 2, 3]
    assert _ids(client, BY_PATTERN, pattern="/tmp") == [5]
    # the default (2h) overridden: 4 (180 minutes ago) comes in
    assert _ids(client, BY_PATTERN, pattern="/Volume", window="4h") == [4, 1, 2, 3]
    assert _ids(client, BY_PATTERN, pattern="/Volume", window="time(0.00:15:00)") == [3]


def test_client_python_values(client: KustoClient) -> None:
    q = """declare query_parameters(since:datetime, ids:dynamic, minId:long, span:timespan);
DeviceProcessEvents | where Timestamp > since and ReportId in (ids) and ReportId >= minId
    and Timestamp > ago(span) | sort by ReportId asc | project ReportId"""
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=60)  # sent as str(datetime)
    # ids a list and minId an int: the client puts them into the JSON as they are
    got = _ids(client, q, since=since, ids=[1, 2, 3, 5, 6], minId=2, span=dt.timedelta(days=1))
    assert got == [2, 3, 5, 6]
    got = _ids(client, q, since="datetime(2000-01-01)", ids="dynamic([4, 6])", minId="long(0)", span="1d")
    assert got == [4, 6]


@pytest.mark.parametrize("attempt", [
    '" or 1==1 //',
    "' or 1==1 | take 100 //",
    "x'; DROP TABLE DeviceProcessEvents; --",
    "/Volume\" | union DeviceNetworkEvents | project ReportId //",
])
def test_client_injection_stays_a_value(client: KustoClient, attempt: str) -> None:
    assert _ids(client, BY_PATTERN, pattern=attempt) == []
    props = ClientRequestProperties()
    props.set_parameter("p", attempt)
    row = list(client.execute("Quarry", "declare query_parameters(p:string); print v = p", props)
               .primary_results[0])[0]
    assert row["v"] == attempt


def test_client_bad_and_missing_values_are_errors(client: KustoClient) -> None:
    props = ClientRequestProperties()
    props.set_parameter("pattern", "/Volume")
    props.set_parameter("window", "a while")
    with pytest.raises(KustoApiError) as e:
        client.execute("Quarry", BY_PATTERN, props)
    assert "'window'" in str(e.value) and "timespan" in str(e.value)
    with pytest.raises(KustoApiError) as m:
        client.execute("Quarry", BY_PATTERN)
    assert "'pattern'" in str(m.value) and "no value" in str(m.value)


def test_client_undeclared_parameter_is_ignored(client: KustoClient) -> None:
    assert _ids(client, BY_PATTERN, pattern="/tmp", unused="1 or 1==1") == [5]


def _post(srv: LiveServer, path: str, body: object) -> tuple[int, object]:
    with srv.client() as c:
        r = c.post(path, content=orjson.dumps(body), headers={"content-type": "application/json"})
    return r.status_code, r.json()


def test_rest_body_as_in_the_docs_v1_and_v2(srv: LiveServer) -> None:
    # properties as an object with Parameters, every value a string (the docs' example form)
    body = {"db": "Quarry", "csl": BY_PATTERN,
            "properties": {"Options": {}, "Parameters": {"pattern": "/VOLUMES", "window": "00:45:00"}}}
    status, frames = _post(srv, "/v2/rest/query", body)
    assert status == 200 and isinstance(frames, list)
    primary = next(f for f in frames if f.get("TableKind") == "PrimaryResult")
    assert primary["Rows"] == [[2], [3]]
    status, v1 = _post(srv, "/v1/rest/query", body)
    assert status == 200 and isinstance(v1, dict)
    assert v1["Tables"][0]["Rows"] == [[2], [3]]
    # a bad value: a OneApiErrors 400 naming the parameter
    body["properties"] = {"Parameters": {"pattern": "/tmp", "window": "soon"}}
    status, err = _post(srv, "/v2/rest/query", body)
    assert status == 400 and isinstance(err, dict)
    assert "'window'" in err["error"]["@message"]


def test_native_api_parameters(srv: LiveServer) -> None:
    q = """declare query_parameters(ids:dynamic, acct:string, minId:long = 0);
DeviceProcessEvents | where ReportId in (ids) and AccountName == acct and ReportId >= minId
| sort by ReportId asc | project ReportId"""
    with srv.client() as c:
        r = c.post("/api/query", json={"query": q, "parameters": {"ids": [1, 4, 6], "acct": "alice"}})
        assert r.status_code == 200, r.text
        assert r.json()["rows"] == [[1], [4], [6]]
        r = c.post("/api/query", json={"query": q, "parameters": {"ids": [1, 4, 6], "acct": "alice", "minId": 5}})
        assert r.json()["rows"] == [[6]]
        # a JSON value of the wrong type: a 400 naming the parameter
        r = c.post("/api/query", json={"query": q, "parameters": {"ids": [1], "acct": "alice", "minId": "five"}})
        body = assert_error_shape(r, 400, "invalid_parameter")
        assert any("'minId'" in e["message"] for e in body["errors"])
        r = c.post("/api/query", json={"query": q, "parameters": {"acct": "alice"}})
        assert_error_shape(r, 400, "missing_parameter")
        # injection through a string value stays a value
        r = c.post("/api/query", json={"query": q, "parameters": {"ids": [1], "acct": "alice' OR '1'='1"}})
        assert r.status_code == 200 and r.json()["rows"] == []
        # the export route takes the same parameters
        r = c.post("/api/query/export?format=ndjson",
                   json={"query": q, "parameters": {"ids": [2, 3], "acct": "alice"}})
        assert r.status_code == 200, r.text
        assert [orjson.loads(line)["ReportId"] for line in r.text.splitlines()] == [2, 3]
