"""The Kusto REST API (``/v1/rest/query``, ``/v2/rest/query``, ``/v1/rest/mgmt``), enough for the
real ``azure-kusto-data`` client to query Quarry: ``KustoClient("http://host:port")`` with a
Quarry query key as the bearer token.

Shapes follow ../shared/reference/api_shapes.md (d): v2 answers are an array of frames
(DataSetHeader, DataTable..., DataSetCompletion), ``FrameType`` first in each frame and
``TableId, TableKind, TableName, Columns`` before ``Rows`` (the client's streaming parser needs
that order); column types are lower-case KQL names. v1 answers are ``{"Tables": [...]}`` with
.NET ``DataType`` and KQL ``ColumnType``.

Errors here use Kusto's OneApiErrors body (``{"error": {"code", "message", "@message", ...}}``),
not Quarry's ``{"ok", "error", "errors"}``: the client reads ``error.code`` and
``error.message`` and fails on anything else. These routes are the one exception to the
one-error-shape rule, and they hold to Kusto's shape on every path, authentication included.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from schema.catalog import default_catalog
from schema.types import kql_type
from server.api.query import SEED_QUERY, _now, get_runner
from server.auth import require
from server.errors import ApiError
from server.query.runner import CompileFailed, QueryError, QueryRejected, QueryResult, QueryTimeout
from server.query.values import dotnet_type, kusto_type, render_datetime, row_converter

router = APIRouter(tags=["kusto"])

DATABASE = "Quarry"
VERSION = "1.0.0"
_check_query_key = require("query")

_EXAMPLE_REQUEST = {"db": DATABASE, "csl": SEED_QUERY, "properties": '{"Options": {}, "Parameters": {}}'}


class KustoError(Exception):
    def __init__(self, status: int, code: str, message: str, detail: str | None = None, *, permanent: bool = True,
                 headers: dict[str, str] | None = None, inner: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail or message
        self.permanent = permanent
        self.headers = headers or {}
        self.inner = inner

    def body(self, client_request_id: str, activity_id: str) -> dict[str, Any]:
        err: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "@type": "Quarry.KustoApiError",
            "@message": self.detail,
            "@context": {
                "timestamp": render_datetime(dt.datetime.now(dt.UTC).replace(tzinfo=None)),
                "clientRequestId": client_request_id,
                "activityId": activity_id,
            },
            "@permanent": self.permanent,
        }
        if self.inner is not None:
            err["innererror"] = self.inner
        return {"error": err}


def _from_query_error(e: QueryError) -> KustoError:
    if isinstance(e, CompileFailed):
        first = e.errors[0] if e.errors else {}
        return KustoError(
            400,
            "General_BadRequest",
            "Request is invalid and cannot be executed.",
            f"Request is invalid and cannot be processed: {e.message}",
            inner={"code": first.get("code", "compile_error"), "message": first.get("message", e.message),
                   "@errorCode": first.get("code", "compile_error"), "diagnostics": e.errors},
        )
    if isinstance(e, QueryRejected):
        return KustoError(429, "TooManyRequests", e.message, permanent=False,
                          headers={"Retry-After": str(e.retry_after_s)})
    if isinstance(e, QueryTimeout):
        return KustoError(504, "Request_ExecutionTimeout", e.message, permanent=False)
    if e.status >= 500:  # QueryUnavailable: storage gone or shutting down; a retry may work
        return KustoError(e.status, "ServiceUnavailable", e.message, permanent=False)
    return KustoError(e.status, "General_BadRequest", e.message)


def _from_api_error(e: ApiError) -> KustoError:
    code = {401: "Unauthorized", 403: "Forbidden"}.get(e.status)
    if code is None:
        code = "ServiceUnavailable" if e.status >= 500 else "General_BadRequest"
    return KustoError(e.status, code, e.error, headers=e.headers, permanent=e.status < 500)


# -- request parsing -----------------------------------------------------------------------


async def _request_params(request: Request) -> dict[str, Any]:
    """``db``, ``csl``, ``properties`` from a JSON body (POST) or the query string (GET)."""
    if request.method == "GET":
        return dict(request.query_params)
    raw = await request.body()
    if not raw.strip():
        raise KustoError(400, "General_BadRequest", "the request body is empty; send {\"db\", \"csl\"}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise KustoError(400, "General_BadRequest", f"the request body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise KustoError(400, "General_BadRequest", "the request body must be a JSON object")
    return body


def _properties(value: Any) -> dict[str, Any]:
    """``properties`` is a JSON object or a string holding one (the Python client's form)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise KustoError(400, "General_BadRequest", "'properties' is not valid JSON") from None
    if not isinstance(value, dict):
        raise KustoError(400, "General_BadRequest", "'properties' must be a JSON object")
    return value


_TIMESPAN = re.compile(r"^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")


def parse_kusto_timespan(text: str) -> dt.timedelta:
    """``[-][d.]hh:mm:ss[.fffffff]``; the Python client also sends ``0:04:00`` (str(timedelta))."""
    m = _TIMESPAN.match(text.strip())
    if not m:
        raise KustoError(400, "General_BadRequest", f"'{text}' is not a timespan like 00:04:00")
    sign, days, h, mi, s, frac = m.groups()
    try:
        value = dt.timedelta(days=int(days or 0), hours=int(h), minutes=int(mi), seconds=int(s),
                             microseconds=int((frac or "0").ljust(7, "0")[:6]))
    except OverflowError:  # more days than a timedelta holds
        raise KustoError(400, "General_BadRequest", f"timespan '{text[:40]}' is too large") from None
    return -value if sign else value


def _parameters(props: dict[str, Any]) -> dict[str, Any]:
    """``properties.Parameters``: name -> value for ``declare query_parameters``. Kusto sends
    each value as a string read by the declared type; azure-kusto-data's ``set_parameter`` may
    also put a JSON number, boolean or list there (it JSON-encodes what it is given), which the
    compiler reads by the declared type too. Names the query does not declare are ignored."""
    params = props.get("Parameters")
    if params is None:
        params = props.get("parameters")
    if params is None or params == "":
        return {}
    if isinstance(params, str):  # a JSON-encoded object, like `properties` itself may be
        try:
            params = orjson.loads(params)
        except orjson.JSONDecodeError:
            raise KustoError(400, "General_BadRequest", "'properties.Parameters' is not valid JSON") from None
    if not isinstance(params, dict):
        raise KustoError(400, "General_BadRequest", "'properties.Parameters' must be an object of name: value")
    for name in params:
        if not name.strip():
            raise KustoError(400, "General_BadRequest", "'properties.Parameters' has an empty parameter name")
    return params


def _options(props: dict[str, Any]) -> dict[str, Any]:
    options = props.get("Options") or props.get("options") or {}
    if not isinstance(options, dict):
        raise KustoError(400, "General_BadRequest", "'properties.Options' must be an object")
    return {str(k).lower(): v for k, v in options.items()}


def _int_option(options: dict[str, Any], name: str) -> int | None:
    v = options.get(name)
    if v is None:
        return None
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise KustoError(400, "General_BadRequest", f"option '{name}' must be an integer") from None
    if n < 0:
        raise KustoError(400, "General_BadRequest", f"option '{name}' must not be negative")
    return n


def _csl(params: dict[str, Any]) -> str:
    csl = params.get("csl")
    if not isinstance(csl, str) or not csl.strip():
        raise KustoError(400, "General_BadRequest", "'csl' (the query text) is required")
    return csl


# -- frames --------------------------------------------------------------------------------


def _columns_v2(columns: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"ColumnName": n, "ColumnType": kusto_type(t)} for n, t in columns]


