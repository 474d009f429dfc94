"""Browser sessions for the server-rendered pages (the alert page, ``/docs``).

A browser following a link from an email cannot send a bearer header, so ``POST /login`` checks
an API key once and creates a session: a random token in an HttpOnly cookie, of which only the
SHA-256 is stored (``web_sessions``, migration 4). The raw key never reaches the cookie. A
session carries its key's scope, expires ``settings.session_ttl_h`` after sign-in (absolute, not
sliding), ends at ``POST /logout`` and ends when its key is revoked: every lookup joins the key's
row, so a key revoked by any means stops its sessions at once.

The console (server/web/console.py) calls the JSON API from the browser with the cookie: there
a session counts only together with its CSRF token in the ``X-CSRF-Token`` header
(``api_session``), for every method. The token is an HMAC of the session token, so it is as
secret as the HttpOnly cookie, needs no storage, and is written into each page's
``<meta name="csrf-token">`` for the page's own scripts; another site can neither read it nor
make a browser send a custom header cross-origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import Response

from server.auth import bearer_token, hash_key, key_owner, lookup_scope
from server.errors import ApiError
from server.metadata import MetadataDB

TOKEN_PREFIX = "qs_"
LEGACY_COOKIE = "quarry_key"  # the raw key, as set before sessions: cleared at sign-in and out


def _iso(t: datetime) -> str:
    # Fixed width with microseconds and Z, so times compare correctly as text in SQL.
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _admin_fp(admin_key: str, token_hash: str) -> str:
    # Ties a session to the env admin key without storing anything of the key by itself.
    return hmac.new(admin_key.encode(), b"quarry-web-session:" + token_hash.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a browser-page request acts as: a bearer key or a session, and its scope."""

    scope: str
    via: Literal["bearer", "session"]
    session_id: int | None = None
    owner: str | None = None  # key:<id> or admin (server.auth.key_owner), for per-user data
    csrf: str = ""  # the session's CSRF token (sessions only)


class SessionStore:
    """Sessions over ``web_sessions``. ``clock`` is replaceable so tests can move time."""

    def __init__(self, db: MetadataDB, ttl: timedelta, clock: Callable[[], datetime] = _utcnow) -> None:
        self.db = db
        self.ttl = ttl
        self.clock = clock

    def create(self, key: str, admin_key: str | None) -> tuple[str, str] | None:
        """(token, scope) of a new session for a valid ``key``, or None if the key is not valid."""
        scope = lookup_scope(self.db, key, admin_key)
        if scope is None:
            return None
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_hash = hash_key(token)
        key_id: int | None = None
        admin_fp: str | None = None
        if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
            admin_fp = _admin_fp(admin_key, token_hash)
        else:
            rows = self.db.query(
                "SELECT id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (hash_key(key),)
            )
            if not rows:
                return None  # revoked between the two reads
            key_id = int(rows[0]["id"])
        now = self.clock()
        with self.db.tx() as conn:
            # Old rows are useless once expired or revoked; sign-ins are rare enough to tidy here.
            conn.execute(
                "DELETE FROM web_sessions WHERE expires_at <= ? OR revoked_at IS NOT NULL", (_iso(now),)
            )
            conn.execute(
                "INSERT INTO web_sessions (token_hash, key_id, admin_fp, scope, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (token_hash, key_id, admin_fp, scope, _iso(now), _iso(now + self.ttl)),
            )
        return token, scope

    def lookup(self, token: str, admin_key: str | None) -> tuple[int, str] | None:
        """(session id, scope) of a live session, or None (unknown, expired, revoked, key gone)."""
        found = self.lookup_owner(token, admin_key)
        return None if found is None else (found[0], found[1])

    def lookup_owner(self, token: str, admin_key: str | None) -> tuple[int, str, str] | None:
        """(session id, scope, owner) of a live session (owner as ``server.auth.key_owner``)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        token_hash = hash_key(token)
        rows = self.db.query(
            "SELECT s.id, s.scope, s.key_id, s.admin_fp FROM web_sessions s"
            " LEFT JOIN api_keys k ON k.id = s.key_id"
            " WHERE s.token_hash = ? AND s.revoked_at IS NULL AND s.expires_at > ?"
            " AND (s.key_id IS NULL OR (k.id IS NOT NULL AND k.revoked_at IS NULL))",
            (token_hash, _iso(self.clock())),
        )
        if not rows:
            return None
        row = rows[0]
        if row["key_id"] is None:
            fp = row["admin_fp"] or ""
            if not admin_key or not hmac.compare_digest(fp, _admin_fp(admin_key, token_hash)):
                return None
            return int(row["id"]), str(row["scope"]), "admin"
        return int(row["id"]), str(row["scope"]), f"key:{row['key_id']}"

    def revoke(self, token: str) -> bool:
        with self.db.tx() as conn:
            cur = conn.execute(
                "UPDATE web_sessions SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL",
                (_iso(self.clock()), hash_key(token)),
            )
        return cur.rowcount > 0


def store(state: Any) -> SessionStore:
    """The app's session store, made on first use (the app factory needs no change for it)."""
    s = getattr(state, "web_sessions", None)
    if s is None:
        s = SessionStore(state.metadata, timedelta(hours=float(state.settings.session_ttl_h)))
        state.web_sessions = s
    return s


