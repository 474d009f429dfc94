"""The one JSON error shape every endpoint returns.

    {"ok": false, "error": "<summary>", "errors": [{"code", "message", ...}]}

Entries may carry more fields (line, column, hints for KQL; row, column, expected, value for
ingest). Raise ``ApiError`` anywhere in a request; the handlers in ``install_handlers`` also turn
FastAPI's own validation and HTTP errors into this shape, and any unexpected exception into a 500
that leaks no internals.
"""

from __future__ import annotations

import logging
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


def error_response(exc: ApiError) -> OrjsonResponse:
    return OrjsonResponse(error_body(exc.error, exc.errors), status_code=exc.status, headers=exc.headers)


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
    async def _api_error(_: Request, exc: ApiError) -> OrjsonResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        msg = str(exc.detail)
        return OrjsonResponse(
            error_body(msg, [{"code": code, "message": msg}]),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> OrjsonResponse:
        errors = [
            {
                "code": "invalid_request",
                "message": str(e.get("msg", "invalid")),
                "field": ".".join(str(p) for p in e.get("loc", ())),
            }
            for e in exc.errors()
        ]
        return OrjsonResponse(error_body("invalid request", errors), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> OrjsonResponse:
        log.exception("unhandled error", exc_info=exc)
        return OrjsonResponse(
            error_body("internal error", [{"code": "internal", "message": "internal error"}]),
            status_code=500,
        )