def _completion_table(table_id: int, crid: str, activity: str, messages: list[tuple[int, str, str]]) -> dict[str, Any]:
    """QueryCompletionInformation: the client counts rows with Level < 4 as errors."""
    now = render_datetime(dt.datetime.now(dt.UTC).replace(tzinfo=None))
    cols = [("Timestamp", "datetime"), ("ClientRequestId", "string"), ("ActivityId", "guid"),
            ("SubActivityId", "guid"), ("ParentActivityId", "guid"), ("Level", "int"),
            ("LevelName", "string"), ("StatusCode", "int"), ("StatusCodeName", "string"),
            ("EventType", "int"), ("EventTypeName", "string"), ("Payload", "string")]
    rows = [
        [now, crid, activity, activity, activity, level, level_name, 0, "S_OK (0)", 4, "QueryInfo",
         orjson.dumps({"Count": 1, "Text": text}).decode()]
        for level, level_name, text in messages
    ]
    return {"FrameType": "DataTable", "TableId": table_id, "TableKind": "QueryCompletionInformation",
            "TableName": "QueryCompletionInformation", "Columns": _columns_v2(cols), "Rows": rows}


def _v2_frames(result: QueryResult, crid: str, activity: str, cap: int) -> list[dict[str, Any]]:
    convert = row_converter([t for _, t in result.columns], kusto_wire=True)
    rows: list[Any] = [convert(r) for r in result.rows]
    has_errors = False
    errors: list[dict[str, Any]] = []
    if result.truncated:
        # Kusto's behaviour: the rows up to the limit, then a partial-failure record (the client
        # raises KustoMultiApiError on it), so a cut result is never mistaken for a whole one.
        has_errors = True
        message = (f"Query result set has exceeded the internal record count limit {cap} "
                   "(E_QUERY_RESULT_SET_TOO_LARGE); use summarize/take, or Quarry's export endpoint")
        errors = [{"error": {"code": "LimitsExceeded", "message": "Request is invalid and cannot be executed.",
                             "@type": "Kusto.Data.Exceptions.KustoServicePartialQueryFailureLimitsExceededException",
                             "@message": message, "@permanent": True}}]
        rows.append({"OneApiErrors": errors})
    props = {"FrameType": "DataTable", "TableId": 0, "TableKind": "QueryProperties",
             "TableName": "@ExtendedProperties",
             "Columns": [{"ColumnName": "TableId", "ColumnType": "int"},
                         {"ColumnName": "Key", "ColumnType": "string"},
                         {"ColumnName": "Value", "ColumnType": "dynamic"}],
             "Rows": [[1, "Visualization", orjson.dumps({"Visualization": None, "Title": None}).decode()]]}
    primary = {"FrameType": "DataTable", "TableId": 1, "TableKind": "PrimaryResult",
               "TableName": "PrimaryResult", "Columns": _columns_v2(result.columns), "Rows": rows}
    messages = [(4, "Info", "Query completed successfully")]
    messages += [(3, "Warning", w) for w in result.warnings if not result.truncated]
    completion = {"FrameType": "DataSetCompletion", "HasErrors": has_errors, "Cancelled": False}
    if has_errors:
        completion["OneApiErrors"] = errors
    return [
        {"FrameType": "DataSetHeader", "IsProgressive": False, "Version": "v2.0"},
        props,
        primary,
        _completion_table(2, crid, activity, messages),
        completion,
    ]


