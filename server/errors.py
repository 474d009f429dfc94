"""The one JSON error shape every endpoint returns.

    {"ok": false, "error": "<summary>", "errors": [{"code", "message", ...}]}

Entries may carry more fields (line, column, hints for KQL; row, column, expected, value for
ingest). The Microsoft-shaped hunting routes answer Microsoft's shapes instead (``MICROSOFT_ROUTES``,
api_shapes.md (f)): Defender's ``{"error": {"code", "message", "target"}}`` and Graph's
``{"error": {"code", "message", "innerError"}}``, both with Quarry's entries (positioned KQL
diagnostics) kept inside as ``error.details``, OData's place for them. Raise ``ApiError`` anywhere in a request; the handlers in ``install_handlers`` also turn
FastAPI's own validation and HTTP errors into this shape, and any unexpected exception into a 500
that leaks no internals.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.responses import OrjsonResponse

log = logging.getLogger("quarry")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        error: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        code: str = "error",
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.errors = errors if errors is not None else [{"code": code, "message": error}]
        self.headers = headers


class FieldError(ValueError):
    """Bad input found below the API (device actions, device groups, notification rules):
    ``field`` names the offending field; ``code`` and ``status`` are what the API answers
    (``field_error``). Subclasses name their default code."""

    default_code = "invalid_request"

    def __init__(self, message: str, field: str = "", code: str = "", status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.code = code or self.default_code
        self.status = status


def field_error(e: FieldError) -> ApiError:
    """A FieldError in the one error shape."""
    return ApiError(e.status, str(e), [{"code": e.code, "message": str(e), "field": e.field}])


def invalid_field(field: str, message: str, error: str | None = None) -> ApiError:
    """A 400 about one field of the request body (``error``, the summary, defaults to ``message``)."""
    return ApiError(400, error or message, [{"code": "invalid_request", "message": message, "field": field}])


def reject_unknown_fields(body: dict[str, Any], allowed: set[str]) -> None:
    """Refuse a body naming fields the endpoint does not know (a typo must not be ignored)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid_field(unknown[0], f"unknown field {unknown[0]!r}", f"unknown field(s): {', '.join(unknown)}")


def error_body(error: str, errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"ok": False, "error": error, "errors": errors}


# Paths whose clients were written from Microsoft's documentation: they key on error.code.
DEFENDER = "defender"
GRAPH = "graph"
MICROSOFT_ROUTES: dict[str, str] = {
    "/api/advancedqueries/run": DEFENDER,
    "/api/advancedqueries": DEFENDER,
    "/api/advancedhunting/run": DEFENDER,
    "/security/runHuntingQuery": GRAPH,
    "/v1.0/security/runHuntingQuery": GRAPH,
    "/beta/security/runHuntingQuery": GRAPH,
}
# Defender's documented codes (common-errors.md, api-error-codes.md) by HTTP status.
_DEFENDER_CODES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                   405: "DisallowedOperation", 413: "BadRequest", 415: "BadRequest",
                   429: "TooManyRequests"}
# Graph's documented codes (concepts/errors.md) by HTTP status.
_GRAPH_CODES = {400: "badRequest", 401: "unauthenticated", 403: "forbidden", 404: "itemNotFound",
                405: "notAllowed", 413: "badRequest", 415: "badRequest", 429: "tooManyRequests",
                503: "serviceNotAvailable"}


def microsoft_error_body(shape: str, status: int, error: str, errors: list[dict[str, Any]],
                         request_id: str, client_request_id: str | None = None,
                         invalid_body: bool = False) -> dict[str, Any]:
    """Microsoft's error body for ``shape`` (DEFENDER or GRAPH), Quarry's entries in ``details``."""
    body: dict[str, Any]
    if shape == DEFENDER:
        code = "InvalidRequestBody" if invalid_body else _DEFENDER_CODES.get(
            status, "InternalServerError" if status >= 500 else "BadRequest")
        body = {"code": code, "message": error, "target": request_id}
    else:
        code = _GRAPH_CODES.get(status, "generalException" if status >= 500 else "invalidRequest")
        inner = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": request_id}
        if client_request_id:
            inner["client-request-id"] = client_request_id
        body = {"code": code, "message": error, "innerError": inner}
    body["details"] = errors
    return {"error": body}


def error_response(exc: ApiError, request: Request | None = None) -> OrjsonResponse:
    return _respond(request, exc.status, exc.error, exc.errors, exc.headers)


def _respond(request: Request | None, status: int, error: str, errors: list[dict[str, Any]],
             headers: dict[str, str] | None = None, invalid_body: bool = False) -> OrjsonResponse:
    shape = MICROSOFT_ROUTES.get(request.url.path) if request is not None else None
    if shape is None or request is None:
        return OrjsonResponse(error_body(error, errors), status_code=status, headers=headers)
    request_id = str(uuid.uuid4())
    client_id = request.headers.get("client-request-id")
    body = microsoft_error_body(shape, status, error, errors, request_id, client_id, invalid_body)
    out = {**(headers or {}), "request-id": request_id}
    if client_id:
        out["client-request-id"] = client_id
    return OrjsonResponse(body, status_code=status, headers=out)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
    507: "insufficient_storage",
}


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> OrjsonResponse:
        return error_response(exc, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        msg = str(exc.detail)
        return _respond(request, exc.status_code, msg, [{"code": code, "message": msg}],
                        getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> OrjsonResponse:
        errors = [
            {
                "code": "invalid_request",
                "message": str(e.get("msg", "invalid")),
                "field": ".".join(str(p) for p in e.get("loc", ())),
            }
            for e in exc.errors()
        ]
        return _respond(request, 400, "invalid request", errors, invalid_body=True)

    @app.exception_handler(sqlite3.OperationalError)
    async def _metadata_error(request: Request, exc: sqlite3.OperationalError) -> OrjsonResponse:
        # A full disk reaches every route that writes the metadata database (alerts, rules,
        # sessions...): say so, as ingest does, rather than "internal error".
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            log.error("metadata database: %s", exc)
            msg = "the disk is full: the metadata database cannot be written; retry once space is freed"
            return _respond(request, 507, msg, [{"code": "insufficient_storage", "message": msg}],
                            {"Retry-After": "30"})
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> OrjsonResponse:
        log.exception("unhandled error", exc_info=exc)
        return _respond(request, 500, "internal error",
                        [{"code": "internal", "message": "internal error"}])
