"""The hunting API: KQL over HTTP in Quarry's own form and in the shapes of Defender's and
Microsoft Graph's hunting APIs (../shared/reference/api_shapes.md (a), (b)), plus export.

Every route needs a key with the ``query`` scope. Query work (DuckDB and rendering the rows to
JSON) runs on the query runner's threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from schema.catalog import default_catalog
from server.api.params import KqlParameters, KqlText
from server.auth import QueryKey, request_owner
from server.errors import ApiError
from server.query.engines import make_runner
from server.query.export import FORMATS, encoder_for
from server.query.runner import (
    ExportStream,
    QueryError,
    QueryRejected,
    QueryResult,
    QueryRunner,
)
from server.query.saved import record_history
from server.query.timerange import TimeRange, TimeRangeError, parse_timespan
from server.query.values import dotnet_type, row_converter

SEED_QUERY = (
    "DeviceProcessEvents | where Timestamp > ago(2h) "
    '| where ProcessCommandLine contains "/Volume" | sort by Timestamp asc'
)
GRAPH_CONTEXT = "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults"
# Defender's hunting APIs only see the last 30 days; Graph defaults its Timespan to 30 days.
DEFAULT_LOOKBACK = dt.timedelta(days=30)

router = APIRouter(tags=["hunting"])
log = logging.getLogger("quarry.api")

_runner_lock = threading.Lock()


def get_runner(request: Request) -> QueryRunner:
    """The app's query runner, built on first use over ``app.state.storage``."""
    state = request.app.state
    runner = getattr(state, "query_runner", None)
    if runner is not None:
        return runner
    with _runner_lock:
        runner = getattr(state, "query_runner", None)
        if runner is None:
            storage = getattr(state, "storage", None)
            if storage is None:
                raise ApiError(503, "storage is not available", code="unavailable")
            runner = make_runner(storage, default_catalog(), state.settings,
                                 metrics=getattr(state, "metrics", None))
            state.query_runner = runner
    return runner


def api_error(e: QueryError) -> ApiError:
    headers = None
    if isinstance(e, QueryRejected):
        headers = {"Retry-After": str(e.retry_after_s)}
    return ApiError(e.status, e.message, errors=e.errors, headers=headers)


def time_range(timespan: str | None, *, default: dt.timedelta | None, now: dt.datetime) -> TimeRange | None:
    if timespan is None:
        return TimeRange(now - default) if default is not None else None
    try:
        return parse_timespan(timespan, now)
    except TimeRangeError as e:
        raise ApiError(
            400,
            f"invalid Timespan: {e}",
            errors=[{"code": "invalid_timespan", "message": str(e), "field": "timespan"}],
        ) from None


async def run_and_render(
    request: Request,
    text: str,
    render: Callable[[QueryResult], dict[str, Any]],
    *,
    tr: TimeRange | None,
    max_rows: int | None = None,
    now: dt.datetime,
    parameters: dict[str, Any] | None = None,
) -> Response:
    """Run the query and serialise the body on the runner's threads: rendering 100,000 rows is
    CPU work that must not hold the event loop."""
    runner = get_runner(request)
    deadline = time.monotonic() + runner.limits.queue_wait_s
    stopper = _Stopper()

    def work() -> bytes:
        result = runner.run(text, time_range=tr, max_rows=max_rows, now=now, deadline=deadline,
                            parameters=parameters, on_connection=stopper.attach)
        return orjson.dumps(render(result))

    watcher = asyncio.create_task(_stop_when_client_leaves(request, stopper))
    try:
        body = await runner.in_pool(work)
    except QueryError as e:
        if stopper.stopping:  # nobody reads this answer; the history says what happened
            raise ApiError(499, "the query was cancelled: its client went away", code="cancelled") from None
        raise api_error(e) from None
    finally:
        stopper.done = True
        watcher.cancel()
    return Response(body, media_type="application/json")


class _Stopper:
    """Stops a running query when its client goes away (the console's Cancel button aborts the
    request): ``interrupt()`` again and again, since it stops only the statement running then
    and a query runs several (its time-range views, then the query)."""

    def __init__(self) -> None:
        self.con: Any = None
        self.stopping = False
        self.done = False
        self.lock = threading.Lock()

    def attach(self, con: Any) -> None:
        with self.lock:
            self.con = con
            if self.stopping:
                con.interrupt()

    def interrupt(self) -> None:
        with self.lock:
            self.stopping = True
            if self.con is not None and not self.done:
                self.con.interrupt()


DISCONNECT_POLL_S = 0.25


async def _stop_when_client_leaves(request: Request, stopper: _Stopper) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)
    log.info("the client left while its query ran: stopping the query")
    while not stopper.done:
        stopper.interrupt()
        await asyncio.sleep(0.1)