def _v1_table(name: str, columns: list[tuple[str, str]], rows: list[list[Any]]) -> dict[str, Any]:
    return {
        "TableName": name,
        "Columns": [{"ColumnName": n, "DataType": dotnet_type(t), "ColumnType": kusto_type(t)} for n, t in columns],
        "Rows": rows,
    }


# -- routes --------------------------------------------------------------------------------


def _ids(request: Request) -> tuple[str, str]:
    crid = request.headers.get("x-ms-client-request-id") or f"Quarry;{uuid.uuid4()}"
    return crid, str(uuid.uuid4())


def _reply(body: Any, status: int, crid: str, activity: str, headers: dict[str, str] | None = None) -> Response:
    h = {"x-ms-client-request-id": crid, "x-ms-activity-id": activity, **(headers or {})}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=h)


async def _guarded(request: Request, handler: Callable[[str, str], Any]) -> Response:
    crid, activity = _ids(request)
    try:
        try:
            _check_query_key(request)
            body = await handler(crid, activity)
        except ApiError as e:  # the key check, or Quarry code below the route (get_runner)
            raise _from_api_error(e) from None
        return _reply(body, 200, crid, activity)
    except KustoError as e:
        return _reply(e.body(crid, activity), e.status, crid, activity, e.headers)
    except QueryError as e:
        ke = _from_query_error(e)
        return _reply(ke.body(crid, activity), ke.status, crid, activity, ke.headers)


