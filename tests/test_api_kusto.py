"""The Kusto REST API over HTTP against the real server: the real ``azure-kusto-data`` client
(token authentication with a Quarry query key), and the exact frame shapes of api_shapes.md (d)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import orjson
import pytest
from azure.kusto.data import ClientRequestProperties, KustoClient
from azure.kusto.data.exceptions import KustoApiError, KustoMultiApiError, KustoServiceError

from schema import default_catalog
from tests.test_api_support import (
    HEAVY,
    SEED_EXPECTED_IDS,
    SEED_QUERY,
    LiveServer,
    kusto_client,
    network_events,
    seeded_server,
)

pytestmark = pytest.mark.slow

CAP = 50


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with seeded_server(tmp_path_factory.mktemp("kusto"), 80, max_rows=CAP) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv: LiveServer) -> Iterator[KustoClient]:
    with kusto_client(srv) as c:
        yield c


def test_real_client_seed_query(client: KustoClient) -> None:
    response = client.execute("Quarry", SEED_QUERY)
    table = response.primary_results[0]
    names = [c.column_name for c in table.columns]
    assert names == [c.name for c in default_catalog().tables["DeviceProcessEvents"].columns]
    types = {c.column_name: c.column_type for c in table.columns}
    assert types["Timestamp"] == "datetime" and types["ProcessId"] == "long"
    rows = list(table)
    assert [r["ReportId"] for r in rows] == SEED_EXPECTED_IDS
    # the client parsed our datetimes into aware datetimes
    assert isinstance(rows[0]["Timestamp"], dt.datetime) and rows[0]["Timestamp"].tzinfo is not None
    assert rows[0]["Timestamp"] < rows[1]["Timestamp"] < rows[2]["Timestamp"]
    assert response.errors_count == 0


def test_real_client_types_and_dataframe(client: KustoClient) -> None:
    from azure.kusto.data.helpers import dataframe_from_result_table

    q = (
        "DeviceProcessEvents | where ReportId == 1 | project d = parse_json(AdditionalFields), "
        "span = datetime(2024-01-02 02:03:04.5) - datetime(2024-01-01), ok = true, n = ReportId"
    )
    table = client.execute("Quarry", q).primary_results[0]
    row = list(table)[0]
    assert row["d"] == {"Tags": ["usb"], "Score": 7}
    assert row["span"] == dt.timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=500)
    assert row["ok"] is True and row["n"] == 1
    try:
        import pandas  # noqa: F401
    except ImportError:
        return
    df = dataframe_from_result_table(table)
    assert list(df.columns) == ["d", "span", "ok", "n"]


def test_real_client_errors(client: KustoClient) -> None:
    with pytest.raises(KustoApiError) as e:
        client.execute("Quarry", "DeviceProcessEvnts | take 1")
    assert "DeviceProcessEvnts" in str(e.value)
    # a cut result is never mistaken for a whole one: Kusto's partial-failure record
    with pytest.raises(KustoMultiApiError) as m:
        client.execute("Quarry", "DeviceNetworkEvents")
    assert "E_QUERY_RESULT_SET_TOO_LARGE" in str(m.value.get_api_errors()[0])
    # servertimeout lowers the timeout: a heavy query is stopped
    props = ClientRequestProperties()
    props.set_option(ClientRequestProperties.request_timeout_option_name, dt.timedelta(seconds=1))
    with pytest.raises(KustoServiceError) as t:
        client.execute("Quarry", HEAVY, props)
    assert "timeout" in str(t.value).lower()


def test_real_client_truncation_option_and_mgmt(client: KustoClient) -> None:
    props = ClientRequestProperties()
    props.set_option("truncationmaxrecords", 1000)
    table = client.execute("Quarry", "DeviceNetworkEvents | take 20", props).primary_results[0]
    assert len(list(table)) == 20
    tables = client.execute_mgmt("Quarry", ".show tables").primary_results[0]
    assert [r["TableName"] for r in tables] == list(default_catalog().tables)
    version = client.execute_mgmt("Quarry", ".show version").primary_results[0]
    assert list(version)[0]["ServiceType"] == "Quarry"
    schema = client.execute_mgmt("Quarry", ".show table DeviceInfo cslschema").primary_results[0]
    assert list(schema)[0]["Schema"].startswith("Timestamp:datetime,DeviceId:string,")
    with pytest.raises(KustoApiError):
        client.execute_mgmt("Quarry", ".drop table DeviceInfo")


def test_real_client_streaming_query(client: KustoClient) -> None:
    """execute_streaming_query parses the frames incrementally: FrameType first, Rows last."""
    response = client.execute_streaming_query("Quarry", SEED_QUERY)
    table = next(response.iter_primary_results())
    ids = [row["ReportId"] for row in table]
    assert ids == SEED_EXPECTED_IDS


def _post(srv: LiveServer, path: str, body: object) -> tuple[int, object]:
    with srv.client() as c:
        r = c.post(path, content=orjson.dumps(body), headers={"content-type": "application/json"})
    return r.status_code, r.json()


def test_v2_frame_shapes(srv: LiveServer) -> None:
    # properties as a JSON string (the Python client) and as an object (the docs)
    for props in ('{"Options": {}, "Parameters": {}}', {"Options": {"servertimeout": "00:04:00"}}):
        status, frames = _post(srv, "/v2/rest/query", {"db": "NetDefaultDB", "csl": SEED_QUERY,
                                                       "properties": props})
        assert status == 200
        assert isinstance(frames, list)
        assert [f["FrameType"] for f in frames] == [
            "DataSetHeader", "DataTable", "DataTable", "DataTable", "DataSetCompletion"]
        for f in frames:
            assert next(iter(f)) == "FrameType"  # first property: the streaming parser needs it
        assert frames[0] == {"FrameType": "DataSetHeader", "IsProgressive": False, "Version": "v2.0"}
        kinds = [f.get("TableKind") for f in frames[1:4]]
        assert kinds == ["QueryProperties", "PrimaryResult", "QueryCompletionInformation"]
        primary = frames[2]
        assert list(primary) == ["FrameType", "TableId", "TableKind", "TableName", "Columns", "Rows"]
        assert primary["Columns"][0] == {"ColumnName": "Timestamp", "ColumnType": "datetime"}
        ts = primary["Rows"][0][0]
        assert ts.endswith("Z") and len(ts.split(".")[1]) == 8  # 7 digits + Z
        qci = frames[3]
        assert {"Level", "ClientRequestId", "Payload"} <= {c["ColumnName"] for c in qci["Columns"]}
        assert frames[4] == {"FrameType": "DataSetCompletion", "HasErrors": False, "Cancelled": False}


def test_v1_query_shape(srv: LiveServer) -> None:
    status, body = _post(srv, "/v1/rest/query", {"db": "Quarry", "csl": "DeviceProcessEvents "
                                                 "| where ReportId == 1 | project Timestamp, ReportId"})
    assert status == 200
    assert isinstance(body, dict)
    (table,) = body["Tables"]
    assert table["TableName"] == "Table_0"
    assert table["Columns"] == [
        {"ColumnName": "Timestamp", "DataType": "DateTime", "ColumnType": "datetime"},
        {"ColumnName": "ReportId", "DataType": "Int64", "ColumnType": "long"},
    ]
    assert table["Rows"][0][1] == 1


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v2/rest/query", {"db": "Quarry"}, 400),
        ("/v2/rest/query", {"db": "Quarry", "csl": "Nope | take 1"}, 400),
        ("/v2/rest/query", {"db": "Quarry", "csl": ".show tables"}, 400),
        ("/v2/rest/query", {"db": "Quarry", "csl": SEED_QUERY, "properties": "{bad"}, 400),
        ("/v2/rest/query", {"db": "Quarry", "csl": SEED_QUERY, "properties": {"Parameters": ["x", "1"]}}, 400),
        ("/v2/rest/query", {"db": "Quarry", "csl": "declare query_parameters(n:long); print n",
                            "properties": {"Parameters": {"n": "one"}}}, 400),
        ("/v2/rest/query", {"db": "Quarry", "csl": SEED_QUERY,
                            "properties": {"Options": {"servertimeout": "soon"}}}, 400),
        # more days than a timedelta holds: still a bad request, not an OverflowError
        ("/v2/rest/query", {"db": "Quarry", "csl": SEED_QUERY,
                            "properties": {"Options": {"servertimeout": "1000000000.00:00:00"}}}, 400),
        ("/v2/rest/query", [1, 2], 400),
        ("/v1/rest/mgmt", {"db": "Quarry", "csl": "DeviceInfo"}, 400),
        ("/v1/rest/mgmt", {"db": "Quarry", "csl": ".show table Nope cslschema"}, 400),
    ],
)
def test_kusto_errors_are_oneapi_errors(srv: LiveServer, path: str, body: object, status: int) -> None:
    got, reply = _post(srv, path, body)
    assert got == status
    assert isinstance(reply, dict)
    err = reply["error"]
    assert isinstance(err["code"], str) and isinstance(err["message"], str)
    assert isinstance(err["@message"], str) and err["@message"]
    assert isinstance(err["@permanent"], bool)


def test_compile_error_keeps_diagnostics(srv: LiveServer) -> None:
    _, reply = _post(srv, "/v2/rest/query", {"db": "Quarry", "csl": "DeviceProcessEvnts | take 1"})
    assert isinstance(reply, dict)
    inner = reply["error"]["innererror"]
    assert inner["code"] == "unknown_table"
    assert inner["diagnostics"][0]["line"] == 1
    assert "DeviceProcessEvents" in inner["diagnostics"][0]["hints"][0]


def test_truncation_is_a_partial_failure(srv: LiveServer) -> None:
    status, frames = _post(srv, "/v2/rest/query", {"db": "Quarry", "csl": "DeviceNetworkEvents"})
    assert status == 200
    assert isinstance(frames, list)
    primary = frames[2]
    assert len(primary["Rows"]) == CAP + 1 and "OneApiErrors" in primary["Rows"][-1]
    assert frames[-1]["HasErrors"] is True and frames[-1]["OneApiErrors"]
    _ = network_events  # the 80 rows ingested above exceed the cap of 50


@pytest.mark.parametrize("name", ["DeviceInfo", "['DeviceInfo']", '["DeviceInfo"]'])
def test_mgmt_table_schema_takes_bracketed_names(srv: LiveServer, name: str) -> None:
    """Kusto quotes a table name as ['Name'] or ["Name"] (what tools that quote every name send)."""
    status, reply = _post(srv, "/v1/rest/mgmt", {"db": "Quarry", "csl": f".show table {name} cslschema"})
    assert status == 200, reply
    assert isinstance(reply, dict)
    row = reply["Tables"][0]["Rows"][0]
    assert row[0] == "DeviceInfo" and row[1].startswith("Timestamp:datetime,DeviceId:string,")


def test_unavailable_is_a_transient_kusto_error() -> None:
    """Storage gone or the server shutting down (503): clients may retry, so not permanent."""
    from server.api.kusto import _from_query_error
    from server.query.runner import QueryExecutionError, QueryUnavailable

    e = _from_query_error(QueryUnavailable("the server is shutting down"))
    assert e.status == 503 and e.permanent is False and e.code == "ServiceUnavailable"
    bad = _from_query_error(QueryExecutionError("the query failed while running: x"))
    assert bad.status == 400 and bad.permanent is True and bad.code == "General_BadRequest"


def test_api_errors_below_the_route_keep_kusto_shape(srv: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ApiError raised under a Kusto route (here: no runner, storage unavailable) is answered
    in OneApiErrors, not in Quarry's shape the client cannot read."""
    import server.api.kusto as kusto
    from server.errors import ApiError

    def unavailable(_request: object) -> object:
        raise ApiError(503, "storage is not available", code="unavailable")

    monkeypatch.setattr(kusto, "get_runner", unavailable)
    status, reply = _post(srv, "/v2/rest/query", {"db": "Quarry", "csl": "print 1"})
    assert status == 503 and isinstance(reply, dict), reply
    assert reply["error"]["code"] == "ServiceUnavailable" and reply["error"]["@permanent"] is False
    assert reply["error"]["message"] == "storage is not available"