# -- native --------------------------------------------------------------------------------


class NativeQuery(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"query": SEED_QUERY, "timespan": "P7D", "maxRows": 1000},
            {"query": "declare query_parameters(account:string, since:datetime = datetime(2024-01-01));\n"
                      "DeviceProcessEvents | where Timestamp > since and AccountName == account",
             "parameters": {"account": "alice"}},
        ]},
    )
    query: KqlText = Field(description="KQL text")
    timespan: str | None = Field(
        default=None,
        description="ISO 8601 duration or interval restricting Timestamp (P7D, start/end, ...)",
    )
    maxRows: int | None = Field(  # noqa: N815 (the API's field name)
        default=None, ge=0, description="Row cap for this query (at most the server's max_rows)"
    )
    parameters: KqlParameters = Field(
        default=None,
        description="Values for the query's `declare query_parameters(...)`, by name: JSON values "
        "read by the declared type (a string is read as Kusto's text form: `datetime(2024-01-01)`, "
        "`1h`, `dynamic([1,2])`; for a string parameter, the text itself). Never pasted into the "
        "query; names the query does not declare are ignored",
    )


def _native_body(result: QueryResult) -> dict[str, Any]:
    convert = row_converter([t for _, t in result.columns])
    body: dict[str, Any] = {
        "columns": [{"name": n, "type": t} for n, t in result.columns],
        "rows": [convert(r) for r in result.rows],
        "truncated": result.truncated,
        "warnings": result.warnings,
        "stats": result.stats.as_dict(),
        "render": result.render,
    }
    return body


NATIVE_EXAMPLE = {
    "columns": [
        {"name": "Timestamp", "type": "datetime"},
        {"name": "DeviceName", "type": "string"},
        {"name": "ProcessCommandLine", "type": "string"},
    ],
    "rows": [["2024-05-15T11:00:00.0000000Z", "mac-01", "hdiutil attach /Volumes/x.dmg"]],
    "truncated": False,
    "warnings": [],
    "stats": {"elapsedMs": 12.5, "compileMs": 1.2, "rowsReturned": 1, "partitionsScanned": 1},
    "render": None,
}


@router.post(
    "/api/query",
    summary="Run a KQL query (Quarry's native form)",
    responses={200: {"content": {"application/json": {"example": NATIVE_EXAMPLE}}}},
)
async def native_query(request: Request, _key: QueryKey, body: NativeQuery) -> Response:
    """Columns carry KQL type names; rows are positional. `truncated` is true (with a warning)
    when the row cap cut the result. `render` is the query's chart hint (its last `render`
    operator: visualization and properties) or null. Each run is kept in the caller's query
    history (`GET /api/query/history`)."""
    now = _now(request)
    tr = time_range(body.timespan, default=None, now=now)
    owner = request_owner(request)
    started = time.monotonic()
    seen: dict[str, int] = {}

    def body_of(result: QueryResult) -> dict[str, Any]:
        seen["rows"] = len(result.rows)
        return _native_body(result)

    try:
        resp = await run_and_render(request, body.query, body_of, tr=tr, max_rows=body.maxRows, now=now,
                                    parameters=body.parameters)
    except ApiError as e:
        await run_in_threadpool(record_history, request.app.state.metadata, owner, body.query, body.timespan,
                                None, (time.monotonic() - started) * 1000, e.error)
        raise
    await run_in_threadpool(record_history, request.app.state.metadata, owner, body.query, body.timespan,
                            seen.get("rows"), (time.monotonic() - started) * 1000, None)
    return resp


# -- Defender ------------------------------------------------------------------------------


class DefenderQuery(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        json_schema_extra={"examples": [{"Query": SEED_QUERY}]},
    )
    Query: KqlText = Field(validation_alias=AliasChoices("Query", "query"), description="KQL text")


def _records(result: QueryResult) -> list[dict[str, Any]]:
    """Rows as objects keyed by column name, values rendered as the Defender and Graph APIs send them."""
    names = [n for n, _ in result.columns]
    convert = row_converter([t for _, t in result.columns])
    return [dict(zip(names, convert(r), strict=True)) for r in result.rows]


def _defender_body(result: QueryResult) -> dict[str, Any]:
    return {
        "Stats": {
            "ExecutionTime": round(result.stats.elapsedMs / 1000, 6),
            "dataset_statistics": [{"table_row_count": len(result.rows)}],
            "truncated": result.truncated,
            "warnings": result.warnings,
            **result.stats.as_dict(),
        },
        "Schema": [{"Name": n, "Type": dotnet_type(t)} for n, t in result.columns],
        "Results": _records(result),
    }