async def _run(request: Request, csl: str, props: dict[str, Any], render: Callable[[QueryResult, int], Any]) -> Any:
    if csl.lstrip().startswith("."):
        raise KustoError(400, "General_BadRequest",
                         "management commands (text starting with '.') go to /v1/rest/mgmt")
    params = _parameters(props)
    options = _options(props)
    runner = get_runner(request)
    cap = runner.limits.max_rows
    for name in ("truncationmaxrecords", "query_take_max_records"):
        n = _int_option(options, name)
        if n is not None:
            cap = min(cap, n)
    timeout = runner.limits.timeout_s
    if options.get("servertimeout") is not None:
        requested = parse_kusto_timespan(str(options["servertimeout"])).total_seconds()
        if requested > 0:
            timeout = min(timeout, requested)
    now = _now(request)
    deadline = time.monotonic() + runner.limits.queue_wait_s

    def work() -> bytes:
        result = runner.run(csl, max_rows=cap, timeout_s=timeout, now=now, deadline=deadline,
                            parameters=params)
        return orjson.dumps(render(result, cap))

    return orjson.Fragment(await runner.in_pool(work))


@router.get("/v2/rest/query", summary="Kusto v2 query (frames), parameters in the query string",
            operation_id="kusto_v2_query_get")
@router.post(
    "/v2/rest/query",
    operation_id="kusto_v2_query",
    summary="Kusto v2 query (frames)",
    openapi_extra={"requestBody": {"content": {"application/json": {"example": _EXAMPLE_REQUEST}}}},
    responses={200: {"content": {"application/json": {"example": [
        {"FrameType": "DataSetHeader", "IsProgressive": False, "Version": "v2.0"},
        {"FrameType": "DataTable", "TableId": 1, "TableKind": "PrimaryResult", "TableName": "PrimaryResult",
         "Columns": [{"ColumnName": "Timestamp", "ColumnType": "datetime"}],
         "Rows": [["2024-05-15T11:00:00.0000000Z"]]},
        {"FrameType": "DataSetCompletion", "HasErrors": False, "Cancelled": False}]}}}},
)
async def kusto_v2_query(request: Request) -> Response:
    """What `azure-kusto-data`'s `execute_query` calls. Bearer: a Quarry key with query scope."""

    async def handle(crid: str, activity: str) -> Any:
        params = await _request_params(request)
        return await _run(request, _csl(params), _properties(params.get("properties")),
                          lambda r, cap: _v2_frames(r, crid, activity, cap))

    return await _guarded(request, handle)


@router.get("/v1/rest/query", summary="Kusto v1 query (Tables), parameters in the query string",
            operation_id="kusto_v1_query_get")
@router.post(
    "/v1/rest/query",
    operation_id="kusto_v1_query",
    summary="Kusto v1 query (Tables)",
    openapi_extra={"requestBody": {"content": {"application/json": {"example": _EXAMPLE_REQUEST}}}},
    responses={200: {"content": {"application/json": {"example": {"Tables": [
        {"TableName": "Table_0", "Columns": [{"ColumnName": "Timestamp", "DataType": "DateTime",
                                              "ColumnType": "datetime"}],
         "Rows": [["2024-05-15T11:00:00.0000000Z"]]}]}}}}},
)
async def kusto_v1_query(request: Request) -> Response:
    async def handle(crid: str, activity: str) -> Any:
        params = await _request_params(request)

        def render(result: QueryResult, cap: int) -> dict[str, Any]:
            if result.truncated:
                raise KustoError(400, "LimitsExceeded",
                                 f"Query result set has exceeded the internal record count limit {cap} "
                                 "(E_QUERY_RESULT_SET_TOO_LARGE)")
            convert = row_converter([t for _, t in result.columns], kusto_wire=True)
            return {"Tables": [_v1_table("Table_0", result.columns, [convert(r) for r in result.rows])]}

        return await _run(request, _csl(params), _properties(params.get("properties")), render)

    return await _guarded(request, handle)


