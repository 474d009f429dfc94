"""API keys: creation, hashed storage and the FastAPI dependency that checks scopes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Depends, Request

from server.errors import ApiError
from server.metadata import MetadataDB

Scope = Literal["ingest", "query", "admin"]
SCOPES: tuple[str, ...] = ("ingest", "query", "admin")
KEY_PREFIX = "qk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(db: MetadataDB, scope: str, name: str = "") -> str:
    """Create a key with ``scope`` and return it; only its hash is stored."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with db.tx() as conn:
        conn.execute(
            "INSERT INTO api_keys (prefix, key_hash, scope, name, created_at) VALUES (?, ?, ?, ?, ?)",
            (key[:10], hash_key(key), scope, name, datetime.now(UTC).isoformat()),
        )
    return key


def lookup_scope(db: MetadataDB, key: str, admin_key: str | None) -> str | None:
    """The scope of a valid key, or None."""
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        return "admin"
    rows = db.query(
        "SELECT scope FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (hash_key(key),)
    )
    return str(rows[0]["scope"]) if rows else None


def revoke_key(db: MetadataDB, key_id: int) -> bool:
    """Revoke the key with ``key_id`` and end its browser sessions (``server/web/sessions.py``)
    in the same transaction. False if there is no such unrevoked key. Sessions also check their
    key on every request, so a key revoked by other means ends its sessions all the same."""
    now = datetime.now(UTC).isoformat()
    with db.tx() as conn:
        cur = conn.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id)
        )
        if cur.rowcount == 0:
            return False
        conn.execute(
            "UPDATE web_sessions SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
            (now, key_id),
        )
    return True


def allows(have: str, need: str) -> bool:
    """Whether a key or session of scope ``have`` may use what needs ``need`` (admin implies all)."""
    return have == "admin" or have == need


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_owner(db: MetadataDB, key: str, admin_key: str | None) -> str | None:
    """Who a valid key is, for what the server keeps per user (query history, saved queries):
    ``key:<id>`` for a stored key, ``admin`` for QUARRY_ADMIN_KEY; None for an invalid key."""
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        return "admin"
    rows = db.query("SELECT id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (hash_key(key),))
    return f"key:{rows[0]['id']}" if rows else None


def request_owner(request: Request) -> str:
    """The owner (see ``key_owner``) of a request that ``require`` let through."""
    owner = getattr(request.state, "quarry_owner", None)
    if owner is None:
        token = bearer_token(request)
        state = request.app.state
        owner = key_owner(state.metadata, token, state.settings.admin_key) if token else None
    if owner is None:
        raise ApiError(401, "the caller could not be identified", code="unauthorized")
    return str(owner)


def require(scope: Scope):  # type: ignore[no-untyped-def]
    """Dependency factory: the request must carry a key with ``scope`` (admin implies all).

    Without a bearer header, the console's browser session counts when the app has a session
    checker (``app.state.session_scope``, set by the app factory from server/web/sessions.py): it
    answers the session's scope only when the request also carries the session's CSRF token in
    ``X-CSRF-Token``, so another site can never use the cookie, whatever the method."""

    def check(request: Request) -> str:
        token = bearer_token(request)
        state = request.app.state
        if token is None:
            via_session = getattr(state, "session_scope", None)
            found = None
            if via_session is not None and not request.headers.get("authorization"):
                found = via_session(request)  # raises 403 for a session without its CSRF token
            if found is None:
                raise ApiError(
                    401,
                    "missing API key: send 'Authorization: Bearer <key>'",
                    code="unauthorized",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            have, owner = found
            request.state.quarry_owner = owner
            if have != "admin" and have != scope:
                raise ApiError(403, f"this session has scope '{have}'; this endpoint needs '{scope}'", code="forbidden")
            return str(have)
        have = lookup_scope(state.metadata, token, state.settings.admin_key)
        if have is None:
            raise ApiError(401, "invalid API key", code="unauthorized", headers={"WWW-Authenticate": "Bearer"})
        if have != "admin" and have != scope:
            raise ApiError(403, f"this key has scope '{have}'; this endpoint needs '{scope}'", code="forbidden")
        return have

    # Read by the docs page (server/web/docs.py) to show each endpoint's scope.
    check.quarry_scope = scope  # type: ignore[attr-defined]
    return check


IngestKey = Annotated[str, Depends(require("ingest"))]
QueryKey = Annotated[str, Depends(require("query"))]
AdminKey = Annotated[str, Depends(require("admin"))]
