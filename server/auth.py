"""API keys: creation, hashed storage, listing and revocation, the FastAPI dependency that
checks scopes, and the last-used time (written at most once a minute per key).

An ingest key may be bound to device ids (``api_key_devices``): it then ingests only rows of
those devices (server/ingest/devices.py) and polls and completes device actions only for them
(server/api/devices.py). Unbound keys, and keys of other scopes, act for any device.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Request

from server.errors import ApiError, FieldError
from server.metadata import MetadataDB

log = logging.getLogger("quarry.auth")

Scope = Literal["ingest", "query", "admin"]
SCOPES: tuple[str, ...] = ("ingest", "query", "admin")
KEY_PREFIX = "qk_"
PREFIX_LEN = 10  # "qk_" and 7 characters (42 random bits): tells keys apart in lists and logs
MAX_KEY_DEVICES = 1000  # device ids one key may be bound to
MAX_DEVICE_ID = 256
LAST_USED_EVERY_S = 60.0  # a key's last-used time is written at most this often


class KeyError_(FieldError):  # noqa: N801 - KeyError is a builtin
    default_code = "invalid_key"


@dataclass(frozen=True)
class KeyInfo:
    """The key a request was authorised with. ``id`` is None for QUARRY_ADMIN_KEY; ``devices``
    None means any device."""

    id: int | None
    scope: str
    devices: frozenset[str] | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _api_time(text: str | None) -> str | None:
    """Stored times are ``isoformat()`` with +00:00; the API writes UTC with Z."""
    return None if text is None else text.replace("+00:00", "Z")


def check_devices(scope: str, devices: Iterable[Any] | None) -> list[str] | None:
    """Validated, de-duplicated device ids for a key of ``scope`` (None: not bound)."""
    if devices is None:
        return None
    if isinstance(devices, str | bytes) or not isinstance(devices, Iterable):
        raise KeyError_("devices must be a list of device ids", "devices")
    items = list(devices)
    if not all(isinstance(d, str) for d in items):
        raise KeyError_("devices must be a list of device ids (strings)", "devices")
    out: list[str] = sorted(set(items))
    if scope != "ingest":
        raise KeyError_("only ingest keys can be bound to devices", "devices")
    if not out:
        raise KeyError_("devices, when given, must name at least one device", "devices")
    if len(out) > MAX_KEY_DEVICES:
        raise KeyError_(f"a key can be bound to at most {MAX_KEY_DEVICES} devices", "devices")
    for d in out:
        if not d.strip() or len(d) > MAX_DEVICE_ID or any(ord(c) < 32 for c in d):
            raise KeyError_(
                f"device ids are non-empty strings of at most {MAX_DEVICE_ID} characters "
                f"without control characters: {d[:80]!r}", "devices")
    return out


def create_key(
    db: MetadataDB, scope: str, name: str = "", devices: Iterable[Any] | None = None
) -> str:
    """Create a key with ``scope`` (an ingest key optionally bound to ``devices``) and return
    it; only its hash is stored. Raises ValueError (KeyError_ for bad devices)."""
    if scope not in SCOPES:
        raise KeyError_(f"unknown scope {scope!r}; expected one of {', '.join(SCOPES)}", "scope")
    bound = check_devices(scope, devices)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with db.tx() as conn:
        cur = conn.execute(
            "INSERT INTO api_keys (prefix, key_hash, scope, name, created_at) VALUES (?, ?, ?, ?, ?)",
            (key[:PREFIX_LEN], hash_key(key), scope, name, _now()),
        )
        if bound:
            conn.executemany(
                "INSERT INTO api_key_devices (key_id, device_id) VALUES (?, ?)",
                [(cur.lastrowid, d) for d in bound],
            )
    return key


def lookup_key(db: MetadataDB, key: str, admin_key: str | None) -> KeyInfo | None:
    """The valid (unrevoked) key ``key``, or None. One indexed query."""
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        return KeyInfo(None, "admin")
    rows = db.query(
        "SELECT k.id, k.scope, (SELECT json_group_array(device_id) FROM api_key_devices d"
        " WHERE d.key_id = k.id) AS devices FROM api_keys k"
        " WHERE k.key_hash = ? AND k.revoked_at IS NULL",
        (hash_key(key),),
    )
    if not rows:
        return None
    devices = json.loads(rows[0]["devices"] or "[]")
    return KeyInfo(int(rows[0]["id"]), str(rows[0]["scope"]), frozenset(devices) or None)


def lookup_scope(db: MetadataDB, key: str, admin_key: str | None) -> str | None:
    """The scope of a valid key, or None."""
    info = lookup_key(db, key, admin_key)
    return info.scope if info is not None else None


def _key_dict(row: sqlite3.Row, devices: list[str]) -> dict[str, Any]:
    return {
        "id": int(row["id"]),
        "prefix": row["prefix"],
        "name": row["name"],
        "scope": row["scope"],
        "devices": devices or None,
        "createdAt": _api_time(row["created_at"]),
        "lastUsedAt": _api_time(row["last_used_at"]),
        "revokedAt": _api_time(row["revoked_at"]),
    }


def list_keys(db: MetadataDB, include_revoked: bool = False) -> list[dict[str, Any]]:
    """Every key (never the key itself or its hash), oldest first."""
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    rows = db.query(
        "SELECT id, prefix, name, scope, created_at, last_used_at, revoked_at FROM api_keys"
        f"{where} ORDER BY id"
    )
    devices: dict[int, list[str]] = {}
    for r in db.query("SELECT key_id, device_id FROM api_key_devices ORDER BY key_id, device_id"):
        devices.setdefault(int(r["key_id"]), []).append(r["device_id"])
    return [_key_dict(r, devices.get(int(r["id"]), [])) for r in rows]


def describe_key(db: MetadataDB, key_id: int) -> dict[str, Any]:
    """One key as ``list_keys`` shows it."""
    return next(k for k in list_keys(db, include_revoked=True) if k["id"] == key_id)


def revoke_by_prefix(db: MetadataDB, prefix: str) -> dict[str, Any]:
    """Revoke the one unrevoked key whose prefix is ``prefix`` (and its sessions); return it.
    KeyError_ 404 when there is none, 409 when the prefix names several (give the full prefix
    of ``GET /api/keys``; two keys share one by chance about once in 2^42)."""
    if not prefix.startswith(KEY_PREFIX) or len(prefix) != PREFIX_LEN:
        raise KeyError_(f"a key prefix is {PREFIX_LEN} characters starting with "
                        f"{KEY_PREFIX!r}, as listed by GET /api/keys", "prefix", "not_found", 404)
    rows = db.query("SELECT id FROM api_keys WHERE prefix = ? AND revoked_at IS NULL", (prefix,))
    if not rows:
        raise KeyError_(f"no active key with prefix {prefix!r}", "prefix", "not_found", 404)
    if len(rows) > 1:
        raise KeyError_(f"{len(rows)} active keys share the prefix {prefix!r}; revoke by id with "
                        "the CLI after listing them", "prefix", "conflict", 409)
    key_id = int(rows[0]["id"])
    revoke_key(db, key_id)
    return describe_key(db, key_id)


class LastUsed:
    """Writes a key's ``last_used_at`` at most once per LAST_USED_EVERY_S per key, so a busy
    agent costs one SQLite write a minute, not one per request. A failed write (a full disk)
    is logged and never fails the request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._written: dict[int, float] = {}

    def touch(self, db: MetadataDB, key_id: int) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._written.get(key_id)
            if last is not None and now - last < LAST_USED_EVERY_S:
                return
            self._written[key_id] = now
        try:
            with db.tx() as conn:
                conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (_now(), key_id))
        except sqlite3.Error as e:
            log.warning("could not record the last use of key %d: %s", key_id, e)