DEFENDER_EXAMPLE = {
    "Stats": {"ExecutionTime": 0.0125, "dataset_statistics": [{"table_row_count": 1}], "truncated": False},
    "Schema": [
        {"Name": "Timestamp", "Type": "DateTime"},
        {"Name": "FileName", "Type": "String"},
        {"Name": "ProcessId", "Type": "Int64"},
    ],
    "Results": [{"Timestamp": "2024-05-15T11:00:00.0000000Z", "FileName": "hdiutil", "ProcessId": 4242}],
}


async def _defender(request: Request, text: str) -> Response:
    now = _now(request)
    tr = time_range(None, default=DEFAULT_LOOKBACK, now=now)
    return await run_and_render(request, text, _defender_body, tr=tr, now=now)


_defender_responses: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"example": DEFENDER_EXAMPLE}}}
}


@router.post(
    "/api/advancedqueries/run",
    summary="Run a query (Defender for Endpoint API form)",
    responses=_defender_responses,
)
async def defender_advancedqueries(request: Request, _key: QueryKey, body: DefenderQuery) -> Response:
    """`{"Query": ...}` in, `{"Schema": [{"Name", "Type"}], "Results": [{...}]}` out, with .NET
    type names. Sees the last 30 days, as Defender does."""
    return await _defender(request, body.Query)


@router.get(
    "/api/advancedqueries",
    summary="Run a query given as ?key= (the Power BI form of the Defender API)",
    responses=_defender_responses,
)
async def defender_advancedqueries_get(
    request: Request,
    _key: QueryKey,
    key: Annotated[str, Query(description="KQL text", examples=[SEED_QUERY])],
) -> Response:
    return await _defender(request, key)


@router.post(
    "/api/advancedhunting/run",
    summary="Run a query (Defender XDR API form)",
    responses=_defender_responses,
)
async def defender_advancedhunting(request: Request, _key: QueryKey, body: DefenderQuery) -> Response:
    """Same shapes as `/api/advancedqueries/run`, with `Stats` as the XDR API sends it."""
    return await _defender(request, body.Query)


# -- Microsoft Graph -----------------------------------------------------------------------


class GraphQuery(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        json_schema_extra={"examples": [{"Query": SEED_QUERY, "Timespan": "P30D"}]},
    )
    Query: KqlText = Field(validation_alias=AliasChoices("Query", "query"), description="KQL text")
    Timespan: str | None = Field(
        default=None,
        validation_alias=AliasChoices("Timespan", "timespan", "TimeSpan"),
        description="ISO 8601: P30D, start/end, P30D/end, start/P30D or a start time; default 30 days",
    )


def _graph_body(result: QueryResult) -> dict[str, Any]:
    body: dict[str, Any] = {
        "@odata.context": GRAPH_CONTEXT,
        "schema": [{"name": n, "type": dotnet_type(t)} for n, t in result.columns],
        "results": _records(result),
    }
    if result.truncated:
        # Graph's huntingQueryResults has no truncation flag; a cut result must not pass for a
        # whole one, so say it in extra properties (clients keep unknown ones as additional data).
        body["truncated"] = True
        body["warnings"] = result.warnings
    return body


GRAPH_EXAMPLE = {
    "@odata.context": GRAPH_CONTEXT,
    "schema": [{"name": "Timestamp", "type": "DateTime"}, {"name": "FileName", "type": "String"}],
    "results": [{"Timestamp": "2024-05-15T11:00:00.0000000Z", "FileName": "hdiutil"}],
}


async def _graph(request: Request, body: GraphQuery) -> Response:
    now = _now(request)
    tr = time_range(body.Timespan, default=DEFAULT_LOOKBACK, now=now)
    return await run_and_render(request, body.Query, _graph_body, tr=tr, now=now)


_graph_responses: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"example": GRAPH_EXAMPLE}}}
}


@router.post(
    "/security/runHuntingQuery",
    summary="Run a query (Microsoft Graph form)",
    responses=_graph_responses,
)
async def graph_hunting(request: Request, _key: QueryKey, body: GraphQuery) -> Response:
    """Accepts `Query`/`query` and `Timespan`/`timespan`; answers camelCase `schema`/`results`."""
    return await _graph(request, body)


@router.post(
    "/v1.0/security/runHuntingQuery",
    summary="Run a query (Microsoft Graph v1.0 path)",
    responses=_graph_responses,
)
async def graph_hunting_v1(request: Request, _key: QueryKey, body: GraphQuery) -> Response:
    return await _graph(request, body)