def secure_cookies(state: Any) -> bool:
    return str(state.settings.public_url).lower().startswith("https://")


def cookie_name(state: Any) -> str:
    # Over https the __Host- prefix makes browsers refuse the cookie unless it is Secure, Path=/
    # and host-only, so a sibling subdomain cannot plant or shadow it.
    return "__Host-quarry_session" if secure_cookies(state) else "quarry_session"


def set_session_cookie(resp: Response, state: Any, token: str) -> None:
    resp.set_cookie(
        cookie_name(state),
        token,
        max_age=int(store(state).ttl.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=secure_cookies(state),
        path="/",
    )
    resp.delete_cookie(LEGACY_COOKIE, path="/")


def clear_session_cookie(resp: Response, state: Any) -> None:
    resp.delete_cookie(cookie_name(state), path="/", secure=secure_cookies(state), httponly=True, samesite="lax")
    resp.delete_cookie(LEGACY_COOKIE, path="/")


def session_token(request: Request) -> str | None:
    return request.cookies.get(cookie_name(request.app.state)) or None


def principal(request: Request) -> Principal | None:
    """The bearer key if the request sends one (a wrong one is not rescued by a cookie), else
    the session cookie; None when neither is valid."""
    state = request.app.state
    token = bearer_token(request)
    if token is not None:
        scope = lookup_scope(state.metadata, token, state.settings.admin_key)
        owner = key_owner(state.metadata, token, state.settings.admin_key)
        return Principal(scope, "bearer", owner=owner) if scope is not None else None
    if request.headers.get("authorization"):
        return None  # some other scheme (Basic...): refused, as the API refuses it
    cookie = session_token(request)
    if cookie is None:
        return None
    found = store(state).lookup_owner(cookie, state.settings.admin_key)
    if found is None:
        return None
    return Principal(found[1], "session", found[0], found[2], csrf_token(cookie))


CSRF_HEADER = "x-csrf-token"


def csrf_token(session: str) -> str:
    """The CSRF token of a session token (see the module's docstring)."""
    return hmac.new(session.encode(), b"quarry-csrf", hashlib.sha256).hexdigest()


def csrf_ok(request: Request, sent: str | None) -> bool:
    cookie = session_token(request)
    return bool(cookie and sent and hmac.compare_digest(sent.encode(), csrf_token(cookie).encode()))


def api_session(request: Request) -> tuple[str, str] | None:
    """(scope, owner) for an API request that carries a live session cookie and its CSRF token
    header; None without a (live) session; 403 for a session without the right token. Set as
    ``app.state.session_scope`` by the app factory, read by ``server.auth.require``."""
    cookie = session_token(request)
    if cookie is None:
        return None
    state = request.app.state
    found = store(state).lookup_owner(cookie, state.settings.admin_key)
    if found is None:
        return None
    if not csrf_ok(request, request.headers.get(CSRF_HEADER)):
        raise ApiError(
            403,
            "a browser session may call the API only from Quarry's own pages: "
            "the X-CSRF-Token header is missing or wrong",
            code="csrf",
        )
    return found[1], found[2]


def _origin_of(url: str) -> str | None:
    # Any header text may arrive here: whatever does not parse (a bad port...) is no origin.
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def own_origins(request: Request) -> set[str]:
    """This server's origins: the one the request was addressed to, and ``public_url`` (behind a
    reverse proxy the browser's origin is the public one)."""
    out = {o for o in (_origin_of(str(request.base_url)), _origin_of(str(request.app.state.settings.public_url))) if o}
    return out


def same_origin_post(request: Request) -> str | None:
    """None if a state-changing browser request comes from this server's own pages, else why
    not. Cross-site form posts carry the attacker's Origin (or ``null``); modern browsers send
    Origin on every POST, Referer is the fallback. A request with neither is refused: the
    browser routes are for browsers, and API clients use the bearer header instead."""
    origin = request.headers.get("origin")
    mine = own_origins(request)
    if origin is not None:
        if _origin_of(origin) in mine:
            return None
        return f"the request came from another site (Origin {origin[:100]!r})"
    referer = request.headers.get("referer")
    if referer is not None:
        if _origin_of(referer) in mine:
            return None
        return "the request came from another site (Referer)"
    return "the request has neither an Origin nor a Referer header"


def safe_next(value: str | None, default: str = "/docs") -> str:
    """A redirect target on this server only: an absolute path, no scheme or host, nothing that
    browsers would read as another host ("//h", "/\\h", or with tabs/newlines they strip)."""
    if not value or len(value) > 2000:
        return default
    if any(ord(c) < 0x21 or ord(c) == 0x7F or c == "\\" for c in value):
        return default
    if not value.startswith("/") or value.startswith("//"):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value
