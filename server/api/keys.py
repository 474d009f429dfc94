"""API keys over HTTP (admin scope): list, create (optionally bound to devices), revoke.

The key itself is shown once, in the answer to ``POST /api/keys``; only its SHA-256 is stored.
A revoked key stops working at the next request (every request looks its key up), and so do the
browser sessions signed in with it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from starlette.concurrency import run_in_threadpool

from server import auth
from server.auth import AdminKey
from server.errors import field_error, invalid_field, reject_unknown_fields
from server.responses import OrjsonResponse

router = APIRouter(tags=["keys"])


@router.get("/api/keys")
def list_keys(
    request: Request,
    _: AdminKey,
    include_revoked: bool = Query(False, alias="includeRevoked"),
) -> dict[str, Any]:
    """Every key (prefix, name, scope, devices, createdAt, lastUsedAt, revokedAt), oldest first;
    never the key or its hash."""
    return {"value": auth.list_keys(request.app.state.metadata, include_revoked)}


@router.post("/api/keys", status_code=201)
async def create_key(
    request: Request, _: AdminKey, body: Annotated[dict[str, Any], Body()]
) -> OrjsonResponse:
    """``scope`` (ingest, query, admin), optional ``name`` and, for an ingest key, optional
    ``devices`` (device ids it may ingest and act for). 201 with ``key`` (shown only here)."""
    reject_unknown_fields(body, {"scope", "name", "devices"})
    scope, name = body.get("scope"), body.get("name", "")
    if not isinstance(scope, str):
        raise invalid_field("scope", "scope is required: ingest, query or admin")
    if not isinstance(name, str) or len(name) > 200:
        raise invalid_field("name", "name must be a string of at most 200 characters")
    db = request.app.state.metadata
    try:
        key = await run_in_threadpool(auth.create_key, db, scope, name, body.get("devices"))
    except auth.KeyError_ as e:
        raise field_error(e) from None
    created = auth.lookup_key(db, key, None)
    assert created is not None and created.id is not None
    return OrjsonResponse({**auth.describe_key(db, created.id), "key": key}, status_code=201)


@router.delete("/api/keys/{prefix}")
def revoke_key(request: Request, _: AdminKey, prefix: str) -> dict[str, Any]:
    """Revoke the active key with this prefix (and end its browser sessions); 404 when there is
    none, 409 when two active keys share it."""
    try:
        return auth.revoke_by_prefix(request.app.state.metadata, prefix)
    except auth.KeyError_ as e:
        raise field_error(e) from None