@router.post(
    "/beta/security/runHuntingQuery",
    summary="Run a query (Microsoft Graph beta path)",
    responses=_graph_responses,
)
async def graph_hunting_beta(request: Request, _key: QueryKey, body: GraphQuery) -> Response:
    return await _graph(request, body)


# -- export --------------------------------------------------------------------------------


class ExportQuery(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"query": SEED_QUERY, "timespan": "P7D"}]}
    )
    query: KqlText = Field(description="KQL text")
    timespan: str | None = Field(default=None, description="ISO 8601 duration or interval")
    parameters: KqlParameters = Field(
        default=None,
        description="Values for the query's `declare query_parameters(...)`, by name: JSON values "
        "read by the declared type (a string is read as Kusto's text form: `datetime(2024-01-01)`, "
        "`1h`, `dynamic([1,2])`; for a string parameter, the text itself). Never pasted into the "
        "query; names the query does not declare are ignored",
    )


_SENTINEL = object()


@router.post(
    "/api/query/export",
    summary="Stream a query's whole result (no row cap) as CSV, NDJSON or Parquet",
    responses={
        200: {
            "content": {
                "text/csv": {"example": "Timestamp,DeviceName\n2024-05-15T11:00:00.0000000Z,mac-01\n"},
                "application/x-ndjson": {
                    "example": '{"Timestamp":"2024-05-15T11:00:00.0000000Z","DeviceName":"mac-01"}\n'
                },
                "application/vnd.apache.parquet": {},
            }
        }
    },
)
async def export_query(
    request: Request,
    _key: QueryKey,
    body: Annotated[ExportQuery, Body()],
    format: Annotated[Literal["csv", "ndjson", "parquet"], Query(description="Output format")] = "ndjson",
) -> Response:
    """Streams batch by batch (DuckDB record batches), so memory stays bounded whatever the
    size. Errors found before the first byte (compile, 429, execution start) are JSON errors; a
    timeout later cuts the stream (the chunked body then ends without its terminator)."""
    runner = get_runner(request)
    now = _now(request)
    tr = time_range(body.timespan, default=None, now=now)
    deadline = time.monotonic() + runner.limits.queue_wait_s
    try:
        columns, batches = await runner.in_pool(
            lambda: runner.export_batches(body.query, time_range=tr, now=now, deadline=deadline,
                                          parameters=body.parameters)
        )
    except QueryError as e:
        raise api_error(e) from None
    try:
        await runner.in_pool(lambda: next(batches))  # starts the query, holds the slot
    except QueryError as e:
        raise api_error(e) from None  # the stream ended with the error: nothing is held
    except BaseException:
        # Cancelled while the query started (server shutting down): the priming thread may
        # still hold the slot; close it off the loop.
        _release(runner, batches)
        raise
    encoder = encoder_for(format, columns)

    def step() -> bytes | object:
        batch = next(batches, _SENTINEL)
        if batch is _SENTINEL:
            return _SENTINEL
        return encoder.batch(batch)  # type: ignore[arg-type]

    async def stream() -> AsyncIterator[bytes]:
        head = encoder.header()
        if head:
            yield head
        while True:
            chunk = await runner.in_pool(step)
            if chunk is _SENTINEL:
                break
            if chunk:
                yield chunk  # type: ignore[misc]
        tail = await runner.in_pool(encoder.footer)
        if tail:
            yield tail

    media, ext = FORMATS[format]
    return _ExportResponse(
        stream(),
        release=lambda: _release(runner, batches),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="quarry-export.{ext}"'},
    )


class _ExportResponse(StreamingResponse):
    """A StreamingResponse that gives back the export's slot and connection however the response
    ends: completed, failed, or cancelled because the client went away (Starlette then cancels
    the body iterator, maybe before it ever started, so its own ``finally`` is not enough)."""

    def __init__(self, content: AsyncIterator[bytes], *, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Synchronous and quick (it only hands the close to a thread), so it runs even in a
            # cancelled scope, where any await would be cancelled again.
            self._release()


def _release(runner: QueryRunner, batches: ExportStream) -> None:
    """Close an export's stream on a worker thread: ``close()`` interrupts a step that is still
    running in DuckDB and waits for it, which must not block the event loop."""
    batches.cancelled = True  # no further step starts from here on
    try:
        runner.submit(batches.close)
    except RuntimeError:  # the runner's pool is shut down (server stopping)
        threading.Thread(target=batches.close, name="quarry-export-close", daemon=True).start()


def _now(request: Request) -> dt.datetime:
    """The instant the query is compiled against (ago(), Timespan); tests may fix it."""
    clock = getattr(request.app.state, "query_clock", None)
    if clock is not None:
        return clock()  # type: ignore[no-any-return]
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