# -- management commands -------------------------------------------------------------------

# The name bare, quoted ('T', "T") or bracketed as Kusto quotes names (['T'], ["T"]).
_SHOW_TABLE_SCHEMA = re.compile(
    r"""^\.show\s+table\s+(?:\[(['"])(?P<bq>\w+)\1\]|(['"])(?P<q>\w+)\3|(?P<bare>\w+))\s+cslschema$""",
    re.I | re.ASCII,
)


def _mgmt(csl: str) -> dict[str, Any]:
    text = " ".join(csl.split())
    lower = text.lower()
    catalog = default_catalog()
    if lower == ".show version":
        return {"Tables": [_v1_table(
            "Table_0",
            [("BuildVersion", "string"), ("BuildTime", "datetime"), ("ServiceType", "string"),
             ("ProductVersion", "string")],
            [[VERSION, "2024-01-01T00:00:00.0000000Z", "Quarry", f"Quarry_{VERSION}"]],
        )]}
    if lower == ".show databases":
        return {"Tables": [_v1_table(
            "Table_0",
            [("DatabaseName", "string"), ("PersistentStorage", "string"), ("Version", "string"),
             ("IsCurrent", "bool"), ("DatabaseAccessMode", "string"), ("PrettyName", "string")],
            [[DATABASE, "", "v1.0", True, "ReadOnly", DATABASE]],
        )]}
    if lower == ".show tables":
        return {"Tables": [_v1_table(
            "Table_0",
            [("TableName", "string"), ("DatabaseName", "string"), ("Folder", "string"), ("DocString", "string")],
            [[t.name, DATABASE, "", t.description] for t in catalog.tables.values()],
        )]}
    m = _SHOW_TABLE_SCHEMA.match(text)
    if m:
        name = m.group("bq") or m.group("q") or m.group("bare")
        table = catalog.table(name)
        if table is None:
            hints = catalog.suggest(name)
            raise KustoError(400, "General_BadRequest", f"unknown table '{name}'",
                             f"unknown table '{name}'" + (f"; did you mean {', '.join(hints)}?" if hints else ""))
        schema = ",".join(f"{c.name}:{kql_type(c.type.name).name}" for c in table.columns)
        return {"Tables": [_v1_table(
            "Table_0",
            [("TableName", "string"), ("Schema", "string"), ("DatabaseName", "string"), ("Folder", "string"),
             ("DocString", "string")],
            [[table.name, schema, DATABASE, "", table.description]],
        )]}
    raise KustoError(
        400, "General_BadRequest", "Request is invalid and cannot be executed.",
        f"unsupported management command: '{text[:100]}'; Quarry supports .show version, .show databases, "
        ".show tables and .show table T cslschema",
    )


@router.post(
    "/v1/rest/mgmt",
    summary="Kusto management commands (.show version/databases/tables, .show table T cslschema)",
    openapi_extra={"requestBody": {"content": {"application/json": {"example": {"db": DATABASE, "csl": ".show tables"}}}}},
    responses={200: {"content": {"application/json": {"example": {"Tables": [
        {"TableName": "Table_0", "Columns": [{"ColumnName": "TableName", "DataType": "String",
                                              "ColumnType": "string"}],
         "Rows": [["DeviceProcessEvents"]]}]}}}}},
)
async def kusto_mgmt(request: Request) -> Response:
    async def handle(crid: str, activity: str) -> Any:
        params = await _request_params(request)
        csl = _csl(params)
        if not csl.lstrip().startswith("."):
            raise KustoError(400, "General_BadRequest", "queries go to /v2/rest/query; /v1/rest/mgmt runs commands")
        return _mgmt(csl)

    return await _guarded(request, handle)
