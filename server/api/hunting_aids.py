"""What the console's hunting page needs beside running queries: ``POST /api/query/check``
(diagnostics while typing), ``GET /api/query/language`` (what the editor completes), the
caller's query history and saved queries. All need the ``query`` scope; history and saved
queries belong to the calling key (``server.auth.key_owner``)."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from schema.catalog import default_catalog
from server.api.params import KqlParameters, KqlText, RowId
from server.api.query import SEED_QUERY, _now
from server.auth import QueryKey, request_owner
from server.errors import ApiError
from server.query import saved
from server.query.language import language
from server.query.runner import diagnostic_dict

router = APIRouter(tags=["hunting"])
log = logging.getLogger("quarry.api")

MAX_SAVED_TEXT = 100_000  # characters of KQL a saved query keeps
_QUOTED = re.compile(r"'([^']+)'")


class CheckQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"query": SEED_QUERY}]})
    query: KqlText = Field(description="KQL text (within the compiler's limits, QUARRY_QUERY_MAX_BYTES...)")
    parameters: KqlParameters = Field(default=None, description="As for POST /api/query")


def suggestions(hints: list[str]) -> list[str]:
    """The names a "did you mean 'X' or 'Y'?" hint offers, as quick-fix replacements."""
    out: list[str] = []
    for h in hints:
        if h.startswith("did you mean"):
            out += [s for s in _QUOTED.findall(h) if s not in out]
    return out


CHECK_EXAMPLE = {
    "ok": False,
    "diagnostics": [{
        "code": "unknown_column", "message": "unknown column 'ProcessComandLine'", "severity": "error",
        "line": 1, "column": 50, "endLine": 1, "endColumn": 67, "start": 49, "end": 66,
        "hints": ["did you mean 'ProcessCommandLine'?"], "suggestions": ["ProcessCommandLine"],
    }],
    "columns": [],
    "render": None,
}


@router.post(
    "/api/query/check",
    summary="Compile a query without running it: diagnostics with positions and quick fixes",
    responses={200: {"content": {"application/json": {"example": CHECK_EXAMPLE}}}},
)
async def check_query(request: Request, _key: QueryKey, body: CheckQuery) -> dict[str, Any]:
    """Every diagnostic (errors and warnings) at its line and column (1-based) and offsets
    (0-based, `end` exclusive), with `hints` and `suggestions` (the names a "did you mean"
    offers); the output `columns` with their types; the `render` hint. Nothing is read from
    storage, so it is cheap enough to call while the user types."""
    from kql import CompileOptions, compile_kql

    now = _now(request)
    limits = request.app.state.settings.kql_limits()

    def work() -> dict[str, Any]:
        if not body.query.strip():
            return {"ok": True, "diagnostics": [], "columns": [], "render": None}
        try:
            compiled = compile_kql(body.query, default_catalog(), CompileOptions(
                now=now, strings_never_null=True, parameters=body.parameters, limits=limits))
        except RecursionError:
            return {"ok": False, "columns": [], "render": None, "diagnostics": [
                {"code": "too_complex", "message": "the query is nested too deeply", "severity": "error",
                 "hints": [], "suggestions": []}]}
        except Exception:  # a compiler bug: say so, log why, never a 500 while typing
            log.exception("the compiler failed on a checked query")
            return {"ok": False, "columns": [], "render": None, "diagnostics": [
                {"code": "internal_compiler_error", "message": "the compiler failed on this query; this is a "
                 "Quarry bug, please report the query", "severity": "error", "hints": [], "suggestions": []}]}
        diags = []
        for d in compiled.diagnostics:
            entry = diagnostic_dict(d)
            entry["suggestions"] = suggestions(entry["hints"])
            diags.append(entry)
        return {"ok": compiled.ok, "diagnostics": diags,
                "columns": [{"name": n, "type": t} for n, t in compiled.columns], "render": compiled.render}

    return await run_in_threadpool(work)


@router.get("/api/query/language", summary="Operators, functions and keywords the compiler knows")
async def query_language(_key: QueryKey) -> dict[str, Any]:
    """For editors: tabular `operators`, `scalarOperators`, `functions` (name, kind scalar,
    aggregate or alias, argument counts, result type) and `keywords`, read from the compiler's
    own tables, so completion offers exactly what compiles."""
    return language()


@router.get("/api/query/history", summary="The caller's newest query runs")
async def query_history(request: Request, _key: QueryKey,
                        top: Annotated[int, Query(ge=1, le=saved.HISTORY_PER_USER)] = 50) -> dict[str, Any]:
    """Runs of `POST /api/query` by the calling key, newest first: query, timespan, time, rows,
    elapsed milliseconds, error. The newest 200 per key are kept."""
    owner = request_owner(request)
    return {"value": await run_in_threadpool(saved.list_history, request.app.state.metadata, owner, top)}


class SavedQueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "USB copies", "query": SEED_QUERY, "description": "", "shared": True}]})
    name: str = Field(min_length=1, max_length=200)
    query: KqlText = Field(min_length=1, max_length=MAX_SAVED_TEXT)
    description: str = Field(default="", max_length=10_000)
    shared: bool = False


def _saved_error(e: saved.SavedQueryError) -> ApiError:
    entry: dict[str, Any] = {"code": e.code, "message": str(e)}
    if e.field:
        entry["field"] = e.field
    return ApiError(e.status, str(e), [entry])


@router.get("/api/query/saved", summary="The caller's saved queries and those shared with everyone")
async def list_saved_queries(request: Request, _key: QueryKey) -> dict[str, Any]:
    owner = request_owner(request)
    return {"value": await run_in_threadpool(saved.list_saved, request.app.state.metadata, owner)}


@router.post("/api/query/saved", status_code=201, summary="Save a query (replaces the caller's one of the same name)")
async def save_query(request: Request, _key: QueryKey, body: SavedQueryIn) -> dict[str, Any]:
    """`shared` lists it to every console user; only its owner may delete it."""
    owner = request_owner(request)
    try:
        return await run_in_threadpool(saved.save_query, request.app.state.metadata, owner, body.name,
                                       body.query, body.description, body.shared)
    except saved.SavedQueryError as e:
        raise _saved_error(e) from None


@router.delete("/api/query/saved/{saved_id}", status_code=204, summary="Delete one of the caller's saved queries")
async def delete_saved_query(request: Request, _key: QueryKey, saved_id: RowId) -> Response:
    owner = request_owner(request)
    try:
        await run_in_threadpool(saved.delete_saved, request.app.state.metadata, owner, saved_id)
    except saved.SavedQueryError as e:
        raise _saved_error(e) from None
    return Response(status_code=204)