def _last_used(request: Request) -> LastUsed:
    tracker = getattr(request.app.state, "key_last_used", None)
    if tracker is None:
        tracker = request.app.state.key_last_used = LastUsed()
    return tracker  # type: ignore[no-any-return]


def request_key(request: Request) -> KeyInfo:
    """The key ``require`` accepted for this request."""
    info = getattr(request.state, "api_key", None)
    assert isinstance(info, KeyInfo), "request_key() needs a route guarded by require()"
    return info


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
            # Sessions are signed in with query or admin keys, never bound to devices.
            request.state.api_key = KeyInfo(None, str(have))
            if have != "admin" and have != scope:
                raise ApiError(403, f"this session has scope '{have}'; this endpoint needs '{scope}'", code="forbidden")
            return str(have)
        info = lookup_key(state.metadata, token, state.settings.admin_key)
        if info is None:
            raise ApiError(401, "invalid API key", code="unauthorized", headers={"WWW-Authenticate": "Bearer"})
        have = info.scope
        if have != "admin" and have != scope:
            raise ApiError(403, f"this key has scope '{have}'; this endpoint needs '{scope}'", code="forbidden")
        request.state.api_key = info
        if info.id is not None:
            _last_used(request).touch(state.metadata, info.id)
        return have

    # Read by the docs page (server/web/docs.py) to show each endpoint's scope.
    check.quarry_scope = scope  # type: ignore[attr-defined]
    return check


IngestKey = Annotated[str, Depends(require("ingest"))]
QueryKey = Annotated[str, Depends(require("query"))]
AdminKey = Annotated[str, Depends(require("admin"))]
